package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/revision"
)

// Moving replicas: all of it runs on the primary, one change at a time
// (changeMu), and each step is one the range keeps serving through.
//
// moveReplica(d, from, to):
//  1. to joins d's group as a learner; its member starts an empty replica
//     on the first message (Node.adopt) and is sent a snapshot;
//  2. once it holds the leader's log, it becomes a voter;
//  3. the table records to in from's place (so from's replica no longer
//     asks for the lead);
//  4. from hands over the lead if it has it, then leaves the group; its
//     member stops the replica (collectReplicas). With local reads
//     (placement.go) from is demoted to a learner instead, and its member
//     keeps the replica.
//
// A move that fails before the table records it takes the new replica
// back out of the group; one that fails later leaves the old replica in
// the group, which moving again finishes.

// catchUpWait bounds how long a new replica may take to catch up.
const catchUpWait = 2 * time.Minute

// errNotPrimary: replica moves run on the oracle's leader.
var errNotPrimary = errors.New("replica moves run on the oracle's leader")

// MoveReplica moves range id's replica from member from (0: chosen) to
// member to, and returns the range as the table then records it.
func (n *Node) MoveReplica(ctx context.Context, id, from, to uint64) (*raftcmdpb.RangeDesc, error) {
	if !n.cluster {
		return nil, errSingleNode
	}
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	ctx, cancel := n.whilePrimary(ctx)
	defer cancel()
	return n.moveReplica(ctx, id, from, to)
}

