package kvrules

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

func b(s string) []byte { return []byte(s) }

func opPut(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: b(k)}}}
}

func opDel(k, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: b(k)}
	if end != "" {
		d.RangeEnd = b(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func opRange(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: b(k)}}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func ops(n int, mk func(i int) *pb.RequestOp) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = mk(i)
	}
	return out
}

func TestCheckRange(t *testing.T) {
	// v3rpc checkRangeRequest: empty key, then sort order, then sort target.
	cases := []struct {
		name string
		r    *pb.RangeRequest
		want error
	}{
		{"ok", &pb.RangeRequest{Key: b("a")}, nil},
		{"empty key", &pb.RangeRequest{}, rpctypes.ErrGRPCEmptyKey},
		{"empty key wins over bad sort", &pb.RangeRequest{SortOrder: 9}, rpctypes.ErrGRPCEmptyKey},
		{"bad order", &pb.RangeRequest{Key: b("a"), SortOrder: 3}, rpctypes.ErrGRPCInvalidSortOption},
		{"bad target", &pb.RangeRequest{Key: b("a"), SortTarget: 5}, rpctypes.ErrGRPCInvalidSortOption},
		{"negative target", &pb.RangeRequest{Key: b("a"), SortTarget: -1}, rpctypes.ErrGRPCInvalidSortOption},
		{"all valid enums", &pb.RangeRequest{Key: b("a"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE}, nil},
		// nothing else is checked up front: limits, revisions, filters
		{"negative limit and revision", &pb.RangeRequest{Key: b("a"), Limit: -5, Revision: -3}, nil},
	}
	for _, c := range cases {
		if got := CheckRange(c.r); got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
}

func TestCheckPutDelete(t *testing.T) {
	// v3rpc checkPutRequest: key, then ignore_value+value, then ignore_lease+lease.
	puts := []struct {
		name string
		r    *pb.PutRequest
		want error
	}{
		{"ok", &pb.PutRequest{Key: b("a"), Value: b("v"), Lease: 7}, nil},
		{"empty key", &pb.PutRequest{Value: b("v")}, rpctypes.ErrGRPCEmptyKey},
		{"ignore value with value", &pb.PutRequest{Key: b("a"), Value: b("v"), IgnoreValue: true}, rpctypes.ErrGRPCValueProvided},
		{"ignore value without value", &pb.PutRequest{Key: b("a"), IgnoreValue: true}, nil},
		{"ignore lease with lease", &pb.PutRequest{Key: b("a"), Lease: 1, IgnoreLease: true}, rpctypes.ErrGRPCLeaseProvided},
		{"value error before lease error", &pb.PutRequest{Key: b("a"), Value: b("v"), IgnoreValue: true, Lease: 1, IgnoreLease: true}, rpctypes.ErrGRPCValueProvided},
		{"key error first", &pb.PutRequest{Value: b("v"), IgnoreValue: true}, rpctypes.ErrGRPCEmptyKey},
	}
	for _, c := range puts {
		if got := CheckPut(c.r); got != c.want {
			t.Errorf("put %s: got %v want %v", c.name, got, c.want)
		}
	}
	// v3rpc checkDeleteRequest: only the key.
	if got := CheckDeleteRange(&pb.DeleteRangeRequest{RangeEnd: b("z")}); got != rpctypes.ErrGRPCEmptyKey {
		t.Errorf("delete empty key: %v", got)
	}
	if got := CheckDeleteRange(&pb.DeleteRangeRequest{Key: b("b"), RangeEnd: b("a")}); got != nil {
		t.Errorf("delete inverted range: %v", got)
	}
}

func TestCheckTxn(t *testing.T) {
	cmp := func(k string) *pb.Compare { return &pb.Compare{Key: b(k)} }
	cases := []struct {
		name string
		r    *pb.TxnRequest
		max  int
		want error
	}{
		// checkTxnRequest: opc = max(len(compare), len(success), len(failure)).
		{"at the limit", &pb.TxnRequest{Success: ops(4, func(i int) *pb.RequestOp { return opPut(string(rune('a' + i))) })}, 4, nil},
		{"too many success", &pb.TxnRequest{Success: ops(5, func(i int) *pb.RequestOp { return opRange("a") })}, 4, rpctypes.ErrGRPCTooManyOps},
		{"too many compares", &pb.TxnRequest{Compare: []*pb.Compare{cmp("a"), cmp("a"), cmp("a")}}, 2, rpctypes.ErrGRPCTooManyOps},
		{"branches are not summed", &pb.TxnRequest{Compare: []*pb.Compare{cmp("a"), cmp("b")}, Success: []*pb.RequestOp{opRange("a"), opRange("b")}, Failure: []*pb.RequestOp{opRange("a"), opRange("b")}}, 2, nil},
		// checkRequestOp passes maxTxnOps-opc to a nested txn.
		{"nested within budget", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a"), opPut("b")}}), opRange("x")}}, 4, nil},
		{"nested over budget", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a"), opPut("b"), opPut("c")}}), opRange("x")}}, 4, rpctypes.ErrGRPCTooManyOps},
		{"nested empty txn at zero budget", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{}), opRange("x")}}, 2, nil},
		// compares' keys are checked after the count, before the ops.
		{"compare empty key", &pb.TxnRequest{Compare: []*pb.Compare{cmp("a"), {}}}, 4, rpctypes.ErrGRPCEmptyKey},
		{"count before compare key", &pb.TxnRequest{Compare: []*pb.Compare{{}, {}, {}}}, 2, rpctypes.ErrGRPCTooManyOps},
		{"compare key before op errors", &pb.TxnRequest{Compare: []*pb.Compare{{}}, Success: []*pb.RequestOp{{}}}, 4, rpctypes.ErrGRPCEmptyKey},
		// checkRequestOp: an empty op is ErrKeyNotFound; success before failure.
		{"empty op", &pb.TxnRequest{Success: []*pb.RequestOp{{}}}, 4, rpctypes.ErrGRPCKeyNotFound},
		{"success before failure", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: b("a"), Lease: 1, IgnoreLease: true}}}}, Failure: []*pb.RequestOp{{}}}, 4, rpctypes.ErrGRPCLeaseProvided},
		{"range sort option in txn", &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: b("a"), SortOrder: 7}}}}}, 4, rpctypes.ErrGRPCInvalidSortOption},
		{"nested shape error", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opDel("", "")}})}}, 4, rpctypes.ErrGRPCEmptyKey},
		// shape errors come before duplicate-key errors (checkIntervals runs after checkTxnRequest).
		{"shape before dup", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("a"), opPut("a")}, Failure: []*pb.RequestOp{{}}}, 4, rpctypes.ErrGRPCKeyNotFound},

		// checkIntervals: duplicate puts in one list.
		{"dup put", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("a"), opPut("a")}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"same put in success and failure", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}, Failure: []*pb.RequestOp{opPut("a")}}, 4, nil},
		{"put inside delete range", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "c"), opPut("b")}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"put before delete range (order irrelevant at one level)", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("b"), opDel("a", "c")}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"put at range end is outside", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "c"), opPut("c")}}, 4, nil},
		{"put vs single delete", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", ""), opPut("a")}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"put next to single delete", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", ""), opPut("a\x00")}}, 4, nil},
		{"two deletes overlap", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "c"), opDel("b", "d")}}, 4, nil},
		{"range and put same key", &pb.TxnRequest{Success: []*pb.RequestOp{opRange("a"), opPut("a")}}, 4, nil},
		// etcd does not apply mkGteRange in checkIntervals: "\x00" as range end is an empty interval.
		{"from-key delete does not conflict", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "\x00"), opPut("b")}}, 4, nil},
		{"inverted delete does not conflict", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("c", "a"), opPut("b")}}, 4, nil},
		// nested: a level put against nested puts and nested deletes.
		{"level put vs nested put", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}}), opPut("a")}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"level put vs nested else put", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("a"), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("a")}})}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"level put vs nested delete", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("b"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "c")}})}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"nested put vs level delete", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("b")}}), opDel("a", "c")}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"nested then/else may put the same key", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}, Failure: []*pb.RequestOp{opPut("a")}})}}, 4, nil},
		{"nested then put vs else delete is fine", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}, Failure: []*pb.RequestOp{opDel("a", "")}})}}, 4, nil},
		{"two nested txns put the same key", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}}), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("a")}})}}, 4, rpctypes.ErrGRPCDuplicateKey},
		// the asymmetry of checkIntervals: earlier nested deletes are seen by later nested puts, not the reverse.
		{"nested delete then nested put", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "")}}), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}})}}, 4, rpctypes.ErrGRPCDuplicateKey},
		{"nested put then nested delete", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}}), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "")}})}}, 4, nil},
		{"deep nested delete reaches up", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opDel("a", "z")}})}}), opPut("m")}}, 8, rpctypes.ErrGRPCDuplicateKey},
		{"dup only in failure branch", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("a")}, Failure: []*pb.RequestOp{opPut("b"), opPut("b")}}, 4, rpctypes.ErrGRPCDuplicateKey},
	}
	for _, c := range cases {
		if got := CheckTxn(c.r, c.max); got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
}

