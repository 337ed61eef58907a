package router

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard"
)

// txnIDs hands out transaction ids: a random 64-bit base per process, so
// ids do not repeat across restarts, then a counter.
type txnIDs struct{ next atomic.Uint64 }

func newTxnIDs() *txnIDs {
	t := &txnIDs{}
	t.next.Store(randomID() &^ 0xffffffff)
	return t
}

func (t *txnIDs) id() uint64 { return t.next.Add(1) }

// applyTimeout bounds how long a request already decided waits for its
// shards; it only fires if a shard is broken.
const applyTimeout = 60 * time.Second

// errRetry is returned by one attempt when the range table changed under it.
var errRetry = errors.New("range table changed")

// errNoLead is returned by one attempt that found a range without a leader
// on this node (a leadership is moving here), before anything of it could
// apply: the attempt is run again after a pause, for up to leaderWait.
var errNoLead = errors.New("range leader not here")

// retry runs attempt until it neither hits a range table change nor a
// range without its leader here.
func retry[T any](ctx context.Context, attempt func() (T, error)) (T, error) {
	deadline := time.Now().Add(leaderWait)
	for n := 0; ; n++ {
		resp, err := attempt()
		switch {
		case errors.Is(err, errRetry):
			// The range table changed (a split): the new range's replica
			// may take a moment to start.
			if time.Now().After(deadline) {
				return resp, rpctypes.ErrGRPCTimeout
			}
			if n >= 10 {
				select {
				case <-ctx.Done():
					return resp, toGRPC(ctx.Err())
				case <-time.After(2 * time.Millisecond):
				}
			}
			continue
		case errors.Is(err, errNoLead):
			if time.Now().After(deadline) {
				return resp, rpctypes.ErrGRPCNoLeader
			}
			select {
			case <-ctx.Done():
				return resp, toGRPC(ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		return resp, err
	}
}

// latchErr maps a Latch failure to what the attempt returns.
func latchErr(err error) error {
	switch {
	case errors.Is(err, shard.ErrRangeMoved):
		return errRetry
	case errors.Is(err, shard.ErrNotLeader):
		return errNoLead
	}
	return toGRPC(err)
}

// txnWork is one Txn being executed: its compares, the latches it needs on
// each shard, and what each shard answered.
type txnWork struct {
	req      *pb.TxnRequest
	txn      uint64
	view     *revision.View
	compares []*pb.Compare

	shards []*shardWork // in ascending key order
}

// shardWork is a txn's business with one shard.
type shardWork struct {
	desc  *raftcmdpb.RangeDesc
	s     rangeConn // the range's leader, here or on another member
	latch *shard.LatchRequest
	// compareIdx[i] is the index in work.compares of latch.Compares[i].
	compareIdx []int
	// deleteOps[i] names the op (by tree-order delete number) of latch.Deletes[i].
	deleteIdx []int
	res       *shard.LatchResult
	latched   bool

	ops     []*raftcmdpb.Op
	writes  bool // the shard holds an intent of the txn
	applied <-chan shard.Applied
}

// Txn runs a Txn (and, wrapped in one, every Put and DeleteRange).
func (r *Router) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	return retry(ctx, func() (*pb.TxnResponse, error) { return r.txnOnce(ctx, req) })
}

// treeWrites lists every Put and DeleteRange of the whole txn tree (both
// branches, all depths): latches cover whatever branch will run.
func treeWrites(t *pb.TxnRequest, puts *[]*pb.PutRequest, dels *[]*pb.DeleteRangeRequest) {
	for _, ops := range [][]*pb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil:
				*puts = append(*puts, op.GetRequestPut())
			case op.GetRequestDeleteRange() != nil:
				*dels = append(*dels, op.GetRequestDeleteRange())
			case op.GetRequestTxn() != nil:
				treeWrites(op.GetRequestTxn(), puts, dels)
			}
		}
	}
}

