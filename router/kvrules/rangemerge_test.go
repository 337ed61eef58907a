package kvrules

import (
	"fmt"
	"math"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

func TestShardFetchLimit(t *testing.T) {
	// txn rangeLimit: limit+1 only with a positive limit, default ordering and no filter.
	cases := []struct {
		name string
		r    *pb.RangeRequest
		want int64
	}{
		{"no limit", &pb.RangeRequest{}, 0},
		{"limit", &pb.RangeRequest{Limit: 5}, 6},
		{"negative limit", &pb.RangeRequest{Limit: -3}, 0},
		{"max int64 stays", &pb.RangeRequest{Limit: math.MaxInt64}, math.MaxInt64},
		{"key ascend is default", &pb.RangeRequest{Limit: 5, SortTarget: pb.RangeRequest_KEY, SortOrder: pb.RangeRequest_ASCEND}, 6},
		{"order none with other target is default", &pb.RangeRequest{Limit: 5, SortTarget: pb.RangeRequest_MOD}, 6},
		{"key descend", &pb.RangeRequest{Limit: 5, SortOrder: pb.RangeRequest_DESCEND}, 0},
		{"mod ascend", &pb.RangeRequest{Limit: 5, SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_ASCEND}, 0},
		{"filter", &pb.RangeRequest{Limit: 5, MinModRevision: 1}, 0},
		{"create filter", &pb.RangeRequest{Limit: 5, MaxCreateRevision: 1}, 0},
	}
	for _, c := range cases {
		if got := ShardFetchLimit(c.r); got != c.want {
			t.Errorf("%s: got %d want %d", c.name, got, c.want)
		}
	}
}

// shardParts splits key-ordered kvs into shards at the given split keys and
// answers each part as a shard would (count, then the first fetch-limit kvs).
func shardParts(r *pb.RangeRequest, kvs []*mvccpb.KeyValue, splits ...string) []RangePart {
	parts := make([]RangePart, len(splits)+1)
	for _, kv := range kvs {
		i := 0
		for i < len(splits) && splits[i] <= string(kv.Key) {
			i++
		}
		parts[i].Count++
		parts[i].KVs = append(parts[i].KVs, kv)
	}
	fl := ShardFetchLimit(r)
	for i := range parts {
		if r.CountOnly {
			parts[i].KVs = nil
		}
		if fl > 0 && int64(len(parts[i].KVs)) > fl {
			parts[i].KVs = parts[i].KVs[:fl]
		}
	}
	return parts
}

// tieData is the data set the tie-order expectations were recorded on
// against etcd v3.7.3: keys k00..k29, key i put 1+i%3 times (so version
// 1+i%3) with value "v<i%4>", in key order.
func tieData() []*mvccpb.KeyValue {
	var out []*mvccpb.KeyValue
	rev := int64(1)
	for i := 0; i < 30; i++ {
		create := rev + 1
		rev += int64(i%3 + 1)
		out = append(out, &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte(fmt.Sprintf("v%d", i%4)),
			CreateRevision: create, ModRevision: rev, Version: int64(i%3 + 1)})
	}
	return out
}

func keyList(kvs []*mvccpb.KeyValue) string {
	var s []string
	for _, kv := range kvs {
		s = append(s, string(kv.Key))
	}
	return strings.Join(s, " ")
}

