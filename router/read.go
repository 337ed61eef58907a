package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/mosaic-kv/mosaic/leaseactor"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// Router serves the client APIs of one node.
type Router struct {
	node            *Node
	fwd             forwarder
	fwdStreams      fwdStreams // forwarded writes' streams to the primary (forwardstream.go)
	lessorMu        sync.Mutex
	lessor          *leaseactor.Lessor // nil while this node is not the primary
	lessorCfg       leaseactor.Config
	stopWatch       chan struct{}
	watchDone       chan struct{}
	minLeaseTTL     int64
	ids             *txnIDs
	maxRequestBytes int
	maxTxnOps       int
	name            string
	clientURLs      []string
	peerURLs        []string

	watchProgressNotifyInterval time.Duration
	electionTimeout             time.Duration
}

// Options configures a Router.
type Options struct {
	MaxRequestBytes int
	MaxTxnOps       int
	Name            string
	ClientURLs      []string
	PeerURLs        []string
	// HeartbeatInterval and ElectionTimeout set the minimum lease TTL as in
	// etcd (zero: etcd's defaults).
	HeartbeatInterval, ElectionTimeout time.Duration
	// LeaseCheckpoints: long leases record their remaining TTL every
	// LeaseCheckpointInterval (zero: 5 minutes), as etcd's LeaseCheckpoint
	// feature gate; off, a new lease primary or a restart gives every
	// lease its full TTL again.
	LeaseCheckpoints        bool
	LeaseCheckpointInterval time.Duration
	// WatchProgressNotifyInterval is --watch-progress-notify-interval.
	WatchProgressNotifyInterval time.Duration
}

// New returns a Router over an open node and starts its lease primary
// (in a cluster, whenever this node leads the oracle).
func New(n *Node, o Options) (*Router, error) {
	r := &Router{node: n, ids: newTxnIDs(), maxRequestBytes: o.MaxRequestBytes, maxTxnOps: o.MaxTxnOps,
		name: o.Name, clientURLs: o.ClientURLs, peerURLs: o.PeerURLs,
		minLeaseTTL:                 minLeaseTTLFor(o.HeartbeatInterval, o.ElectionTimeout),
		watchProgressNotifyInterval: o.WatchProgressNotifyInterval,
		electionTimeout:             o.ElectionTimeout}
	if r.electionTimeout <= 0 {
		r.electionTimeout = time.Second // etcd's default
	}
	r.lessorCfg = leaseactor.Config{
		Revoke: func(ctx context.Context, id int64) error {
			_, err := r.RevokeLease(ctx, id)
			if errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
				return leaseactor.ErrNotFound
			}
			return err
		},
		Checkpoint:         n.oracle.CheckpointLeases,
		CheckpointInterval: o.LeaseCheckpointInterval,
		NoCheckpoints:      !o.LeaseCheckpoints,
		Extend:             o.ElectionTimeout, // etcd's Promote(ElectionTimeout)
		Logger:             n.lg,
	}
	if !n.cluster {
		if err := r.startLessor(); err != nil {
			return nil, err
		}
		return r, nil
	}
	r.stopWatch, r.watchDone = make(chan struct{}), make(chan struct{})
	go r.followPrimary()
	return r, nil
}

// startLessor starts the lease primary from the oracle's leases (each
// with its checkpointed remaining TTL, extended as etcd's new leader does).
func (r *Router) startLessor() error {
	l, err := leaseactor.Start(r.node.sys, r.lessorCfg, r.node.oracle.View().Leases)
	if err != nil {
		return err
	}
	r.lessorMu.Lock()
	r.lessor = l
	r.lessorMu.Unlock()
	return nil
}

func (r *Router) stopLessor() {
	r.lessorMu.Lock()
	l := r.lessor
	r.lessor = nil
	r.lessorMu.Unlock()
	if l != nil {
		l.Stop()
	}
}

