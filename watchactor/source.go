package watchactor

import (
	"context"

	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// Source is what the watch service needs from its node. The node
// implements it (router.Node.WatchSource).
type Source interface {
	// Revs returns the visible revision — the highest R such that every
	// write at or below R is applied on every range and so readable with
	// Changes — and etcd's compact revision (-1 before any compaction).
	Revs() (visible, compacted int64)
	// Current returns the store's current revision as a Range would
	// report it: every write acknowledged so far is at or below it. A
	// watch from revision 0 starts after it, and headers of created and
	// canceled responses carry it.
	Current() int64
	// Advanced returns a channel closed the next time the visible
	// revision may have moved (the caller then calls Revs again).
	Advanced() <-chan struct{}
	// OnAdvance registers fn to be called, on the goroutine that moved it,
	// each time the visible revision may have moved (after Advanced's
	// channel is closed). fn never blocks.
	OnAdvance(fn func())
	// Changes lists the events of the span (etcd's key/range_end
	// conventions; end == "\x00" is every key >= key) with
	// fromRev <= rev <= toRev, in revision order and, within a revision,
	// in etcd's order; at most limit of them when limit > 0. Every event
	// carries PrevKv (nil when the key had no previous version); the caller
	// drops it for watchers that did not ask. toRev must not exceed the
	// visible revision. A fromRev below the compact revision fails with
	// mvcc.ErrCompacted.
	Changes(ctx context.Context, key, end []byte, fromRev, toRev int64, limit int) ([]mvcc.Change, error)
	// Recent is Changes answered from memory without blocking, for the
	// newest revisions; false when memory cannot answer (then call
	// Changes). The events are shared: do not modify them.
	Recent(key, end []byte, fromRev, toRev int64, limit int) ([]mvcc.Change, bool)
}