func (r *Router) txnOnce(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	w := &txnWork{req: req, txn: r.ids.id(), view: r.node.oracle.View(), compares: kvrules.TxnCompares(req)}
	var puts []*pb.PutRequest
	var dels []*pb.DeleteRangeRequest
	treeWrites(req, &puts, &dels)

	byID := map[uint64]*shardWork{}
	get := func(d *raftcmdpb.RangeDesc) *shardWork {
		sw, ok := byID[d.Id]
		if !ok {
			sw = &shardWork{desc: d, latch: &shard.LatchRequest{Txn: w.txn}}
			byID[d.Id] = sw
		}
		return sw
	}
	for _, d := range w.view.Ranges {
		for i, c := range w.compares {
			if sp, ok := clip(c.Key, c.RangeEnd, d); ok {
				sw := get(d)
				cc := proto.Clone(c).(*pb.Compare)
				cc.Key, cc.RangeEnd = sp.Key, sp.End
				sw.latch.Compares = append(sw.latch.Compares, cc)
				sw.compareIdx = append(sw.compareIdx, i)
				sw.latch.Reads = append(sw.latch.Reads, sp)
			}
		}
		for _, p := range puts {
			if !inRange(d, p.Key) {
				continue
			}
			sw := get(d)
			sw.latch.Writes = append(sw.latch.Writes, shard.Span{Key: p.Key})
			if p.Lease != 0 {
				sw.latch.LeaseReads = append(sw.latch.LeaseReads, p.Lease)
			}
			if p.IgnoreValue || p.IgnoreLease {
				sw.latch.Reads = append(sw.latch.Reads, shard.Span{Key: p.Key})
				sw.latch.Exists = append(sw.latch.Exists, p.Key)
			}
		}
		for i, dr := range dels {
			if sp, ok := clip(dr.Key, dr.RangeEnd, d); ok {
				sw := get(d)
				sw.latch.Writes = append(sw.latch.Writes, sp)
				sw.latch.Reads = append(sw.latch.Reads, sp)
				sw.latch.Deletes = append(sw.latch.Deletes, sp)
				sw.deleteIdx = append(sw.deleteIdx, i)
			}
		}
		if sw, ok := byID[d.Id]; ok {
			w.shards = append(w.shards, sw)
		}
	}

	// Latch and evaluate, shard by shard in key order.
	defer w.releaseLatched()
	for _, sw := range w.shards {
		var err error
		if sw.s, err = r.node.rangeConnFor(sw.desc); err != nil {
			return nil, err
		}
		res, err := sw.s.Latch(ctx, sw.latch)
		if err != nil {
			return nil, latchErr(err)
		}
		sw.res, sw.latched = res, true
	}

	// Decide the path on the evaluated state.
	parts := make([][]kvrules.ComparePart, len(w.compares))
	exists := map[string]bool{}
	liveDel := make([]bool, len(dels))
	for _, sw := range w.shards {
		for i, p := range sw.res.Compares {
			parts[sw.compareIdx[i]] = append(parts[sw.compareIdx[i]], p)
		}
		for i, k := range sw.latch.Exists {
			exists[string(k)] = sw.res.Exists[i]
		}
		for i, live := range sw.res.Deletes {
			if live {
				liveDel[sw.deleteIdx[i]] = true
			}
		}
	}
	results := make([]bool, len(w.compares))
	for i, c := range w.compares {
		results[i] = kvrules.CompareResult(c, parts[i])
	}
	plan, err := kvrules.TxnPlan(req, results)
	if err != nil {
		return nil, err
	}
	// The view must cover what the compares saw: a range led elsewhere may
	// have applied a revision this member's oracle has not applied yet, and
	// a read-only path read below it would not see what the compares saw.
	var seen int64
	for _, sw := range w.shards {
		seen = max(seen, sw.res.Rev)
	}
	view, err := r.viewAtLeast(ctx, seen)
	if err != nil {
		return nil, err
	}
	st := kvrules.State{
		CurrentRev: view.Rev, CompactRev: view.CompactRev,
		KeyExists:   func(k []byte) bool { return exists[string(k)] },
		LeaseExists: view.Leases.Has,
	}
	if err := plan.Check(st); err != nil {
		return nil, err
	}
	writes := false
	for _, op := range plan.Ops {
		if op.Put != nil || (op.Delete != nil && liveDel[delIndex(dels, op.Delete)]) {
			writes = true
		}
	}
	if !writes {
		if r.node.cluster {
			// Nothing commits on this path, so nothing vouches for the
			// evaluation above: the primary, or a range's leader, may have
			// lost its lead without knowing yet. Answer at a linearizable
			// read revision instead, with the compares and deletes evaluated
			// again there; another outcome means the first was stale.
			if view, err = r.readView(ctx, false); err != nil {
				return nil, err
			}
			if err := r.confirmReadOnly(ctx, w.compares, results, plan, view); err != nil {
				return nil, err
			}
		}
		return r.readOnlyPlan(ctx, plan, view)
	}
	return r.writePlan(w, plan, dels, liveDel)
}

