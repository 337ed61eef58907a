package tests

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// cmp builds a Compare; end may be "" for a single key.
func cmpOf(key, end string, target pb.Compare_CompareTarget, result pb.Compare_CompareResult, operand int64, value string) *pb.Compare {
	c := &pb.Compare{Key: []byte(key), Target: target, Result: result}
	if end != "" {
		c.RangeEnd = []byte(end)
	}
	switch target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: operand}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: operand}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: operand}
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: []byte(value)}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: operand}
	}
	return c
}

// txnCompareGroup runs every compare target and result against an existing key, a missing
// key and key spans, with operands below, equal to and above the stored value, and writes in
// the executed branch so that each outcome changes the history both servers must agree on.
func txnCompareGroup(t *testing.T, d *harness.Diff) {
	// k1: version 3; k2: version 1; k3: version 2, so a span over them mixes values.
	put(t, d, "k1", "v1")
	put(t, d, "k2", "v2")
	put(t, d, "k1", "v2")
	put(t, d, "k3", "v1")
	put(t, d, "k1", "v3")
	put(t, d, "k3", "v5")
	o := d.Check("read k1", rangeOp(&pb.RangeRequest{Key: []byte("k1")}))
	o.WantOK(t)
	kv := o.Resp.(*pb.RangeResponse).Kvs[0]

	type subject struct{ name, key, end string }
	subjects := []subject{
		{"existing", "k1", ""},
		{"missing", "nokey", ""},
		{"span", "k", "l"},
		{"span-from", "k2", "\x00"},
		{"span-empty", "x", "y"},
	}
	operands := map[pb.Compare_CompareTarget][]int64{
		pb.Compare_VERSION: {0, kv.Version - 1, kv.Version, kv.Version + 1},
		pb.Compare_CREATE:  {0, kv.CreateRevision - 1, kv.CreateRevision, kv.CreateRevision + 1},
		pb.Compare_MOD:     {0, kv.ModRevision - 1, kv.ModRevision, kv.ModRevision + 1},
		pb.Compare_VALUE:   {0, 1, 2, 3}, // indexes into values
		pb.Compare_LEASE:   {0, 1, -1},
	}
	values := []string{"", "v2", "v3", "v4"}
	n := 0
	for target := range pb.Compare_CompareTarget_name {
		target := pb.Compare_CompareTarget(target)
		for result := range pb.Compare_CompareResult_name {
			result := pb.Compare_CompareResult(result)
			for _, s := range subjects {
				for _, operand := range operands[target] {
					n++
					value := ""
					if target == pb.Compare_VALUE {
						value = values[operand]
					}
					c := cmpOf(s.key, s.end, target, result, operand, value)
					req := &pb.TxnRequest{
						Compare: []*pb.Compare{c},
						Success: []*pb.RequestOp{reqPutPrev("txn/ok", fmt.Sprint(n)), reqRange(s.key, s.end)},
						Failure: []*pb.RequestOp{reqRange("txn/", "txn0")},
					}
					d.Check(fmt.Sprintf("txn %s %s %s %v", target, result, s.name, c), txnOp(req)).WantOK(t)
				}
			}
		}
	}
	// Invalid enum values.
	d.Check("bad compare result", txnOp(&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("k1"), Result: 9, Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{Version: 1}}}}))
	d.Check("bad compare target", txnOp(&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("k1"), Result: pb.Compare_EQUAL, Target: 9}}}))
	d.Check("target without union", txnOp(&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("k1"), Result: pb.Compare_EQUAL, Target: pb.Compare_MOD}}}))
	d.Check("empty compare key", txnOp(&pb.TxnRequest{Compare: []*pb.Compare{cmpOf("", "", pb.Compare_VERSION, pb.Compare_EQUAL, 0, "")}, Success: []*pb.RequestOp{reqRange("k1", "")}}))
	// Several compares are a conjunction.
	for i, cs := range [][]*pb.Compare{
		{cmpOf("k1", "", pb.Compare_VALUE, pb.Compare_EQUAL, 0, "v3"), cmpOf("k2", "", pb.Compare_VERSION, pb.Compare_EQUAL, 1, "")},
		{cmpOf("k1", "", pb.Compare_VALUE, pb.Compare_EQUAL, 0, "v3"), cmpOf("k2", "", pb.Compare_VERSION, pb.Compare_EQUAL, 2, "")},
		{cmpOf("k1", "", pb.Compare_VALUE, pb.Compare_EQUAL, 0, "v3"), cmpOf("k1", "", pb.Compare_VALUE, pb.Compare_NOT_EQUAL, 0, "v3")},
	} {
		d.Check(fmt.Sprintf("conjunction %d", i), txnOp(&pb.TxnRequest{Compare: cs, Success: []*pb.RequestOp{reqPut("conj", fmt.Sprint(i))}, Failure: []*pb.RequestOp{reqDel("conj", "")}})).WantOK(t)
	}
	d.Check("final state", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
}

