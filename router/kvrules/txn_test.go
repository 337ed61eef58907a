package kvrules

import (
	"reflect"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

func cmpKey(k string) *pb.Compare { return &pb.Compare{Key: b(k)} }

// sampleTxn:
//
//	compare [c0 c1]
//	success [range a, txn{compare [c2] success [put b] failure [delete c..e]}, put d]
//	failure [txn{compare [c3] success [range e, put f]}]
func sampleTxn() *pb.TxnRequest {
	return &pb.TxnRequest{
		Compare: []*pb.Compare{cmpKey("c0"), cmpKey("c1")},
		Success: []*pb.RequestOp{
			opRange("a"),
			opTxn(&pb.TxnRequest{Compare: []*pb.Compare{cmpKey("c2")}, Success: []*pb.RequestOp{opPut("b")}, Failure: []*pb.RequestOp{opDel("c", "e")}}),
			opPut("d"),
		},
		Failure: []*pb.RequestOp{
			opTxn(&pb.TxnRequest{Compare: []*pb.Compare{cmpKey("c3")}, Success: []*pb.RequestOp{opRange("e"), opPut("f")}}),
		},
	}
}

type flat struct {
	kind string
	key  string
	path []int
}

func flatten(p *Plan) []flat {
	var out []flat
	for i, op := range p.Ops {
		if op.Index != i {
			panic("bad index")
		}
		switch {
		case op.Range != nil:
			out = append(out, flat{"range", string(op.Range.Key), op.Path})
		case op.Put != nil:
			out = append(out, flat{"put", string(op.Put.Key), op.Path})
		case op.Delete != nil:
			out = append(out, flat{"delete", string(op.Delete.Key), op.Path})
		}
	}
	return out
}

func TestTxnPlan(t *testing.T) {
	r := sampleTxn()
	var keys []string
	for _, c := range TxnCompares(r) {
		keys = append(keys, string(c.Key))
	}
	if want := []string{"c0", "c1", "c2", "c3"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("TxnCompares order %v want %v", keys, want)
	}
	// etcd compareToPath / newTxnResp / executeTxn: the top compares pick the
	// branch (all must hold), then each nested txn of that branch its own.
	cases := []struct {
		name    string
		results []bool
		succ    bool
		path    []bool
		ops     []flat
	}{
		{"success, nested failure", []bool{true, true, false, true}, true, []bool{true, false},
			[]flat{{"range", "a", []int{0}}, {"delete", "c", []int{1, 0}}, {"put", "d", []int{2}}}},
		{"success, nested success", []bool{true, true, true, false}, true, []bool{true, true},
			[]flat{{"range", "a", []int{0}}, {"put", "b", []int{1, 0}}, {"put", "d", []int{2}}}},
		{"one false compare fails the txn; c2 is skipped", []bool{true, false, true, true}, false, []bool{false, true},
			[]flat{{"range", "e", []int{0, 0}}, {"put", "f", []int{0, 1}}}},
		{"failure, nested failure: nothing runs", []bool{false, false, true, false}, false, []bool{false, false}, nil},
	}
	for _, c := range cases {
		p, err := TxnPlan(r, c.results)
		if err != nil {
			t.Fatal(err)
		}
		if p.Succeeded != c.succ || !reflect.DeepEqual(p.Path, c.path) || !reflect.DeepEqual(flatten(p), c.ops) {
			t.Errorf("%s: got succ=%v path=%v ops=%v", c.name, p.Succeeded, p.Path, flatten(p))
		}
	}
	if _, err := TxnPlan(r, []bool{true}); err == nil {
		t.Error("wrong number of results accepted")
	}
	// a txn without compares takes its success branch (applyCompares of nothing is true).
	p, _ := TxnPlan(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x")}, Failure: []*pb.RequestOp{opPut("y")}}, nil)
	if !p.Succeeded || string(p.Ops[0].Put.Key) != "x" {
		t.Error("empty compare list must succeed")
	}
}

func rangeRes(n int64) *pb.ResponseOp {
	return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Count: n}}}
}
func putRes() *pb.ResponseOp {
	return &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{}}}
}
func delRes(n int64) *pb.ResponseOp {
	return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Deleted: n}}}
}
func hdr(rev int64) *pb.ResponseHeader { return &pb.ResponseHeader{Revision: rev} }