// whilePrimary returns a context that ends with ctx or as soon as this
// member no longer leads the oracle. Replica changes are decided on the
// primary's view of the range table: a former primary that went on would
// change groups on a stale view while the new primary changes them too
// (one put back a replica the other had just moved away).
func (n *Node) whilePrimary(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !n.oracle.View().Leader {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

func (n *Node) moveReplica(ctx context.Context, id, from, to uint64) (*raftcmdpb.RangeDesc, error) {
	v := n.oracle.View()
	if !v.Leader {
		return nil, errNotPrimary
	}
	d := v.RangeByID(id)
	if d == nil {
		return nil, fmt.Errorf("no range %d", id)
	}
	if len(d.Replicas) == 0 {
		return nil, fmt.Errorf("range %d's replicas are not recorded yet; retry in a moment", id)
	}
	if m := findMember(v.Members, to); m == nil || m.Learner {
		return nil, fmt.Errorf("member %x is not a voting member", to)
	}
	if slices.Contains(d.Replicas, to) {
		return nil, fmt.Errorf("member %x already holds range %d", to, id)
	}
	if from == 0 {
		from = n.mostLoaded(v.Ranges, d, v.Members)
	}
	if !slices.Contains(d.Replicas, from) {
		return nil, fmt.Errorf("member %x holds no replica of range %d", from, id)
	}
	if err := n.addReplica(ctx, d, to); err != nil {
		n.takeBackOut(d, to) // the table still lists the old replicas
		return nil, err
	}
	reps := slices.Clone(d.Replicas)
	reps[slices.Index(reps, from)] = to
	if err := n.oracle.SetReplicas(ctx, id, reps, d.LeadPinned); err != nil {
		return nil, fmt.Errorf("recording range %d's replicas: %w", id, toGRPC(err))
	}
	nd := n.oracle.View().RangeByID(id)
	if err := n.dropReplica(ctx, nd, from); err != nil {
		return nil, err
	}
	n.lg.Info("moved a replica", zap.Uint64("range", id), zap.Uint64("from", from), zap.Uint64("to", to))
	return n.oracle.View().RangeByID(id), nil
}

// takeBackOut removes member to from range d's group after a failed
// addition that the table does not record.
func (n *Node) takeBackOut(d *raftcmdpb.RangeDesc, to uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*groupOpWait)
	defer cancel()
	if err := n.confChangeRange(ctx, d, n.leaveChange(d, to), to); err != nil {
		n.lg.Warn("taking a new replica back out after a failed move failed", zap.Uint64("range", d.Id), zap.Uint64("member", to), zap.Error(err))
	}
}

// addReplica makes member to a voter of range d's group: a learner first,
// promoted once it holds the leader's log.
func (n *Node) addReplica(ctx context.Context, d *raftcmdpb.RangeDesc, to uint64) error {
	prog, err := n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_Progress{Progress: true}})
	if err != nil {
		return err
	}
	if slices.Contains(prog.Voters, to) {
		return nil // an earlier attempt got this far
	}
	if err := n.confChangeRange(ctx, d, raftpb.ConfChangeAddLearnerNode, to); err != nil {
		return fmt.Errorf("adding member %x to range %d as a learner: %w", to, d.Id, err)
	}
	deadline := time.Now().Add(catchUpWait)
	for {
		prog, err := n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_Progress{Progress: true}})
		if err == nil && prog.Match[to] >= prog.Last {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("range %d's new replica on member %x did not catch up in %v", d.Id, to, catchUpWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := n.confChangeRange(ctx, d, raftpb.ConfChangeAddNode, to); err != nil {
		return fmt.Errorf("promoting range %d's replica on member %x: %w", d.Id, to, err)
	}
	return nil
}

// dropReplica takes member from out of range d's group, handing the lead
// on first if from has it.
func (n *Node) dropReplica(ctx context.Context, d *raftcmdpb.RangeDesc, from uint64) error {
	deadline := time.Now().Add(leaderWait)
	for n.rangeLeadNow(ctx, d) == from {
		to := preferredLead(d, n.oracle.View().Lead)
		if to == from || to == 0 {
			to = d.Replicas[0]
		}
		_, _ = n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_TransferTo{TransferTo: to}})
		if time.Now().After(deadline) {
			return fmt.Errorf("range %d: member %x did not hand over the lead", d.Id, from)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := n.confChangeRange(ctx, d, n.leaveChange(d, from), from); err != nil {
		return fmt.Errorf("removing member %x from range %d: %w", from, d.Id, err)
	}
	return nil
}

// leaveChange is how member id's replica leaves the voters of range d (as
// the table lists it without id): it stays on as a learner if it should
// hold one (learnerWanted; Raft demotes a voter added as a learner), else
// it leaves the group.
func (n *Node) leaveChange(d *raftcmdpb.RangeDesc, id uint64) raftpb.ConfChangeType {
	if n.learnerWanted(d, n.oracle.View().Members, id) {
		return raftpb.ConfChangeAddLearnerNode
	}
	return raftpb.ConfChangeRemoveNode
}

// rangeLeadNow asks range d's group who leads it (following hints), 0 if
// no leader answers.
func (n *Node) rangeLeadNow(ctx context.Context, d *raftcmdpb.RangeDesc) uint64 {
	if _, err := n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_Progress{Progress: true}}); err != nil {
		return 0
	}
	return n.rangeLead(d)
}

// mostLoaded picks, among d's replicas, the one to move away: on the member
// holding the most ranges, not where d's lead belongs if another will do.
func (n *Node) mostLoaded(ranges []*raftcmdpb.RangeDesc, d *raftcmdpb.RangeDesc, members []*raftcmdpb.Member) uint64 {
	counts := replicaCounts(ranges, members)
	lead := preferredLead(d, n.oracle.View().Lead)
	best := uint64(0)
	for _, id := range d.Replicas {
		if best == 0 || (id != lead && (best == lead || counts[id] > counts[best])) {
			best = id
		}
	}
	return best
}

// replicaCounts counts the replicas each voting member holds.
func replicaCounts(ranges []*raftcmdpb.RangeDesc, members []*raftcmdpb.Member) map[uint64]int {
	counts := map[uint64]int{}
	for _, m := range members {
		if !m.Learner {
			counts[m.Id] = 0
		}
	}
	for _, d := range ranges {
		for _, id := range d.Replicas {
			counts[id]++
		}
	}
	return counts
}

