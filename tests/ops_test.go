package tests

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The helpers below build harness.Ops from raw etcdserverpb requests, sent on the client's
// connection, so that a test controls every field of the request (clientv3 fills some in).

func kvc(c *clientv3.Client) pb.KVClient { return pb.NewKVClient(c.ActiveConnection()) }

func rangeOp(r *pb.RangeRequest) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) { return kvc(c).Range(ctx, r) }
}

func putOp(r *pb.PutRequest) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) { return kvc(c).Put(ctx, r) }
}

func delOp(r *pb.DeleteRangeRequest) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) { return kvc(c).DeleteRange(ctx, r) }
}

func txnOp(r *pb.TxnRequest) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) { return kvc(c).Txn(ctx, r) }
}

func compactOp(r *pb.CompactionRequest) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) { return kvc(c).Compact(ctx, r) }
}

// put writes key=value on both servers and requires success.
func put(t testing.TB, d *harness.Diff, key, value string) {
	t.Helper()
	d.Check(fmt.Sprintf("put %q=%q", key, value), putOp(&pb.PutRequest{Key: []byte(key), Value: []byte(value)})).WantOK(t)
}

// del deletes [key, end) on both servers and requires success.
func del(t testing.TB, d *harness.Diff, key, end string) {
	t.Helper()
	r := &pb.DeleteRangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	d.Check(fmt.Sprintf("delete [%q, %q)", key, end), delOp(r)).WantOK(t)
}

// currentRev returns the reference's current revision, read with a Range on both servers
// (which must agree).
func currentRev(t testing.TB, d *harness.Diff) int64 {
	t.Helper()
	o := d.Check("current revision", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), CountOnly: true}))
	o.WantOK(t)
	if o.Err != nil {
		t.FailNow()
	}
	return o.Resp.(*pb.RangeResponse).Header.Revision
}

// Request op constructors for Txn branches.

func reqPut(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func reqPutPrev(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value), PrevKv: true}}}
}

func reqRange(key, end string) *pb.RequestOp {
	r := &pb.RangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func reqDel(key, end string) *pb.RequestOp {
	r := &pb.DeleteRangeRequest{Key: []byte(key), PrevKv: true}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}
}

func reqTxn(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}

// group is a differential sequence: it drives a Diff from a fresh pair of servers.
type group struct {
	name string
	run  func(t *testing.T, d *harness.Diff)
}

// runGroups runs every group as a parallel subtest on its own fresh pair of servers; before
// the group runs, prepare (if not nil) may change the subject, e.g. split its ranges.
func runGroups(t *testing.T, groups []group, prepare func(t *testing.T, d *harness.Diff, subj *harness.Process)) {
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			d, subj := harness.StartPair(t)
			if prepare != nil {
				prepare(t, d, subj)
			}
			g.run(t, d)
		})
	}
}
