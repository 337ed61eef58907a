package tests

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// readEverything compares every revision's full state and the compaction boundary.
func readEverything(t *testing.T, d *harness.Diff, label string) {
	t.Helper()
	rev := currentRev(t, d)
	for at := int64(1); at <= rev+1; at++ {
		d.Check(fmt.Sprintf("%s: all keys at %d", label, at), rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: at}))
	}
	d.Check(label+": serializable", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Serializable: true})).WantOK(t)
}

// TestRestart checks that Mosaic's data survives a clean stop (SIGTERM) and a kill -9 with
// the same data directory: all revisions, the compaction boundary, and the revision counter,
// which continues where it stopped.
func TestRestart(t *testing.T) {
	t.Parallel()
	d, subj := harness.StartPair(t)
	writeRangeHistory(t, d)
	d.Check("compact", compactOp(&pb.CompactionRequest{Revision: 4, Physical: true})).WantOK(t)
	readEverything(t, d, "before restart")

	subj.Stop()
	subj.Restart()
	readEverything(t, d, "after SIGTERM and restart")
	d.Check("compacted after restart", rangeOp(&pb.RangeRequest{Key: []byte("a"), Revision: 3})).WantErr(t, rpctypes.ErrGRPCCompacted)
	put(t, d, "after-restart", "1")
	d.Check("txn after restart", txnOp(&pb.TxnRequest{
		Compare: []*pb.Compare{cmpOf("ab", "", pb.Compare_VERSION, pb.Compare_EQUAL, 4, "")},
		Success: []*pb.RequestOp{reqPutPrev("ab", "after"), reqDel("z", "")},
		Failure: []*pb.RequestOp{reqRange("ab", "")},
	})).WantOK(t)

	subj.Kill()
	subj.Restart()
	readEverything(t, d, "after SIGKILL and restart")
	put(t, d, "after-kill", "1")
	readEverything(t, d, "after write following kill")
}
