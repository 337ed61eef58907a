package tests

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// splitKeys cut the key space of every differential sequence into many ranges: between
// prefixes and their extensions, inside prefixes, next to NUL and 0xff keys. (A split key
// travels as a command-line argument, so it cannot contain a NUL byte.)
var splitKeys = []string{"\x01", "ab", "abc", "b", "c", "foo/", "foo/2", "k", "k2", "m", "m050", "n", "p2", "s/150", "t2", "txn/", "x", "z", "\xff"}

func splitAll(t *testing.T, subj *harness.Process, keys []string) {
	t.Helper()
	for _, k := range keys {
		harness.SplitRange(t, subj, k)
	}
	if !harness.SubjectIsEtcd() {
		t.Logf("ranges after splitting:\n%s", harness.RangeList(t, subj))
	}
}

// TestMultiRange runs every differential sequence against a subject whose key space was
// split into many ranges first: results must not depend on the number of ranges.
func TestMultiRange(t *testing.T) {
	var groups []group
	groups = append(groups, rangeGroups()...)
	groups = append(groups, kvGroups()...)
	groups = append(groups, txnGroups()...)
	groups = append(groups, group{"split-with-data", splitWithDataGroup})
	runGroups(t, groups, func(t *testing.T, d *harness.Diff, subj *harness.Process) {
		if t.Name() != "TestMultiRange/split-with-data" {
			splitAll(t, subj, splitKeys)
		}
	})
}

// splitWithDataGroup splits ranges that already hold history, between writes, and checks
// that every revision still reads the same.
func splitWithDataGroup(t *testing.T, d *harness.Diff) {
	writeRangeHistory(t, d)
	subj := d.Subj.(*harness.Process)
	splitAll(t, subj, splitKeys[:len(splitKeys)/2])
	readEverything(t, d, "after first splits")
	for i := range 20 {
		d.Check(fmt.Sprintf("cross-range txn %d", i), txnOp(&pb.TxnRequest{
			Compare: []*pb.Compare{cmpOf("a", "\x00", pb.Compare_VERSION, pb.Compare_GREATER, 0, "")},
			Success: []*pb.RequestOp{reqPut("\x00", fmt.Sprint(i)), reqPut("foo/5", fmt.Sprint(i)), reqPut("zz", fmt.Sprint(i)), reqRange("\x00", "\x00")},
			Failure: []*pb.RequestOp{reqDel("a", "z")},
		})).WantOK(t)
	}
	splitAll(t, subj, splitKeys[len(splitKeys)/2:])
	del(t, d, "a", "z")
	readEverything(t, d, "after second splits")
	d.Check("compact across ranges", compactOp(&pb.CompactionRequest{Revision: 20})).WantOK(t)
	readEverything(t, d, "after compaction")
}
