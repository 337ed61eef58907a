package router

import (
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// A member that splits a range in a cluster is the one that makes the new
// range: its replica of the left range led it and is drained, so its store
// holds exactly the new range's data (see Node.splitCluster). That duty must
// survive a crash between the split's commit in the oracle's log and the new
// range's group being created here, or the new range has no member to make
// it. So the drained split is recorded in the store (synced) before it is
// asked for, and looked at again when the member starts (restoreDrainedSplit,
// claimDrainedSplit). One record at most: Node.splitMu serializes splits.

// drainedSplitKey holds the drained split as a raftcmdpb.Split with its guard.
var drainedSplitKey = []byte("n/drained-split")

// drainedSplit is a split this member asks for: the left range's replica
// here led it and is drained, so it holds exactly the new range's data as of
// guard.LastRev; the split is guarded to apply only to the range in that
// state (raftcmdpb.SplitGuard).
type drainedSplit struct {
	left  uint64
	key   []byte
	guard *raftcmdpb.SplitGuard
}

// saveDrainedSplit records ds durably, with the drained data before it.
func (n *Node) saveDrainedSplit(ds *drainedSplit) error {
	b, err := proto.Marshal(&raftcmdpb.Split{RangeId: ds.left, Key: ds.key, Guard: ds.guard})
	if err != nil {
		return err
	}
	if err := n.store.Update(func(w *mvcc.Writer) error { return w.SetMeta(drainedSplitKey, b) }); err != nil {
		return err
	}
	return n.store.Sync()
}

// clearDrainedSplit forgets the record of ds, if it is still the recorded one.
func (n *Node) clearDrainedSplit(ds *drainedSplit) {
	err := n.store.Update(func(w *mvcc.Writer) error {
		cur, err := loadDrainedSplit(w.Meta)
		if err != nil || cur == nil || cur.left != ds.left || !proto.Equal(cur.guard, ds.guard) || string(cur.key) != string(ds.key) {
			return err
		}
		return w.DeleteMeta(drainedSplitKey)
	})
	if err != nil {
		n.lg.Warn("forgetting a drained split failed", zap.Uint64("range", ds.left), zap.Error(err))
	}
}

// loadDrainedSplit reads the record (nil if none) through meta.
func loadDrainedSplit(meta func([]byte) ([]byte, error)) (*drainedSplit, error) {
	b, err := meta(drainedSplitKey)
	if err != nil || b == nil {
		return nil, err
	}
	var sp raftcmdpb.Split
	if err := proto.Unmarshal(b, &sp); err != nil || sp.Guard == nil {
		return nil, fmt.Errorf("router: corrupt drained-split record: %v", err)
	}
	return &drainedSplit{left: sp.RangeId, key: sp.Key, guard: sp.Guard}, nil
}

// restoreDrainedSplit, before the oracle starts, makes a recorded split this
// member's pending one again: should the oracle apply it now (a late commit,
// or its entry replayed), onSplit finds it as if the member had not stopped.
func (n *Node) restoreDrainedSplit() error {
	var ds *drainedSplit
	err := n.store.View(func(r *mvcc.Reader) error {
		var err error
		ds, err = loadDrainedSplit(r.Meta)
		return err
	})
	if err != nil || ds == nil {
		return err
	}
	n.splitting.Store(ds)
	return nil
}

// claimDrainedSplit, once the oracle runs and before the ranges start,
// settles a restored split that onSplit did not take: applied before the
// member stopped (the table shows the new range as it made it: starting at
// the key, one generation on, no revision assigned since), this member
// makes the new range; otherwise it stays pending, as the split may still
// apply, unless the left range has moved on (another generation), when it
// never will.
func (n *Node) claimDrainedSplit(v *revision.View) {
	ds := n.splitting.Load()
	if ds == nil {
		return
	}
	left := v.RangeByID(ds.left)
	right := v.RangeFor(ds.key)
	gen := ds.guard.Generation + 1
	switch {
	case left != nil && right != nil && string(left.End) == string(ds.key) && string(right.Start) == string(ds.key) &&
		left.Generation == gen && right.Generation == gen && v.LastRev[right.Id] == ds.guard.LastRev:
		n.splitting.CompareAndSwap(ds, nil)
		gl, err := n.logs.Load(right.Id)
		if err != nil {
			n.lg.Error("reading the log of a split's new range failed", zap.Uint64("range", right.Id), zap.Error(err))
			return
		}
		if gl.Snap.GetIndex() > 0 || len(gl.Entries) > 0 || gl.State.GetTerm() > 0 {
			n.clearDrainedSplit(ds) // made here before the member stopped
			return
		}
		n.startMu.Lock()
		n.authoritative[right.Id] = true
		n.created[right.Id] = ds.guard.LastRev
		n.splitMembers[right.Id] = v.Members
		n.startMu.Unlock()
		n.lg.Info("making the new range of a split this member asked for before it stopped", zap.Uint64("range", right.Id), zap.Uint64("left", ds.left))
	case left == nil || left.Generation != ds.guard.Generation:
		n.splitting.CompareAndSwap(ds, nil)
		n.clearDrainedSplit(ds)
	}
}

// crashAfterSplitEnv names the test knob that makes a member exit at once,
// the first time it learns that a split it asked for applied (before it
// makes the new range): the crash that restoreDrainedSplit and
// claimDrainedSplit are for. Once per data dir, so the member restarts.
// "1" makes any member exit so; a member's name, only that member.
const crashAfterSplitEnv = "MOSAIC_TEST_CRASH_AFTER_SPLIT"

func (n *Node) crashAfterSplitForTest() {
	if v := os.Getenv(crashAfterSplitEnv); (v != "1" && (v == "" || v != n.cfg.Name)) || n.cfg.DataDir == "" {
		return
	}
	marker := filepath.Join(n.cfg.DataDir, "test-crashed-after-split")
	if _, err := os.Stat(marker); err == nil {
		return
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return
	}
	n.lg.Warn("exiting at once after a split applied, as " + crashAfterSplitEnv + " asks")
	os.Exit(3)
}
