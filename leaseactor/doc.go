// Package leaseactor owns lease time on the lease primary: it tracks every
// lease's expiry, renews leases on keep-alive, revokes expired leases, and
// checkpoints remaining TTLs.
//
// Lease existence is replicated state (the revision oracle holds it); this
// package holds only time, which is not replicated, as in etcd: a restart
// or a new primary starts each lease afresh from its checkpointed remaining
// TTL, or from its full TTL if it never was checkpointed.
//
// Invariants kept here:
//   - A lease is revoked once per expiry: while its revoke runs, it is not
//     revoked again and cannot be renewed (it is expired).
//   - A renewal of a lease whose remaining TTL was checkpointed clears the
//     checkpoint, so a restart never cuts a lease that was kept alive.
package leaseactor
