package mvcc

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestRecentChangesMatchTheStore: what the feed answers equals what a read
// of the change index returns, for random writes (multi-op revisions,
// range deletes, several Updates per revision, several revisions per
// Update), spans and limits.
func TestRecentChangesMatchTheStore(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := openMem(t)
	keys := []string{"a", "b", "b\x00", "c", "ca", "cb", "d", "e\xff"}
	rev := int64(0)
	for range 300 {
		mustUpdate(t, s, func(w *Writer) error {
			for range 1 + rng.IntN(3) { // revisions in this Update
				rev++
				if rng.IntN(4) == 0 { // one delete, of a key or a span
					k, end := keys[rng.IntN(len(keys))], ""
					if rng.IntN(2) == 0 {
						end = keys[rng.IntN(len(keys))]
					}
					if _, err := w.DeleteRange(rev, 0, []byte(k), bytesOrNil(end)); err != nil {
						return err
					}
					continue
				}
				for sub, i := range rng.Perm(len(keys))[:1+rng.IntN(3)] { // puts of distinct keys
					if _, err := w.Put(rev, int32(sub), Put{Key: []byte(keys[i]), Value: []byte(fmt.Sprint(rev, sub))}); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	spans := [][2]string{{"a", ""}, {"b", "c"}, {"c", "\x00"}, {"\x00", "\x00"}, {"b\x00", "d"}, {"e\xff", ""}}
	for range 500 {
		sp := spans[rng.IntN(len(spans))]
		from := 1 + rng.Int64N(rev)
		to := from + rng.Int64N(rev-from+1)
		limit := rng.IntN(8)
		got, ok := s.RecentChanges([]byte(sp[0]), bytesOrNil(sp[1]), from, to, limit)
		if !ok {
			t.Fatalf("feed refused [%d, %d] with everything in memory", from, to)
		}
		var want []Change
		if err := s.View(func(r *Reader) error {
			var err error
			want, err = r.Changes([]byte(sp[0]), bytesOrNil(sp[1]), from, to, limit)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if g, w := changesString(got), changesString(want); g != w {
			t.Fatalf("span %q [%d, %d] limit %d:\nfeed:\n%s\nstore:\n%s", sp, from, to, limit, g, w)
		}
		for i := range got {
			if !proto.Equal(got[i].Event, want[i].Event) {
				t.Fatalf("event %d differs: %v vs %v", i, got[i].Event, want[i].Event)
			}
		}
	}
}

// TestRecentChangesRefuses: the feed answers only for revisions it holds
// whole: not before what it evicted, and not at or below what a bulk write
// of records (a snapshot) brought.
func TestRecentChangesRefuses(t *testing.T) {
	s := openMem(t)
	s.feed.maxChanges = 4
	for rev := int64(1); rev <= 6; rev++ {
		put(t, s, rev, "k", fmt.Sprint(rev))
	}
	if _, ok := s.RecentChanges([]byte("k"), nil, 2, 6, 0); ok {
		t.Fatal("answered for an evicted revision")
	}
	got, ok := s.RecentChanges([]byte("k"), nil, 3, 6, 0)
	if !ok || len(got) != 4 || got[0].Rev != 3 || string(got[0].Event.PrevKv.Value) != "2" {
		t.Fatalf("after eviction: ok=%v %s", ok, changesString(got))
	}
	// A snapshot of another span, holding a revision past everything seen.
	var recs []SpanRecord
	src := openMem(t)
	put(t, src, 9, "x", "snap")
	if err := src.View(func(r *Reader) error {
		return r.ExportSpan([]byte("x"), []byte("y"), func(rec SpanRecord) error { recs = append(recs, rec); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ImportSpan([]byte("x"), []byte("y"), recs); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.RecentChanges([]byte("\x00"), []byte("\x00"), 7, 9, 0); ok {
		t.Fatal("answered for a revision a snapshot wrote")
	}
	put(t, s, 10, "k", "10")
	got, ok = s.RecentChanges([]byte("\x00"), []byte("\x00"), 10, 10, 0)
	if !ok || len(got) != 1 || got[0].Rev != 10 {
		t.Fatalf("after the snapshot: ok=%v %s", ok, changesString(got))
	}
}

// TestRecentChangesAfterReopen: a reopened store's feed holds nothing of
// what was written before, so it refuses those revisions (a watch hub whose
// cursor starts below them must read them from the store).
func TestRecentChangesAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	for rev := int64(1); rev <= 5; rev++ {
		put(t, s, rev, fmt.Sprint("k", rev), "v")
	}
	s = reopen(t, s, dir, Options{})
	if got, ok := s.RecentChanges([]byte("k"), []byte("l"), 3, 5, 0); ok {
		t.Fatalf("answered %d changes for revisions written before the store was opened", len(got))
	}
	put(t, s, 6, "k6", "v")
	if got, ok := s.RecentChanges([]byte("k"), []byte("l"), 6, 6, 0); !ok || len(got) != 1 {
		t.Fatalf("after reopening: ok=%v %s", ok, changesString(got))
	}
}

// TestNoChangeFeed: a store opened without a feed answers nothing from
// memory.
func TestNoChangeFeed(t *testing.T) {
	s, err := Open("", Options{InMemory: true, NoChangeFeed: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put(t, s, 1, "k", "v")
	if _, ok := s.RecentChanges([]byte("k"), nil, 1, 1, 0); ok {
		t.Fatal("a store without a feed answered from memory")
	}
}
