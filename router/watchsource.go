package router

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// WatchSource returns the node as the watch service's event source (it
// implements watchactor.Source; the router does not import watchactor here
// so the two build independently).
func (n *Node) WatchSource() WatchSource { return WatchSource{n} }

// WatchSource is the node seen as a source of watch events.
type WatchSource struct{ n *Node }

// Revs: the visible revision is the oracle's revision, lowered to the
// applied revision of any range whose replica here has not yet applied
// everything the oracle assigned to it. A range that is behind has applied
// all of its revisions up to its applied revision, and ranges that are not
// behind have applied all of theirs, so every write at or below the result
// is in the store.
//
// A range of the view this member holds but runs no replica of yet holds
// nothing visible: the watch waits for it (see Router.waitApplied). A range
// held only by other members lowers nothing, and neither does one whose
// replica here is stuck (lag.go): Changes reads those from a replica
// elsewhere, which it waits on to apply far enough.
func (w WatchSource) Revs() (int64, int64) {
	v := w.n.oracle.View()
	visible := v.Rev
	for _, d := range v.Ranges {
		if w.n.remote(d) {
			continue
		}
		applied := int64(-1) // no replica running here yet
		if s := w.n.shard(d.Id); s != nil {
			applied = s.AppliedRev()
		}
		last := v.LastRev[d.Id]
		if applied >= last || applied >= visible || (w.n.cluster && w.n.lag.stuck(d.Id, applied, last)) {
			continue
		}
		visible = max(applied, 0)
	}
	return visible, v.CompactRev
}

// sameSpans reports whether two views have the same ranges at the same
// generations (a split is the only change of a range's span, and it
// raises the generation).
func sameSpans(a, b *revision.View) bool {
	if len(a.Ranges) != len(b.Ranges) {
		return false
	}
	for i, d := range a.Ranges {
		if d.Id != b.Ranges[i].Id || d.Generation != b.Ranges[i].Generation {
			return false
		}
	}
	return true
}

// Current is the oracle's revision: every acknowledged write is at or
// below it.
func (w WatchSource) Current() int64 { return w.n.oracle.View().Rev }

func (w WatchSource) Advanced() <-chan struct{} { return w.n.appliedSignal() }

// OnAdvance has fn called by each shard right after it applies, on a
// single node only (in a cluster the hub's own loop reads every new
// revision from the store; see Recent).
func (w WatchSource) OnAdvance(fn func()) {
	if w.n.cluster {
		return
	}
	w.n.sigMu.Lock()
	defer w.n.sigMu.Unlock()
	w.n.onApply = append(w.n.onApply, fn)
}

// Changes reads the span's events up to toRev, range by range: from the
// store here for each range whose replica here has applied every revision
// up to toRev that the oracle assigned to it, and from a replica on another
// member for the others (ranges held elsewhere, or whose replica here is
// behind). When every range qualifies, the store is read once.
//
// The ranges' spans must not change meanwhile: a replica that learns of its
// range's split drops the writes it applies late to the keys that left (see
// Node.stillSpans), so its applied revision no longer covers them. A read
// across a split answers errRetry, and the watch hub reads again.
func (w WatchSource) Changes(ctx context.Context, key, end []byte, fromRev, toRev int64, limit int) ([]mvcc.Change, error) {
	v := w.n.oracle.View()
	type part struct {
		d     *raftcmdpb.RangeDesc
		sp    shard.Span
		local bool
	}
	var parts []part
	allLocal := true
	for _, d := range v.Ranges {
		sp, ok := clip(key, end, d)
		if !ok {
			continue
		}
		local := w.appliedHere(v, d, toRev)
		allLocal = allLocal && local
		parts = append(parts, part{d: d, sp: sp, local: local})
	}
	var out []mvcc.Change
	if allLocal {
		var err error
		if out, err = w.local(key, end, fromRev, toRev, limit); err != nil {
			return nil, err
		}
	} else {
		var all [][]mvcc.Change
		for _, p := range parts {
			var chs []mvcc.Change
			var err error
			if p.local {
				chs, err = w.local(p.sp.Key, p.sp.End, fromRev, toRev, limit)
			} else {
				chs, err = w.n.changesRemote(ctx, p.d, p.sp, fromRev, toRev, min(toRev, v.LastRev[p.d.Id]), limit)
			}
			if err != nil {
				if errors.Is(err, rpctypes.ErrGRPCCompacted) {
					err = mvcc.ErrCompacted
				}
				return nil, err
			}
			all = append(all, chs)
		}
		out = mergeChanges(all, limit)
	}
	if !sameSpans(v, w.n.oracle.View()) {
		return nil, errRetry
	}
	return out, nil
}

// Recent answers from the store's memory of its latest changes on a
// single node, when every range of the span has applied every revision up
// to toRev assigned to it (the store remembers a change once it is
// applied; Revs checks the same, but on a view that may be older).
//
// Not in a cluster yet: with it, the fault tests found watchers missing
// events. One cause was found and fixed (a reopened store's feed claimed
// revisions written before it opened); with that fix, 10 fault runs with
// every answer checked against the store found no difference, but one of
// them had watchers stop short of the last revision, not understood. Until
// more runs say otherwise, a cluster's hub reads every new revision from
// the store.
func (w WatchSource) Recent(key, end []byte, fromRev, toRev int64, limit int) ([]mvcc.Change, bool) {
	if w.n.cluster {
		return nil, false
	}
	v := w.n.oracle.View()
	for _, d := range v.Ranges {
		if _, ok := clip(key, end, d); !ok {
			continue
		}
		if !w.appliedHere(v, d, toRev) {
			return nil, false
		}
	}
	return w.n.store.RecentChanges(key, end, fromRev, toRev, limit)
}

// appliedHere reports whether range d of view v has a replica here (one
// the table lists) that has applied every revision up to toRev that v's
// oracle assigned to it.
func (w WatchSource) appliedHere(v *revision.View, d *raftcmdpb.RangeDesc, toRev int64) bool {
	if w.n.remote(d) {
		return false
	}
	s := w.n.shard(d.Id)
	return s != nil && s.AppliedRev() >= min(toRev, v.LastRev[d.Id])
}

func (w WatchSource) local(key, end []byte, fromRev, toRev int64, limit int) ([]mvcc.Change, error) {
	var out []mvcc.Change
	err := w.n.store.View(func(r *mvcc.Reader) error {
		var err error
		out, err = r.Changes(key, end, fromRev, toRev, limit)
		return err
	})
	return out, err
}
