// Package actors owns what the actors of one node share: the Raft log store
// (a segmented write-ahead log with group commit), the Raft driver that
// shard and oracle actors use to run their groups over it, and the
// inter-node Raft transport (one gRPC stream per peer, messages of all
// groups batched per destination; not yet wired into the server).
//
// Invariants kept here:
//   - A Raft write (entries, HardState, snapshot metadata of one group) is
//     reported done only after it is durable: the writer goroutine puts every
//     write queued at that moment, from all groups, into one WAL record and
//     one fdatasync, and a record is all-or-nothing on replay.
//   - The writes of one group are applied in submission order, and a
//     RaftGroup hands committed entries to its owner only once durable.
//   - A write that requires a transaction (an oracle decision) is never
//     durable before the write that provides it (the shard intent); it shares
//     its record when both are queued together. On a single node, where a
//     group's local write is its commit, this makes a client write cost one
//     fdatasync instead of two (see router.Node's speculative mode).
package actors
