package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// overLimit is a value that makes a request larger than etcd's 1.5 MiB request limit but
// smaller than the gRPC message limit (request limit + 512 KiB), so the server's own check
// answers.
var overLimit = strings.Repeat("x", 1536*1024+100)

func putGroup(t *testing.T, d *harness.Diff) {
	for _, tc := range []struct {
		name string
		req  *pb.PutRequest
		want error
	}{
		{"create", &pb.PutRequest{Key: []byte("p1"), Value: []byte("a")}, nil},
		{"update", &pb.PutRequest{Key: []byte("p1"), Value: []byte("b")}, nil},
		{"same value again", &pb.PutRequest{Key: []byte("p1"), Value: []byte("b")}, nil},
		{"prev_kv existing", &pb.PutRequest{Key: []byte("p1"), Value: []byte("c"), PrevKv: true}, nil},
		{"prev_kv missing", &pb.PutRequest{Key: []byte("p2"), Value: []byte("a"), PrevKv: true}, nil},
		{"empty value", &pb.PutRequest{Key: []byte("p3")}, nil},
		{"empty value prev_kv", &pb.PutRequest{Key: []byte("p3"), Value: []byte("x"), PrevKv: true}, nil},
		{"binary key and value", &pb.PutRequest{Key: []byte("\x00\x01\xff"), Value: []byte("\x00\xfe")}, nil},
		{"nul key", &pb.PutRequest{Key: []byte("\x00"), Value: []byte("nul")}, nil},
		{"ff key", &pb.PutRequest{Key: []byte("\xff"), Value: []byte("ff")}, nil},
		{"ignore_value existing", &pb.PutRequest{Key: []byte("p1"), IgnoreValue: true, PrevKv: true}, nil},
		{"ignore_value missing", &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}, rpctypes.ErrGRPCKeyNotFound},
		{"ignore_value with value", &pb.PutRequest{Key: []byte("p1"), Value: []byte("v"), IgnoreValue: true}, rpctypes.ErrGRPCValueProvided},
		{"ignore_lease existing", &pb.PutRequest{Key: []byte("p1"), Value: []byte("d"), IgnoreLease: true, PrevKv: true}, nil},
		{"ignore_lease missing", &pb.PutRequest{Key: []byte("nope"), Value: []byte("v"), IgnoreLease: true}, rpctypes.ErrGRPCKeyNotFound},
		{"ignore_lease with lease", &pb.PutRequest{Key: []byte("p1"), Value: []byte("v"), Lease: 5, IgnoreLease: true}, rpctypes.ErrGRPCLeaseProvided},
		{"ignore_value and ignore_lease", &pb.PutRequest{Key: []byte("p1"), IgnoreValue: true, IgnoreLease: true, PrevKv: true}, nil},
		{"ignore_value and ignore_lease missing", &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true, IgnoreLease: true}, rpctypes.ErrGRPCKeyNotFound},
		{"unknown lease", &pb.PutRequest{Key: []byte("p1"), Value: []byte("v"), Lease: 12345}, rpctypes.ErrGRPCLeaseNotFound},
		{"unknown lease missing key", &pb.PutRequest{Key: []byte("nope"), Value: []byte("v"), Lease: 1}, rpctypes.ErrGRPCLeaseNotFound},
		{"negative lease", &pb.PutRequest{Key: []byte("nope"), Value: []byte("v"), Lease: -1}, rpctypes.ErrGRPCLeaseNotFound},
		{"empty key", &pb.PutRequest{Value: []byte("v")}, rpctypes.ErrGRPCEmptyKey},
		{"empty key ignore_value", &pb.PutRequest{IgnoreValue: true}, rpctypes.ErrGRPCEmptyKey},
		{"1 MiB value", &pb.PutRequest{Key: []byte("big"), Value: []byte(strings.Repeat("v", 1<<20))}, nil},
		{"request too large", &pb.PutRequest{Key: []byte("big"), Value: []byte(overLimit)}, rpctypes.ErrGRPCRequestTooLarge},
		{"after errors", &pb.PutRequest{Key: []byte("p1"), Value: []byte("e"), PrevKv: true}, nil},
	} {
		o := d.Check("put "+tc.name, putOp(tc.req))
		if tc.want == nil {
			o.WantOK(t)
		} else {
			o.WantErr(t, tc.want)
		}
	}
	// The same through clientv3, whose options build the requests.
	d.Check("clientv3 put prev_kv", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Put(ctx, "p1", "f", clientv3.WithPrevKV())
	}).WantOK(t)
	d.Check("clientv3 put ignore value", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Put(ctx, "p1", "", clientv3.WithIgnoreValue())
	}).WantOK(t)
	d.Check("read all", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	for at := int64(1); at <= currentRev(t, d); at++ {
		d.Check(fmt.Sprintf("read p1 at %d", at), rangeOp(&pb.RangeRequest{Key: []byte("p1"), Revision: at})).WantOK(t)
	}
}

