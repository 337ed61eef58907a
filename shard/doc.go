// Package shard owns the shard actor: one replica of one range, its Raft
// group, its latches and its pending intents, applying to the node's MVCC
// store (package shard/mvcc).
//
// A write reaches a shard in three steps, driven by the router:
//  1. Latch: the request's spans are latched (read latches on what its
//     outcome depends on, write latches on what it writes) and its
//     compares and existence checks are evaluated on the latest applied
//     state. Latches are held until the request is applied or released,
//     so nothing the evaluation saw can change before the write's revision.
//  2. Propose: the request's ops on this shard become an intent in the
//     shard's Raft log; once committed (durable) the router may ask the
//     oracle for a revision.
//  3. Apply: the oracle's decision carries the revision; the shard applies
//     its intents in revision order, with the applied revision and Raft
//     index written in the same MVCC transaction, and answers the router.
//
// Invariants kept here:
//   - Intents are applied in increasing revision order, each exactly once:
//     an intent whose revision is at or below the applied revision is
//     already in the MVCC state (apply is atomic with the applied revision).
//   - The persisted Raft applied index never passes an entry that holds an
//     unresolved intent, so a restart replays every intent not yet applied
//     and resolves it with the oracle.
//   - A shard answers nothing outside its span; a request that reaches it
//     after a split moved part of its span away gets ErrRangeMoved.
//
// In a cluster (several voters) the replica that leads the range's group
// runs steps 1 and 2; every replica applies:
//   - Only a leader that has resolved every intent its predecessors left
//     (watchLeader, resolveForLead) grants latches; one that loses the lead
//     drops its latches, so nothing they admitted is proposed afterwards.
//   - The leader applies a decision when the oracle makes it and puts it
//     in the range's log (logDecided), in revision order with no gap;
//     followers apply decisions and aborts from their log alone, so a
//     replica's state is its log's.
//   - A replica behind its leader's truncated log gets a snapshot of the
//     range (snapshot.go); a replica applies only its own span's keys.
package shard
