package router

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/revision"
)

// checkpointInterval is how often the node makes its MVCC state durable
// and truncates Raft logs behind it.
const checkpointInterval = 10 * time.Second

// checkpoint is what was applied, per group, just before an MVCC sync.
type checkpoint struct {
	oracleIndex uint64
	shardIndex  map[uint64]uint64
	shardRev    map[uint64]int64 // each replica's applied revision
	// coveredRev: every shard had applied every revision up to it.
	coveredRev int64
	view       *revision.View
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
			covered := prev.coveredRev
			if n.cluster {
				covered = n.clusterCovered(prev)
			}
			n.oracle.Checkpoint(prev.oracleIndex, covered)
			n.coveredMu.Lock()
			n.covered = prev.shardRev
			n.coveredMu.Unlock()
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
	c := &checkpoint{oracleIndex: saved, shardIndex: map[uint64]uint64{}, shardRev: map[uint64]int64{}, coveredRev: v.Rev, view: v}
	for _, s := range n.allShards() {
		c.shardIndex[s.ID()] = s.AppliedIndex()
		c.shardRev[s.ID()] = s.AppliedRev()
		if applied := s.AppliedRev(); applied < v.LastRev[s.ID()] && applied < c.coveredRev {
			c.coveredRev = applied
		}
	}
	return c, nil
}

// clusterCovered is the revision up to which the oracle may forget fates,
// in a cluster: every replica of every range, on whichever member, had
// durably applied all of its range's revisions up to it (as of c's view).
// Members that do not answer are left out, but a range none of whose
// replicas answered covers nothing: its replicas may still need its fates
// when they come back.
func (n *Node) clusterCovered(c *checkpoint) int64 {
	reports := map[uint64]map[uint64]int64{n.nodeID: c.shardRev}
	for _, m := range c.view.Members {
		if m.Id == n.nodeID {
			continue
		}
		conn, err := n.peerConn(m.Id)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := rangepb.NewRangesClient(conn).Covered(ctx, &rangepb.CoveredRequest{})
		cancel()
		if err == nil {
			reports[m.Id] = resp.Applied
		}
	}
	covered := c.view.Rev
	for _, d := range c.view.Ranges {
		best, heard := int64(0), false
		for _, id := range n.replicasOf(d) {
			if rev, ok := reports[id][d.Id]; ok {
				best = min(rev, best)
				if !heard {
					best = rev
				}
				heard = true
			}
		}
		switch {
		case !heard:
			return 0
		case best < c.view.LastRev[d.Id]:
			covered = min(covered, best)
		}
	}
	return covered
}
