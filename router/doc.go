// Package router is a node's front door: it serves etcd's KV, Maintenance
// and Cluster gRPC services and Mosaic's Admin service, splits each request
// by range, and drives the write protocol (latch and evaluate on every
// shard in key order, intents, one oracle decision, apply) and the read
// protocol (a revision from the oracle's published view, then every shard
// read at that revision once it has applied that far).
//
// Invariants kept here:
//   - A request latches its shards in ascending key order, so two requests
//     never wait on each other in a cycle.
//   - The oracle is asked for a revision only after every intent of the
//     request is durable; after that the request is driven to its end
//     whatever the client does (its context no longer applies).
//   - A read at revision R waits until every shard it reads has applied the
//     last revision the oracle had assigned to it when R was read.
//   - Every error a client sees is etcd's own value from rpctypes where
//     etcd has one.
//
// In a cluster (cluster.go, forward.go, membership.go) the member that
// leads the oracle runs the writes and every range's lead follows it; the
// others forward writes to it, and serve linearizable reads once they have
// applied the revision its ReadIndex confirms.
package router
