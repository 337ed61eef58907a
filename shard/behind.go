package shard

import (
	"time"

	"go.uber.org/zap"
)

// A replica behind its range: the node's oracle replica has assigned the
// range revisions this replica has not applied, and its applied revision has
// not moved for a while. Reads and watches on this node wait for it, so it is
// worth a warning that says where the replica stands: its log, its queue of
// decisions and the intents they wait for.

// behindWarnAfter is how long a replica may stay behind without applying
// anything before it warns (and then again at that interval).
const behindWarnAfter = 10 * time.Second

// behindWatch tracks since when the replica's applied revision has not moved
// and, on the leader, since when each follower's matched index has not.
type behindWatch struct {
	rev    int64     // the applied revision last seen
	since  time.Time // when it was first seen
	warned time.Time // the last warning

	match       map[uint64]uint64    // follower -> matched index last seen below the leader's last
	matchSince  map[uint64]time.Time // follower -> when it was first seen
	followWarns time.Time            // the last warning about a follower
	followCheck time.Time            // the last look at the followers
}

// checkBehind warns if the replica has applied nothing for behindWarnAfter
// while revisions assigned to its range are missing here.
func (a *shardActor) checkBehind(now time.Time) {
	w := &a.behind
	if w.since.IsZero() || w.rev != a.appliedRev {
		w.rev, w.since = a.appliedRev, now
		return
	}
	if !a.cluster || a.cfg.TableLastRev == nil || now.Sub(w.since) < behindWarnAfter || now.Sub(w.warned) < behindWarnAfter {
		return
	}
	last := a.cfg.TableLastRev()
	if a.appliedRev >= last || !a.inElections(a.cfg.NodeID) {
		return // (a replica the table does not list is on its way out)
	}
	w.warned = now
	fields := []zap.Field{
		zap.Int64("applied-revision", a.appliedRev), zap.Int64("assigned-revision", last),
		zap.Duration("for", now.Sub(w.since).Round(time.Second)),
		zap.Uint64("applied-index", a.group.Applied()), zap.Uint64("commit-index", a.group.Commit()),
		zap.Uint64("last-index", a.group.LastIndex()), zap.Uint64("lead", a.group.Lead()),
		zap.Bool("leader", a.leader), zap.Bool("leading", a.leading), zap.Bool("recovering", a.recovering),
		zap.Bool("frozen", a.isFrozen), zap.Bool("quiesced", a.quiesced),
		zap.Int("intents", len(a.intents)), zap.Int("decided-queued", len(a.decided)),
		zap.Int("deferred-log", len(a.deferLog)),
	}
	if len(a.decided) > 0 {
		d := a.decided[0]
		_, known := a.intents[d.TxnID]
		fields = append(fields, zap.Uint64("first-decided-txn", d.TxnID), zap.Int64("first-decided-rev", d.Rev), zap.Bool("first-decided-intent-here", known))
	}
	a.lg.Warn("range replica is behind the revisions assigned to it and applies nothing", fields...)
}

// checkFollowers warns, on the leader, of a live follower whose log has
// matched none of the leader's new entries for behindWarnAfter: the leader
// is not catching it up.
func (a *shardActor) checkFollowers(now time.Time) {
	w := &a.behind
	if now.Sub(w.followCheck) < time.Second {
		return // Raft's status copies every follower's progress
	}
	w.followCheck = now
	fs := a.group.Followers()
	if !a.cluster || fs == nil {
		w.match, w.matchSince = nil, nil
		return
	}
	if w.match == nil {
		w.match, w.matchSince = map[uint64]uint64{}, map[uint64]time.Time{}
	}
	last := a.group.LastIndex()
	for id := range w.match {
		if _, ok := fs[id]; !ok {
			delete(w.match, id)
			delete(w.matchSince, id)
		}
	}
	for id, f := range fs {
		if f.Match >= last || (a.cfg.Live != nil && !a.cfg.Live(id)) {
			delete(w.match, id)
			delete(w.matchSince, id)
			continue
		}
		if m, ok := w.match[id]; !ok || m != f.Match {
			w.match[id], w.matchSince[id] = f.Match, now
			continue
		}
		if now.Sub(w.matchSince[id]) < behindWarnAfter || now.Sub(w.followWarns) < behindWarnAfter {
			continue
		}
		w.followWarns = now
		a.lg.Warn("range leader does not catch a live follower up", zap.Uint64("follower", id),
			zap.Uint64("match", f.Match), zap.Uint64("last-index", last), zap.String("progress", f.State),
			zap.Duration("for", now.Sub(w.matchSince[id]).Round(time.Second)), zap.Bool("quiesced", a.quiesced))
	}
}
