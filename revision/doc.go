// Package revision owns the revision oracle: the Raft group that assigns
// the store's single, dense revision, and keeps the range table and the
// compaction revision.
//
// Invariants kept here:
//   - Revisions are assigned only to transactions whose intents are already
//     durable in every shard they touch (the router asks for a decision only
//     after that), so no revision ever names data that could be lost.
//   - Each decision takes exactly previous + 1, in Raft log order; a batch of
//     decisions in one entry takes consecutive revisions. Aborts take none.
//   - A transaction is decided at most once: once aborted it can never be
//     decided, once decided it can never be aborted.
//   - The state (revision, ranges, last revision per range, decisions) is
//     written together with the applied index, so a restart resumes exactly.
//   - Decisions reach each shard in revision order (one sender, FIFO), and a
//     shard can always ask again (Resolve) after a restart.
package revision