// evacuate moves every replica member id holds to other voting members
// (before it is removed from the cluster); a range no other member can take
// just loses the replica.
func (n *Node) evacuate(ctx context.Context, id uint64) error {
	for {
		v := n.oracle.View()
		var d *raftcmdpb.RangeDesc
		for _, r := range v.Ranges {
			if slices.Contains(r.Replicas, id) {
				d = r
				break
			}
		}
		if d == nil {
			return nil
		}
		counts := replicaCounts(v.Ranges, v.Members)
		delete(counts, id)
		to := leastLoaded(counts, d.Replicas)
		if to != 0 {
			if _, err := n.moveReplica(ctx, d.Id, id, to); err != nil {
				return err
			}
			continue
		}
		reps := slices.DeleteFunc(slices.Clone(d.Replicas), func(x uint64) bool { return x == id })
		if len(reps) == 0 {
			return fmt.Errorf("range %d has no other replica than member %x", d.Id, id)
		}
		if err := n.oracle.SetReplicas(ctx, d.Id, reps, d.LeadPinned); err != nil {
			return toGRPC(err)
		}
		if err := n.dropReplica(ctx, n.oracle.View().RangeByID(d.Id), id); err != nil {
			return err
		}
	}
}

// leastLoaded is the member of counts holding the fewest replicas and none
// of skip's (0 if none qualifies); ties go to the smaller id.
func leastLoaded(counts map[uint64]int, skip []uint64) uint64 {
	ids := make([]uint64, 0, len(counts))
	for id := range counts {
		if !slices.Contains(skip, id) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool {
		if counts[ids[i]] != counts[ids[j]] {
			return counts[ids[i]] < counts[ids[j]]
		}
		return ids[i] < ids[j]
	})
	if len(ids) == 0 {
		return 0
	}
	return ids[0]
}

// rebalanceEvery is how often the primary looks at the replicas' spread.
const rebalanceEvery = 5 * time.Second

// rebalanceLoop runs on every member and acts while it is the primary:
// each round makes at most one change (see rebalanceOnce); a round that
// made one is followed by the next at once.
func (n *Node) rebalanceLoop(stop <-chan struct{}) {
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	go func() {
		<-stop
		cancelAll()
	}()
	wait := rebalanceEvery
	for {
		select {
		case <-stop:
			return
		case <-time.After(wait):
		}
		wait = rebalanceEvery
		if !n.oracle.View().Leader || !n.changeMu.TryLock() {
			continue
		}
		tctx, cancelT := context.WithTimeout(base, catchUpWait+time.Minute)
		ctx, cancel := n.whilePrimary(tctx)
		acted, err := n.rebalanceOnce(ctx)
		cancelT()
		if err != nil {
			n.lg.Warn("rebalancing replicas failed; retrying later", zap.Error(err))
		}
		cancel()
		n.changeMu.Unlock()
		if acted && err == nil {
			wait = 0
		}
	}
}

// rebalanceOnce gives a range with fewer replicas than the replication
// factor one more, takes one from a range with more, or else moves one
// replica from the member holding the most to the member holding the
// fewest when they differ by more than one.
func (n *Node) rebalanceOnce(ctx context.Context) (acted bool, err error) {
	v := n.oracle.View()
	rf := n.cfg.ReplicationFactor
	counts := replicaCounts(v.Ranges, v.Members)
	if rf <= 0 || len(counts) == 0 {
		return false, nil
	}
	for _, d := range v.Ranges {
		if len(d.Replicas) == 0 {
			return false, nil // not recorded yet
		}
		for _, id := range d.Replicas {
			if _, ok := counts[id]; !ok {
				return false, nil // a member being removed: RemoveMember moves it
			}
		}
	}
	for _, d := range v.Ranges {
		want := min(rf, len(counts))
		switch {
		case len(d.Replicas) < want:
			to := leastLoaded(counts, d.Replicas)
			if err := n.addReplica(ctx, d, to); err != nil {
				n.takeBackOut(d, to) // as after a failed move
				return true, err
			}
			// Should this fail, the next pass most likely picks the same
			// member, already a voter (addReplica), and records it.
			return true, n.oracle.SetReplicas(ctx, d.Id, append(slices.Clone(d.Replicas), to), d.LeadPinned)
		case len(d.Replicas) > want:
			from := n.mostLoaded(v.Ranges, d, v.Members)
			reps := slices.DeleteFunc(slices.Clone(d.Replicas), func(x uint64) bool { return x == from })
			if err := n.oracle.SetReplicas(ctx, d.Id, reps, d.LeadPinned); err != nil {
				return true, err
			}
			return true, n.dropReplica(ctx, n.oracle.View().RangeByID(d.Id), from)
		}
	}
	// Spread: from the most loaded member to the least loaded one.
	var most uint64
	for id, c := range counts {
		if most == 0 || c > counts[most] || (c == counts[most] && id < most) {
			most = id
		}
	}
	for _, d := range v.Ranges {
		if !slices.Contains(d.Replicas, most) {
			continue
		}
		to := leastLoaded(counts, d.Replicas)
		if to != 0 && counts[most]-counts[to] > 1 {
			_, err := n.moveReplica(ctx, d.Id, most, to)
			return true, err
		}
	}
	if len(counts) > rf {
		return n.balanceLeads(ctx, v, counts)
	}
	return false, nil
}