// leases is the lease primary, or etcd's "not leader" on a node that is
// not (or no longer) the primary.
func (r *Router) leases() (*leaseactor.Lessor, error) {
	r.lessorMu.Lock()
	defer r.lessorMu.Unlock()
	if r.lessor == nil {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	return r.lessor, nil
}

// followPrimary runs the lease primary exactly while this node leads the
// oracle: only the primary expires leases.
func (r *Router) followPrimary() {
	defer close(r.watchDone)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	running := false
	for {
		select {
		case <-r.stopWatch:
			return
		case <-t.C:
		}
		leader := r.node.oracle.View().Leader
		switch {
		case leader && !running:
			if err := r.startLessor(); err != nil {
				r.node.lg.Error("starting the lease primary failed", zap.Error(err))
				continue
			}
			running = true
		case !leader && running:
			r.stopLessor()
			running = false
		}
	}
}

// Close stops the router's lease primary.
func (r *Router) Close() {
	if r.stopWatch != nil {
		close(r.stopWatch)
		<-r.watchDone
	}
	r.stopLessor()
	r.fwdStreams.close()
	r.fwd.close()
}

// readView is the view a read is served at: for a serializable read, this
// node's latest; for a linearizable one in a cluster, one at least as new
// as the revision the oracle's leader confirms (every write acknowledged
// before the read began is in it).
func (r *Router) readView(ctx context.Context, serializable bool) (*revision.View, error) {
	if serializable || !r.node.cluster {
		return r.node.oracle.View(), nil
	}
	if r.isLearner() {
		return nil, rpctypes.ErrGRPCNotSupportedForLearner
	}
	rctx, cancel := context.WithTimeout(ctx, leaderWait+2*time.Second)
	defer cancel()
	if _, err := r.node.oracle.ReadRev(rctx); err != nil {
		if errors.Is(err, revision.ErrNotLeader) {
			return nil, rpctypes.ErrGRPCNoLeader
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, rpctypes.ErrGRPCTimeout
		}
		return nil, toGRPC(err)
	}
	return r.node.oracle.View(), nil
}

// header is etcd's response header at revision rev.
func (r *Router) header(rev int64) *pb.ResponseHeader {
	v := r.node.oracle.View()
	return &pb.ResponseHeader{ClusterId: v.ClusterID, MemberId: v.MemberID, Revision: rev, RaftTerm: v.Term}
}

// Range serves a Range. Linearizable and serializable reads take the same
// path on a single node: the oracle's published view is current for every
// write acknowledged so far.
func (r *Router) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := kvrules.CheckRange(req); err != nil {
		return nil, err
	}
	view, err := r.readView(ctx, req.Serializable)
	if err != nil {
		return nil, err
	}
	if err := kvrules.CheckRangeState(req, kvrules.State{CurrentRev: view.Rev, CompactRev: view.CompactRev}); err != nil {
		return nil, err
	}
	resp, err := r.rangeAt(ctx, req, view)
	if err != nil {
		return nil, err
	}
	resp.Header = r.header(view.Rev)
	return resp, nil
}

// rangeAt reads req across ranges at its revision (or view.Rev) and merges
// the parts as etcd would answer.
func (r *Router) rangeAt(ctx context.Context, req *pb.RangeRequest, view *revision.View) (*pb.RangeResponse, error) {
	rev := req.Revision
	if rev <= 0 {
		rev = view.Rev
	}
	parts, err := r.readParts(ctx, req.Key, req.RangeEnd, readOptions(req), rev, view)
	if err != nil {
		return nil, err
	}
	return kvrules.MergeRange(req, parts), nil
}

// readParts reads the part of [key, end) (etcd's conventions) that each
// range of view holds, in key order.
func (r *Router) readParts(ctx context.Context, key, end []byte, o mvcc.ReadOptions, rev int64, view *revision.View) ([]kvrules.RangePart, error) {
	var parts []kvrules.RangePart
	for _, d := range view.Ranges {
		sp, ok := clip(key, end, d)
		if !ok {
			continue
		}
		part, err := r.readPart(ctx, d, sp, o, rev, view)
		if err != nil {
			return nil, err
		}
		parts = append(parts, part)
	}
	return parts, nil
}

// readOptions is what each range's part of a Range reads.
func readOptions(req *pb.RangeRequest) mvcc.ReadOptions {
	return mvcc.ReadOptions{
		Limit:     kvrules.ShardFetchLimit(req),
		KeysOnly:  !kvrules.ShardNeedsValues(req),
		CountOnly: req.CountOnly,
	}
}

