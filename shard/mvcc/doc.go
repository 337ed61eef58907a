// Package mvcc owns the node's multi-version key-value state: one badger DB (normal mode) shared
// by every shard replica on the node, holding each key's versions, a per-revision change index,
// the callers' meta records, and the compacted revision.
//
// The store knows nothing of shards, Raft or revision allocation. Callers (shard actors) pass the
// revision and the op index within it (sub) of every write, and clip key spans to their shard
// before calling. Revisions are etcd's: dense, starting at 1, one per modifying request.
//
// Invariants the package keeps:
//
//   - A key's versions are totally ordered by revision; a write must be above the key's newest
//     version (ErrRevision otherwise), so a key has at most one version per revision.
//   - A version is live unless it is a tombstone. Reads at revision R see, per key, the newest
//     version with mod_revision <= R if it is live — exactly etcd's Range, including
//     create_revision, version and lease.
//   - Every write of a key at (rev, sub) has a change-index entry recording the event type and
//     the revision of the live version it superseded, in the same badger transaction.
//   - An Update is one badger transaction: its data, change entries and meta records commit
//     together or not at all, so a caller's applied index stored as meta never disagrees with
//     the data it covers.
//   - Reads below the compacted revision fail with ErrCompacted; the compacted revision is made
//     durable before any history is removed, and removal keeps everything reads at or above it
//     and watch catch-up from it need (see compact.go).
//   - Bad input and damaged or foreign files produce errors, never panics.
//
// Semantics worth knowing beyond etcd's:
//
//   - Reads at rev <= 0 read the latest state; the store does not know the current revision, so
//     ErrFutureRev is the caller's to return.
//   - Changes with a limit returns whole revisions only, so a watch resumes at last Rev+1 without
//     splitting a revision. Events at exactly the compacted revision carry no PrevKv, as etcd's
//     (it reads prev_kv at rev-1, which is compacted).
//   - Compact only processes change-index entries, and every sweep starts at the beginning of the
//     index, so writes a lagging replica applies below the compacted revision are cleaned up by
//     the next compaction. A crash or cancelled ctx mid-sweep is finished by the next Compact call.
//   - Conflict detection is off: callers must serialize Updates writing the same keys.
//
// The on-disk encoding is in keys.go.
package mvcc
