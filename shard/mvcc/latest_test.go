package mvcc

import (
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// putPrev puts key at rev and returns the previous version Put reported.
func putPrev(t *testing.T, s *Store, rev int64, key, value string) string {
	t.Helper()
	var prev string
	mustUpdate(t, s, func(w *Writer) error {
		kv, err := w.Put(rev, 0, Put{Key: []byte(key), Value: []byte(value)})
		prev = kvOne(kv)
		return err
	})
	return prev
}

// TestPutPreviousAfterSpanChanges: a Put reports the key's newest version
// as the store holds it, also after the span operations that write the
// store directly (a snapshot's import or replace, a cleared span) changed
// the key behind the memory of recent writes, and after a failed Update.
func TestPutPreviousAfterSpanChanges(t *testing.T) {
	s := openMem(t)
	if got, want := putPrev(t, s, 2, "k", "v2"), kvOne(nil); got != want {
		t.Fatalf("first put: prev %s, want %s", got, want)
	}
	wantV2 := putPrev(t, s, 3, "k", "v3")
	if want := `"k"="v2"@2/2/1`; wantV2 != want {
		t.Fatalf("second put: prev %s, want %s", wantV2, want)
	}

	// Another store's history of the span, imported over this one's.
	src := openMem(t)
	for rev := int64(2); rev <= 9; rev++ {
		putPrev(t, src, rev, "k", fmt.Sprintf("src%d", rev))
	}
	var recs []SpanRecord
	if err := src.View(func(r *Reader) error {
		return r.ExportSpan([]byte("k"), []byte("l"), func(rec SpanRecord) error { recs = append(recs, rec); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReplaceSpan([]byte("k"), []byte("l"), recs); err != nil {
		t.Fatal(err)
	}
	if got, want := putPrev(t, s, 10, "k", "v10"), `"k"="src9"@9/2/8`; got != want {
		t.Fatalf("put after a replaced span: prev %s, want %s", got, want)
	}

	if err := s.ClearSpan([]byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	if got, want := putPrev(t, s, 11, "k", "v11"), kvOne(nil); got != want {
		t.Fatalf("put after a cleared span: prev %s, want %s", got, want)
	}

	// An Update that fails leaves nothing remembered.
	if err := s.Update(func(w *Writer) error {
		if _, err := w.Put(12, 0, Put{Key: []byte("k"), Value: []byte("lost")}); err != nil {
			return err
		}
		return fmt.Errorf("abandoned")
	}); err == nil {
		t.Fatal("the failing Update succeeded")
	}
	if got, want := putPrev(t, s, 12, "k", "v12"), `"k"="v11"@11/11/1`; got != want {
		t.Fatalf("put after a failed Update: prev %s, want %s", got, want)
	}
	var del string
	mustUpdate(t, s, func(w *Writer) error {
		kvs, err := w.DeleteRange(13, 0, []byte("k"), nil)
		del = kvString(kvs)
		return err
	})
	if want := `"k"="v12"@12/11/2`; del != want {
		t.Fatalf("delete: %s, want %s", del, want)
	}
	if got, want := putPrev(t, s, 14, "k", "v14"), kvOne(nil); got != want {
		t.Fatalf("put after a delete: prev %s, want %s", got, want)
	}
}

// TestLatestBudget: the memory of recent writes stays within its budget.
func TestLatestBudget(t *testing.T) {
	l := newLatest()
	value := make([]byte, 1<<20)
	for i := 0; i < 200; i++ {
		l.record(l.now(), map[string][]pendingVersion{
			fmt.Sprint("key", i): {{rev: int64(i + 1), kv: nil}, {rev: int64(i + 2), kv: &mvccpb.KeyValue{Key: []byte("x"), Value: value}}},
		})
	}
	if l.bytes > latestBudget || len(l.entries) == 0 || len(l.entries) >= 200 {
		t.Fatalf("%d entries of %d bytes, budget %d", len(l.entries), l.bytes, latestBudget)
	}
	total := 0
	for k, v := range l.entries {
		total += versionSize(k, v)
	}
	if total != l.bytes {
		t.Fatalf("entries hold %d bytes, counted %d", total, l.bytes)
	}
}

// TestPutPreviousWhenMemoryIsComplete: a store's memory of newest versions
// starts complete (so a Put of a key it does not know seeks nothing), and
// stops answering "no version" for unknown keys once something may have
// written keys behind it: an import, or an Update that committed while a
// span operation ran. Reopened, it knows the keys on disk.
func TestPutPreviousWhenMemoryIsComplete(t *testing.T) {
	s := openMem(t)
	if !s.latest.complete {
		t.Fatal("a new store's memory is not complete")
	}
	if got, want := putPrev(t, s, 2, "a", "v2"), kvOne(nil); got != want {
		t.Fatalf("new key: prev %s, want %s", got, want)
	}

	// An imported key the memory never saw.
	src := openMem(t)
	putPrev(t, src, 3, "n", "src3")
	var recs []SpanRecord
	if err := src.View(func(r *Reader) error {
		return r.ExportSpan([]byte("n"), []byte("o"), func(rec SpanRecord) error { recs = append(recs, rec); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ImportSpan([]byte("n"), []byte("o"), recs); err != nil {
		t.Fatal(err)
	}
	if got, want := putPrev(t, s, 4, "n", "v4"), `"n"="src3"@3/3/1`; got != want {
		t.Fatalf("put after an import: prev %s, want %s", got, want)
	}

	// A cleared span keeps the memory complete; an Update that committed
	// while it ran is not remembered, so the memory is no longer complete.
	s2 := openMem(t)
	mustUpdate(t, s2, func(w *Writer) error {
		if _, err := w.Put(2, 0, Put{Key: []byte("m"), Value: []byte("v2")}); err != nil {
			return err
		}
		return s2.ClearSpan([]byte("x"), []byte("y"))
	})
	if got, want := putPrev(t, s2, 3, "m", "v3"), `"m"="v2"@2/2/1`; got != want {
		t.Fatalf("put after an Update that overlapped a cleared span: prev %s, want %s", got, want)
	}

	dir := t.TempDir()
	d, err := Open(dir, Options{SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, 2, "a", "1")
	put(t, d, 3, "a", "2")
	put(t, d, 4, "b", "3")
	del(t, d, 5, "b", "")
	d = reopen(t, d, dir, Options{})
	if !d.latest.complete || len(d.latest.entries) != 2 {
		t.Fatalf("reopened: complete %v, %d keys remembered, want 2", d.latest.complete, len(d.latest.entries))
	}
	if got, want := putPrev(t, d, 6, "a", "3"), `"a"="2"@3/2/2`; got != want {
		t.Fatalf("put after reopening: prev %s, want %s", got, want)
	}
	if got, want := putPrev(t, d, 7, "b", "4"), kvOne(nil); got != want {
		t.Fatalf("put of a deleted key after reopening: prev %s, want %s", got, want)
	}
	if got, want := putPrev(t, d, 8, "c", "5"), kvOne(nil); got != want {
		t.Fatalf("put of a new key after reopening: prev %s, want %s", got, want)
	}
	var kv string
	if err := d.View(func(r *Reader) error {
		got, err := r.Get([]byte("b"), 0)
		kv = kvOne(got)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := `"b"="4"@7/7/1`; kv != want {
		t.Fatalf("b after reopening and a put: %s, want %s", kv, want)
	}
}
