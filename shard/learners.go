package shard

import (
	"slices"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// Learners for local reads (router/placement.go): the members that are not
// among a range's replicas each hold a learner of it, which applies the
// log but neither votes nor counts for commits. The range's leader keeps
// its group's learners in step with Config.Learners:
//
//   - a wanted member that is neither a voter nor a learner of the group
//     is added as a learner (and then sent a snapshot, as any new replica);
//   - a learner that has not been wanted for unwantedFor and is not one of
//     the table's replicas (its member left the cluster) is taken out. The
//     wait keeps a learner a move just added for a member this node's table
//     does not list yet (it learns of new members a little late).
//
// Voters are never touched here: demoting or removing them is a move's
// business (router/move.go), and a replica being added by a move is a
// voter or a table-listed learner, which this leaves alone. One change at
// a time (Raft takes one pending conf change), at most every
// learnerChangeEvery, so that a change Raft dropped is proposed again.

// learnerChangeEvery is how often the leader may propose a learner change.
const learnerChangeEvery = time.Second

// unwantedFor is how long a learner goes unwanted before it is taken out.
const unwantedFor = 10 * time.Second

// syncLearners proposes, on the leader, the next learner change its group
// needs, if any.
func (a *shardActor) syncLearners(now time.Time) {
	if !a.cluster || a.cfg.Learners == nil {
		return
	}
	if !a.leading {
		a.unwanted = nil // counted afresh in a later leadership
		return
	}
	if a.isFrozen || a.recovering || now.Sub(a.lastLearnerChange) < learnerChangeEvery {
		return
	}
	want := a.cfg.Learners()
	if want == nil {
		return
	}
	cs := a.group.Conf()
	in := func(id uint64) bool {
		return slices.Contains(cs.GetVoters(), id) || slices.Contains(cs.GetLearners(), id) ||
			slices.Contains(cs.GetVotersOutgoing(), id) || slices.Contains(cs.GetLearnersNext(), id)
	}
	var cc *raftpb.ConfChangeV2
	for _, id := range want {
		if !in(id) {
			cc = confChange(raftpb.ConfChangeAddLearnerNode, id)
			break
		}
	}
	if t := a.tableDesc(); cc == nil && t != nil && len(t.Replicas) > 0 {
		for _, id := range cs.GetLearners() {
			if slices.Contains(want, id) || slices.Contains(t.Replicas, id) {
				delete(a.unwanted, id)
				continue
			}
			if a.unwanted == nil {
				a.unwanted = map[uint64]time.Time{}
			}
			if since, ok := a.unwanted[id]; !ok {
				a.unwanted[id] = now
			} else if now.Sub(since) >= unwantedFor && cc == nil {
				cc = confChange(raftpb.ConfChangeRemoveNode, id)
				delete(a.unwanted, id)
			}
		}
	}
	if cc == nil {
		return
	}
	a.lastLearnerChange = now
	a.wake()
	if err := a.group.ProposeConf(cc); err != nil {
		a.lg.Debug("proposing a learner change failed", zap.Error(err))
		return
	}
	a.lg.Info("changing a range's learners", zap.Stringer("change", cc.Changes[0].Type), zap.Uint64("member", cc.Changes[0].GetNodeId()))
}

func confChange(t raftpb.ConfChangeType, id uint64) *raftpb.ConfChangeV2 {
	return &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: t.Enum(), NodeId: &id}}}
}
