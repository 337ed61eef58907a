package tests

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// rangeKeys are the keys of the range sequences: prefixes of each other, a key that is a
// single NUL byte, a key of 0xff bytes, and keys on both sides of every split point used by
// the multi-range tests.
var rangeKeys = []string{"\x00", "a", "ab", "abc", "b", "foo", "foo/1", "foo/2", "foo/3", "fop", "k1", "k2", "m", "z", "\xff\xff"}

// writeRangeHistory writes a history with several versions per key, deletions and
// re-creations, so that versions, create and mod revisions all differ between keys.
func writeRangeHistory(t *testing.T, d *harness.Diff) {
	for i, k := range rangeKeys {
		put(t, d, k, fmt.Sprintf("v%d", i))
	}
	for i, k := range []string{"ab", "foo/2", "k1", "ab", "z", "ab"} {
		put(t, d, k, fmt.Sprintf("update%d", i))
	}
	del(t, d, "foo/1", "")
	put(t, d, "foo/1", "recreated")
	del(t, d, "k2", "")
	put(t, d, "foo/3", "") // empty value
}

// rangeSpan is a key span of a Range request.
type rangeSpan struct {
	name     string
	key, end string
}

var rangeSpans = []rangeSpan{
	{"single", "ab", ""},
	{"single-missing", "aa", ""},
	{"single-deleted", "k2", ""},
	{"single-nul", "\x00", ""},
	{"single-ff", "\xff\xff", ""},
	{"span", "a", "b"},
	{"span-wide", "ab", "m"},
	{"span-empty", "c", "d"},
	{"span-end-before-key", "z", "a"},
	{"span-end-equals-key", "ab", "ab"},
	{"prefix-foo", "foo", "fop"},
	{"prefix-foo/", "foo/", "foo0"},
	{"from-key", "foo", "\x00"},
	{"from-nul", "\x00", "\x00"},
	{"all-from-a", "a", "\x00"},
	{"to-ff", "m", "\xff\xff\xff"},
}

func rangeGroup(t *testing.T, d *harness.Diff) {
	writeRangeHistory(t, d)
	rev := currentRev(t, d)

	for _, s := range rangeSpans {
		base := func() *pb.RangeRequest {
			r := &pb.RangeRequest{Key: []byte(s.key)}
			if s.end != "" {
				r.RangeEnd = []byte(s.end)
			}
			return r
		}
		check := func(name string, r *pb.RangeRequest) harness.Outcome {
			return d.Check(fmt.Sprintf("range %s %s %v", s.name, name, r), rangeOp(r))
		}
		check("plain", base()).WantOK(t)
		for _, limit := range []int64{1, 2, 3, 100} {
			r := base()
			r.Limit = limit
			check(fmt.Sprintf("limit=%d", limit), r).WantOK(t)
		}
		r := base()
		r.Serializable = true
		check("serializable", r).WantOK(t)
		r = base()
		r.KeysOnly = true
		check("keys-only", r).WantOK(t)
		r = base()
		r.CountOnly = true
		check("count-only", r).WantOK(t)
		r = base()
		r.CountOnly, r.Limit = true, 1
		check("count-only-limit", r).WantOK(t)
		r = base()
		r.KeysOnly, r.Limit, r.SortOrder = true, 2, pb.RangeRequest_DESCEND
		check("keys-only-limit-descend", r).WantOK(t)

		// Every past revision, the current one and the next (a future revision).
		for at := int64(1); at <= rev+1; at++ {
			r := base()
			r.Revision = at
			o := check(fmt.Sprintf("rev=%d", at), r)
			if at > rev {
				o.WantErr(t, rpctypes.ErrGRPCFutureRev)
			} else {
				o.WantOK(t)
			}
		}
		r = base()
		r.Revision = rev + 1000
		check("far-future", r).WantErr(t, rpctypes.ErrGRPCFutureRev)
		r = base()
		r.Revision = -1
		check("negative-rev", r)

		// Sort orders and targets, with and without a limit, now and in the past.
		for order := range pb.RangeRequest_SortOrder_name {
			for target := range pb.RangeRequest_SortTarget_name {
				for _, limit := range []int64{0, 2} {
					for _, at := range []int64{0, rev / 2} {
						r := base()
						r.SortOrder = pb.RangeRequest_SortOrder(order)
						r.SortTarget = pb.RangeRequest_SortTarget(target)
						r.Limit, r.Revision = limit, at
						check("sort", r).WantOK(t)
					}
				}
			}
		}
		r = base()
		r.SortOrder = 7
		check("bad-sort-order", r).WantErr(t, rpctypes.ErrGRPCInvalidSortOption)
		r = base()
		r.SortTarget = 9
		check("bad-sort-target", r).WantErr(t, rpctypes.ErrGRPCInvalidSortOption)

		// Revision filters, alone and combined with a limit (which they apply after).
		for _, f := range []struct {
			name string
			set  func(r *pb.RangeRequest, v int64)
		}{
			{"min-mod", func(r *pb.RangeRequest, v int64) { r.MinModRevision = v }},
			{"max-mod", func(r *pb.RangeRequest, v int64) { r.MaxModRevision = v }},
			{"min-create", func(r *pb.RangeRequest, v int64) { r.MinCreateRevision = v }},
			{"max-create", func(r *pb.RangeRequest, v int64) { r.MaxCreateRevision = v }},
		} {
			for _, v := range []int64{1, 5, rev / 2, rev, rev + 5} {
				for _, limit := range []int64{0, 1} {
					r := base()
					f.set(r, v)
					r.Limit = limit
					check(fmt.Sprintf("%s=%d", f.name, v), r).WantOK(t)
				}
			}
		}
	}

	d.Check("range empty key", rangeOp(&pb.RangeRequest{})).WantErr(t, rpctypes.ErrGRPCEmptyKey)
	d.Check("range empty key with end", rangeOp(&pb.RangeRequest{RangeEnd: []byte("z")})).WantErr(t, rpctypes.ErrGRPCEmptyKey)

	// Pagination as Kubernetes does it: at a fixed revision, limit, continue from the last key
	// plus a NUL byte, with count.
	put(t, d, "foo/4", "after the snapshot")
	key := []byte("foo/")
	for page := 0; page < 10; page++ {
		o := d.Check(fmt.Sprintf("page %d from %q", page, key), rangeOp(&pb.RangeRequest{Key: key, RangeEnd: []byte("foo0"), Limit: 1, Revision: rev}))
		o.WantOK(t)
		resp, ok := o.Resp.(*pb.RangeResponse)
		if !ok || !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = append(resp.Kvs[len(resp.Kvs)-1].Key, 0)
	}
}

func rangeGroups() []group {
	return []group{{"range", rangeGroup}}
}

func TestRange(t *testing.T) { runGroups(t, rangeGroups(), nil) }