func TestMergeRangeSortTies(t *testing.T) {
	// txn sortRangeResults uses sort.Sort (unstable): ties come out in the
	// order that algorithm gives on the key-ordered input. Expected orders
	// were recorded from an embedded etcd v3.7.3 on tieData.
	cases := []struct {
		target pb.RangeRequest_SortTarget
		order  pb.RangeRequest_SortOrder
		limit  int64
		more   bool
		want   string
	}{
		{pb.RangeRequest_VERSION, pb.RangeRequest_ASCEND, 0, false, "12 27 24 03 21 18 06 00 15 09 07 04 10 13 28 01 16 25 22 19 08 20 05 23 02 17 26 11 14 29"},
		{pb.RangeRequest_VERSION, pb.RangeRequest_DESCEND, 0, false, "11 29 02 26 23 05 20 17 08 14 07 04 01 13 28 25 16 10 22 19 06 21 18 00 24 15 03 27 09 12"},
		// order NONE with a non-KEY target sorts ascending
		{pb.RangeRequest_VALUE, pb.RangeRequest_NONE, 0, false, "08 16 00 28 04 12 20 24 09 25 21 01 05 13 29 17 14 06 18 02 26 10 22 11 07 23 15 27 03 19"},
		{pb.RangeRequest_VALUE, pb.RangeRequest_DESCEND, 7, true, "07 27 23 03 19 15 11"},
		{pb.RangeRequest_KEY, pb.RangeRequest_DESCEND, 5, true, "29 28 27 26 25"},
	}
	data := tieData()
	for _, c := range cases {
		r := &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), SortTarget: c.target, SortOrder: c.order, Limit: c.limit}
		for _, splits := range [][]string{nil, {"k10"}, {"k05", "k050", "k17", "k29"}} {
			got := MergeRange(r, shardParts(r, data, splits...))
			if keyList(got.Kvs) != withK(c.want) || got.Count != 30 || got.More != c.more {
				t.Errorf("%v %v limit %d splits %v:\n got %s count=%d more=%v\nwant %s", c.target, c.order, c.limit, splits,
					keyList(got.Kvs), got.Count, got.More, c.want)
			}
		}
	}
}

func TestMergeRange(t *testing.T) {
	// five keys: a..e with mod revisions 2..6, create 2,3,2,5,6 (a and c recreated), lease on b and d
	data := []*mvccpb.KeyValue{
		kv("a", 2, 2, 1, "va", 0),
		kv("b", 3, 3, 1, "vb", 7),
		kv("c", 2, 4, 2, "vc", 0),
		kv("d", 5, 5, 1, "vd", 7),
		kv("e", 6, 6, 1, "ve", 0),
	}
	clean := make([]*mvccpb.KeyValue, len(data))
	for i := range data {
		clean[i] = proto.Clone(data[i]).(*mvccpb.KeyValue)
	}
	cases := []struct {
		name  string
		r     *pb.RangeRequest
		keys  string
		count int64
		more  bool
	}{
		// asembleRangeResponse: Count is the total in the range, More iff the limit cut.
		{"all", &pb.RangeRequest{}, "a b c d e", 5, false},
		{"limit", &pb.RangeRequest{Limit: 2}, "a b", 5, true},
		{"limit equal to total", &pb.RangeRequest{Limit: 5}, "a b c d e", 5, false},
		{"limit above total", &pb.RangeRequest{Limit: 9}, "a b c d e", 5, false},
		{"limit 0 is no limit", &pb.RangeRequest{Limit: 0}, "a b c d e", 5, false},
		{"negative limit is no limit", &pb.RangeRequest{Limit: -1}, "a b c d e", 5, false},
		// filterRangeResults: Count stays pre-filter; More counts filtered kvs only.
		{"min mod", &pb.RangeRequest{MinModRevision: 4}, "c d e", 5, false},
		{"max mod", &pb.RangeRequest{MaxModRevision: 3}, "a b", 5, false},
		{"min create", &pb.RangeRequest{MinCreateRevision: 3}, "b d e", 5, false},
		{"max create", &pb.RangeRequest{MaxCreateRevision: 2}, "a c", 5, false},
		{"filter then limit cuts", &pb.RangeRequest{MinModRevision: 3, Limit: 2}, "b c", 5, true},
		{"filter leaves exactly limit", &pb.RangeRequest{MinModRevision: 5, Limit: 2}, "d e", 5, false},
		{"filter excludes all", &pb.RangeRequest{MinModRevision: 9, Limit: 1}, "", 5, false},
		// sort: DESCEND by KEY; MOD descend; CREATE ascend with a tie (a, c) kept in input order for small n.
		{"key descend", &pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND}, "e d c b a", 5, false},
		{"key descend limit", &pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND, Limit: 2}, "e d", 5, true},
		{"mod descend", &pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}, "e d c b a", 5, false},
		{"create ascend", &pb.RangeRequest{SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_ASCEND}, "a c b d e", 5, false},
		{"create none = ascend", &pb.RangeRequest{SortTarget: pb.RangeRequest_CREATE}, "a c b d e", 5, false},
		{"version descend with filter and limit", &pb.RangeRequest{SortTarget: pb.RangeRequest_VERSION, SortOrder: pb.RangeRequest_DESCEND, MaxModRevision: 5, Limit: 2}, "c a", 5, true},
		// count_only: no kvs, Count total, More false even with a limit.
		{"count only", &pb.RangeRequest{CountOnly: true, Limit: 1}, "", 5, false},
		{"count only with filter", &pb.RangeRequest{CountOnly: true, MinModRevision: 6}, "", 5, false},
	}
	for _, c := range cases {
		for _, splits := range [][]string{nil, {"c"}, {"a", "b\x00", "d"}, {"z"}} {
			got := MergeRange(c.r, shardParts(c.r, data, splits...))
			if keyList(got.Kvs) != c.keys || got.Count != c.count || got.More != c.more || got.Header != nil {
				t.Errorf("%s splits %v: got %q count=%d more=%v", c.name, splits, keyList(got.Kvs), got.Count, got.More)
			}
		}
	}
	for i := range data {
		if !proto.Equal(data[i], clean[i]) {
			t.Fatalf("input kv %d modified", i)
		}
	}
}

