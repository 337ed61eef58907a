package router

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// checkpointInterval is how often the node makes its MVCC state durable
// and truncates Raft logs behind it.
const checkpointInterval = 10 * time.Second

// checkpoint is what was applied, per group, just before an MVCC sync.
type checkpoint struct {
	oracleIndex uint64
	shardIndex  map[uint64]uint64
	// coveredRev: every shard had applied every revision up to it.
	coveredRev int64
}

// checkpointLoop periodically syncs the MVCC store and then lets every
// group drop the Raft log the previous round made durable. Using the
// previous round's positions leaves one interval for badger to flush
// memtables it rotated before the sync (its Sync covers only the active
// memtable's WAL), so a log entry is dropped only well after its effects
// are on disk.
func (n *Node) checkpointLoop(every time.Duration) {
	defer close(n.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		cur, err := n.capture()
		if err != nil {
			n.lg.Error("checkpoint: saving the oracle state failed", zap.Error(err))
			continue
		}
		if err := n.store.Sync(); err != nil {
			n.lg.Error("checkpoint: syncing the MVCC store failed", zap.Error(err))
			continue
		}
		if prev := n.lastCkpt; prev != nil {
			// In a cluster, a replica behind its leader's truncated log is
			// sent a snapshot (of the range, or of the oracle).
			for id, idx := range prev.shardIndex {
				if s := n.shard(id); s != nil {
					s.CompactLog(idx)
				}
			}
			n.oracle.Checkpoint(prev.oracleIndex, prev.coveredRev)
		}
		n.lastCkpt = cur
	}
}

func (n *Node) capture() (*checkpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v := n.oracle.View()
	saved, err := n.oracle.Persist(ctx)
	if err != nil {
		return nil, err
	}
	c := &checkpoint{oracleIndex: saved, shardIndex: map[uint64]uint64{}, coveredRev: v.Rev}
	for _, s := range n.allShards() {
		c.shardIndex[s.ID()] = s.AppliedIndex()
		if applied := s.AppliedRev(); applied < v.LastRev[s.ID()] && applied < c.coveredRev {
			c.coveredRev = applied
		}
	}
	return c, nil
}
