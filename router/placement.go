package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
)

// Placement: which members hold a replica of which range, and where each
// range's lead belongs.
//
// The range table (the oracle's state, replicated on every member) lists
// each range's replicas (RangeDesc.Replicas). A member runs a replica of a
// range when the table lists it there, or when the range's leader sends it
// a message: a replica being added is a learner in the range's group before
// the table lists it (see moveReplica). A replica that neither the table
// nor its group lists any more is stopped (collectReplicas).
//
// Local reads (the default; NodeConfig.NoLocalReads turns them off): every
// member that the table does not list as a replica of a range still runs
// one, as a Raft learner of the range's group. It votes in nothing and
// counts for no commit, but it applies the range's log, so that a
// serializable read of any range is served by the member it reaches (as
// etcd's are), and a linearizable one reads there once it has applied far
// enough. The range's leader adds each such member to its group as a
// learner (shard.Config.Learners), and takes out the learners of members
// that left the cluster; a move demotes the replica it takes off a member
// to a learner instead of removing it. Writes still go to each range's
// replicas' quorum only, so the learners cost the leader bandwidth, not
// latency.
//
// A range's lead belongs on the primary (the oracle's leader, which runs
// the writes) when it holds a replica, and otherwise on the range's first
// replica: writes then reach a remote leader over the range service
// (rangeclient.go) only for ranges the primary does not hold. A range
// whose lead was transferred by hand keeps it on its first replica
// (RangeDesc.lead_pinned).
//
// Invariants kept here:
//   - A member starts a range's replica empty (to be sent a snapshot)
//     unless it made the range: the first range at bootstrap, or the right
//     side of a split it ran (groupPeers).
//   - A replica is stopped only once its own group no longer lists this
//     member and the table does not either, and not before it has run for
//     gcGrace (a replica being added learns it is in the group from its
//     first snapshot).

// gcGrace is how long a replica that nothing lists runs before it is
// stopped: long enough for a new learner to get its snapshot.
const gcGrace = 15 * time.Second

// holds reports whether the range table lists this member as a replica of
// d (or lists no replicas at all: then every member holds it).
//
// A member that joined a running cluster holds nothing the table does not
// list it for: a range without recorded replicas is then only the empty
// state its oracle replica starts from.
func (n *Node) holds(d *raftcmdpb.RangeDesc) bool {
	if len(d.Replicas) == 0 {
		return !n.joining
	}
	return slices.Contains(d.Replicas, n.nodeID)
}

// runs reports whether this member runs a replica of range d: the table
// lists it (holds), or it holds a learner of d (local reads).
func (n *Node) runs(d *raftcmdpb.RangeDesc) bool {
	return n.holds(d) || n.learnerWanted(d, n.oracle.View().Members, n.nodeID)
}

// learnerWanted reports whether member id should hold a learner of range
// d: local reads are on, the table lists d's replicas and not id, and id is
// one of members (the cluster's).
func (n *Node) learnerWanted(d *raftcmdpb.RangeDesc, members []*raftcmdpb.Member, id uint64) bool {
	if !n.cluster || n.cfg.NoLocalReads || len(d.Replicas) == 0 || slices.Contains(d.Replicas, id) {
		return false
	}
	return findMember(members, id) != nil
}

// readLearners lists the members that should hold a learner of range id
// (nil without local reads or before the range's replicas are recorded).
func (n *Node) readLearners(id uint64) []uint64 {
	if !n.cluster || n.cfg.NoLocalReads {
		return nil
	}
	v := n.oracle.View()
	d := v.RangeByID(id)
	if d == nil || len(d.Replicas) == 0 {
		return nil
	}
	out := make([]uint64, 0, len(v.Members))
	for _, m := range v.Members {
		if n.learnerWanted(d, v.Members, m.Id) {
			out = append(out, m.Id)
		}
	}
	return out
}

// remote reports whether range d is served only by other members: a
// cluster's range this member runs no replica of (a replica of it still
// running here is on its way out, or not yet in).
func (n *Node) remote(d *raftcmdpb.RangeDesc) bool { return n.cluster && !n.runs(d) }

// preferLead reports whether this member's replica of range id should ask
// for the range's lead.
func (n *Node) preferLead(id uint64) bool {
	v := n.oracle.View()
	d := v.RangeByID(id)
	if d == nil {
		return false
	}
	return preferredLead(d, v.Lead) == n.nodeID
}

