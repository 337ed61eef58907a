package tests

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

func leaseOp(fn func(ctx context.Context, l pb.LeaseClient) (any, error)) harness.Op {
	return func(ctx context.Context, c *clientv3.Client) (any, error) {
		return fn(ctx, pb.NewLeaseClient(c.ActiveConnection()))
	}
}

// TestKVWithLeases covers the KV behaviour that needs granted leases: puts attached to a
// lease, ignore_lease, LEASE compares, and revocation deleting the attached keys at one
// revision. Leases are granted with explicit ids so both servers use the same ones.
func TestKVWithLeases(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	grant := func(id int64) {
		d.Check(fmt.Sprintf("grant %d", id), leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
			return l.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 600})
		})).WantOK(t)
	}
	grant(100)
	grant(200)
	d.Check("grant existing id", leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 100, TTL: 600})
	})).WantErr(t, rpctypes.ErrGRPCLeaseExist)

	for _, tc := range []struct {
		name string
		req  *pb.PutRequest
		want error
	}{
		{"put with lease", &pb.PutRequest{Key: []byte("l1"), Value: []byte("a"), Lease: 100}, nil},
		{"put with other lease", &pb.PutRequest{Key: []byte("l2"), Value: []byte("a"), Lease: 200, PrevKv: true}, nil},
		{"move key to lease", &pb.PutRequest{Key: []byte("l2"), Value: []byte("b"), Lease: 100, PrevKv: true}, nil},
		{"ignore_lease keeps lease", &pb.PutRequest{Key: []byte("l1"), Value: []byte("c"), IgnoreLease: true, PrevKv: true}, nil},
		{"ignore_value keeps lease", &pb.PutRequest{Key: []byte("l1"), IgnoreValue: true, Lease: 100, PrevKv: true}, nil},
		{"put without lease detaches", &pb.PutRequest{Key: []byte("l3"), Value: []byte("a"), Lease: 200}, nil},
		{"detach", &pb.PutRequest{Key: []byte("l3"), Value: []byte("b"), PrevKv: true}, nil},
		{"unknown lease", &pb.PutRequest{Key: []byte("l1"), Value: []byte("x"), Lease: 300}, rpctypes.ErrGRPCLeaseNotFound},
	} {
		o := d.Check(tc.name, putOp(tc.req))
		if tc.want == nil {
			o.WantOK(t)
		} else {
			o.WantErr(t, tc.want)
		}
	}
	for _, result := range []pb.Compare_CompareResult{pb.Compare_EQUAL, pb.Compare_GREATER, pb.Compare_LESS, pb.Compare_NOT_EQUAL} {
		for _, operand := range []int64{0, 100, 150, 200} {
			for _, key := range []string{"l1", "l3", "missing"} {
				d.Check(fmt.Sprintf("lease compare %s %s %d", key, result, operand), txnOp(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpOf(key, "", pb.Compare_LEASE, result, operand, "")},
					Success: []*pb.RequestOp{reqRange("l", "m")},
				})).WantOK(t)
			}
		}
	}
	d.Check("txn put with lease", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("l4"), Value: []byte("t"), Lease: 200}}}}})).WantOK(t)
	checkTTL(t, d, "time to live with keys", timeToLiveOp(100, true))
	d.Check("revoke 100", leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 100})
	})).WantOK(t)
	d.Check("revoke 100 again", leaseOp(func(ctx context.Context, l pb.LeaseClient) (any, error) {
		return l.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 100})
	})).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	d.Check("put with revoked lease", putOp(&pb.PutRequest{Key: []byte("l5"), Value: []byte("x"), Lease: 100})).WantErr(t, rpctypes.ErrGRPCLeaseNotFound)
	rev := currentRev(t, d)
	for at := int64(1); at <= rev; at++ {
		d.Check(fmt.Sprintf("history at %d", at), rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: at})).WantOK(t)
	}
}
