package tests

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

func leaseClient(c *clientv3.Client) pb.LeaseClient { return pb.NewLeaseClient(c.ActiveConnection()) }

func grantOp(id, ttl int64) harness.Op {
	return leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	})
}

func revokeOp(id int64) harness.Op {
	return leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
	})
}

func grant(t testing.TB, d *harness.Diff, id, ttl int64) {
	t.Helper()
	d.Check(fmt.Sprintf("grant %d ttl %d", id, ttl), grantOp(id, ttl)).WantOK(t)
}

func revoke(t testing.TB, d *harness.Diff, id int64) {
	t.Helper()
	d.Check(fmt.Sprintf("revoke %d", id), revokeOp(id)).WantOK(t)
}

func putLease(t testing.TB, d *harness.Diff, key, value string, lease int64) {
	t.Helper()
	d.Check(fmt.Sprintf("put %q with lease %d", key, lease), putOp(&pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease})).WantOK(t)
}

// ttlOf reads and clears the remaining-TTL field of a lease response, which counts down
// on each server's own clock.
func ttlOf(resp any) (int64, bool) {
	switch r := resp.(type) {
	case *pb.LeaseTimeToLiveResponse:
		ttl := r.TTL
		r.TTL = 0
		return ttl, true
	case *keepAliveReplies:
		return 0, false
	}
	return 0, false
}

// checkTTL compares op's responses on both servers with the remaining TTL compared within a
// tolerance of one second (each server's clock runs between the two calls, and a TTL is
// truncated to whole seconds), and everything else exactly. Keys of LeaseTimeToLive are
// sorted: etcd lists them in its map order.
func checkTTL(t *testing.T, d *harness.Diff, name string, op harness.Op) harness.Outcome {
	t.Helper()
	ref := harness.Run(d.Ref, op)
	subj := harness.Run(d.Subj, op)
	var rt, st int64
	for i, o := range []*harness.Outcome{&ref, &subj} {
		if o.Err != nil {
			continue
		}
		if r, ok := o.Resp.(*pb.LeaseTimeToLiveResponse); ok {
			sort.Slice(r.Keys, func(a, b int) bool { return bytes.Compare(r.Keys[a], r.Keys[b]) < 0 })
		}
		ttl, _ := ttlOf(o.Resp)
		if i == 0 {
			rt = ttl
		} else {
			st = ttl
		}
	}
	if msg := harness.CompareOutcomes(ref, subj); msg != "" {
		t.Errorf("%s: responses differ (-%s +%s):\n%s", name, d.Ref.Name(), d.Subj.Name(), msg)
	}
	if rt-st > 1 || st-rt > 1 {
		t.Errorf("%s: remaining TTL %d on %s, %d on %s: more than 1s apart", name, rt, d.Ref.Name(), st, d.Subj.Name())
	}
	return ref
}

func timeToLiveOp(id int64, keys bool) harness.Op {
	return leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys})
	})
}

// keepAliveReplies is what one LeaseKeepAlive stream answered, normalised.
type keepAliveReplies struct {
	Replies []*pb.LeaseKeepAliveResponse
}

// keepAliveOp sends ids on one LeaseKeepAlive stream, one at a time, and collects the answers.
func keepAliveOp(ids ...int64) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) {
		s, err := leaseClient(c).LeaseKeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		out := &keepAliveReplies{}
		for _, id := range ids {
			if err := s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
				return nil, err
			}
			r, err := s.Recv()
			if err != nil {
				return nil, err
			}
			r = proto.Clone(r).(*pb.LeaseKeepAliveResponse)
			harness.Normalize(r)
			out.Replies = append(out.Replies, r)
		}
		return out, s.CloseSend()
	}
}

// keepAlivePipelinedOp sends every id before reading any answer: many leases in flight
// on one stream.
func keepAlivePipelinedOp(ids ...int64) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) {
		s, err := leaseClient(c).LeaseKeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if err := s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
				return nil, err
			}
		}
		out := &keepAliveReplies{}
		for range ids {
			r, err := s.Recv()
			if err != nil {
				return nil, err
			}
			r = proto.Clone(r).(*pb.LeaseKeepAliveResponse)
			harness.Normalize(r)
			out.Replies = append(out.Replies, r)
		}
		return out, s.CloseSend()
	}
}

