package harness

import (
	"errors"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func header(cluster, member, rev, term uint64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: cluster, MemberId: member, Revision: int64(rev), RaftTerm: term}
}

func TestNormalizeClearsIdentityEverywhereButKeepsRevision(t *testing.T) {
	inner := &pb.RangeResponse{Header: header(1, 2, 7, 3), Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), ModRevision: 5}}}
	resp := &pb.TxnResponse{
		Header:    header(1, 2, 7, 3),
		Succeeded: true,
		Responses: []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponseRange{ResponseRange: inner}}},
	}
	got := normalized(resp).(*pb.TxnResponse)
	want := &pb.TxnResponse{
		Header:    header(0, 0, 7, 0),
		Succeeded: true,
		Responses: []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{
			Header: header(0, 0, 7, 0), Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), ModRevision: 5}},
		}}}},
	}
	if d := CompareOutcomes(Outcome{Resp: want}, Outcome{Resp: got}); d != "" {
		t.Errorf("normalized: %s", d)
	}
	if resp.Header.ClusterId != 1 {
		t.Errorf("normalized modified its argument")
	}
}

func TestCompareOutcomes(t *testing.T) {
	a := normalized((*clientv3.GetResponse)(&pb.RangeResponse{Header: header(1, 2, 7, 3), Count: 1}))
	sameButIDs := normalized(&pb.RangeResponse{Header: header(9, 9, 7, 9), Count: 1})
	otherRev := normalized(&pb.RangeResponse{Header: header(1, 2, 8, 3), Count: 1})
	for _, tc := range []struct {
		name  string
		a, b  Outcome
		match string // "" if equal, else a substring of the report
	}{
		{"ids differ", Outcome{Resp: a}, Outcome{Resp: sameButIDs}, ""},
		{"revision differs", Outcome{Resp: a}, Outcome{Resp: otherRev}, "revision"},
		{"same error, client and status form", Outcome{Err: rpctypes.ErrCompacted}, Outcome{Err: rpctypes.ErrGRPCCompacted}, ""},
		{"different errors", Outcome{Err: rpctypes.ErrGRPCCompacted}, Outcome{Err: rpctypes.ErrGRPCFutureRev}, "future"},
		{"plain error", Outcome{Err: rpctypes.ErrGRPCCompacted}, Outcome{Err: errors.New("boom")}, "boom"},
		{"error vs success", Outcome{Err: rpctypes.ErrGRPCEmptyKey}, Outcome{Resp: a}, "success"},
		{"success vs error", Outcome{Resp: a}, Outcome{Err: rpctypes.ErrGRPCEmptyKey}, "key is not provided"},
	} {
		got := CompareOutcomes(tc.a, tc.b)
		switch {
		case tc.match == "" && got != "":
			t.Errorf("%s: want equal, got %s", tc.name, got)
		case tc.match != "" && !strings.Contains(got, tc.match):
			t.Errorf("%s: want a difference mentioning %q, got %q", tc.name, tc.match, got)
		}
	}
}