// txnOpsGroup covers branches with every kind of operation, nesting, duplicate-key rules,
// limits and the Kubernetes update pattern.
func txnOpsGroup(t *testing.T, d *harness.Diff) {
	put(t, d, "a", "1")
	put(t, d, "b", "1")
	put(t, d, "c", "1")
	ok := func(name string, r *pb.TxnRequest) {
		t.Helper()
		d.Check(name, txnOp(r)).WantOK(t)
		d.Check("after "+name, rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	}
	bad := func(name string, r *pb.TxnRequest, want error) {
		t.Helper()
		d.Check(name, txnOp(r)).WantErr(t, want)
	}
	yes := cmpOf("a", "", pb.Compare_VALUE, pb.Compare_EQUAL, 0, "1")
	no := cmpOf("a", "", pb.Compare_VALUE, pb.Compare_EQUAL, 0, "nope")

	ok("empty txn", &pb.TxnRequest{})
	ok("compare only true", &pb.TxnRequest{Compare: []*pb.Compare{yes}})
	ok("compare only false", &pb.TxnRequest{Compare: []*pb.Compare{no}})
	ok("success branch mixed", &pb.TxnRequest{Compare: []*pb.Compare{yes},
		Success: []*pb.RequestOp{reqRange("a", "c"), reqPutPrev("d", "1"), reqDel("b", ""), reqRange("\x00", "\x00")},
		Failure: []*pb.RequestOp{reqPut("never", "1")}})
	ok("failure branch mixed", &pb.TxnRequest{Compare: []*pb.Compare{no},
		Success: []*pb.RequestOp{reqPut("never", "1")},
		Failure: []*pb.RequestOp{reqPutPrev("e", "1"), reqRange("a", "z"), reqDel("c", "d")}})
	ok("reads see earlier writes of the same txn", &pb.TxnRequest{
		Success: []*pb.RequestOp{reqPut("x", "1"), reqRange("x", ""), reqRange("\x00", "\x00")}})
	ok("delete then read", &pb.TxnRequest{Success: []*pb.RequestOp{reqDel("x", ""), reqRange("x", ""), reqRange("\x00", "\x00")}})
	ok("range with options in txn", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{
		Key: []byte("\x00"), RangeEnd: []byte("\x00"), Limit: 1, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_MOD, Revision: 3}}}}})
	ok("put and range same key", &pb.TxnRequest{Success: []*pb.RequestOp{reqRange("a", ""), reqPut("a", "2"), reqRange("a", "")}})
	ok("same key in success and failure", &pb.TxnRequest{Compare: []*pb.Compare{no}, Success: []*pb.RequestOp{reqPut("a", "s")}, Failure: []*pb.RequestOp{reqPut("a", "f")}})
	ok("delete missing in txn", &pb.TxnRequest{Success: []*pb.RequestOp{reqDel("missing", ""), reqDel("m", "n")}})
	ok("nested txn", &pb.TxnRequest{Compare: []*pb.Compare{cmpOf("a", "", pb.Compare_VALUE, pb.Compare_EQUAL, 0, "f")},
		Success: []*pb.RequestOp{reqPut("n1", "outer"), reqTxn(&pb.TxnRequest{
			Compare: []*pb.Compare{cmpOf("n1", "", pb.Compare_VERSION, pb.Compare_EQUAL, 1, "")},
			Success: []*pb.RequestOp{reqPut("n2", "inner-success"), reqRange("n", "o")},
			Failure: []*pb.RequestOp{reqPut("n2", "inner-failure")},
		})}})
	ok("nested txn failure branch", &pb.TxnRequest{
		Success: []*pb.RequestOp{reqTxn(&pb.TxnRequest{
			Compare: []*pb.Compare{cmpOf("n1", "", pb.Compare_VERSION, pb.Compare_EQUAL, 1, "")},
			Success: []*pb.RequestOp{reqPut("n3", "inner-success")},
			Failure: []*pb.RequestOp{reqPut("n3", "inner-failure"), reqTxn(&pb.TxnRequest{Success: []*pb.RequestOp{reqRange("n", "o")}})},
		}), reqRange("n3", "")}})
	ok("nested txns put same key in different branches", &pb.TxnRequest{Success: []*pb.RequestOp{reqTxn(&pb.TxnRequest{
		Compare: []*pb.Compare{no},
		Success: []*pb.RequestOp{reqPut("n4", "s")},
		Failure: []*pb.RequestOp{reqPut("n4", "f")},
	})}})

	bad("duplicate put", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("a", "1"), reqPut("a", "2")}}, rpctypes.ErrGRPCDuplicateKey)
	bad("duplicate put in failure", &pb.TxnRequest{Failure: []*pb.RequestOp{reqPut("a", "1"), reqPut("a", "2")}}, rpctypes.ErrGRPCDuplicateKey)
	bad("put inside deleted span", &pb.TxnRequest{Success: []*pb.RequestOp{reqDel("a", "c"), reqPut("b", "2")}}, rpctypes.ErrGRPCDuplicateKey)
	bad("put then delete span", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("b", "2"), reqDel("a", "c")}}, rpctypes.ErrGRPCDuplicateKey)
	bad("put and delete same key", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("a", "2"), reqDel("a", "")}}, rpctypes.ErrGRPCDuplicateKey)
	bad("duplicate put through nested txn", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("a", "1"), reqTxn(&pb.TxnRequest{Success: []*pb.RequestOp{reqPut("a", "2")}})}}, rpctypes.ErrGRPCDuplicateKey)
	bad("nested put in outer deleted span", &pb.TxnRequest{Success: []*pb.RequestOp{reqDel("a", "z"), reqTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{reqPut("b", "2")}})}}, rpctypes.ErrGRPCDuplicateKey)
	d.Check("overlapping deletes", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqDel("a", "c"), reqDel("b", "d")}}))
	d.Check("same delete twice", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqDel("zz", ""), reqDel("zz", "")}}))

	many := func(n int, op func(i int) *pb.RequestOp) []*pb.RequestOp {
		ops := make([]*pb.RequestOp, n)
		for i := range ops {
			ops[i] = op(i)
		}
		return ops
	}
	manyCompares := func(n int) []*pb.Compare {
		cs := make([]*pb.Compare, n)
		for i := range cs {
			cs[i] = cmpOf(fmt.Sprintf("m%03d", i), "", pb.Compare_VERSION, pb.Compare_EQUAL, 0, "")
		}
		return cs
	}
	putI := func(i int) *pb.RequestOp { return reqPut(fmt.Sprintf("m%03d", i), "v") }
	ok("128 puts", &pb.TxnRequest{Success: many(128, putI)})
	ok("128 compares", &pb.TxnRequest{Compare: manyCompares(128), Failure: many(128, func(i int) *pb.RequestOp { return reqRange(fmt.Sprintf("m%03d", i), "") })})
	bad("129 puts", &pb.TxnRequest{Success: many(129, putI)}, rpctypes.ErrGRPCTooManyOps)
	bad("129 failure ops", &pb.TxnRequest{Failure: many(129, putI)}, rpctypes.ErrGRPCTooManyOps)
	bad("129 compares", &pb.TxnRequest{Compare: manyCompares(129)}, rpctypes.ErrGRPCTooManyOps)
	d.Check("129 ops over nested txns", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{
		reqTxn(&pb.TxnRequest{Success: many(100, putI)}),
		reqTxn(&pb.TxnRequest{Success: many(29, func(i int) *pb.RequestOp { return reqPut(fmt.Sprintf("o%03d", i), "v") })}),
	}}))
	bad("request too large", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("big", overLimit)}}, rpctypes.ErrGRPCRequestTooLarge)
	bad("too large over many ops", &pb.TxnRequest{Success: many(4, func(i int) *pb.RequestOp { return reqPut(fmt.Sprintf("big%d", i), overLimit[:len(overLimit)/4+10]) })}, rpctypes.ErrGRPCRequestTooLarge)
	bad("empty key put", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("", "v")}}, rpctypes.ErrGRPCEmptyKey)
	bad("empty key range", &pb.TxnRequest{Success: []*pb.RequestOp{reqRange("", "")}}, rpctypes.ErrGRPCEmptyKey)
	bad("empty key delete", &pb.TxnRequest{Failure: []*pb.RequestOp{reqDel("", "")}}, rpctypes.ErrGRPCEmptyKey)
	bad("unknown lease", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("l"), Value: []byte("v"), Lease: 77}}}}}, rpctypes.ErrGRPCLeaseNotFound)
	bad("ignore_value missing key", &pb.TxnRequest{Success: []*pb.RequestOp{reqPut("a", "x"), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}}}}}, rpctypes.ErrGRPCKeyNotFound)
	d.Check("ignore_value missing key in unexecuted branch", txnOp(&pb.TxnRequest{Compare: []*pb.Compare{no},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}}}}}))
	d.Check("future revision range in txn", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 100000}}}}})).WantErr(t, rpctypes.ErrGRPCFutureRev)
	d.Check("nil request op", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{{}}}))

	// The Kubernetes pattern: create if mod_revision == 0, update if equal, else read.
	for i := range 3 {
		o := d.Check("k8s read", rangeOp(&pb.RangeRequest{Key: []byte("/registry/pods/p")}))
		var mod int64
		if r, isRange := o.Resp.(*pb.RangeResponse); isRange && len(r.Kvs) == 1 {
			mod = r.Kvs[0].ModRevision
		}
		ok(fmt.Sprintf("k8s guarded update %d", i), &pb.TxnRequest{
			Compare: []*pb.Compare{cmpOf("/registry/pods/p", "", pb.Compare_MOD, pb.Compare_EQUAL, mod, "")},
			Success: []*pb.RequestOp{reqPut("/registry/pods/p", fmt.Sprint(i))},
			Failure: []*pb.RequestOp{reqRange("/registry/pods/p", "")}})
		ok(fmt.Sprintf("k8s stale update %d", i), &pb.TxnRequest{
			Compare: []*pb.Compare{cmpOf("/registry/pods/p", "", pb.Compare_MOD, pb.Compare_EQUAL, mod, "")},
			Success: []*pb.RequestOp{reqPut("/registry/pods/p", "stale")},
			Failure: []*pb.RequestOp{reqRange("/registry/pods/p", "")}})
	}
	// Through clientv3's Txn builder.
	d.Check("clientv3 txn", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Txn(ctx).
			If(clientv3.Compare(clientv3.Value("a"), "=", "f"), clientv3.Compare(clientv3.Version("zz"), "=", 0)).
			Then(clientv3.OpPut("zz", "1", clientv3.WithPrevKV()), clientv3.OpGet("a", clientv3.WithPrefix())).
			Else(clientv3.OpGet("zz")).
			Commit()
	}).WantOK(t)
	d.Check("clientv3 txn else", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision("a"), "<", 2)).
			Then(clientv3.OpDelete("zz")).
			Else(clientv3.OpDelete("zz", clientv3.WithPrevKV()), clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpGet("a")}, nil)).
			Commit()
	}).WantOK(t)
	rev := currentRev(t, d)
	for at := int64(1); at <= rev; at++ {
		d.Check(fmt.Sprintf("history at %d", at), rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: at, KeysOnly: at%2 == 0}))
	}
}

func txnGroups() []group {
	return []group{
		{"txn-compare", txnCompareGroup},
		{"txn-ops", txnOpsGroup},
	}
}

func TestTxn(t *testing.T) { runGroups(t, txnGroups(), nil) }