func TestPlanResponse(t *testing.T) {
	// Headers as etcd's txn/executeTxn and mvcc storeTxnWrite produce them:
	// Put: beginRev+1; DeleteRange: +1 iff it or an earlier op changed
	// something; Range: +1 iff an earlier op changed something; nested
	// TxnResponse: empty header; top: +1 iff anything changed.
	r := sampleTxn()

	// success, nested failure: range a, delete c..e (deletes nothing), put d.
	p, _ := TxnPlan(r, []bool{true, true, false, true})
	results := []*pb.ResponseOp{rangeRes(1), delRes(0), putRes()}
	if p.Writes(results) != true || !p.MustWrite() || !p.MayWrite() {
		t.Error("put path must write")
	}
	got, err := p.Response(results, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.TxnResponse{
		Header:    hdr(11),
		Succeeded: true,
		Responses: []*pb.ResponseOp{
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Header: hdr(10), Count: 1}}},
			{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: false, Responses: []*pb.ResponseOp{
				{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Header: hdr(10)}}},
			}}}},
			{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{Header: hdr(11)}}},
		},
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if got.Responses[1].GetResponseTxn().Header == nil {
		t.Error("nested header must be non-nil")
	}

	// failure, nested success: range e then put f; the txn writes.
	p, _ = TxnPlan(r, []bool{false, true, false, true})
	got, _ = p.Response([]*pb.ResponseOp{rangeRes(0), putRes()}, 10)
	if got.Header.Revision != 11 || got.Succeeded ||
		got.Responses[0].GetResponseTxn().Responses[0].GetResponseRange().Header.Revision != 10 ||
		got.Responses[0].GetResponseTxn().Responses[1].GetResponsePut().Header.Revision != 11 {
		t.Errorf("failure path: %v", got)
	}

	// A path with only deletes that delete nothing takes no revision.
	dr := &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", ""), opRange("a"), opDel("b", "")}}
	p, _ = TxnPlan(dr, nil)
	res := []*pb.ResponseOp{delRes(0), rangeRes(0), delRes(0)}
	if p.Writes(res) || p.MustWrite() || !p.MayWrite() {
		t.Error("deletes of nothing do not write")
	}
	got, _ = p.Response(res, 7)
	if got.Header.Revision != 7 || got.Responses[2].GetResponseDeleteRange().Header.Revision != 7 {
		t.Errorf("no-op deletes: %v", got)
	}
	// A delete that deletes: the following range and delete see revision+1.
	res = []*pb.ResponseOp{delRes(1), rangeRes(0), delRes(0)}
	got, _ = p.Response(res, 7)
	if !p.Writes(res) || got.Header.Revision != 8 || got.Responses[0].GetResponseDeleteRange().Header.Revision != 8 ||
		got.Responses[1].GetResponseRange().Header.Revision != 8 || got.Responses[2].GetResponseDeleteRange().Header.Revision != 8 {
		t.Errorf("delete then range: %v", got)
	}

	// Read-only: everything at beginRev; an empty txn too.
	p, _ = TxnPlan(&pb.TxnRequest{}, nil)
	got, _ = p.Response(nil, 4)
	if got.Header.Revision != 4 || !got.Succeeded || len(got.Responses) != 0 || p.MayWrite() {
		t.Errorf("empty txn: %v", got)
	}

	// Mismatched results are refused.
	p, _ = TxnPlan(dr, nil)
	if _, err := p.Response([]*pb.ResponseOp{putRes(), rangeRes(0), delRes(0)}, 1); err == nil {
		t.Error("put result for a delete op accepted")
	}
}