func deleteGroup(t *testing.T, d *harness.Diff) {
	for _, k := range []string{"\x00", "a", "a/1", "a/2", "a/3", "b", "b/1", "c", "d", "e", "\xff"} {
		put(t, d, k, "v-"+k)
	}
	for _, tc := range []struct {
		name     string
		key, end string
		prevKV   bool
		want     error
	}{
		{"missing key", "zz", "", false, nil},
		{"missing key prev_kv", "zz", "", true, nil},
		{"single", "c", "", false, nil},
		{"single again", "c", "", true, nil},
		{"single prev_kv", "d", "", true, nil},
		{"empty span", "c", "cc", true, nil},
		{"end before key", "e", "a", true, nil},
		{"prefix", "a/", "a0", true, nil},
		{"span", "a", "b/2", false, nil},
		{"empty key", "", "", false, rpctypes.ErrGRPCEmptyKey},
		{"empty key with end", "", "z", false, rpctypes.ErrGRPCEmptyKey},
		{"from key", "e", "\x00", true, nil},
		{"all keys", "\x00", "\x00", true, nil},
		{"all keys again", "\x00", "\x00", true, nil},
	} {
		r := &pb.DeleteRangeRequest{Key: []byte(tc.key), PrevKv: tc.prevKV}
		if tc.end != "" {
			r.RangeEnd = []byte(tc.end)
		}
		o := d.Check("delete "+tc.name, delOp(r))
		if tc.want == nil {
			o.WantOK(t)
		} else {
			o.WantErr(t, tc.want)
		}
		d.Check("after delete "+tc.name, rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	}
	// Re-create after deletion: version restarts at 1, create_revision is new.
	put(t, d, "a", "again")
	put(t, d, "a", "again2")
	d.Check("clientv3 delete prefix", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Delete(ctx, "a", clientv3.WithPrefix(), clientv3.WithPrevKV())
	}).WantOK(t)
	rev := currentRev(t, d)
	for at := int64(1); at <= rev; at++ {
		d.Check(fmt.Sprintf("history at %d", at), rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: at})).WantOK(t)
	}
}

