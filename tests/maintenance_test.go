package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)$`)

// TestStatus checks Maintenance.Status: the version string has etcd's format and the same
// major.minor as the reference etcd (Kubernetes gates features on it), and the fields a
// single-member cluster reports are consistent.
func TestStatus(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	put(t, d, "k", "v")
	status := func(s harness.Server) *pb.StatusResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
		defer cancel()
		r, err := s.Client().Status(ctx, s.Endpoint())
		if err != nil {
			t.Fatalf("%s: Status: %v", s.Name(), err)
		}
		return (*pb.StatusResponse)(r)
	}
	ref, subj := status(d.Ref), status(d.Subj)
	t.Logf("reference status: %v", ref)
	t.Logf("subject status: %v", subj)

	rm := versionRE.FindStringSubmatch(ref.Version)
	sm := versionRE.FindStringSubmatch(subj.Version)
	if rm == nil {
		t.Fatalf("reference version %q does not match %s", ref.Version, versionRE)
	}
	if sm == nil {
		t.Errorf("subject version %q does not match %s", subj.Version, versionRE)
	} else if sm[1] != rm[1] || sm[2] != rm[2] {
		t.Errorf("subject version %q, want %s.%s.x like the reference %q", subj.Version, rm[1], rm[2], ref.Version)
	}
	if subj.Header.GetRevision() != ref.Header.GetRevision() {
		t.Errorf("subject header revision %d, reference %d", subj.Header.GetRevision(), ref.Header.GetRevision())
	}
	for _, s := range []struct {
		name string
		r    *pb.StatusResponse
	}{{d.Ref.Name(), ref}, {d.Subj.Name(), subj}} {
		r := s.r
		if r.Header.GetClusterId() == 0 || r.Header.GetMemberId() == 0 {
			t.Errorf("%s: header lacks cluster or member id: %v", s.name, r.Header)
		}
		if r.Leader != r.Header.GetMemberId() {
			t.Errorf("%s: leader %x, want the only member %x", s.name, r.Leader, r.Header.GetMemberId())
		}
		if r.RaftTerm == 0 || r.RaftIndex == 0 || r.DbSize <= 0 {
			t.Errorf("%s: raft term %d, raft index %d, db size %d: want all > 0", s.name, r.RaftTerm, r.RaftIndex, r.DbSize)
		}
		if len(r.Errors) != 0 || r.IsLearner {
			t.Errorf("%s: errors %q, is learner %v", s.name, r.Errors, r.IsLearner)
		}
	}
}

// TestMemberList compares Cluster.MemberList with member ids and ports normalised: one
// started member named like the reference's, advertising the URL the client uses.
func TestMemberList(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	list := func(s harness.Server) *pb.MemberListResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
		defer cancel()
		r, err := s.Client().MemberList(ctx)
		if err != nil {
			t.Fatalf("%s: MemberList: %v", s.Name(), err)
		}
		m := proto.Clone((*pb.MemberListResponse)(r)).(*pb.MemberListResponse)
		harness.Normalize(m)
		if len(m.Members) != 1 {
			t.Fatalf("%s: %d members, want 1: %v", s.Name(), len(m.Members), m)
		}
		if m.Members[0].ID == 0 {
			t.Errorf("%s: member id 0", s.Name())
		}
		if got := m.Members[0].ClientURLs; len(got) != 1 || got[0] != s.Endpoint() {
			t.Errorf("%s: client URLs %q, want [%s]", s.Name(), got, s.Endpoint())
		}
		m.Members[0].ID = 0
		m.Members[0].ClientURLs = nil
		m.Members[0].PeerURLs = []string{fmt.Sprint(len(m.Members[0].PeerURLs), " peer URLs")}
		return m
	}
	if diff := cmp.Diff(list(d.Ref), list(d.Subj), protocmp.Transform()); diff != "" {
		t.Errorf("member list differs (-%s +%s):\n%s", d.Ref.Name(), d.Subj.Name(), diff)
	}
}

// rangeStreamOp runs KV.RangeStream and merges the chunks, as the API documents, into one
// RangeResponse.
func rangeStreamOp(r *pb.RangeRequest) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) {
		s, err := kvc(c).RangeStream(ctx, r)
		if err != nil {
			return nil, err
		}
		merged := &pb.RangeResponse{}
		for {
			chunk, err := s.Recv()
			if errors.Is(err, io.EOF) {
				return merged, nil
			}
			if err != nil {
				return nil, err
			}
			proto.Merge(merged, chunk.RangeResponse)
		}
	}
}

// TestRangeStream compares etcd 3.7's KV.RangeStream. The architecture allows Mosaic to
// answer it with a clean Unimplemented instead; any other difference fails.
func TestRangeStream(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	// More keys than one RangeStream chunk (1000), written 100 per txn.
	const keys = 2600
	for i := 0; i < keys; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("s/%04d", j), strconv.Itoa(j)))
		}
		d.Check("seed", func(ctx context.Context, c *clientv3.Client) (any, error) {
			return c.Txn(ctx).Then(ops...).Commit()
		})
	}
	unimplemented := 0
	for _, r := range []*pb.RangeRequest{
		{Key: []byte("s/"), RangeEnd: []byte("s0")},
		{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 100},
		{Key: []byte("s/1"), RangeEnd: []byte("s/2"), Limit: 7},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), KeysOnly: true, Serializable: true},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), CountOnly: true},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), Revision: 5000},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), SortOrder: pb.RangeRequest_DESCEND},
		{Key: []byte("s/0007")},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), Limit: 1500},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), Limit: 2000, KeysOnly: true},
		{Key: []byte("s/"), RangeEnd: []byte("s0"), Limit: 2600},
		{Key: []byte("s/0500"), RangeEnd: []byte("s/2100"), Revision: 20},
	} {
		ref := harness.Run(d.Ref, rangeStreamOp(r))
		subj := harness.Run(d.Subj, rangeStreamOp(r))
		diff := harness.CompareOutcomes(ref, subj)
		if c, _ := harness.ErrorCode(subj.Err); diff != "" && subj.Err != nil && c == codes.Unimplemented {
			unimplemented++
			continue
		}
		if diff != "" {
			t.Errorf("RangeStream %v (-%s +%s):\n%s", r, d.Ref.Name(), d.Subj.Name(), diff)
		}
	}
	if unimplemented > 0 {
		if d.Subj.Name() == "mosaic" {
			t.Errorf("Mosaic answered Unimplemented to %d RangeStream requests etcd serves", unimplemented)
		}
		t.Logf("subject answered Unimplemented to %d RangeStream requests", unimplemented)
	}
}