func TestPlanCheck(t *testing.T) {
	st := State{CurrentRev: 10, CompactRev: 5, LeaseExists: func(id int64) bool { return id == 1 }}
	rng := func(rev int64) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: b("a"), Revision: rev}}}
	}
	leasePut := func(k string, lease int64) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: b(k), Lease: lease}}}
	}
	ignorePut := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: b(k), IgnoreValue: true}}}
	}
	cases := []struct {
		name string
		ops  []*pb.RequestOp
		st   State
		want error
	}{
		// txn checkTxn + checkRange: 0 is current, > current future, < compact compacted.
		{"current", []*pb.RequestOp{rng(0), rng(10), rng(5)}, st, nil},
		{"future", []*pb.RequestOp{rng(11)}, st, rpctypes.ErrGRPCFutureRev},
		{"compacted", []*pb.RequestOp{rng(4)}, st, rpctypes.ErrGRPCCompacted},
		// unlike a plain Range, a negative revision inside a txn is compared with compactMainRev.
		{"negative is compacted", []*pb.RequestOp{rng(-1)}, st, rpctypes.ErrGRPCCompacted},
		{"-1 passes on a never-compacted store", []*pb.RequestOp{rng(-1)}, State{CurrentRev: 3, CompactRev: -1}, nil},
		{"-2 fails on a never-compacted store", []*pb.RequestOp{rng(-2)}, State{CurrentRev: 3, CompactRev: -1}, rpctypes.ErrGRPCCompacted},
		// checkPut: lease, then key existence; ops in execution order, first error wins.
		{"unknown lease", []*pb.RequestOp{leasePut("a", 2)}, st, rpctypes.ErrGRPCLeaseNotFound},
		{"known lease", []*pb.RequestOp{leasePut("a", 1)}, st, nil},
		{"ignore value on missing key", []*pb.RequestOp{ignorePut("a")}, st, rpctypes.ErrGRPCKeyNotFound},
		{"first op's error wins", []*pb.RequestOp{rng(11), leasePut("a", 2)}, st, rpctypes.ErrGRPCFutureRev},
		{"first op's error wins (2)", []*pb.RequestOp{leasePut("a", 2), rng(11)}, st, rpctypes.ErrGRPCLeaseNotFound},
		{"nested ops are checked in order", []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rng(4)}}), leasePut("a", 2)}, st, rpctypes.ErrGRPCCompacted},
		{"deletes check nothing", []*pb.RequestOp{opDel("a", "")}, st, nil},
		// divergence: etcd 3.7.3 panics here (delete with "\x00" end, then ignore_value put).
		{"ignore put after from-key delete", []*pb.RequestOp{opDel("a", "\x00"), ignorePut("b")},
			State{CurrentRev: 3, CompactRev: -1, KeyExists: func([]byte) bool { return true }}, rpctypes.ErrGRPCKeyNotFound},
		{"ignore put before the delete is fine", []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{ignorePut("b")}}), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel("b", "")}})},
			State{CurrentRev: 3, CompactRev: -1, KeyExists: func([]byte) bool { return true }}, nil},
	}
	for _, c := range cases {
		r := &pb.TxnRequest{Success: c.ops}
		if err := CheckTxn(r, DefaultMaxTxnOps); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		p, err := TxnPlan(r, nil) // no compares: success branches all the way
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Check(c.st); got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}

	r := &pb.TxnRequest{Success: []*pb.RequestOp{
		leasePut("a", 5), ignorePut("b"), leasePut("c", 5), leasePut("d", 0),
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: b("e"), IgnoreLease: true}}},
	}}
	p, _ := TxnPlan(r, nil)
	if got := p.Leases(); !reflect.DeepEqual(got, []int64{5}) {
		t.Errorf("Leases %v", got)
	}
	var must []string
	for _, k := range p.MustExist() {
		must = append(must, string(k))
	}
	if !reflect.DeepEqual(must, []string{"b", "e"}) {
		t.Errorf("MustExist %v", must)
	}
}

func TestTxnReadOnly(t *testing.T) {
	// txn IsTxnReadonly / IsTxnSerializable look at the top-level ops only.
	ser := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: b("a"), Serializable: true}}}
	cases := []struct {
		name   string
		r      *pb.TxnRequest
		ro, sr bool
	}{
		{"empty", &pb.TxnRequest{Compare: []*pb.Compare{cmpKey("a")}}, true, true},
		{"ranges", &pb.TxnRequest{Success: []*pb.RequestOp{opRange("a")}, Failure: []*pb.RequestOp{ser}}, true, false},
		{"serializable ranges", &pb.TxnRequest{Success: []*pb.RequestOp{ser}, Failure: []*pb.RequestOp{ser}}, true, true},
		{"nested read-only txn is not read-only", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{})}}, false, false},
		{"put in failure", &pb.TxnRequest{Success: []*pb.RequestOp{ser}, Failure: []*pb.RequestOp{opPut("a")}}, false, false},
	}
	for _, c := range cases {
		if IsTxnReadOnly(c.r) != c.ro || IsTxnSerializable(c.r) != c.sr {
			t.Errorf("%s: ro=%v ser=%v", c.name, IsTxnReadOnly(c.r), IsTxnSerializable(c.r))
		}
	}
}