// headerGroup checks which requests take a revision: failed requests, reads, deletes that
// delete nothing and transactions whose executed branch does not write take none.
func headerGroup(t *testing.T, d *harness.Diff) {
	d.Check("fresh store", rangeOp(&pb.RangeRequest{Key: []byte("k")})).WantOK(t)
	put(t, d, "k", "1")
	d.Check("failed put", putOp(&pb.PutRequest{Key: []byte("nope"), IgnoreValue: true})).WantErr(t, rpctypes.ErrGRPCKeyNotFound)
	d.Check("after failed put", rangeOp(&pb.RangeRequest{Key: []byte("k")})).WantOK(t)
	del(t, d, "missing", "")
	d.Check("after empty delete", rangeOp(&pb.RangeRequest{Key: []byte("k")})).WantOK(t)
	d.Check("read-only txn", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqRange("k", "")}})).WantOK(t)
	d.Check("txn deleting nothing", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqDel("missing", "")}})).WantOK(t)
	d.Check("txn writing three keys", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqPut("t1", "a"), reqPut("t2", "b"), reqDel("k", "")}})).WantOK(t)
	d.Check("after txn", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	d.Check("failed txn", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqPut("t1", "a"), reqPut("t1", "b")}})).WantErr(t, rpctypes.ErrGRPCDuplicateKey)
	d.Check("txn failing inside", txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{reqPut("t3", "a"), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}}}}})).WantErr(t, rpctypes.ErrGRPCKeyNotFound)
	d.Check("after failed txns", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	d.Check("compact", compactOp(&pb.CompactionRequest{Revision: 2})).WantOK(t)
	d.Check("after compact", rangeOp(&pb.RangeRequest{Key: []byte("t1")})).WantOK(t)
}

func compactGroup(t *testing.T, d *harness.Diff) {
	for i := range 10 {
		put(t, d, fmt.Sprintf("c%d", i%3), fmt.Sprintf("v%d", i))
	}
	del(t, d, "c1", "")
	put(t, d, "c1", "back")
	rev := currentRev(t, d) // 13
	all := func(at int64) *pb.RangeRequest {
		return &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: at}
	}
	d.Check("compact future", compactOp(&pb.CompactionRequest{Revision: rev + 1})).WantErr(t, rpctypes.ErrGRPCFutureRev)
	d.Check("compact 5", compactOp(&pb.CompactionRequest{Revision: 5})).WantOK(t)
	for at := int64(1); at <= rev+1; at++ {
		o := d.Check(fmt.Sprintf("read all at %d after compact 5", at), rangeOp(all(at)))
		switch {
		case at < 5:
			o.WantErr(t, rpctypes.ErrGRPCCompacted)
		case at > rev:
			o.WantErr(t, rpctypes.ErrGRPCFutureRev)
		default:
			o.WantOK(t)
		}
		d.Check(fmt.Sprintf("read c0 at %d after compact 5", at), rangeOp(&pb.RangeRequest{Key: []byte("c0"), Revision: at, CountOnly: true}))
		d.Check(fmt.Sprintf("txn read at %d after compact 5", at), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestRange{RequestRange: all(at)}},
		}}))
	}
	d.Check("compact 5 again", compactOp(&pb.CompactionRequest{Revision: 5})).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("compact 3", compactOp(&pb.CompactionRequest{Revision: 3})).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("compact 0", compactOp(&pb.CompactionRequest{Revision: 0})).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("compact physical 9", compactOp(&pb.CompactionRequest{Revision: 9, Physical: true})).WantOK(t)
	d.Check("read at 8", rangeOp(all(8))).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("read at 9", rangeOp(all(9))).WantOK(t)
	// Writes after compaction keep the versions and create revisions of compacted history.
	put(t, d, "c0", "after")
	d.Check("compact current", compactOp(&pb.CompactionRequest{Revision: rev + 1, Physical: true})).WantOK(t)
	d.Check("read current after compacting it", rangeOp(all(0))).WantOK(t)
	d.Check("read compact revision", rangeOp(all(rev+1))).WantOK(t)
	d.Check("read below", rangeOp(all(rev))).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("clientv3 compact", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Compact(ctx, rev, clientv3.WithCompactPhysical())
	}).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("clientv3 get compacted", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Get(ctx, "c0", clientv3.WithRev(2))
	}).WantErr(t, rpctypes.ErrGRPCCompacted)
}

func kvGroups() []group {
	return []group{
		{"put", putGroup},
		{"delete", deleteGroup},
		{"header", headerGroup},
		{"compact", compactGroup},
	}
}

func TestKV(t *testing.T) { runGroups(t, kvGroups(), nil) }
