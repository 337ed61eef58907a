package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// rangeConn is one transaction's way to one range's leader: the replica
// here (*shard.Shard), or the leader on another member over the range
// service (remoteTxn). The write protocol is the same either way.
type rangeConn interface {
	Latch(ctx context.Context, req *shard.LatchRequest) (*shard.LatchResult, error)
	Propose(txn uint64, ops []*raftcmdpb.Op, speculative bool) (committed <-chan error, applied <-chan shard.Applied)
	Release(txn uint64)
}

// rangeConnFor returns the way to range d's leader for one transaction.
func (n *Node) rangeConnFor(d *raftcmdpb.RangeDesc) (rangeConn, error) {
	s := n.shard(d.Id)
	switch {
	case s != nil && (s.Leader() || !n.cluster || n.preferLead(d.Id)):
		// A range whose lead belongs here (the primary holds it) is
		// waited for here while its lead moves here (Latch answers
		// ErrNotLeader, and the attempt is run again).
		return s, nil
	case !n.cluster:
		return nil, errRetry // a split's new range is starting
	}
	lead := n.rangeLead(d)
	if lead == 0 || lead == n.nodeID {
		return nil, errNoLead // an election is on, or the lead is on its way here
	}
	conn, err := n.peerConn(lead)
	if err != nil {
		return nil, errNoLead
	}
	return &remoteTxn{n: n, d: d, member: lead, client: rangepb.NewRangesClient(conn)}, nil
}

// remoteTxn is a transaction's business with a range led by another
// member: one Txn stream, which the server ties the latches to.
type remoteTxn struct {
	n      *Node
	d      *raftcmdpb.RangeDesc
	member uint64
	client rangepb.RangesClient
	stream rangepb.Ranges_TxnClient
	cancel context.CancelFunc
	txn    uint64
}

func (t *remoteTxn) Latch(ctx context.Context, req *shard.LatchRequest) (*shard.LatchResult, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	t.cancel, t.txn = cancel, req.Txn
	stream, err := t.client.Txn(sctx)
	if err == nil {
		t.stream = stream
		err = stream.Send(&rangepb.TxnStep{RangeId: t.d.Id, Txn: req.Txn, Step: &rangepb.TxnStep_Latch{Latch: latchPB(req)}})
	}
	var reply *rangepb.TxnReply
	if err == nil {
		reply, err = stream.Recv()
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Unreachable, or gone meanwhile: nothing is held there.
		t.n.unreachableLead(t.d, t.member)
		return nil, shard.ErrNotLeader
	}
	if err := errFromPB(reply.Error); err != nil {
		cancel()
		t.n.noteLead(t.d, t.member, reply.Error)
		return nil, err
	}
	if reply.GetLatched() == nil {
		cancel()
		return nil, fmt.Errorf("range service: latch answered with %v", reply)
	}
	return latchResultFromPB(reply.GetLatched()), nil
}

// Release ends the stream: the server lets the latches go.
func (t *remoteTxn) Release(uint64) {
	if t.cancel != nil {
		t.cancel()
	}
}

func (t *remoteTxn) Propose(txn uint64, ops []*raftcmdpb.Op, _ bool) (<-chan error, <-chan shard.Applied) {
	committed := make(chan error, 1)
	applied := make(chan shard.Applied, 1)
	p := &rangepb.Propose{Ops: make([][]byte, len(ops))}
	for i, op := range ops {
		p.Ops[i], _ = proto.Marshal(op)
	}
	if err := t.stream.Send(&rangepb.TxnStep{RangeId: t.d.Id, Txn: txn, Step: &rangepb.TxnStep_Propose{Propose: p}}); err != nil {
		t.cancel()
		// Whether the server got it is unknown: the router aborts to learn.
		committed <- shard.ErrLeaderChanged
		return committed, applied
	}
	go func() {
		defer t.cancel()
		reply, err := t.stream.Recv()
		switch {
		case err != nil:
			committed <- shard.ErrLeaderChanged // the intent's fate is unknown
			return
		case reply.Error != nil:
			committed <- errFromPB(reply.Error)
			return
		}
		committed <- nil
		reply, err = t.stream.Recv()
		switch {
		case err != nil:
			// Decided (or about to be) but its results are lost: etcd's
			// answer for an outcome the client cannot know.
			applied <- shard.Applied{Err: rpctypes.ErrGRPCTimeout}
		case reply.Error != nil:
			applied <- shard.Applied{Err: errFromPB(reply.Error)}
		default:
			a, err := appliedFromPB(reply.GetApplied())
			if err != nil {
				a = shard.Applied{Err: err}
			}
			applied <- a
		}
	}()
	return committed, applied
}

