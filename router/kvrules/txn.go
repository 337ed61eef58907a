package kvrules

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// How a Txn runs on Mosaic with this package, mirroring etcd's txn.Txn:
//
//  1. CheckTxn (and CheckRequestSize unless IsTxnReadOnly).
//  2. cmps := TxnCompares(r); evaluate every one on the state just before
//     the txn (EvalCompare per shard, CompareResult to combine). etcd only
//     evaluates the compares of the branches it takes, all on the same
//     pre-txn read view, so evaluating all of them there is equivalent.
//  3. plan := TxnPlan(r, results). plan.Check(state) gives etcd's apply-time
//     error, if any (then nothing executes and no revision is taken); the
//     state it needs: plan.Leases() and plan.MustExist().
//  4. Execute plan.Ops in order at revision beginRev+1, each seeing the
//     effects of the ops before it (a Range after a Put sees the new value,
//     a DeleteRange does not count keys an earlier DeleteRange removed; a
//     Put's prev_kv and version see earlier ops too). A Range with an
//     explicit revision (> 0; Check guarantees <= beginRev) reads that
//     committed revision and not the txn's own writes; revision 0 or a
//     negative one that passed Check reads the txn's current state. Range
//     answers come from MergeRange exactly as for a plain Range. The txn
//     takes a revision iff plan.Writes(results) (a Put, or a DeleteRange
//     that deleted something); otherwise nothing changes and it answers at
//     beginRev.
//  5. plan.Response(results, beginRev) builds the TxnResponse.

// TxnCompares lists every compare of the txn tree, in a stable pre-order:
// a txn's own compares, then those of the nested txns of its success ops
// (recursively, in op order), then those of its failure ops. TxnPlan takes
// the results in the same order.
func TxnCompares(r *pb.TxnRequest) []*pb.Compare {
	var out []*pb.Compare
	var walk func(t *pb.TxnRequest)
	walk = func(t *pb.TxnRequest) {
		out = append(out, t.GetCompare()...)
		for _, op := range t.GetSuccess() {
			if n := op.GetRequestTxn(); n != nil {
				walk(n)
			}
		}
		for _, op := range t.GetFailure() {
			if n := op.GetRequestTxn(); n != nil {
				walk(n)
			}
		}
	}
	walk(r)
	return out
}

func countCompares(t *pb.TxnRequest) int {
	n := len(t.GetCompare())
	for _, op := range t.GetSuccess() {
		if x := op.GetRequestTxn(); x != nil {
			n += countCompares(x)
		}
	}
	for _, op := range t.GetFailure() {
		if x := op.GetRequestTxn(); x != nil {
			n += countCompares(x)
		}
	}
	return n
}

// FlatOp is one operation of the executed path.
type FlatOp struct {
	// Index is the op's position in Plan.Ops (its execution order).
	Index int
	// Path is the op's position in the response tree: Path[0] indexes the
	// top TxnResponse.Responses; when len(Path) > 1, that entry is a nested
	// TxnResponse and Path[1] indexes its Responses, and so on.
	Path []int
	// Exactly one of these is set.
	Range  *pb.RangeRequest
	Put    *pb.PutRequest
	Delete *pb.DeleteRangeRequest
}

// Plan is the executed path of a Txn.
type Plan struct {
	// Succeeded is the top txn's result (TxnResponse.Succeeded).
	Succeeded bool
	// Path is etcd's txnPath: the result of every executed txn in execution
	// pre-order (the top txn first, then each nested txn of the taken branch).
	Path []bool
	// Ops are the executed operations in execution order.
	Ops []FlatOp

	root *planTxn
}

type planTxn struct {
	succeeded bool
	items     []planItem
}

// planItem is one response slot of a txn: a flat op or a nested txn.
type planItem struct {
	op     int
	nested *planTxn
}