// balanceLeads spreads the ranges' leads when there are more voting
// members than replicas per range (with fewer, every member holds every
// range and the leads stay with the primary, which runs the writes): one
// range's lead goes, for good (lead_pinned), where leadMove says.
func (n *Node) balanceLeads(ctx context.Context, v *revision.View, counts map[uint64]int) (bool, error) {
	d, to := leadMove(v.Ranges, v.Lead, counts)
	if d == nil {
		return false, nil
	}
	from := preferredLead(d, v.Lead)
	reps := append([]uint64{to}, slices.DeleteFunc(slices.Clone(d.Replicas), func(x uint64) bool { return x == to })...)
	if err := n.oracle.SetReplicas(ctx, d.Id, reps, true); err != nil {
		return true, toGRPC(err)
	}
	// The replica there asks for the lead by itself; this only hurries it.
	_, _ = n.groupOp(ctx, d, &rangepb.GroupRequest{Op: &rangepb.GroupRequest_TransferTo{TransferTo: to}})
	n.lg.Info("moved a range's lead", zap.Uint64("range", d.Id), zap.Uint64("from", from), zap.Uint64("to", to))
	return true, nil
}

// leadMove picks one range whose lead should move, and where to (nil if
// the leads are spread: no member leads two more than another, or no
// move below helps), among the voting members of counts:
//   - the lead of a range led by a member with at least two more leads
//     than one of the range's other replicas goes to that replica;
//   - failing that, a lead moves between two members one apart (f to t)
//     when it lets a member with the most leads hand one to f next round:
//     the leads are uneven, but no range led by a member with the most has
//     a replica on one with two fewer (the replicas are where they are).
//     Such a move only prepares a strict improvement, so moves never cycle.
func leadMove(ranges []*raftcmdpb.RangeDesc, primary uint64, counts map[uint64]int) (*raftcmdpb.RangeDesc, uint64) {
	leads := map[uint64]int{}
	for id := range counts {
		leads[id] = 0
	}
	for _, d := range ranges {
		leads[preferredLead(d, primary)]++
	}
	voter := func(id uint64) bool { _, ok := counts[id]; return ok }
	for _, d := range ranges {
		from := preferredLead(d, primary)
		for _, to := range d.Replicas {
			if voter(to) && leads[from]-leads[to] >= 2 {
				return d, to
			}
		}
	}
	most := 0
	for _, c := range leads {
		most = max(most, c)
	}
	// f can take a lead from a member with the most once it has one fewer.
	takes := func(f uint64) bool {
		for _, d := range ranges {
			if leads[preferredLead(d, primary)] == most && slices.Contains(d.Replicas, f) && most-(leads[f]-1) >= 2 {
				return true
			}
		}
		return false
	}
	for _, d := range ranges {
		f := preferredLead(d, primary)
		if leads[f] == most || !takes(f) {
			continue
		}
		for _, to := range d.Replicas {
			if voter(to) && to != f && leads[f]-leads[to] == 1 {
				return d, to
			}
		}
	}
	return nil, 0
}