// noteLead learns from a member's refusal who leads the range.
func (n *Node) noteLead(d *raftcmdpb.RangeDesc, asked uint64, e *rangepb.Error) {
	if e == nil {
		return
	}
	switch e.Kind {
	case rangepb.Error_NOT_LEADER, rangepb.Error_NO_REPLICA:
		if e.Lead != 0 && e.Lead != asked {
			n.hints.set(d.Id, leadHint{lead: e.Lead, notLead: asked})
			return
		}
		n.unreachableLead(d, asked)
	}
}

// unreachableLead moves the hint for d's leader past a member that did not
// answer as its leader: the next replica in the table is asked next, and
// refers the asker to the leader it knows.
func (n *Node) unreachableLead(d *raftcmdpb.RangeDesc, member uint64) {
	reps := d.Replicas
	if len(reps) == 0 {
		n.hints.set(d.Id, leadHint{notLead: member})
		return
	}
	i := slices.Index(reps, member)
	n.hints.set(d.Id, leadHint{lead: reps[(i+1)%len(reps)], notLead: member})
}

// peerConn is a client connection to a member's peer listener.
func (n *Node) peerConn(id uint64) (*grpc.ClientConn, error) { return n.conns.conn(n, id) }

// readRemote reads a span of range d at rev from a replica on another
// member, once it has applied minApplied: this member holds none.
func (n *Node) readRemote(ctx context.Context, d *raftcmdpb.RangeDesc, sp shard.Span, rev, minApplied int64, o mvcc.ReadOptions) (kvrules.RangePart, error) {
	req := &rangepb.ReadRequest{RangeId: d.Id, Span: spanPB(sp), Rev: rev, MinApplied: minApplied, Limit: o.Limit, KeysOnly: o.KeysOnly, CountOnly: o.CountOnly}
	var part kvrules.RangePart
	err := n.onSomeReplica(ctx, d, func(ctx context.Context, c rangepb.RangesClient) (*rangepb.Error, error) {
		resp, err := c.Read(ctx, req)
		if err != nil || resp.Error != nil {
			return resp.GetError(), err
		}
		kvs, err := unmarshalKVs(resp.Kvs)
		part = kvrules.RangePart{KVs: kvs, Count: resp.Count}
		return nil, err
	})
	return part, err
}

// changesRemote lists a span's events of range d from a replica on another
// member (see WatchSource.Changes).
func (n *Node) changesRemote(ctx context.Context, d *raftcmdpb.RangeDesc, sp shard.Span, from, to, minApplied int64, limit int) ([]mvcc.Change, error) {
	req := &rangepb.ChangesRequest{RangeId: d.Id, Span: spanPB(sp), FromRev: from, ToRev: to, Limit: int64(limit), MinApplied: minApplied}
	var out []mvcc.Change
	err := n.onSomeReplica(ctx, d, func(ctx context.Context, c rangepb.RangesClient) (*rangepb.Error, error) {
		resp, err := c.Changes(ctx, req)
		if err != nil || resp.Error != nil {
			return resp.GetError(), err
		}
		out = make([]mvcc.Change, len(resp.Changes))
		for i, ch := range resp.Changes {
			ev := &mvccpb.Event{}
			if err := proto.Unmarshal(ch.Event, ev); err != nil {
				return nil, err
			}
			out[i] = mvcc.Change{Rev: ch.Rev, Sub: ch.Sub, Event: ev}
		}
		return nil, nil
	})
	return out, err
}

// leaseKeysRemote lists range d's keys attached to a lease, from a
// replica on another member.
func (n *Node) leaseKeysRemote(ctx context.Context, d *raftcmdpb.RangeDesc, lease int64) ([][]byte, error) {
	var keys [][]byte
	err := n.onSomeReplica(ctx, d, func(ctx context.Context, c rangepb.RangesClient) (*rangepb.Error, error) {
		resp, err := c.LeaseKeys(ctx, &rangepb.LeaseKeysRequest{RangeId: d.Id, Lease: lease})
		if err != nil || resp.Error != nil {
			return resp.GetError(), err
		}
		keys = resp.Keys
		return nil, nil
	})
	return keys, err
}