// confirmReadOnly checks, at view's revision, that the compares come out as
// results and that the plan's deletes find nothing to delete; errRetry if
// not.
func (r *Router) confirmReadOnly(ctx context.Context, compares []*pb.Compare, results []bool, plan *kvrules.Plan, view *revision.View) error {
	for i, c := range compares {
		rr, err := r.rangeAt(ctx, &pb.RangeRequest{Key: c.Key, RangeEnd: c.RangeEnd}, view)
		if err != nil {
			return err
		}
		if kvrules.CompareResult(c, []kvrules.ComparePart{kvrules.EvalCompare(c, rr.Kvs)}) != results[i] {
			return errRetry
		}
	}
	for _, op := range plan.Ops {
		if op.Delete == nil {
			continue
		}
		rr, err := r.rangeAt(ctx, &pb.RangeRequest{Key: op.Delete.Key, RangeEnd: op.Delete.RangeEnd, CountOnly: true}, view)
		if err != nil {
			return err
		}
		if rr.Count > 0 {
			return errRetry
		}
	}
	return nil
}

// viewAtLeast returns this member's oracle view once it has applied
// revision rev, which is committed (a range applied it).
func (r *Router) viewAtLeast(ctx context.Context, rev int64) (*revision.View, error) {
	for {
		view := r.node.oracle.View()
		if view.Rev >= rev {
			return view, nil
		}
		select {
		case <-ctx.Done():
			return nil, toGRPC(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// delIndex finds a DeleteRange of the tree by identity.
func delIndex(dels []*pb.DeleteRangeRequest, d *pb.DeleteRangeRequest) int {
	for i, x := range dels {
		if x == d {
			return i
		}
	}
	return -1
}

func (w *txnWork) releaseLatched() {
	for _, sw := range w.shards {
		if sw.latched {
			sw.s.Release(w.txn)
		}
	}
}

// readOnlyPlan answers a path that changes nothing, at the current
// revision, while the latches still hold what the compares saw.
func (r *Router) readOnlyPlan(ctx context.Context, plan *kvrules.Plan, view *revision.View) (*pb.TxnResponse, error) {
	results := make([]*pb.ResponseOp, len(plan.Ops))
	for i, op := range plan.Ops {
		switch {
		case op.Range != nil:
			rr, err := r.rangeAt(ctx, op.Range, view)
			if err != nil {
				return nil, err
			}
			results[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case op.Delete != nil:
			results[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{}}}
		default:
			return nil, fmt.Errorf("router: read-only path holds a write")
		}
	}
	resp, err := plan.Response(results, view.Rev)
	if err != nil {
		return nil, err
	}
	resp.Header = r.header(view.Rev)
	return resp, nil
}

// writePlan proposes the intents, gets the revision and gathers the
// shards' results.
func (r *Router) writePlan(w *txnWork, plan *kvrules.Plan, dels []*pb.DeleteRangeRequest, liveDel []bool) (*pb.TxnResponse, error) {
	// Build each shard's ops, in execution order, sub = op index.
	writers := map[uint64]bool{}
	for _, op := range plan.Ops {
		sub := int32(op.Index)
		for _, sw := range w.shards {
			switch {
			case op.Put != nil:
				if inRange(sw.desc, op.Put.Key) {
					p := op.Put
					sw.ops = append(sw.ops, &raftcmdpb.Op{Sub: sub, Op: &raftcmdpb.Op_Put{Put: &raftcmdpb.PutOp{
						Key: p.Key, Value: p.Value, Lease: p.Lease, PrevKv: p.PrevKv, IgnoreValue: p.IgnoreValue, IgnoreLease: p.IgnoreLease}}})
					writers[sw.desc.Id] = true
				}
			case op.Delete != nil:
				for i, di := range sw.deleteIdx {
					if dels[di] == op.Delete && sw.res.Deletes[i] {
						sp := sw.latch.Deletes[i]
						sw.ops = append(sw.ops, &raftcmdpb.Op{Sub: sub, Op: &raftcmdpb.Op_Delete{Delete: &raftcmdpb.DeleteOp{
							Key: sp.Key, End: sp.End, PrevKv: op.Delete.PrevKv}}})
						writers[sw.desc.Id] = true
					}
				}
			}
		}
	}
	// Ranges run inside the intents of the shards that write (they must see
	// the txn's earlier writes there); elsewhere they are read at the
	// revision afterwards.
	for _, op := range plan.Ops {
		if op.Range == nil {
			continue
		}
		for _, sw := range w.shards {
			if !writers[sw.desc.Id] {
				continue
			}
			if sp, ok := clip(op.Range.Key, op.Range.RangeEnd, sw.desc); ok {
				rq := proto.Clone(op.Range).(*pb.RangeRequest)
				rq.Key, rq.RangeEnd = sp.Key, sp.End
				b, _ := proto.Marshal(rq)
				sw.ops = insertBySub(sw.ops, &raftcmdpb.Op{Sub: int32(op.Index), Op: &raftcmdpb.Op_Range{Range: b}})
			}
		}
	}

	// From here on the request runs to its end whatever the client does.
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	for _, sw := range w.shards {
		sw.writes = writers[sw.desc.Id]
	}
	rev, perShard, err := r.commit(ctx, w, revision.DecideRequest{RequireLeases: plan.Leases()})
	if err != nil {
		return nil, err
	}

	view := r.node.oracle.View()
	results := make([]*pb.ResponseOp, len(plan.Ops))
	for _, op := range plan.Ops {
		sub := int32(op.Index)
		switch {
		case op.Put != nil:
			pr := &pb.PutResponse{}
			for _, sw := range w.shards {
				if res, ok := perShard[sw.desc.Id][sub]; ok {
					pr.PrevKv = res.Prev
				}
			}
			results[op.Index] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: pr}}
		case op.Delete != nil:
			dr := &pb.DeleteRangeResponse{}
			for _, sw := range w.shards {
				if res, ok := perShard[sw.desc.Id][sub]; ok {
					dr.Deleted += int64(len(res.Deleted))
					if op.Delete.PrevKv {
						dr.PrevKvs = append(dr.PrevKvs, res.Deleted...)
					}
				}
			}
			results[op.Index] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}}
		case op.Range != nil:
			var parts []kvrules.RangePart
			for _, d := range w.view.Ranges {
				sp, ok := clip(op.Range.Key, op.Range.RangeEnd, d)
				if !ok {
					continue
				}
				if res, ok := perShard[d.Id][sub]; ok {
					parts = append(parts, res.Range)
					continue
				}
				part, err := r.readPart(ctx, d, sp, readOptions(op.Range), readRevOf(op.Range, rev), view)
				if err != nil {
					return nil, err
				}
				parts = append(parts, part)
			}
			results[op.Index] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: kvrules.MergeRange(op.Range, parts)}}
		}
	}
	resp, err := plan.Response(results, rev-1)
	if err != nil {
		return nil, err
	}
	resp.Header = r.header(rev)
	return resp, nil
}

