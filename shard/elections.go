package shard

import (
	"slices"

	"go.etcd.io/raft/v3/raftpb"
)

// Elections among a range's replicas: only the members the range table
// lists for the range take part.
//
// A replica taken out of its group may never learn it (the leader stops
// sending to it once the removal applies) and keeps running until its node
// collects it. A member that restarts may not yet know that the last conf
// changes in its log committed, and so still counts the removed replica
// among the voters. The two could elect a leader of their own beside the
// group's real one, which would acknowledge writes the group never holds:
// TestClusterFaultsReplicaMoves lost writes that way. So a replica the
// table does not list neither asks for votes nor answers a vote request,
// and a candidate counts no vote from a member the table does not list.
// Refusing a vote is always safe in Raft; the table lists every voter the
// group needs, except for a moment a just-promoted one (a move records it
// right after).

// inElections reports whether member id takes part in the range's
// elections: the table lists it, or lists no replicas yet, or this node
// has no table (a single node).
func (a *shardActor) inElections(id uint64) bool {
	t := a.tableDesc()
	return t == nil || len(t.Replicas) == 0 || slices.Contains(t.Replicas, id)
}

func isVoteRequest(m *raftpb.Message) bool {
	switch m.GetType() {
	case raftpb.MsgVote, raftpb.MsgPreVote:
		return true
	}
	return false
}

func isVoteResponse(m *raftpb.Message) bool {
	switch m.GetType() {
	case raftpb.MsgVoteResp, raftpb.MsgPreVoteResp:
		return true
	}
	return false
}

// electionStep reports whether a received message may be stepped: vote
// requests only if this replica takes part, votes only from members that
// do.
func (a *shardActor) electionStep(m *raftpb.Message) bool {
	switch {
	case isVoteRequest(m):
		return a.inElections(a.cfg.NodeID)
	case isVoteResponse(m):
		return a.inElections(m.GetFrom())
	}
	return true
}

// send hands the group's messages to the transport, without vote requests
// if this replica takes no part in elections (the table is looked up only
// when there are some: send runs on every Ready).
func (a *shardActor) send(msgs []*raftpb.Message) {
	if slices.ContainsFunc(msgs, isVoteRequest) && !a.inElections(a.cfg.NodeID) {
		msgs = slices.DeleteFunc(msgs, isVoteRequest)
	}
	if len(msgs) > 0 && a.cfg.Send != nil {
		a.cfg.Send(msgs)
	}
}
