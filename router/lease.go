package router

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sort"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/mosaic-kv/mosaic/leaseactor"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard"
)

// maxLeaseTTL is etcd's largest lease TTL (seconds).
const maxLeaseTTL = 9000000000

// leaseServer is etcd's Lease service.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	r *Router
}

func (s *leaseServer) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.LeaseGrantResponse, error) {
		return pb.NewLeaseClient(c).LeaseGrant(ctx, req)
	}); ok {
		return resp, err
	}
	return s.r.LeaseGrant(ctx, req)
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.LeaseRevokeResponse, error) {
		return pb.NewLeaseClient(c).LeaseRevoke(ctx, req)
	}); ok {
		return resp, err
	}
	rev, err := s.r.RevokeLease(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	return &pb.LeaseRevokeResponse{Header: s.r.header(rev)}, nil
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.LeaseTimeToLiveResponse, error) {
		return pb.NewLeaseClient(c).LeaseTimeToLive(ctx, req)
	}); ok {
		return resp, err
	}
	return s.r.LeaseTimeToLive(ctx, req)
}

// LeaseLeases lists the leases soonest to expire first, as etcd's lessor
// does (a lease the lease actor does not track yet sorts last).
func (s *leaseServer) LeaseLeases(ctx context.Context, req *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.LeaseLeasesResponse, error) {
		return pb.NewLeaseClient(c).LeaseLeases(ctx, req)
	}); ok {
		return resp, err
	}
	lessor, err := s.r.leases()
	if err != nil {
		return nil, err
	}
	expiries, err := lessor.Expiries(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	v := s.r.node.oracle.View()
	all := v.Leases.All()
	resp := &pb.LeaseLeasesResponse{Header: s.r.header(v.Rev), Leases: make([]*pb.LeaseStatus, 0, len(all))}
	for _, l := range all {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: l.Id})
	}
	expiry := func(id int64) (time.Time, bool) { t, ok := expiries[id]; return t, ok }
	sort.Slice(resp.Leases, func(i, j int) bool {
		a, aok := expiry(resp.Leases[i].ID)
		b, bok := expiry(resp.Leases[j].ID)
		switch {
		case aok && bok && !a.Equal(b):
			return a.Before(b)
		case aok != bok:
			return aok
		}
		return resp.Leases[i].ID < resp.Leases[j].ID
	})
	return resp, nil
}

// LeaseKeepAlive renews each lease asked for on the stream; an unknown or
// expired lease is answered with TTL 0, as etcd does. The header is taken
// before the renewal, so its revision never passes a revoke that follows.
func (s *leaseServer) LeaseKeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	if conn, err := s.r.primary(stream.Context()); err != nil || conn != nil {
		if err != nil {
			return err
		}
		return s.r.forwardKeepAlive(conn, stream)
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &pb.LeaseKeepAliveResponse{ID: req.ID, Header: s.r.header(s.r.node.oracle.View().Rev)}
		lessor, err := s.r.leases()
		if err != nil {
			return err
		}
		ttl, err := lessor.Renew(stream.Context(), req.ID)
		switch {
		case errors.Is(err, leaseactor.ErrNotFound):
			ttl = 0
		case err != nil:
			return toGRPC(err)
		}
		resp.TTL = ttl
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// LeaseGrant grants a lease with the asked or a generated id; TTLs below
// the minimum are raised to it, as etcd does.
func (r *Router) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	id := req.ID
	for id == 0 {
		id = rand.Int64() // positive, like etcd's generated ids
		if r.node.oracle.View().Leases.Has(id) {
			id = 0
		}
	}
	if req.TTL > maxLeaseTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	ttl := max(req.TTL, r.minLeaseTTL)
	// Not the client's context: a grant applied after the client gave up
	// must still be tracked (and expire).
	cctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	err := r.node.oracle.Grant(cctx, &raftcmdpb.Lease{Id: id, Ttl: ttl})
	if errors.Is(err, revision.ErrLeaseExists) {
		return nil, rpctypes.ErrGRPCLeaseExist
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	if l, err := r.leases(); err == nil {
		l.Granted(id, ttl)
	}
	return &pb.LeaseGrantResponse{Header: r.header(r.node.oracle.View().Rev), ID: id, TTL: ttl}, nil
}

// LeaseTimeToLive answers a lease's remaining and granted TTL, and its keys
// when asked; TTL -1 for a lease that does not exist.
func (r *Router) LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	v := r.node.oracle.View()
	l, ok := v.Leases.Get(req.ID)
	if !ok {
		return &pb.LeaseTimeToLiveResponse{Header: r.header(v.Rev), ID: req.ID, TTL: -1}, nil
	}
	resp := &pb.LeaseTimeToLiveResponse{Header: r.header(v.Rev), ID: req.ID, GrantedTTL: l.Ttl, TTL: l.Ttl}
	lessor, err := r.leases()
	if err != nil {
		return nil, err
	}
	left, _, err := lessor.Remaining(ctx, req.ID)
	switch {
	case err == nil:
		resp.TTL = int64(left.Seconds())
	case !errors.Is(err, leaseactor.ErrNotFound):
		return nil, toGRPC(err)
	}
	if req.Keys {
		resp.Keys = [][]byte{}
		for _, d := range v.Ranges {
			keys, err := r.node.leaseKeys(ctx, d, req.ID)
			if err != nil {
				return nil, toGRPC(err)
			}
			resp.Keys = append(resp.Keys, keys...)
		}
	}
	return resp, nil
}