func leasesOp() harness.Op {
	return leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	})
}

// TestLeaseService compares every Lease RPC and its errors with etcd: grants with chosen and
// generated ids, the TTL limits, revoke, keep-alive (one and many leases per stream),
// time-to-live with keys, the lease list in etcd's order (soonest expiry first), and the
// header revision of every answer (exact: only revokes that delete keys move it).
func TestLeaseService(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	put(t, d, "before", "1") // revision 2, so headers are not all 1

	// Chosen ids, etcd's minimum TTL (2s with the default 100ms/1000ms Raft timing), the
	// maximum TTL, negative ids.
	for _, tc := range []struct{ id, ttl int64 }{{1000, 60}, {1001, 1}, {1002, 0}, {1003, -5}, {1004, 10}, {1005, 9000000000}, {-7, 30}} {
		o := d.Check(fmt.Sprintf("grant id %d ttl %d", tc.id, tc.ttl), grantOp(tc.id, tc.ttl))
		o.WantOK(t)
		if r, ok := o.Resp.(*pb.LeaseGrantResponse); ok && tc.ttl < 2 && r.TTL != 2 {
			t.Errorf("etcd granted TTL %d for %d, want its minimum 2", r.TTL, tc.ttl)
		}
	}
	// The short leases go at once: expiry is tested elsewhere.
	revoke(t, d, 1001)
	revoke(t, d, 1002)
	revoke(t, d, 1003)
	d.Check("grant existing id", grantOp(1000, 60)).WantErr(t, rpctypes.ErrGRPCLeaseExist)
	d.Check("grant existing id, other ttl", grantOp(-7, 5)).WantErr(t, rpctypes.ErrGRPCLeaseExist)
	d.Check("grant TTL too large", grantOp(2000, 9000000001)).WantErr(t, rpctypes.ErrGRPCLeaseTTLTooLarge)
	d.Check("grant TTL too large, existing id", grantOp(1000, 9000000001)).WantErr(t, rpctypes.ErrGRPCLeaseTTLTooLarge)
	d.Check("grant TTL too large, generated id", grantOp(0, 9000000001)).WantErr(t, rpctypes.ErrGRPCLeaseTTLTooLarge)

	// A generated id: positive, usable, different each time; compared with the id cleared.
	var generated [2]int64
	for i, s := range []harness.Server{d.Ref, d.Subj} {
		ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
		a, err := leaseClient(s.Client()).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
		var b *pb.LeaseGrantResponse
		if err == nil {
			b, err = leaseClient(s.Client()).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
		}
		cancel()
		if err != nil {
			t.Fatalf("%s: grant with a generated id: %v", s.Name(), err)
		}
		if a.ID <= 0 || b.ID <= 0 || a.ID == b.ID {
			t.Errorf("%s: generated ids %d and %d, want two different positive ids", s.Name(), a.ID, b.ID)
		}
		if a.TTL != 30 || a.Header.Revision != 2 {
			t.Errorf("%s: generated grant TTL %d revision %d, want 30 and 2", s.Name(), a.TTL, a.Header.Revision)
		}
		generated[i] = a.ID
		if _, err := leaseClient(s.Client()).LeaseRevoke(context.Background(), &pb.LeaseRevokeRequest{ID: b.ID}); err != nil {
			t.Errorf("%s: revoke generated lease: %v", s.Name(), err)
		}
	}
	d.Check("put with a generated lease", func(ctx context.Context, c *clientv3.Client) (any, error) {
		id := generated[1]
		if c == d.Ref.Client() {
			id = generated[0]
		}
		r, err := kvc(c).Put(ctx, &pb.PutRequest{Key: []byte("gen"), Value: []byte("v"), Lease: id})
		return r, err
	}).WantOK(t)
	d.Check("revoke the generated lease", func(ctx context.Context, c *clientv3.Client) (any, error) {
		id := generated[1]
		if c == d.Ref.Client() {
			id = generated[0]
		}
		return leaseClient(c).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
	}).WantOK(t)

	// Unknown leases.
	d.Check("revoke unknown", revokeOp(424242)).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	d.Check("revoke id 0", revokeOp(0)).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	checkTTL(t, d, "timetolive unknown", timeToLiveOp(424242, false))
	checkTTL(t, d, "timetolive unknown with keys", timeToLiveOp(424242, true))
	d.Check("keepalive unknown", keepAliveOp(424242)).WantOK(t)

	// Keys on a lease, time-to-live with and without keys.
	putLease(t, d, "a/1", "x", 1000)
	putLease(t, d, "a/2", "x", 1000)
	putLease(t, d, "b/1", "x", 1000)
	putLease(t, d, "neg", "x", -7)
	checkTTL(t, d, "timetolive 1000", timeToLiveOp(1000, false))
	checkTTL(t, d, "timetolive 1000 with keys", timeToLiveOp(1000, true))
	checkTTL(t, d, "timetolive -7 with keys", timeToLiveOp(-7, true))
	checkTTL(t, d, "timetolive 1004 with keys (none)", timeToLiveOp(1004, true))
	checkTTL(t, d, "timetolive max TTL", timeToLiveOp(1005, false))

	// Keep-alive: one lease, several leases one at a time, several in flight, unknown ones
	// mixed in; TTLs and header revisions compared exactly.
	d.Check("keepalive 1000", keepAliveOp(1000)).WantOK(t)
	d.Check("keepalive many", keepAliveOp(1000, 1004, -7, 424242, 1005, 1000)).WantOK(t)
	d.Check("keepalive pipelined", keepAlivePipelinedOp(1001, 1004, 999, -7, 1000)).WantOK(t)

	// The list: soonest expiry first, not by id.
	d.Check("lease list", leasesOp()).WantOK(t)

	// Revoke: with keys it takes one revision, without keys none.
	revoke(t, d, 1004)
	d.Check("revision unchanged", rangeOp(&pb.RangeRequest{Key: []byte("a/1")})).WantOK(t)
	revoke(t, d, 1000)
	d.Check("keys of 1000 gone", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	d.Check("revoke twice", revokeOp(1000)).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	checkTTL(t, d, "timetolive revoked", timeToLiveOp(1000, true))
	d.Check("keepalive revoked", keepAliveOp(1000)).WantOK(t)
	d.Check("put with revoked lease", putOp(&pb.PutRequest{Key: []byte("late"), Value: []byte("x"), Lease: 1000})).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	d.Check("txn put with revoked lease", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{
		reqPut("late2", "x"),
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("late3"), Value: []byte("x"), Lease: 1000}}},
	}})).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	d.Check("ignore_lease on key without lease", putOp(&pb.PutRequest{Key: []byte("before"), Value: []byte("y"), IgnoreLease: true, PrevKv: true})).WantOK(t)
	d.Check("ignore_lease with a lease", putOp(&pb.PutRequest{Key: []byte("before"), Value: []byte("y"), IgnoreLease: true, Lease: 1005})).WantErr(t, rpctypes.ErrGRPCLeaseProvided)
	d.Check("lease list after revokes", leasesOp()).WantOK(t)
	d.Check("final state", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
}

