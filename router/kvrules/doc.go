// Package kvrules holds etcd v3.7's rules for KV requests as pure functions, so
// that the router can split a request across shards and still answer exactly
// as a single etcd server would.
//
// It owns four things:
//
//   - Validation. CheckRange, CheckPut, CheckDeleteRange, CheckTxn and
//     CheckCompaction reject malformed requests the way etcd's gRPC layer does
//     (v3rpc/key.go: checkRangeRequest, checkPutRequest, checkDeleteRequest,
//     checkTxnRequest, checkIntervals), in etcd's order. CheckRequestSize is
//     etcd's ErrRequestTooLarge decision (processInternalRaftRequestOnce).
//     The *State functions and Plan.Check are the apply-time checks that need
//     the pre-request store state (revision bounds, lease existence, key
//     existence for ignore_value / ignore_lease).
//   - Compares. EvalCompare runs one compare over the part of its span held
//     by one shard; CompareResult combines the parts with etcd's semantics
//     (etcdserver/txn/txn.go: applyCompare, compareKV).
//   - Transactions. TxnCompares lists every compare in a Txn tree, TxnPlan
//     turns their results into the executed path (etcd's compareToPath) as a
//     flat list of operations in execution order, and Plan.Response rebuilds
//     the TxnResponse tree, headers included, from per-op results.
//   - Range merging. ShardFetchLimit says how much each shard must return and
//     MergeRange turns per-shard parts into etcd's RangeResponse (filters,
//     sort, limit, more, count, keys_only, count_only; etcd's executeRange).
//
// Invariants:
//
//   - Every error returned is a value from go.etcd.io/etcd/api/v3/v3rpc/rpctypes
//     (never re-declared), so clients can compare it with ==.
//   - Nothing here performs I/O, keeps state or mutates its inputs, except
//     Plan.Response, which sets the Header of the per-op responses it is given
//     (documented there).
//   - Requests are taken as gRPC delivers them: an empty bytes field is
//     "absent" (a zero-length range_end means "single key"); range_end "\x00"
//     means "every key >= key" (etcd's mkGteRange).
//   - Sorting reproduces etcd's output order exactly, ties included: etcd
//     sorts a key-ascending slice with sort.Sort (unstable but deterministic),
//     and MergeRange sorts the identical slice with the same algorithm and an
//     equivalent Less. Shards must therefore deliver every key of the span
//     (ShardFetchLimit returns 0) whenever the order is not etcd's default.
//   - Compare results and the pre-checks of a Txn are taken on the state just
//     before the Txn's revision; a Range inside a Txn must see the writes of
//     the Txn's earlier operations (see FlatOp).
//
// The reference for every rule is etcd v3.7.3's server source; each test case
// names the etcd function it pins.
package kvrules