// commit proposes the ops of every shard marked writes as intents, asks
// the oracle for the revision once all are durable (d gets the txn and its
// ranges), lets the other latched shards go, and collects each writing
// shard's results by sub. On error before the decision the txn is aborted;
// the caller's deferred releaseLatched drops whatever is still held.
func (r *Router) commit(ctx context.Context, w *txnWork, d revision.DecideRequest) (int64, map[uint64]map[int32]shard.OpResult, error) {
	d.Txn = w.txn
	d.Speculative = r.node.speculative
	var commits []<-chan error
	for _, sw := range w.shards {
		if !sw.writes {
			continue
		}
		d.Ranges = append(d.Ranges, sw.desc.Id)
		d.Generations = append(d.Generations, sw.desc.Generation)
		var c <-chan error
		c, sw.applied = sw.s.Propose(w.txn, sw.ops, d.Speculative)
		commits = append(commits, c)
	}
	if d.Speculative {
		// The log store writes the decision no earlier than the intents.
		commits = nil
	}
	for _, c := range commits {
		var err error
		select {
		case err = <-c:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			// Abort so that no intent of it ever applies; once that is
			// certain, an attempt that lost its range's leader runs again.
			_, aerr := r.node.oracle.Resolve(ctx, w.txn)
			// (Raft drops proposals while the range's lead is handed over.)
			lostLead := errors.Is(err, shard.ErrNotLeader) || errors.Is(err, shard.ErrLeaderChanged) || errors.Is(err, raft.ErrProposalDropped)
			switch {
			case errors.Is(aerr, revision.ErrAborted) && lostLead:
				return 0, nil, errNoLead
			case aerr == nil || errors.Is(aerr, revision.ErrAborted):
				return 0, nil, toGRPC(err)
			}
			return 0, nil, rpctypes.ErrGRPCLeaderChanged // the outcome is unknown
		}
	}
	rev, err := r.node.oracle.Decide(ctx, d)
	if errors.Is(err, revision.ErrNotLeader) || errors.Is(err, raft.ErrProposalDropped) {
		// The oracle lost its lead with the decision in flight: ask the
		// new leader what became of it.
		rev, err = r.node.oracle.Resolve(ctx, w.txn)
		switch {
		case errors.Is(err, revision.ErrAborted):
			return 0, nil, errNoLead // certain never to apply: run it again
		case err != nil:
			err = revision.ErrNotLeader
		}
	}
	if errors.Is(err, revision.ErrRangeChanged) {
		return 0, nil, errRetry // aborted: run it again on the new table
	}
	if err != nil {
		return 0, nil, toGRPC(err)
	}
	// Shards that only read may let go now: the revision is fixed.
	for _, sw := range w.shards {
		if !sw.writes && sw.latched {
			sw.s.Release(w.txn)
			sw.latched = false
		}
	}
	perShard := map[uint64]map[int32]shard.OpResult{}
	for _, sw := range w.shards {
		if !sw.writes {
			continue
		}
		var a shard.Applied
		select {
		case a = <-sw.applied:
		case <-ctx.Done():
			return 0, nil, toGRPC(ctx.Err())
		}
		sw.latched = false // released by the shard on apply
		if a.Err != nil {
			return 0, nil, toGRPC(a.Err)
		}
		if a.Rev != rev {
			return 0, nil, fmt.Errorf("router: shard %d applied txn at %d, oracle said %d", sw.desc.Id, a.Rev, rev)
		}
		m := map[int32]shard.OpResult{}
		for _, res := range a.Results {
			m[res.Sub] = res
		}
		perShard[sw.desc.Id] = m
	}
	return rev, perShard, nil
}

