package kvrules

import (
	"container/heap"
	"math"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// etcd's default limits (embed.DefaultMaxTxnOps, embed.DefaultMaxRequestBytes)
// and the slack etcd adds to the gRPC receive limit (config.grpcOverheadBytes).
const (
	DefaultMaxTxnOps       = 128
	DefaultMaxRequestBytes = 1536 * 1024 // 1.5 MiB
	// GRPCOverheadBytes is added to the max request bytes to form the gRPC
	// server's MaxRecvMsgSize (ServerConfig.MaxRequestBytesWithOverhead).
	// A message above that is refused by grpc-go itself with
	// codes.ResourceExhausted, before any handler runs; the server must set
	// grpc.MaxRecvMsgSize(maxRequestBytes+GRPCOverheadBytes) to match.
	GRPCOverheadBytes = 512 * 1024
)

// CheckRange validates a Range request as etcd's gRPC layer does
// (v3rpc checkRangeRequest): empty key, then sort order, then sort target.
func CheckRange(r *pb.RangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.GetSortOrder())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.GetSortTarget())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// CheckPut validates a Put request as etcd's gRPC layer does
// (v3rpc checkPutRequest): empty key, value with ignore_value, lease with
// ignore_lease.
func CheckPut(r *pb.PutRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.GetIgnoreValue() && len(r.GetValue()) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.GetIgnoreLease() && r.GetLease() != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

// CheckDeleteRange validates a DeleteRange request (v3rpc checkDeleteRequest).
func CheckDeleteRange(r *pb.DeleteRangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// CheckCompaction returns the errors etcd gives a Compaction request whatever
// the store state: etcd's compactMainRev is never below -1, so a revision
// <= -1 is always ErrGRPCCompacted (mvcc store.updateCompactRev). The gRPC
// layer itself checks nothing but auth. See CheckCompactionState for the rest.
func CheckCompaction(r *pb.CompactionRequest) error {
	if r.GetRevision() < 0 {
		return rpctypes.ErrGRPCCompacted
	}
	return nil
}

// CheckTxn validates a Txn request as etcd's gRPC layer does: first the
// recursive shape check (v3rpc checkTxnRequest: op counts against maxTxnOps,
// with nested txns getting the budget left by their parent, then compare
// keys, then each success op, then each failure op), then the put/delete
// overlap rules of the success branch, then of the failure branch
// (v3rpc checkIntervals).
//
// Op count: a txn level counts max(len(compare), len(success), len(failure));
// a nested txn is checked against maxTxnOps minus its parent's count. An
// empty RequestOp (no request set) is ErrGRPCKeyNotFound, as in etcd.
func CheckTxn(r *pb.TxnRequest, maxTxnOps int) error {
	if err := checkTxnShape(r, maxTxnOps); err != nil {
		return err
	}
	if _, _, err := checkOverlaps(r.GetSuccess()); err != nil {
		return err
	}
	if _, _, err := checkOverlaps(r.GetFailure()); err != nil {
		return err
	}
	return nil
}

func checkTxnShape(r *pb.TxnRequest, maxTxnOps int) error {
	opc := max(len(r.GetCompare()), len(r.GetSuccess()), len(r.GetFailure()))
	if opc > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, u := range r.GetSuccess() {
		if err := checkOp(u, maxTxnOps-opc); err != nil {
			return err
		}
	}
	for _, u := range r.GetFailure() {
		if err := checkOp(u, maxTxnOps-opc); err != nil {
			return err
		}
	}
	return nil
}

func checkOp(u *pb.RequestOp, budget int) error {
	switch v := u.GetRequest().(type) {
	case *pb.RequestOp_RequestRange:
		return CheckRange(v.RequestRange)
	case *pb.RequestOp_RequestPut:
		return CheckPut(v.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return CheckDeleteRange(v.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnShape(v.RequestTxn, budget)
	default:
		return rpctypes.ErrGRPCKeyNotFound
	}
}

// delIval is a deleted key interval as etcd's checkIntervals models it with
// adt string-affine intervals: [begin, end), with an empty end meaning +inf.
// A single-key delete is [k, k+"\x00"). A range_end that is not greater than
// the key ("\x00" included: etcd does not apply mkGteRange here) gives an
// interval that contains no key.
type delIval struct {
	begin, end string
	owner      int // -1: the level's own deletes; i: the i-th nested txn of the level
}

func (d delIval) covers(k string) bool {
	return d.begin <= k && (d.end == "" || k < d.end)
}

// checkOverlaps decides exactly what etcd's checkIntervals decides for one
// list of ops and returns the keys put and the intervals deleted anywhere in
// it (nested txns included, both of their branches).
//
// etcd's rules, for one list of ops (a "level"):
//   - the level's deletes are collected first;
//   - nested txns are then visited in order; the puts of nested txn i (either
//     branch) must not be put by an earlier nested txn i' < i, and must not
//     fall in a delete of the level or of a nested txn i' < i; the two
//     branches of one nested txn may put the same key;
//   - the level's own puts must be distinct, not put by any nested txn and
//     not fall in any delete of the level or of any nested txn.
//
// Note the asymmetry etcd has: a nested txn that puts k followed by a nested
// txn that deletes k is accepted; the reverse order is ErrGRPCDuplicateKey.
// All violations give the same error, so the conditions are checked here in
// bulk (put/delete coverage with a sweep) instead of one by one.
func checkOverlaps(reqs []*pb.RequestOp) (map[string]struct{}, []delIval, error) {
	var dels []delIval
	for _, req := range reqs {
		d := req.GetRequestDeleteRange()
		if d == nil {
			continue
		}
		dels = append(dels, toIval(d, -1))
	}

	puts := make(map[string]struct{})
	type query struct {
		key   string
		owner int // nested txn index, or math.MaxInt for the level's own puts
	}
	var queries []query
	child := 0
	for _, req := range reqs {
		tv, ok := req.GetRequest().(*pb.RequestOp_RequestTxn)
		if !ok {
			continue
		}
		putsThen, delsThen, err := checkOverlaps(tv.RequestTxn.GetSuccess())
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkOverlaps(tv.RequestTxn.GetFailure())
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if _, dup := puts[k]; dup {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
		}
		for k := range putsElse {
			if _, dup := puts[k]; dup {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
		}
		for k := range putsThen {
			puts[k] = struct{}{}
			queries = append(queries, query{k, child})
		}
		for k := range putsElse {
			if _, both := putsThen[k]; both {
				continue
			}
			puts[k] = struct{}{}
			queries = append(queries, query{k, child})
		}
		for _, d := range delsThen {
			d.owner = child
			dels = append(dels, d)
		}
		for _, d := range delsElse {
			d.owner = child
			dels = append(dels, d)
		}
		child++
	}
	for _, req := range reqs {
		p := req.GetRequestPut()
		if p == nil {
			continue
		}
		k := string(p.GetKey())
		if _, dup := puts[k]; dup {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
		queries = append(queries, query{k, math.MaxInt})
	}

	// A put of owner o conflicts with a delete of owner < o. Sweep the keys
	// in ascending order, keeping the live intervals (begin <= key) in a
	// min-heap by owner and dropping those whose end is <= key (they stay
	// dead: keys only grow).
	if len(dels) > 0 && len(queries) > 0 {
		sorted := make([]delIval, len(dels))
		copy(sorted, dels)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].begin < sorted[j].begin })
		sort.Slice(queries, func(i, j int) bool { return queries[i].key < queries[j].key })
		h := &ivalHeap{}
		next := 0
		for _, q := range queries {
			for next < len(sorted) && sorted[next].begin <= q.key {
				heap.Push(h, sorted[next])
				next++
			}
			for h.Len() > 0 && !(*h)[0].covers(q.key) {
				heap.Pop(h)
			}
			if h.Len() > 0 && (*h)[0].owner < q.owner {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
		}
	}
	return puts, dels, nil
}

func toIval(d *pb.DeleteRangeRequest, owner int) delIval {
	k := string(d.GetKey())
	if len(d.GetRangeEnd()) != 0 {
		return delIval{begin: k, end: string(d.GetRangeEnd()), owner: owner}
	}
	return delIval{begin: k, end: k + "\x00", owner: owner}
}

// ivalHeap is a min-heap of intervals by owner. Every interval in it has
// begin <= the current sweep key, so covers() fails only by its end, and an
// interval that stops covering never covers a later (greater) key again.
type ivalHeap []delIval

func (h ivalHeap) Len() int           { return len(h) }
func (h ivalHeap) Less(i, j int) bool { return h[i].owner < h[j].owner }
func (h ivalHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ivalHeap) Push(x any)        { *h = append(*h, x.(delIval)) }
func (h *ivalHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// raftEnvelopeID is the request ID etcd puts in the header of every raft
// request (idutil.Generator: member ID low 16 bits << 48 | counter). Its
// varint takes 10 bytes when that member-ID prefix has its top bit set and
// 9 otherwise; we take the worst case.
const raftEnvelopeID = math.MaxUint64

// CheckRequestSize reports rpctypes.ErrGRPCRequestTooLarge when etcd would:
// etcd marshals the request into an InternalRaftRequest (request ID header
// plus the request in its field) and rejects it when that is strictly larger
// than maxRequestBytes (EtcdServer.processInternalRaftRequestOnce). The size
// is computed here on the same envelope with a 10-byte request ID and no
// auth username, so it matches etcd to the byte for a member whose 16-bit ID
// prefix is >= 0x8000 and is one byte stricter otherwise.
//
// Requests that etcd serves without raft are never too large: a Range and a
// read-only Txn (IsTxnReadOnly). Etcd runs this check after the request's
// static Check* function and before any apply-time check.
//
// Message types that are not KV or lease requests are measured with a
// two-byte field tag (most etcd raft request fields are numbered >= 16).
func CheckRequestSize(m proto.Message, maxRequestBytes int) error {
	irr := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: raftEnvelopeID}}
	var size int
	switch v := m.(type) {
	case *pb.RangeRequest:
		return nil
	case *pb.TxnRequest:
		if IsTxnReadOnly(v) {
			return nil
		}
		irr.Txn = v
	case *pb.PutRequest:
		irr.Put = v
	case *pb.DeleteRangeRequest:
		irr.DeleteRange = v
	case *pb.CompactionRequest:
		irr.Compaction = v
	case *pb.LeaseGrantRequest:
		irr.LeaseGrant = v
	case *pb.LeaseRevokeRequest:
		irr.LeaseRevoke = v
	default:
		n := proto.Size(m)
		size = protowire.SizeTag(1000) + protowire.SizeBytes(n)
	}
	size += proto.Size(irr)
	if size > maxRequestBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}

// State is the pre-request store state the apply-time checks read.
type State struct {
	// CurrentRev is the store revision before the request (etcd's
	// currentRev; 1 for a fresh store).
	CurrentRev int64
	// CompactRev is etcd's compactMainRev: the last compaction revision, or
	// -1 when the store has never been compacted (a fresh etcd store starts at
	// -1, and Compact(0) on it succeeds and sets it to 0).
	CompactRev int64
	// LeaseExists reports whether a lease is granted and not revoked. Nil
	// means no lease exists.
	LeaseExists func(id int64) bool
	// KeyExists reports whether key is live at CurrentRev. Nil means no key
	// exists.
	KeyExists func(key []byte) bool
}

func (st State) leaseExists(id int64) bool { return st.LeaseExists != nil && st.LeaseExists(id) }
func (st State) keyExists(k []byte) bool   { return st.KeyExists != nil && st.KeyExists(k) }

// CheckRangeState gives the revision errors of a plain Range (mvcc
// storeTxnCommon.rangeKeys): revision > current is ErrGRPCFutureRev;
// revision <= 0 reads the current revision; otherwise a revision below the
// compaction revision is ErrGRPCCompacted (the compaction revision itself is
// readable). Note a Range inside a Txn follows different rules (Plan.Check).
func CheckRangeState(r *pb.RangeRequest, st State) error {
	rev := r.GetRevision()
	if rev > st.CurrentRev {
		return rpctypes.ErrGRPCFutureRev
	}
	if rev <= 0 {
		rev = st.CurrentRev
	}
	if rev < st.CompactRev {
		return rpctypes.ErrGRPCCompacted
	}
	return nil
}

// checkTxnRange is etcd's txn checkRange: revision 0 is current; above
// current is ErrGRPCFutureRev; below the compaction revision is
// ErrGRPCCompacted, negative revisions included (so -1 passes on a store
// never compacted and then reads the current revision).
func checkTxnRange(r *pb.RangeRequest, st State) error {
	switch rev := r.GetRevision(); {
	case rev == 0:
		return nil
	case rev > st.CurrentRev:
		return rpctypes.ErrGRPCFutureRev
	case rev < st.CompactRev:
		return rpctypes.ErrGRPCCompacted
	}
	return nil
}

// CheckPutState gives the apply-time errors of a Put, in etcd's order
// (etcdserver/txn put.go: checkLease, then checkAndGetPrevKV): a non-zero
// lease that does not exist is ErrGRPCLeaseNotFound; ignore_value or
// ignore_lease on a key that does not exist is ErrGRPCKeyNotFound.
func CheckPutState(r *pb.PutRequest, st State) error {
	if id := r.GetLease(); id != 0 && !st.leaseExists(id) {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	if (r.GetIgnoreValue() || r.GetIgnoreLease()) && !st.keyExists(r.GetKey()) {
		return rpctypes.ErrGRPCKeyNotFound
	}
	return nil
}

// CheckCompactionState gives the apply-time errors of a Compaction (mvcc
// store.updateCompactRev): revision <= the compaction revision is
// ErrGRPCCompacted, then revision > current is ErrGRPCFutureRev.
func CheckCompactionState(r *pb.CompactionRequest, st State) error {
	if r.GetRevision() <= st.CompactRev {
		return rpctypes.ErrGRPCCompacted
	}
	if r.GetRevision() > st.CurrentRev {
		return rpctypes.ErrGRPCFutureRev
	}
	return nil
}
