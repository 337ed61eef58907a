package shard

import (
	"go.etcd.io/raft/v3/raftpb"

	"github.com/mosaic-kv/mosaic/actors"
)

// Quiescing: a range with nothing to do stops its Raft clock, so that a
// node can hold thousands of ranges without ticking and heartbeating each.
//
//   - The leader quiesces after quiesceAfter consecutive ticks in which the
//     range was idle: nothing latched, proposed, pending or frozen here,
//     and the group idle (actors.RaftGroup.Idle: every live replica holds
//     and has committed the whole log). It sends each follower a quiesce
//     heartbeat. A replica whose node is down does not keep the range
//     awake: when the node is heard again, the node wakes its replicas'
//     leaders (router.Node.tickShards).
//   - A follower quiesces on a quiesce heartbeat from its leader in its
//     term when its log ends at the leader's commit.
//   - Any Raft message wakes a replica, except, on a leader, a heartbeat
//     response (the followers' answer to the quiesce heartbeat). So does,
//     on a leader, any output of the group (a proposal, a conf change, a
//     transfer), and on any replica a transfer, a conf change or a Wake
//     from the node.
//   - A quiesced follower cannot campaign: the node wakes it when the
//     leader's node falls silent (the transport pings between nodes).
//     A quiesced leader does not check its quorum: the first proposal wakes
//     it, and a deposed leader then steps down as usual.
//
// Quiescing changes nothing Raft decides, only when the clock runs: a lost
// quiesce heartbeat leaves a follower ticking, and its eventual pre-vote
// wakes the leader, which heartbeats and quiesces again.

// quiesceAfter is how many idle ticks a leader waits before quiescing (two
// of a range's heartbeats).
const quiesceAfter = 6

// onStep hands a message from another replica to the group.
func (a *shardActor) onStep(m *raftpb.Message) {
	if actors.IsQuiesce(m) {
		if a.group.StepQuiesce(m) {
			a.setQuiesced(true)
		} else {
			a.wake()
		}
		return
	}
	if !a.electionStep(m) {
		return
	}
	if m.GetType() != raftpb.MsgHeartbeatResp {
		a.wake()
	}
	_ = a.group.Step(m)
}

// idleTick counts, on the leader, the ticks the range has been idle, and
// quiesces it after quiesceAfter of them.
func (a *shardActor) idleTick() {
	if !a.idle() {
		a.idleTicks = 0
		return
	}
	if a.idleTicks++; a.idleTicks >= quiesceAfter {
		a.group.Quiesce()
		a.setQuiesced(true)
	}
}

// idle reports whether the leader has nothing of its own in flight and the
// group is idle.
func (a *shardActor) idle() bool {
	switch {
	case a.cluster && !a.leading, a.recovering, a.isFrozen, len(a.frozen) > 0,
		len(a.stash) > 0, len(a.grantsTo) > 0, len(a.latches.held) > 0, len(a.latches.waiting) > 0,
		len(a.proposals) > 0, len(a.waiting) > 0, len(a.intents) > 0, len(a.decided) > 0,
		a.toLog != nil, len(a.deferLog) > 0, a.sweeping:
		return false
	}
	return a.group.Idle(a.cfg.Live)
}

// wake starts the replica's clock again, if stopped.
func (a *shardActor) wake() {
	if a.quiesced {
		a.idleTicks = 0
		a.setQuiesced(false)
	}
}

func (a *shardActor) setQuiesced(q bool) {
	if a.quiesced != q {
		a.quiesced = q
		a.handle.quiesced.Store(q)
	}
}