// preferredLead is the member a range's lead belongs on, given the
// primary; 0 when that depends on a primary not known (a member that just
// started knows none yet).
func preferredLead(d *raftcmdpb.RangeDesc, primary uint64) uint64 {
	switch {
	case len(d.Replicas) > 0 && d.LeadPinned:
		return d.Replicas[0]
	case primary == 0:
		return 0
	case len(d.Replicas) == 0 || slices.Contains(d.Replicas, primary):
		return primary
	}
	return d.Replicas[0]
}

// leadHints remembers, per range, which member was last said to lead it
// and which member, asked as its leader, said it does not.
type leadHints struct {
	mu sync.Mutex
	m  map[uint64]leadHint
}

type leadHint struct {
	lead    uint64    // the member said to lead the range (0: none known)
	notLead uint64    // the member that last said it does not (0: none)
	at      time.Time // when notLead said so
}

// refutedFor is how long a member's word that it does not lead a range
// outweighs this member's replica naming it (it may lead again since).
const refutedFor = time.Second

func (h *leadHints) get(id uint64) leadHint {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[id]
}

func (h *leadHints) set(id uint64, hint leadHint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[uint64]leadHint{}
	}
	if hint.lead == 0 && hint.notLead == 0 {
		delete(h.m, id)
		return
	}
	hint.at = time.Now()
	h.m[id] = hint
}

// rangeLead is the member most likely to lead range d: this member's
// replica's view of its group, unless that member said in the last
// refutedFor that it does not lead it (a replica taken out of its group,
// still running here until it is collected, never hears of later
// leaders); else the last hint; else where the lead belongs.
//
// A hint naming this member while it holds no replica is stale: it led
// the range, or was next to ask, before its replica moved away. Followed,
// it would have every write wait for a lead "on its way here" for good,
// since nothing asks anyone else; the next replica is asked instead.
func (n *Node) rangeLead(d *raftcmdpb.RangeDesc) uint64 {
	h := n.hints.get(d.Id)
	s := n.shard(d.Id)
	if s != nil && s.Lead() != 0 && (s.Lead() != h.notLead || time.Since(h.at) > refutedFor) {
		return s.Lead()
	}
	if h.lead == n.nodeID && s == nil {
		n.unreachableLead(d, n.nodeID)
		h = n.hints.get(d.Id)
		if h.lead == n.nodeID {
			return 0 // the table lists no one else
		}
	}
	if h.lead != 0 {
		return h.lead
	}
	return preferredLead(d, n.oracle.View().Lead)
}

// replicaOrder lists the members to read range d from: this member first,
// then the likely leader (the most up to date), then the other replicas.
func (n *Node) replicaOrder(d *raftcmdpb.RangeDesc) []uint64 {
	var out []uint64
	add := func(id uint64) {
		if id != 0 && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if n.shard(d.Id) != nil {
		add(n.nodeID)
	}
	add(n.rangeLead(d))
	for _, id := range d.Replicas {
		add(id)
	}
	return out
}

// syncReplicas starts a replica of every range the table says this member
// holds and has none running yet (called whenever replicas change).
func (n *Node) syncReplicas() {
	if !n.started.Load() {
		return // OpenNode starts them
	}
	for _, d := range n.oracle.View().Ranges {
		if n.shard(d.Id) != nil || !n.runs(d) {
			continue
		}
		if n.splitPending(d.Id) || !n.isKnown(d.Id) {
			continue // onSplit starts it once the left side is ready
		}
		if _, err := n.startShard(d); err != nil {
			n.lg.Error("starting a range's replica failed", zap.Uint64("range", d.Id), zap.Error(err))
		}
	}
}

// splitPending reports whether range id was made by a split whose left
// side this member has not yet applied far enough to start it.
func (n *Node) splitPending(id uint64) bool {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	return n.pendingSplit[id]
}

// adopt starts an empty replica of a range whose leader sent this member a
// message: the range's group is adding it. The ranges the table lists this
// member for start by themselves (OpenNode, onSplit, syncReplicas).
func (n *Node) adopt(group uint64) {
	v := n.oracle.View()
	d := v.RangeByID(group)
	if d == nil || !n.started.Load() || n.runs(d) || n.splitPending(group) || !n.isKnown(group) {
		return
	}
	go func() {
		if _, err := n.startShard(d); err != nil {
			n.lg.Error("starting a replica asked for by its range's leader failed", zap.Uint64("range", group), zap.Error(err))
		}
	}()
}

// collectReplicas stops replicas that this member no longer holds: the
// table does not list it and neither does the range's group.
//
// A replica taken out of its group may never learn it (the leader stops
// sending to it once the removal applies), and so still counts itself in:
// for one the table has not listed for gcGrace, the group's leader says.
func (n *Node) collectReplicas() {
	if !n.collecting.CompareAndSwap(false, true) {
		return // the last round still asks a leader
	}
	defer n.collecting.Store(false)
	v := n.oracle.View()
	for _, s := range n.allShards() {
		d := v.RangeByID(s.ID())
		if d == nil || n.runs(d) || time.Since(n.startedAt(s.ID())) < gcGrace {
			continue
		}
		if s.InGroup(n.nodeID) && (s.Leader() || !n.outOfGroup(d)) {
			continue
		}
		n.mu.Lock()
		delete(n.shards, s.ID())
		n.mu.Unlock()
		s.Stop()
		n.lg.Info("stopped a replica this member no longer holds", zap.Uint64("range", s.ID()))
	}
}

// outOfGroup reports whether range d's leader answers that this member's
// replica is neither a voter nor a learner of its group (false if no leader
// answers).
func (n *Node) outOfGroup(d *raftcmdpb.RangeDesc) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_Progress{Progress: true}})
	if err != nil || len(resp.Match) == 0 {
		return false
	}
	_, in := resp.Match[n.nodeID]
	return !in
}