// onSomeReplica runs call on the replicas of d on other members, in
// replicaOrder, until one answers; while none does (an election, a
// replica catching up) it tries again until ctx ends or leaderWait passed.
func (n *Node) onSomeReplica(ctx context.Context, d *raftcmdpb.RangeDesc, call func(context.Context, rangepb.RangesClient) (*rangepb.Error, error)) error {
	deadline := time.Now().Add(leaderWait)
	for {
		for _, id := range n.replicaOrder(d) {
			if id == n.nodeID {
				continue
			}
			conn, err := n.peerConn(id)
			if err != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, leaderWait)
			e, err := call(cctx, rangepb.NewRangesClient(conn))
			cancel()
			if err == nil && e == nil {
				return nil
			}
			if ctx.Err() != nil {
				return toGRPC(ctx.Err())
			}
			if err != nil {
				if errors.Is(err, mvcc.ErrCompacted) {
					return err
				}
				continue // unreachable: the next replica
			}
			switch e.Kind {
			case rangepb.Error_NO_REPLICA, rangepb.Error_BEHIND, rangepb.Error_NOT_LEADER:
				continue
			case rangepb.Error_RANGE_MOVED:
				return errRetry
			}
			return errFromPB(e)
		}
		if time.Now().After(deadline) {
			return rpctypes.ErrGRPCTimeout
		}
		select {
		case <-ctx.Done():
			return toGRPC(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// resolver is what this member's replicas ask about intents: fates are
// looked up here, and undecided transactions are resolved on the oracle's
// leader, wherever it is.
type resolver struct{ n *Node }

func (r resolver) Fate(ctx context.Context, txn uint64) (int64, bool, error) {
	return r.n.oracle.Fate(ctx, txn)
}

func (r resolver) Resolve(ctx context.Context, txn uint64) (int64, error) {
	v := r.n.oracle.View()
	if !r.n.cluster || v.Leader {
		return r.n.oracle.Resolve(ctx, txn)
	}
	if rev, known, err := r.n.oracle.Fate(ctx, txn); err == nil && known {
		return rev, fateErr(rev)
	}
	if v.Lead == 0 {
		return 0, revision.ErrNotLeader
	}
	conn, err := r.n.peerConn(v.Lead)
	if err != nil {
		return 0, revision.ErrNotLeader
	}
	resp, err := rangepb.NewRangesClient(conn).Resolve(ctx, &rangepb.ResolveRequest{Txn: txn})
	if err != nil {
		return 0, revision.ErrNotLeader
	}
	if resp.Error != nil {
		if resp.Error.Kind == rangepb.Error_NOT_LEADER {
			return 0, revision.ErrNotLeader
		}
		return 0, errFromPB(resp.Error)
	}
	return resp.Rev, nil
}

// fateErr is Resolve's answer for a known fate: aborted (rev 0) or not.
func fateErr(rev int64) error {
	if rev == 0 {
		return revision.ErrAborted
	}
	return nil
}

// splitOnPrimary records a split in the range table on the oracle's
// leader (this member, or another). A request the leader refused unheard
// (not the leader, or not reachable) goes to the next leader, until ctx
// ends.
func (n *Node) splitOnPrimary(ctx context.Context, id uint64, key []byte, guard *raftcmdpb.SplitGuard) error {
	for {
		v := n.oracle.View()
		if v.Leader || !n.cluster {
			_, err := n.oracle.Split(ctx, id, key, guard)
			return err
		}
		err := revision.ErrNotLeader
		if conn, cerr := n.peerConn(v.Lead); v.Lead != 0 && cerr == nil {
			req := &rangepb.SplitRequest{RangeId: id, Key: key}
			if guard != nil {
				req.Guarded, req.Generation, req.LastRev = true, guard.Generation, guard.LastRev
			}
			var resp *rangepb.SplitResponse
			resp, err = rangepb.NewRangesClient(conn).Split(ctx, req)
			switch {
			case err != nil && !notSent(err):
				return err
			case err != nil:
				err = revision.ErrNotLeader
			case resp.Error == nil:
				return nil
			case resp.Error.Kind == rangepb.Error_NOT_LEADER, resp.Error.Kind == rangepb.Error_DROPPED:
				err = revision.ErrNotLeader
			case strings.Contains(resp.Error.Message, revision.ErrBadSplit.Error()):
				return fmt.Errorf("%w (%s)", revision.ErrBadSplit, resp.Error.Message)
			case strings.Contains(resp.Error.Message, revision.ErrUnknownRange.Error()):
				return fmt.Errorf("%w (%s)", revision.ErrUnknownRange, resp.Error.Message)
			case strings.Contains(resp.Error.Message, revision.ErrSplitStale.Error()):
				return fmt.Errorf("%w (%s)", revision.ErrSplitStale, resp.Error.Message)
			case strings.Contains(resp.Error.Message, revision.ErrAlreadySplit.Error()):
				return fmt.Errorf("%w (%s)", revision.ErrAlreadySplit, resp.Error.Message)
			default:
				return errFromPB(resp.Error)
			}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// groupOpWait bounds one attempt of a group operation.
const groupOpWait = 5 * time.Second

// groupOp runs an operation on range d's group on its leader (this member
// or another), following the leader as it is told of it, for up to three
// attempts' time.
func (n *Node) groupOp(ctx context.Context, d *raftcmdpb.RangeDesc, req *rangepb.GroupRequest) (*rangepb.GroupResponse, error) {
	req.RangeId = d.Id
	deadline := time.Now().Add(3 * groupOpWait)
	for {
		lead := n.rangeLead(d)
		var resp *rangepb.GroupResponse
		var err error
		// One attempt is bounded: a leader that stopped answering (or a
		// change that does not apply) is asked again, or its successor.
		actx, cancel := context.WithTimeout(ctx, groupOpWait)
		if lead == n.nodeID {
			resp, err = (&rangeServer{n: n}).Group(actx, req)
		} else if conn, cerr := n.peerConn(lead); cerr != nil || lead == 0 {
			err = fmt.Errorf("range %d has no leader", d.Id)
		} else {
			resp, err = rangepb.NewRangesClient(conn).Group(actx, req)
		}
		cancel()
		if err == nil && resp.Error == nil {
			return resp, nil
		}
		if err == nil {
			n.noteLead(d, lead, resp.Error)
			// A dropped proposal (Raft drops a conf change while another
			// is pending or the lead is being handed over) is asked again.
			if k := resp.Error.Kind; k != rangepb.Error_NOT_LEADER && k != rangepb.Error_NO_REPLICA && k != rangepb.Error_DROPPED {
				return nil, errFromPB(resp.Error)
			}
		} else {
			n.unreachableLead(d, lead)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = errFromPB(resp.Error)
			}
			return nil, fmt.Errorf("range %d: %w", d.Id, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// confChangeRange makes one change to range d's group on its leader.
func (n *Node) confChangeRange(ctx context.Context, d *raftcmdpb.RangeDesc, typ raftpb.ConfChangeType, member uint64) error {
	cc := &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(member)}}}
	b, err := proto.Marshal(cc)
	if err != nil {
		return err
	}
	_, err = n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_ConfChange{ConfChange: b}})
	return err
}

// mergeChanges merges per-range event lists, each in order and each
// limited as mvcc.Reader.Changes limits (whole revisions, stopping after the
// one that reaches limit), into one list limited the same way. A part that
// reached the limit may lack later revisions, so the result ends at the
// earliest last revision of such a part.
func mergeChanges(parts [][]mvcc.Change, limit int) []mvcc.Change {
	var out []mvcc.Change
	cutoff := int64(math.MaxInt64)
	for _, p := range parts {
		out = append(out, p...)
		if limit > 0 && len(p) >= limit {
			cutoff = min(cutoff, p[len(p)-1].Rev)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Rev != b.Rev {
			return a.Rev < b.Rev
		}
		if a.Sub != b.Sub {
			return a.Sub < b.Sub
		}
		return string(a.Event.Kv.Key) < string(b.Event.Kv.Key)
	})
	for i, c := range out {
		if c.Rev > cutoff || (limit > 0 && i >= limit && c.Rev != out[i-1].Rev) {
			return out[:i]
		}
	}
	return out
}
