package router

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// rangeServer serves the range service (proto/rangepb) on the peer
// listener: other members reach this member's replicas through it.
type rangeServer struct {
	rangepb.UnimplementedRangesServer
	n *Node
}

// behindWait bounds how long a read waits for this replica to apply far
// enough before it answers BEHIND (the caller tries another replica).
const behindWait = time.Second

// Txn runs one transaction's business with one range (see range.proto).
func (s *rangeServer) Txn(stream rangepb.Ranges_TxnServer) error {
	step, err := stream.Recv()
	if err != nil {
		return err
	}
	l := step.GetLatch()
	if l == nil {
		return status.Error(codes.InvalidArgument, "a transaction's first step must be its latch")
	}
	sh := s.n.shard(step.RangeId)
	if sh == nil {
		return stream.Send(&rangepb.TxnReply{Error: s.noReplica(step.RangeId)})
	}
	req, err := latchFromPB(step.Txn, l)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := sh.Latch(stream.Context(), req)
	if err != nil {
		return stream.Send(&rangepb.TxnReply{Error: s.errPB(err, sh)})
	}
	if err := stream.Send(&rangepb.TxnReply{Reply: &rangepb.TxnReply_Latched{Latched: latchResultPB(res)}}); err != nil {
		sh.Release(step.Txn)
		return err
	}
	// A release, or a stream that ends, lets the latches go.
	next, err := stream.Recv()
	if err != nil || next.GetPropose() == nil {
		sh.Release(step.Txn)
		return err
	}
	ops := make([]*raftcmdpb.Op, len(next.GetPropose().Ops))
	for i, b := range next.GetPropose().Ops {
		ops[i] = &raftcmdpb.Op{}
		if err := proto.Unmarshal(b, ops[i]); err != nil {
			sh.Release(step.Txn)
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	// From here the intent's fate is the oracle's: a stream that ends
	// only stops the answers.
	committed, applied := sh.Propose(step.Txn, ops, false)
	select {
	case err = <-committed:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	if err != nil {
		return stream.Send(&rangepb.TxnReply{Error: s.errPB(err, sh)})
	}
	if err := stream.Send(&rangepb.TxnReply{Reply: &rangepb.TxnReply_Committed{Committed: true}}); err != nil {
		return err
	}
	var a shard.Applied
	select {
	case a = <-applied:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	if a.Err != nil {
		return stream.Send(&rangepb.TxnReply{Error: s.errPB(a.Err, sh)})
	}
	return stream.Send(&rangepb.TxnReply{Reply: &rangepb.TxnReply_Applied{Applied: appliedPB(a)}})
}

// replica is this member's replica of a range, applied to minApplied, or
// the error to answer.
func (s *rangeServer) replica(ctx context.Context, id uint64, sp *rangepb.Span, minApplied int64) (*shard.Shard, *rangepb.Error) {
	sh := s.n.shard(id)
	if sh == nil {
		return nil, s.noReplica(id)
	}
	if !spanInside(sh.Desc(), sp) {
		return nil, &rangepb.Error{Kind: rangepb.Error_RANGE_MOVED}
	}
	wctx, cancel := context.WithTimeout(ctx, behindWait)
	defer cancel()
	if err := sh.WaitApplied(wctx, minApplied); err != nil {
		return nil, &rangepb.Error{Kind: rangepb.Error_BEHIND, Lead: sh.Lead()}
	}
	return sh, nil
}

func (s *rangeServer) Read(ctx context.Context, req *rangepb.ReadRequest) (*rangepb.ReadResponse, error) {
	if _, e := s.replica(ctx, req.RangeId, req.Span, req.MinApplied); e != nil {
		return &rangepb.ReadResponse{Error: e}, nil
	}
	var res mvcc.RangeResult
	err := s.n.store.View(func(rd *mvcc.Reader) error {
		var err error
		res, err = rd.Range(req.Span.Key, req.Span.End, req.Rev, mvcc.ReadOptions{Limit: req.Limit, KeysOnly: req.KeysOnly, CountOnly: req.CountOnly})
		return err
	})
	if err != nil {
		return &rangepb.ReadResponse{Error: s.errPB(err, nil)}, nil
	}
	if !s.n.stillSpans(req.RangeId, req.Span) {
		// Split meanwhile: what was read may lack writes (see stillSpans).
		return &rangepb.ReadResponse{Error: &rangepb.Error{Kind: rangepb.Error_RANGE_MOVED}}, nil
	}
	resp := &rangepb.ReadResponse{Count: res.Count, Kvs: marshalKVs(res.KVs)}
	return resp, nil
}

func (s *rangeServer) Changes(ctx context.Context, req *rangepb.ChangesRequest) (*rangepb.ChangesResponse, error) {
	if _, e := s.replica(ctx, req.RangeId, req.Span, req.MinApplied); e != nil {
		return &rangepb.ChangesResponse{Error: e}, nil
	}
	var chs []mvcc.Change
	err := s.n.store.View(func(rd *mvcc.Reader) error {
		var err error
		chs, err = rd.Changes(req.Span.Key, req.Span.End, req.FromRev, req.ToRev, int(req.Limit))
		return err
	})
	if err != nil {
		return &rangepb.ChangesResponse{Error: s.errPB(err, nil)}, nil
	}
	if !s.n.stillSpans(req.RangeId, req.Span) {
		return &rangepb.ChangesResponse{Error: &rangepb.Error{Kind: rangepb.Error_RANGE_MOVED}}, nil
	}
	resp := &rangepb.ChangesResponse{Changes: make([]*rangepb.Change, len(chs))}
	for i, c := range chs {
		b, _ := proto.Marshal(c.Event)
		resp.Changes[i] = &rangepb.Change{Rev: c.Rev, Sub: c.Sub, Event: b}
	}
	return resp, nil
}

func (s *rangeServer) LeaseKeys(ctx context.Context, req *rangepb.LeaseKeysRequest) (*rangepb.LeaseKeysResponse, error) {
	sh := s.n.shard(req.RangeId)
	if sh == nil {
		return &rangepb.LeaseKeysResponse{Error: s.noReplica(req.RangeId)}, nil
	}
	keys, err := sh.LeaseKeys(ctx, req.Lease)
	if err != nil {
		return &rangepb.LeaseKeysResponse{Error: s.errPB(err, sh)}, nil
	}
	return &rangepb.LeaseKeysResponse{Keys: keys}, nil
}

func (s *rangeServer) Resolve(ctx context.Context, req *rangepb.ResolveRequest) (*rangepb.ResolveResponse, error) {
	rev, err := s.n.oracle.Resolve(ctx, req.Txn)
	if err != nil {
		return &rangepb.ResolveResponse{Error: s.errPB(err, nil)}, nil
	}
	return &rangepb.ResolveResponse{Rev: rev}, nil
}

func (s *rangeServer) Split(ctx context.Context, req *rangepb.SplitRequest) (*rangepb.SplitResponse, error) {
	var guard *raftcmdpb.SplitGuard
	if req.Guarded {
		guard = &raftcmdpb.SplitGuard{Generation: req.Generation, LastRev: req.LastRev}
	}
	if _, err := s.n.oracle.Split(ctx, req.RangeId, req.Key, guard); err != nil {
		return &rangepb.SplitResponse{Error: s.errPB(err, nil)}, nil
	}
	return &rangepb.SplitResponse{}, nil
}

func (s *rangeServer) Covered(context.Context, *rangepb.CoveredRequest) (*rangepb.CoveredResponse, error) {
	s.n.coveredMu.Lock()
	defer s.n.coveredMu.Unlock()
	return &rangepb.CoveredResponse{Applied: s.n.covered}, nil
}

func (s *rangeServer) Group(ctx context.Context, req *rangepb.GroupRequest) (*rangepb.GroupResponse, error) {
	sh := s.n.shard(req.RangeId)
	if sh == nil {
		return &rangepb.GroupResponse{Error: s.noReplica(req.RangeId)}, nil
	}
	if !sh.Leader() {
		return &rangepb.GroupResponse{Error: &rangepb.Error{Kind: rangepb.Error_NOT_LEADER, Lead: sh.Lead()}}, nil
	}
	switch op := req.Op.(type) {
	case *rangepb.GroupRequest_ConfChange:
		cc := &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(op.ConfChange, cc); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if err := sh.ConfChange(ctx, cc); err != nil {
			return &rangepb.GroupResponse{Error: s.errPB(err, sh)}, nil
		}
		return &rangepb.GroupResponse{}, nil
	case *rangepb.GroupRequest_TransferTo:
		sh.TransferLeader(op.TransferTo)
		return &rangepb.GroupResponse{}, nil
	case *rangepb.GroupRequest_Progress:
		match, last, err := sh.Progress(ctx)
		if err != nil {
			return &rangepb.GroupResponse{Error: s.errPB(err, sh)}, nil
		}
		return &rangepb.GroupResponse{Match: match, Last: last, Voters: sh.Voters()}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "no group operation")
}

// noReplica answers for a range this member holds no replica of, with the
// member it believes leads it.
func (s *rangeServer) noReplica(id uint64) *rangepb.Error {
	e := &rangepb.Error{Kind: rangepb.Error_NO_REPLICA}
	if d := s.n.oracle.View().RangeByID(id); d != nil {
		e.Lead = s.n.rangeLead(d)
	}
	return e
}

// errPB carries err to the caller as a kind it tells apart (the lead hint
// from sh, if given).
func (s *rangeServer) errPB(err error, sh *shard.Shard) *rangepb.Error {
	e := &rangepb.Error{Message: err.Error()}
	if sh != nil {
		e.Lead = sh.Lead()
	}
	switch {
	case errors.Is(err, shard.ErrNotLeader), errors.Is(err, revision.ErrNotLeader):
		e.Kind = rangepb.Error_NOT_LEADER
	case errors.Is(err, shard.ErrRangeMoved):
		e.Kind = rangepb.Error_RANGE_MOVED
	case errors.Is(err, shard.ErrLeaderChanged):
		e.Kind = rangepb.Error_LEADER_CHANGED
	case errors.Is(err, raft.ErrProposalDropped):
		e.Kind = rangepb.Error_DROPPED
	case errors.Is(err, mvcc.ErrCompacted):
		e.Kind = rangepb.Error_COMPACTED
	case errors.Is(err, revision.ErrAborted):
		e.Kind = rangepb.Error_ABORTED
	default:
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			e.Kind = rangepb.Error_GRPC
			e.Message = st.Message()
			e.Code = int32(st.Code())
		}
	}
	return e
}

// errFromPB is the error a caller acts on for e (nil for nil).
func errFromPB(e *rangepb.Error) error {
	if e == nil {
		return nil
	}
	switch e.Kind {
	case rangepb.Error_NOT_LEADER, rangepb.Error_NO_REPLICA, rangepb.Error_BEHIND:
		return &remoteNotHere{kind: e.Kind, lead: e.Lead}
	case rangepb.Error_RANGE_MOVED:
		return shard.ErrRangeMoved
	case rangepb.Error_LEADER_CHANGED:
		return shard.ErrLeaderChanged
	case rangepb.Error_DROPPED:
		return raft.ErrProposalDropped
	case rangepb.Error_COMPACTED:
		return mvcc.ErrCompacted
	case rangepb.Error_ABORTED:
		return revision.ErrAborted
	case rangepb.Error_GRPC:
		return status.Error(codes.Code(e.Code), e.Message)
	}
	return errors.New(e.Message)
}

// remoteNotHere: the member asked does not serve the range (no replica,
// not its leader, or behind); lead is who it believes leads it.
type remoteNotHere struct {
	kind rangepb.Error_Kind
	lead uint64
}

func (e *remoteNotHere) Error() string { return "range not served there: " + e.kind.String() }

// Is makes a member that is not the range's leader read as
// shard.ErrNotLeader: nothing of the request entered the log.
func (e *remoteNotHere) Is(target error) bool { return target == shard.ErrNotLeader }

func spanInside(d *raftcmdpb.RangeDesc, sp *rangepb.Span) bool {
	if sp == nil || !revision.Contains(d, sp.Key) {
		return false
	}
	switch {
	case len(sp.End) == 0:
		return true
	case len(sp.End) == 1 && sp.End[0] == 0:
		return len(d.End) == 0
	}
	return len(d.End) == 0 || string(sp.End) <= string(d.End)
}

func spanPB(sp shard.Span) *rangepb.Span { return &rangepb.Span{Key: sp.Key, End: sp.End} }

func spansPB(sps []shard.Span) []*rangepb.Span {
	out := make([]*rangepb.Span, len(sps))
	for i, sp := range sps {
		out[i] = spanPB(sp)
	}
	return out
}

func spansFromPB(sps []*rangepb.Span) []shard.Span {
	out := make([]shard.Span, len(sps))
	for i, sp := range sps {
		out[i] = shard.Span{Key: sp.Key, End: sp.End}
	}
	return out
}

func latchPB(req *shard.LatchRequest) *rangepb.Latch {
	l := &rangepb.Latch{Reads: spansPB(req.Reads), Writes: spansPB(req.Writes), Exists: req.Exists,
		Deletes: spansPB(req.Deletes), LeaseReads: req.LeaseReads, Revoke: req.Revoke}
	for _, c := range req.Compares {
		b, _ := proto.Marshal(c)
		l.Compares = append(l.Compares, b)
	}
	return l
}

func latchFromPB(txn uint64, l *rangepb.Latch) (*shard.LatchRequest, error) {
	req := &shard.LatchRequest{Txn: txn, Reads: spansFromPB(l.Reads), Writes: spansFromPB(l.Writes), Exists: l.Exists,
		Deletes: spansFromPB(l.Deletes), LeaseReads: l.LeaseReads, Revoke: l.Revoke}
	for _, b := range l.Compares {
		c := &pb.Compare{}
		if err := proto.Unmarshal(b, c); err != nil {
			return nil, err
		}
		req.Compares = append(req.Compares, c)
	}
	return req, nil
}

func latchResultPB(r *shard.LatchResult) *rangepb.LatchResult {
	out := &rangepb.LatchResult{Exists: r.Exists, Deletes: r.Deletes, LeaseKeys: r.LeaseKeys, Rev: r.Rev}
	for _, c := range r.Compares {
		out.Compares = append(out.Compares, &rangepb.ComparePart{Found: int64(c.Found), AllMatch: c.AllMatch})
	}
	return out
}

func latchResultFromPB(r *rangepb.LatchResult) *shard.LatchResult {
	out := &shard.LatchResult{Exists: r.Exists, Deletes: r.Deletes, LeaseKeys: r.LeaseKeys, Rev: r.Rev}
	for _, c := range r.Compares {
		out.Compares = append(out.Compares, kvrules.ComparePart{Found: int(c.Found), AllMatch: c.AllMatch})
	}
	return out
}

func marshalKVs(kvs []*mvccpb.KeyValue) [][]byte {
	out := make([][]byte, len(kvs))
	for i, kv := range kvs {
		out[i], _ = proto.Marshal(kv)
	}
	return out
}

func unmarshalKVs(bs [][]byte) ([]*mvccpb.KeyValue, error) {
	out := make([]*mvccpb.KeyValue, len(bs))
	for i, b := range bs {
		out[i] = &mvccpb.KeyValue{}
		if err := proto.Unmarshal(b, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func appliedPB(a shard.Applied) *rangepb.Applied {
	out := &rangepb.Applied{Rev: a.Rev}
	for _, r := range a.Results {
		res := &rangepb.OpResult{Sub: r.Sub, Deleted: marshalKVs(r.Deleted), RangeKvs: marshalKVs(r.Range.KVs), RangeCount: r.Range.Count}
		if r.Prev != nil {
			res.Prev, _ = proto.Marshal(r.Prev)
		}
		out.Results = append(out.Results, res)
	}
	return out
}

func appliedFromPB(a *rangepb.Applied) (shard.Applied, error) {
	out := shard.Applied{Rev: a.Rev}
	for _, r := range a.Results {
		res := shard.OpResult{Sub: r.Sub}
		var err error
		if len(r.Prev) > 0 {
			res.Prev = &mvccpb.KeyValue{}
			if err := proto.Unmarshal(r.Prev, res.Prev); err != nil {
				return out, err
			}
		}
		if res.Deleted, err = unmarshalKVs(r.Deleted); err != nil {
			return out, err
		}
		if res.Range.KVs, err = unmarshalKVs(r.RangeKvs); err != nil {
			return out, err
		}
		res.Range.Count = r.RangeCount
		out.Results = append(out.Results, res)
	}
	return out, nil
}