// markKnown records that this member followed the making of ranges.
func (n *Node) markKnown(ds ...*raftcmdpb.RangeDesc) {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	for _, d := range ds {
		n.known[d.Id] = true
	}
}

func (n *Node) isKnown(id uint64) bool {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	return n.known[id]
}

// startedAt is when this member's replica of range id started.
func (n *Node) startedAt(id uint64) time.Time {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	return n.startTimes[id]
}

// splitter returns nil if this member splits at key itself, or a
// connection to the member that does, and that member: the leader of the
// range holding key, as far as this member knows (a leader drained for a
// split keeps its lead until the split is done). ctx carries the request's
// metadata: a request is passed on once.
func (n *Node) splitter(ctx context.Context, key []byte) (*grpc.ClientConn, uint64, error) {
	if !n.cluster {
		return nil, 0, nil
	}
	d := n.oracle.View().RangeFor(key)
	if d == nil {
		return nil, 0, nil // Split answers
	}
	s := n.shard(d.Id)
	if s != nil && s.Leader() {
		return nil, 0, nil
	}
	to := n.rangeLead(d)
	if s == nil && (to == n.nodeID || to == 0) {
		// No replica here to split with: one that has one knows more.
		for _, id := range d.Replicas {
			if id != n.nodeID {
				to = id
				break
			}
		}
	}
	if to == n.nodeID || to == 0 {
		return nil, 0, nil // Split waits for the lead a moment
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, 0, status.Errorf(codes.Unavailable, "range %d's lead moved on; retry", d.Id)
	}
	conn, err := n.peerConn(to)
	return conn, to, err
}

// PinRangeLead puts range id's lead on member to for good (until another
// transfer): the table lists to first with the lead pinned there, and the
// group's lead moves. It returns the range's leader then.
func (n *Node) PinRangeLead(ctx context.Context, id, to uint64) (uint64, error) {
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	d := n.oracle.View().RangeByID(id)
	switch {
	case d == nil:
		return 0, fmt.Errorf("no range %d", id)
	case len(d.Replicas) == 0:
		return 0, fmt.Errorf("range %d's replicas are not recorded yet; retry in a moment", id)
	case !slices.Contains(d.Replicas, to):
		return 0, fmt.Errorf("member %x holds no replica of range %d (replicas %x)", to, id, d.Replicas)
	}
	reps := append([]uint64{to}, slices.DeleteFunc(slices.Clone(d.Replicas), func(x uint64) bool { return x == to })...)
	if err := n.oracle.SetReplicas(ctx, id, reps, true); err != nil {
		return 0, toGRPC(err)
	}
	d = n.oracle.View().RangeByID(id)
	deadline := time.Now().Add(2 * leaderWait)
	for {
		lead := n.rangeLeadNow(ctx, d)
		if lead == to {
			return lead, nil
		}
		_, _ = n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_TransferTo{TransferTo: to}})
		if time.Now().After(deadline) {
			return lead, fmt.Errorf("range %d's lead did not reach member %x", id, to)
		}
		select {
		case <-ctx.Done():
			return lead, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
