package shard

import (
	"fmt"
	"testing"

	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

func TestOpSpan(t *testing.T) {
	for _, c := range []struct {
		key, end    string
		start, end2 string
	}{
		{"k", "", "k", "k\x00"}, // one key
		{"k", "\x00", "k", ""},  // every key from k on
		{"a", "m", "a", "m"},    // a range
		{"\x00", "\x00", "\x00", ""},
	} {
		var end []byte
		if c.end != "" {
			end = []byte(c.end)
		}
		sp := opSpan([]byte(c.key), end)
		if string(sp.start) != c.start || string(sp.end) != c.end2 {
			t.Errorf("opSpan(%q, %q) = [%q, %q), want [%q, %q)", c.key, c.end, sp.start, sp.end, c.start, c.end2)
		}
	}
}

// A replica remembers the spans whose writes it left out, and answers for any span that
// overlaps one of them.
func TestClipped(t *testing.T) {
	s := &Shard{}
	if s.Clipped(nil, nil) {
		t.Fatal("a fresh replica counts as clipped")
	}
	s.clip(opSpan([]byte("k"), nil)) // a put of k dropped
	for _, c := range []struct {
		start, end string
		want       bool
	}{
		{"", "", true},
		{"k", "", true},
		{"a", "k", false}, // [a, k) ends before k
		{"a", "k\x00", true},
		{"k\x00", "", false}, // starts after k
		{"j", "l", true},
	} {
		var end []byte
		if c.end != "" {
			end = []byte(c.end)
		}
		if got := s.Clipped([]byte(c.start), end); got != c.want {
			t.Errorf("Clipped(%q, %q) = %v, want %v", c.start, c.end, got, c.want)
		}
	}
	// The stored form reads back the same.
	again := &Shard{}
	if err := again.loadClips(s.encodeClips()); err != nil {
		t.Fatal(err)
	}
	if !again.Clipped([]byte("k"), nil) || again.Clipped([]byte("a"), []byte("k")) {
		t.Error("clips read back from their stored form differ")
	}
	if err := again.loadClips([]byte{0, 5, 'a'}); err == nil {
		t.Error("a truncated clip record was read without an error")
	}
	many := &Shard{}
	for i := range maxClips + 1 {
		many.clip(opSpan(fmt.Appendf(nil, "z%04d", i), nil))
	}
	if !many.Clipped([]byte("a"), []byte("b")) {
		t.Error("past maxClips, a span no clip touches must count as clipped")
	}
	lost := &Shard{}
	if err := lost.loadClips(many.encodeClips()); err != nil || !lost.Clipped([]byte("a"), []byte("b")) {
		t.Errorf("past maxClips, read back: %v, clipped %v", err, lost.Clipped([]byte("a"), []byte("b")))
	}
}

// An op applied after the range (or the table) shrank records the part it leaves out, in
// the store too (a restarted replica reads it back).
func TestClipOutsideOwn(t *testing.T) {
	store := openStore(t)
	desc := &raftcmdpb.RangeDesc{Id: 1, Start: []byte("b"), End: []byte("x")}
	table := &raftcmdpb.RangeDesc{Id: 1, Start: []byte("b"), End: []byte("m")} // split at m
	a := &shardActor{desc: desc, lg: zap.NewNop(), handle: &Shard{}, cfg: Config{Store: store, TableDesc: func() *raftcmdpb.RangeDesc { return table }}}
	clipOp := func(key, end string) {
		t.Helper()
		if err := store.Update(func(w *mvcc.Writer) error { return a.clipOutsideOwn(w, opSpan([]byte(key), []byte(end))) }); err != nil {
			t.Fatal(err)
		}
	}
	clipOp("c", "d") // inside: nothing left out
	if a.handle.Clipped(nil, nil) {
		t.Fatal("an op inside the span recorded a clip")
	}
	clipOp("c", "\x00") // [c, ∞): [m, ∞) left out
	if !a.handle.Clipped([]byte("m"), []byte("n")) || a.handle.Clipped([]byte("b"), []byte("m")) {
		t.Error("want [m, ∞) clipped and [b, m) not")
	}
	var stored []byte
	if err := store.View(func(r *mvcc.Reader) error {
		var err error
		stored, err = r.Meta(clipKey(1))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	restarted := &Shard{}
	if err := restarted.loadClips(stored); err != nil || !restarted.Clipped([]byte("m"), []byte("n")) {
		t.Errorf("the stored clips (%v) do not hold [m, ∞)", err)
	}
}

// A follower applies a decision the oracle says follows revision P only once it has
// applied P: the decision for P may still be on its way in the range's log (the oracle
// here hands over only what it applies). Applying past it would skip it for good.
func TestTakeReadyWaitsForThePreviousRevision(t *testing.T) {
	a := &shardActor{desc: &raftcmdpb.RangeDesc{Id: 7}, cluster: true, appliedRev: 5, lg: zap.NewNop(),
		intents: map[uint64]*intent{1: {txn: 1}, 2: {txn: 2}}, waiting: map[uint64]*proposeMsg{}}
	// Txn 2's decision (rev 12, after 10 on range 7) came from the oracle; txn 1's (rev 10)
	// is not known yet, though both intents are here.
	a.decided = []revision.Decided{{TxnID: 2, Rev: 12, Ranges: []uint64{3, 7}, Prev: []int64{11, 10}}}
	if got := a.takeReady(); len(got) != 0 {
		t.Fatalf("took %v before revision 10 applied", got)
	}
	// Txn 1's decision comes from the log (no Prev), and a copy of txn 2's too.
	a.decided = append([]revision.Decided{{TxnID: 1, Rev: 10}}, a.decided...)
	a.decided = append(a.decided, revision.Decided{TxnID: 2, Rev: 12})
	got := a.takeReady()
	if len(got) != 2 || got[0].TxnID != 1 || got[1].TxnID != 2 || len(a.decided) != 0 {
		t.Fatalf("took %v, left %v; want txns 1 and 2 once each, nothing left", got, a.decided)
	}
	// Off a cluster (one replica) there is no one to wait for.
	b := &shardActor{desc: &raftcmdpb.RangeDesc{Id: 7}, appliedRev: 5, lg: zap.NewNop(),
		intents: map[uint64]*intent{2: {txn: 2}}, waiting: map[uint64]*proposeMsg{},
		decided: []revision.Decided{{TxnID: 2, Rev: 12, Ranges: []uint64{7}, Prev: []int64{10}}}}
	if got := b.takeReady(); len(got) != 1 {
		t.Fatalf("single node: took %v, want txn 2", got)
	}
}