// readPart reads one range's part of a read at rev, once the range has
// applied everything the oracle had assigned to it in view.
func (r *Router) readPart(ctx context.Context, d *raftcmdpb.RangeDesc, sp shard.Span, o mvcc.ReadOptions, rev int64, view *revision.View) (kvrules.RangePart, error) {
	for {
		// The table may move the range's replica away from here meanwhile.
		if cur := r.node.oracle.View().RangeByID(d.Id); r.node.remote(d) || (cur != nil && r.node.remote(cur)) {
			part, err := r.node.readRemote(ctx, d, sp, rev, min(view.LastRev[d.Id], rev), o)
			if errors.Is(err, errRetry) {
				return r.readResplit(ctx, sp, o, rev)
			}
			return part, mapStoreErr(err)
		}
		wctx, cancel := context.WithTimeout(ctx, behindWait)
		err := r.waitApplied(wctx, d, rev, view)
		cancel()
		switch {
		case err == nil:
			part, err := r.readSpan(d, sp, rev, o)
			if err == nil && !r.node.stillSpans(d.Id, spanPB(sp)) {
				// Split while the read waited: what it read of the keys
				// that left may lack writes (see stillSpans).
				return r.readResplit(ctx, sp, o, rev)
			}
			return part, err
		case ctx.Err() != nil:
			return kvrules.RangePart{}, toGRPC(ctx.Err())
		case wctx.Err() == nil:
			return kvrules.RangePart{}, err
		}
		if !r.node.cluster {
			continue
		}
		// The replica here is behind: another one may not be (see lag.go).
		part, err := r.node.readRemote(ctx, d, sp, rev, min(view.LastRev[d.Id], rev), o)
		switch {
		case errors.Is(err, errRetry):
			return r.readResplit(ctx, sp, o, rev)
		case err == nil:
			return part, nil
		case ctx.Err() != nil:
			return kvrules.RangePart{}, toGRPC(ctx.Err())
		case !errors.Is(err, rpctypes.ErrGRPCTimeout):
			return kvrules.RangePart{}, mapStoreErr(err)
		}
		// No other replica answered in time either: wait here again.
	}
}

// readResplit reads a span whose range split since the view was taken:
// part by part, over the ranges of a newer view, concatenated.
func (r *Router) readResplit(ctx context.Context, sp shard.Span, o mvcc.ReadOptions, rev int64) (kvrules.RangePart, error) {
	select {
	case <-ctx.Done():
		return kvrules.RangePart{}, toGRPC(ctx.Err())
	case <-time.After(10 * time.Millisecond):
	}
	var out kvrules.RangePart
	parts, err := r.readParts(ctx, sp.Key, sp.End, o, rev, r.node.oracle.View())
	if err != nil {
		return out, err
	}
	for _, part := range parts {
		out.KVs = append(out.KVs, part.KVs...)
		out.Count += part.Count
	}
	return out, nil
}

// waitApplied waits until range d has applied everything the oracle had
// assigned to it in view, up to rev.
//
// A range of the view with no replica here yet (a split's new range starts
// on a member once it caught up to the split; a member behind may not be
// there) is waited for: reading its keys from the store before would read
// the old range's stale copy.
func (r *Router) waitApplied(ctx context.Context, d *raftcmdpb.RangeDesc, rev int64, view *revision.View) error {
	s := r.node.shard(d.Id)
	if s == nil {
		if err := r.node.waitShard(ctx, d.Id); err != nil {
			return toGRPC(err)
		}
		s = r.node.shard(d.Id)
	}
	if err := s.WaitApplied(ctx, min(view.LastRev[d.Id], rev)); err != nil {
		return toGRPC(err)
	}
	return nil
}

// readSpan reads a span the range has applied far enough for.
func (r *Router) readSpan(d *raftcmdpb.RangeDesc, sp shard.Span, rev int64, o mvcc.ReadOptions) (kvrules.RangePart, error) {
	var part kvrules.RangePart
	err := r.node.store.View(func(rd *mvcc.Reader) error {
		res, err := rd.Range(sp.Key, sp.End, rev, o)
		part = kvrules.RangePart{KVs: res.KVs, Count: res.Count}
		return err
	})
	if err != nil {
		return part, mapStoreErr(err)
	}
	return part, nil
}

// leaseKeys lists range d's keys attached to a lease, from its replica
// here or on another member.
func (n *Node) leaseKeys(ctx context.Context, d *raftcmdpb.RangeDesc, lease int64) ([][]byte, error) {
	if n.remote(d) {
		return n.leaseKeysRemote(ctx, d, lease)
	}
	if s := n.shard(d.Id); s != nil {
		return s.LeaseKeys(ctx, lease)
	}
	return nil, nil // starting here: it holds nothing yet
}

func mapStoreErr(err error) error {
	if errors.Is(err, mvcc.ErrCompacted) {
		return rpctypes.ErrGRPCCompacted
	}
	return err
}
