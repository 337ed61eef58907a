// Package actors owns what the actors of one node share: the Raft log store
// with group commit, and the registry that maps range ids to shard actors.
//
// Invariants kept here:
//   - A Raft write (entries + HardState of one group) is reported done only
//     after it is durable: the log store's badger DB fsyncs every commit, and
//     the writer goroutine puts every request queued at that moment, from all
//     groups, into one commit (one fsync per cycle, whatever the number of
//     groups).
//   - The writes of one group are applied in submission order.
package actors