func readRevOf(rq *pb.RangeRequest, rev int64) int64 {
	if rq.Revision > 0 {
		return rq.Revision
	}
	return rev
}

func insertBySub(ops []*raftcmdpb.Op, op *raftcmdpb.Op) []*raftcmdpb.Op {
	i := len(ops)
	for i > 0 && ops[i-1].Sub > op.Sub {
		i--
	}
	ops = append(ops, nil)
	copy(ops[i+1:], ops[i:])
	ops[i] = op
	return ops
}

// Put runs a Put as a one-op Txn.
func (r *Router) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	t, err := r.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: req}}}})
	if err != nil {
		return nil, err
	}
	resp := t.Responses[0].GetResponsePut()
	resp.Header = t.Header
	return resp, nil
}

// DeleteRange runs a DeleteRange as a one-op Txn.
func (r *Router) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	t, err := r.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: req}}}})
	if err != nil {
		return nil, err
	}
	resp := t.Responses[0].GetResponseDeleteRange()
	resp.Header = t.Header
	return resp, nil
}

// toGRPC maps internal errors to etcd's.
func toGRPC(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, context.Canceled):
		return rpctypes.ErrGRPCCanceled
	case errors.Is(err, revision.ErrLeaseNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, revision.ErrAborted):
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, revision.ErrNotLeader), errors.Is(err, shard.ErrLeaderChanged), errors.Is(err, raft.ErrProposalDropped):
		return rpctypes.ErrGRPCLeaderChanged
	case errors.Is(err, shard.ErrNotLeader):
		return rpctypes.ErrGRPCNoLeader
	case errors.Is(err, revision.ErrCompactedRev):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, revision.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	}
	return mapStoreErr(err)
}