func TestCheckTxnLargeIsFast(t *testing.T) {
	// A wide, deep tree with many puts and deletes must not be quadratic.
	var mk func(depth int, prefix string) *pb.TxnRequest
	mk = func(depth int, prefix string) *pb.TxnRequest {
		tr := &pb.TxnRequest{}
		for i := 0; i < 20; i++ {
			k := prefix + string(rune('a'+i))
			if depth == 0 {
				if i%2 == 0 {
					tr.Success = append(tr.Success, opPut(k))
				} else {
					tr.Success = append(tr.Success, opDel(k, k+"\x00\x00"))
				}
				continue
			}
			tr.Success = append(tr.Success, opTxn(mk(depth-1, k)))
		}
		return tr
	}
	r := mk(3, "") // 160000 leaf ops
	if err := CheckTxn(r, 1000); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCompaction(t *testing.T) {
	// mvcc store.updateCompactRev: rev <= compactMainRev (starts at -1) is
	// ErrCompacted, then rev > currentRev is ErrFutureRev.
	fresh := State{CurrentRev: 1, CompactRev: -1}
	cases := []struct {
		name   string
		rev    int64
		st     State
		static error
		want   error
	}{
		{"zero on fresh store is accepted", 0, fresh, nil, nil},
		{"one on fresh store", 1, fresh, nil, nil},
		{"minus one is always compacted", -1, fresh, rpctypes.ErrGRPCCompacted, rpctypes.ErrGRPCCompacted},
		{"future", 2, fresh, nil, rpctypes.ErrGRPCFutureRev},
		{"same as compacted", 5, State{CurrentRev: 9, CompactRev: 5}, nil, rpctypes.ErrGRPCCompacted},
		{"compacted wins over future", 5, State{CurrentRev: 4, CompactRev: 5}, nil, rpctypes.ErrGRPCCompacted},
		{"current", 9, State{CurrentRev: 9, CompactRev: 5}, nil, nil},
	}
	for _, c := range cases {
		r := &pb.CompactionRequest{Revision: c.rev}
		if got := CheckCompaction(r); got != c.static {
			t.Errorf("%s static: got %v want %v", c.name, got, c.static)
		}
		if got := CheckCompactionState(r, c.st); got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
}

func TestCheckRangeState(t *testing.T) {
	// mvcc storeTxnCommon.rangeKeys: future first; rev <= 0 is current; below compactMainRev is compacted.
	st := State{CurrentRev: 10, CompactRev: 5}
	cases := []struct {
		rev  int64
		want error
	}{
		{0, nil}, {-7, nil}, {4, rpctypes.ErrGRPCCompacted}, {5, nil}, {10, nil}, {11, rpctypes.ErrGRPCFutureRev},
	}
	for _, c := range cases {
		if got := CheckRangeState(&pb.RangeRequest{Key: b("a"), Revision: c.rev}, st); got != c.want {
			t.Errorf("rev %d: got %v want %v", c.rev, got, c.want)
		}
	}
}

func TestCheckPutState(t *testing.T) {
	// etcdserver/txn Put: checkLease, then checkAndGetPrevKV.
	st := State{
		LeaseExists: func(id int64) bool { return id == 7 },
		KeyExists:   func(k []byte) bool { return bytes.Equal(k, b("here")) },
	}
	cases := []struct {
		name string
		r    *pb.PutRequest
		want error
	}{
		{"plain", &pb.PutRequest{Key: b("x")}, nil},
		{"known lease", &pb.PutRequest{Key: b("x"), Lease: 7}, nil},
		{"unknown lease", &pb.PutRequest{Key: b("x"), Lease: 8}, rpctypes.ErrGRPCLeaseNotFound},
		{"negative lease", &pb.PutRequest{Key: b("x"), Lease: -1}, rpctypes.ErrGRPCLeaseNotFound},
		{"ignore value missing key", &pb.PutRequest{Key: b("x"), IgnoreValue: true}, rpctypes.ErrGRPCKeyNotFound},
		{"ignore lease missing key", &pb.PutRequest{Key: b("x"), IgnoreLease: true}, rpctypes.ErrGRPCKeyNotFound},
		{"ignore value existing key", &pb.PutRequest{Key: b("here"), IgnoreValue: true}, nil},
		{"lease error first", &pb.PutRequest{Key: b("x"), Lease: 8, IgnoreValue: true}, rpctypes.ErrGRPCLeaseNotFound},
	}
	for _, c := range cases {
		if got := CheckPutState(c.r, st); got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
	if got := CheckPutState(&pb.PutRequest{Key: b("x"), Lease: 1}, State{}); got != rpctypes.ErrGRPCLeaseNotFound {
		t.Errorf("nil LeaseExists: %v", got)
	}
}

func TestCheckRequestSize(t *testing.T) {
	// processInternalRaftRequestOnce: len(marshal(InternalRaftRequest)) > MaxRequestBytes.
	put := &pb.PutRequest{Key: b("k"), Value: bytes.Repeat(b("v"), 1000)}
	env := proto.Size(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: raftEnvelopeID}, Put: put})
	if env-proto.Size(put) != 17 { // 1 tag + 2 len + 14 header (2 tag, 1 len, 1 tag, 10 id)
		t.Fatalf("envelope = %d bytes, want 17", env-proto.Size(put))
	}
	if err := CheckRequestSize(put, env); err != nil {
		t.Errorf("exactly at the limit: %v", err)
	}
	if err := CheckRequestSize(put, env-1); err != rpctypes.ErrGRPCRequestTooLarge {
		t.Errorf("one over: %v", err)
	}
	big := bytes.Repeat(b("v"), 2*DefaultMaxRequestBytes)
	// Range and read-only txns never go through raft.
	if err := CheckRequestSize(&pb.RangeRequest{Key: big}, 100); err != nil {
		t.Errorf("range: %v", err)
	}
	ro := &pb.TxnRequest{Compare: []*pb.Compare{{Key: big}}, Success: []*pb.RequestOp{opRange("a")}}
	if err := CheckRequestSize(ro, 100); err != nil {
		t.Errorf("read-only txn: %v", err)
	}
	rw := &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{})}, Compare: []*pb.Compare{{Key: big}}}
	if err := CheckRequestSize(rw, DefaultMaxRequestBytes); err != rpctypes.ErrGRPCRequestTooLarge {
		t.Errorf("txn with nested txn is not read-only: %v", err)
	}
	if err := CheckRequestSize(&pb.DeleteRangeRequest{Key: big}, DefaultMaxRequestBytes); err != rpctypes.ErrGRPCRequestTooLarge {
		t.Errorf("delete: %v", err)
	}
	if err := CheckRequestSize(&pb.CompactionRequest{Revision: 5}, DefaultMaxRequestBytes); err != nil {
		t.Errorf("compaction: %v", err)
	}
}