// TxnPlan computes the executed path of r given the results of
// TxnCompares(r), in that order. r must have passed CheckTxn (an empty
// RequestOp is reported as an error).
func TxnPlan(r *pb.TxnRequest, results []bool) (*Plan, error) {
	if n := countCompares(r); n != len(results) {
		return nil, fmt.Errorf("kvrules: txn has %d compares, got %d results", n, len(results))
	}
	p := &Plan{}
	var build func(t *pb.TxnRequest, off int, path []int) (*planTxn, error)
	build = func(t *pb.TxnRequest, off int, path []int) (*planTxn, error) {
		ok := true
		for _, res := range results[off : off+len(t.GetCompare())] {
			ok = ok && res
		}
		p.Path = append(p.Path, ok)
		node := &planTxn{succeeded: ok}
		// offset of the compares of the nested txns of each branch
		off += len(t.GetCompare())
		ops := t.GetSuccess()
		if !ok {
			for _, op := range t.GetSuccess() {
				if x := op.GetRequestTxn(); x != nil {
					off += countCompares(x)
				}
			}
			ops = t.GetFailure()
		}
		for i, op := range ops {
			opPath := append(append([]int(nil), path...), i)
			fo := FlatOp{Index: len(p.Ops), Path: opPath}
			switch v := op.GetRequest().(type) {
			case *pb.RequestOp_RequestRange:
				fo.Range = v.RequestRange
			case *pb.RequestOp_RequestPut:
				fo.Put = v.RequestPut
			case *pb.RequestOp_RequestDeleteRange:
				fo.Delete = v.RequestDeleteRange
			case *pb.RequestOp_RequestTxn:
				nested, err := build(v.RequestTxn, off, opPath)
				if err != nil {
					return nil, err
				}
				off += countCompares(v.RequestTxn)
				node.items = append(node.items, planItem{op: -1, nested: nested})
				continue
			default:
				return nil, fmt.Errorf("kvrules: empty request op at %v", opPath)
			}
			node.items = append(node.items, planItem{op: fo.Index})
			p.Ops = append(p.Ops, fo)
		}
		return node, nil
	}
	root, err := build(r, 0, nil)
	if err != nil {
		return nil, err
	}
	p.root = root
	p.Succeeded = root.succeeded
	return p, nil
}

// Check gives the error etcd's apply layer returns for the executed path
// (etcdserver/txn checkTxn), on the pre-txn state: ops are checked in
// execution order and the first error wins. A Range with a revision above
// st.CurrentRev is ErrGRPCFutureRev, below st.CompactRev ErrGRPCCompacted
// (negative revisions included; 0 is current); a Put with an unknown lease is
// ErrGRPCLeaseNotFound, then ignore_value/ignore_lease on a missing key is
// ErrGRPCKeyNotFound. On error the txn does nothing and takes no revision.
//
// Deliberate divergence: a DeleteRange with range_end "\x00" escapes etcd's
// duplicate-key check (CheckTxn), so a txn can delete a key and then Put it
// with ignore_value / ignore_lease. etcd v3.7.3 passes its checks (the key
// exists before the txn) and then panics in the apply loop (txn put: index
// out of range on the missing previous value), taking the member down.
// Mosaic answers such a txn, once all of etcd's checks pass, with
// ErrGRPCKeyNotFound: the key does not exist when the Put runs.
func (p *Plan) Check(st State) error {
	for _, op := range p.Ops {
		switch {
		case op.Range != nil:
			if err := checkTxnRange(op.Range, st); err != nil {
				return err
			}
		case op.Put != nil:
			if err := CheckPutState(op.Put, st); err != nil {
				return err
			}
		}
	}
	var deleted []Span
	for _, op := range p.Ops {
		switch {
		case op.Delete != nil:
			deleted = append(deleted, SpanOf(op.Delete.GetKey(), op.Delete.GetRangeEnd()))
		case op.Put != nil && (op.Put.GetIgnoreValue() || op.Put.GetIgnoreLease()):
			for _, sp := range deleted {
				if sp.Contains(op.Put.GetKey()) {
					return rpctypes.ErrGRPCKeyNotFound
				}
			}
		}
	}
	return nil
}

// MustExist returns the keys Check needs State.KeyExists for: the keys of the
// executed Puts with ignore_value or ignore_lease, in execution order.
func (p *Plan) MustExist() [][]byte {
	var out [][]byte
	for _, op := range p.Ops {
		if op.Put != nil && (op.Put.GetIgnoreValue() || op.Put.GetIgnoreLease()) {
			out = append(out, op.Put.GetKey())
		}
	}
	return out
}

// Leases returns the lease IDs Check needs State.LeaseExists for: the
// non-zero leases of the executed Puts, in execution order, without
// repeats.
func (p *Plan) Leases() []int64 {
	var out []int64
	seen := map[int64]bool{}
	for _, op := range p.Ops {
		if op.Put != nil && op.Put.GetLease() != 0 && !seen[op.Put.GetLease()] {
			seen[op.Put.GetLease()] = true
			out = append(out, op.Put.GetLease())
		}
	}
	return out
}

// MustWrite reports whether the executed path surely takes a revision: it
// has a Put.
func (p *Plan) MustWrite() bool {
	for _, op := range p.Ops {
		if op.Put != nil {
			return true
		}
	}
	return false
}

// MayWrite reports whether the executed path can take a revision: it has a
// Put or a DeleteRange. Without either, the txn is answered at the read
// revision and changes nothing.
func (p *Plan) MayWrite() bool {
	for _, op := range p.Ops {
		if op.Put != nil || op.Delete != nil {
			return true
		}
	}
	return false
}