// withK turns "00 01" into "k00 k01".
func withK(keys string) string {
	parts := strings.Split(keys, " ")
	for i := range parts {
		parts[i] = "k" + parts[i]
	}
	return strings.Join(parts, " ")
}

func TestMergeRangeKeysOnly(t *testing.T) {
	// keys_only: values cleared (asembleRangeResponse); with a target other
	// than VALUE etcd reads the index only (RangeOptions.FastKeysOnly), so
	// leases are zero too; sorting by VALUE reads values and keeps leases.
	data := []*mvccpb.KeyValue{kv("a", 2, 2, 1, "z", 7), kv("b", 3, 3, 1, "y", 0)}
	got := MergeRange(&pb.RangeRequest{KeysOnly: true}, []RangePart{{KVs: data, Count: 2}})
	want := []*mvccpb.KeyValue{{Key: b("a"), CreateRevision: 2, ModRevision: 2, Version: 1}, {Key: b("b"), CreateRevision: 3, ModRevision: 3, Version: 1}}
	if !proto.Equal(&pb.RangeResponse{Kvs: want, Count: 2}, got) {
		t.Errorf("keys_only: %v", got)
	}
	got = MergeRange(&pb.RangeRequest{KeysOnly: true, SortTarget: pb.RangeRequest_VALUE}, []RangePart{{KVs: data, Count: 2}})
	want = []*mvccpb.KeyValue{{Key: b("b"), CreateRevision: 3, ModRevision: 3, Version: 1}, {Key: b("a"), CreateRevision: 2, ModRevision: 2, Version: 1, Lease: 7}}
	if !proto.Equal(&pb.RangeResponse{Kvs: want, Count: 2}, got) {
		t.Errorf("keys_only by value: %v", got)
	}
	if string(data[0].Value) != "z" || data[0].Lease != 7 {
		t.Error("input modified")
	}
	if ShardNeedsValues(&pb.RangeRequest{KeysOnly: true}) || !ShardNeedsValues(&pb.RangeRequest{KeysOnly: true, SortTarget: pb.RangeRequest_VALUE}) || !ShardNeedsValues(&pb.RangeRequest{}) {
		t.Error("ShardNeedsValues")
	}
}