// RevokeLease deletes every key attached to a lease, on whatever ranges,
// at one revision, and the lease with it (a lease with no key goes
// without taking a revision). It returns the revision to report.
func (r *Router) RevokeLease(ctx context.Context, id int64) (int64, error) {
	rev, err := retry(ctx, func() (int64, error) { return r.revokeOnce(ctx, id) })
	if l, lerr := r.leases(); err == nil && lerr == nil {
		l.Revoked(id)
	}
	return rev, err
}

func (r *Router) revokeOnce(ctx context.Context, id int64) (int64, error) {
	view := r.node.oracle.View()
	if !view.Leases.Has(id) {
		return 0, rpctypes.ErrGRPCLeaseNotFound
	}
	w := &txnWork{txn: r.ids.id(), view: view}
	defer w.releaseLatched()
	// Latch the lease and its keys on every range, in key order.
	var keys [][]byte
	for _, d := range view.Ranges {
		sw := &shardWork{desc: d, latch: &shard.LatchRequest{Txn: w.txn, Revoke: id}}
		var err error
		if sw.s, err = r.node.rangeConnFor(d); err != nil {
			return 0, err
		}
		w.shards = append(w.shards, sw)
		res, err := sw.s.Latch(ctx, sw.latch)
		if err != nil {
			return 0, latchErr(err)
		}
		sw.latched = true
		for _, k := range res.LeaseKeys {
			sw.ops = append(sw.ops, &raftcmdpb.Op{Sub: int32(len(keys)), Op: &raftcmdpb.Op_Delete{Delete: &raftcmdpb.DeleteOp{Key: k}}})
			keys = append(keys, k)
		}
		sw.writes = len(sw.ops) > 0
	}
	// A split since the view was read could hide keys in a new range.
	if now := r.node.oracle.View(); len(now.Ranges) != len(view.Ranges) {
		return 0, errRetry
	}
	cctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	if len(keys) == 0 {
		if err := r.node.oracle.RevokeEmpty(cctx, id); err != nil {
			return 0, toGRPC(err)
		}
		return r.node.oracle.View().Rev, nil
	}
	rev, _, err := r.commit(cctx, w, revision.DecideRequest{RevokeLease: id})
	return rev, err
}

// minLeaseTTLFor is etcd's minimum lease TTL: one and a half election
// timeouts, in whole seconds rounded up.
func minLeaseTTLFor(heartbeat, election time.Duration) int64 {
	if heartbeat <= 0 || election <= 0 {
		return 2
	}
	ticks := int64(election / heartbeat)
	min := time.Duration(3*ticks/2) * heartbeat
	secs := int64(min / time.Second)
	if min%time.Second != 0 {
		secs++
	}
	return secs
}