// Writes reports whether the executed txn took a revision, given the per-op
// results (as for Response): etcd bumps the revision iff the txn made a
// change, i.e. ran a Put or a DeleteRange that deleted at least one key.
func (p *Plan) Writes(results []*pb.ResponseOp) bool {
	for i, op := range p.Ops {
		if op.Put != nil {
			return true
		}
		if op.Delete != nil && i < len(results) && results[i].GetResponseDeleteRange().GetDeleted() != 0 {
			return true
		}
	}
	return false
}

// Response builds etcd's TxnResponse from the per-op results, results[i]
// answering p.Ops[i] (a ResponseOp holding the RangeResponse — e.g. from
// MergeRange —, PutResponse or DeleteRangeResponse of that op). beginRev is
// the store revision just before the txn; a txn that writes has revision
// beginRev+1.
//
// Headers are set as etcd sets them (etcdserver/txn txn, executeTxn and
// mvcc storeTxnWrite): the top header's Revision is beginRev+1 if the txn
// changed anything, else beginRev (the caller fills cluster_id, member_id and
// raft_term of the top header only); a Put's header is beginRev+1; a
// DeleteRange's is beginRev+1 if it deleted something or an earlier op
// changed something, else beginRev; a Range's is beginRev+1 if an earlier op
// changed something, else beginRev; a nested TxnResponse has an empty,
// non-nil header. Response replaces the Header field of each result's inner
// response; it does not modify the old header objects.
func (p *Plan) Response(results []*pb.ResponseOp, beginRev int64) (*pb.TxnResponse, error) {
	if len(results) != len(p.Ops) {
		return nil, fmt.Errorf("kvrules: plan has %d ops, got %d results", len(p.Ops), len(results))
	}
	changed := false
	rev := func() int64 {
		if changed {
			return beginRev + 1
		}
		return beginRev
	}
	for i, op := range p.Ops {
		res := results[i]
		switch {
		case op.Range != nil:
			rr := res.GetResponseRange()
			if rr == nil {
				return nil, fmt.Errorf("kvrules: op %d is a Range, result is %T", i, res.GetResponse())
			}
			rr.Header = &pb.ResponseHeader{Revision: rev()}
		case op.Put != nil:
			pr := res.GetResponsePut()
			if pr == nil {
				return nil, fmt.Errorf("kvrules: op %d is a Put, result is %T", i, res.GetResponse())
			}
			changed = true
			pr.Header = &pb.ResponseHeader{Revision: rev()}
		case op.Delete != nil:
			dr := res.GetResponseDeleteRange()
			if dr == nil {
				return nil, fmt.Errorf("kvrules: op %d is a DeleteRange, result is %T", i, res.GetResponse())
			}
			if dr.GetDeleted() != 0 {
				changed = true
			}
			dr.Header = &pb.ResponseHeader{Revision: rev()}
		}
	}
	var build func(n *planTxn) *pb.TxnResponse
	build = func(n *planTxn) *pb.TxnResponse {
		tr := &pb.TxnResponse{
			Header:    &pb.ResponseHeader{},
			Succeeded: n.succeeded,
			Responses: make([]*pb.ResponseOp, len(n.items)),
		}
		for i, it := range n.items {
			if it.nested != nil {
				tr.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: build(it.nested)}}
				continue
			}
			tr.Responses[i] = results[it.op]
		}
		return tr
	}
	resp := build(p.root)
	resp.Header.Revision = rev()
	return resp, nil
}

// IsTxnReadOnly is etcd's IsTxnReadonly: every top-level op of both branches
// is a Range (a nested txn makes it not read-only, whatever it holds; a txn
// with no ops is read-only). etcd serves a read-only txn on the read path:
// no raft, hence no ErrGRPCRequestTooLarge.
func IsTxnReadOnly(r *pb.TxnRequest) bool {
	for _, u := range r.GetSuccess() {
		if u.GetRequestRange() == nil {
			return false
		}
	}
	for _, u := range r.GetFailure() {
		if u.GetRequestRange() == nil {
			return false
		}
	}
	return true
}

// IsTxnSerializable is etcd's IsTxnSerializable: every top-level op of both
// branches is a serializable Range (so a txn with no ops is serializable).
// etcd skips the linearizable read barrier for such a read-only txn.
func IsTxnSerializable(r *pb.TxnRequest) bool {
	for _, u := range r.GetSuccess() {
		if rr := u.GetRequestRange(); rr == nil || !rr.GetSerializable() {
			return false
		}
	}
	for _, u := range r.GetFailure() {
		if rr := u.GetRequestRange(); rr == nil || !rr.GetSerializable() {
			return false
		}
	}
	return true
}