// TestLeaseKeepAliveClient drives keep-alives through clientv3's own KeepAlive and
// KeepAliveOnce, as applications do.
func TestLeaseKeepAliveClient(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	grant(t, d, 77, 3)
	d.Check("KeepAliveOnce", func(ctx context.Context, c *clientv3.Client) (any, error) {
		r, err := c.KeepAliveOnce(ctx, 77)
		if err != nil {
			return nil, err
		}
		return &pb.LeaseKeepAliveResponse{Header: r.ResponseHeader, ID: int64(r.ID), TTL: r.TTL}, nil
	}).WantOK(t)
	d.Check("KeepAliveOnce unknown", func(ctx context.Context, c *clientv3.Client) (any, error) {
		_, err := c.KeepAliveOnce(ctx, 78)
		return nil, err
	}).WantErr(t, rpctypes.ErrLeaseNotFound)
	// KeepAlive keeps the 3s lease alive for 4s, then stops; the lease then expires.
	for _, s := range []harness.Server{d.Ref, d.Subj} {
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := s.Client().KeepAlive(ctx, 77)
		if err != nil {
			t.Fatalf("%s: KeepAlive: %v", s.Name(), err)
		}
		go func() {
			for range ch {
			}
		}()
		defer cancel()
	}
	time.Sleep(4 * time.Second)
	checkTTL(t, d, "alive after 4s of keep-alives", timeToLiveOp(77, false))
}
