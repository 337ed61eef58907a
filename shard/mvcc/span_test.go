package mvcc

import (
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestSpanExportImport copies a span from one store to another that held other, stale data
// in it: afterwards both answer every read and change listing of the span alike, at every
// revision, and the target's keys outside the span are untouched.
func TestSpanExportImport(t *testing.T) {
	src, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()

	write := func(s *Store, rev int64, f func(w *Writer) error) {
		t.Helper()
		if err := s.Update(f); err != nil {
			t.Fatalf("rev %d: %v", rev, err)
		}
	}
	keys := []string{"a", "b", "b\x00x", "c", "cz", "d", "e"}
	rev := int64(1)
	for round := 0; round < 4; round++ {
		for i, k := range keys {
			rev++
			r := rev
			write(src, r, func(w *Writer) error {
				if (round+i)%3 == 2 {
					_, err := w.DeleteRange(r, 0, []byte(k), nil)
					return err
				}
				_, err := w.Put(r, 0, Put{Key: []byte(k), Value: []byte(fmt.Sprintf("%s@%d", k, r)), Lease: int64(i)})
				return err
			})
		}
	}
	last := rev
	// The target has its own history: stale versions inside the span, others outside.
	for i, k := range []string{"a", "b", "c", "e", "f"} {
		r := int64(i + 2)
		write(dst, r, func(w *Writer) error {
			_, err := w.Put(r, 0, Put{Key: []byte(k), Value: []byte("stale")})
			return err
		})
	}

	start, end := []byte("b"), []byte("d")
	var recs []SpanRecord
	if err := src.View(func(r *Reader) error {
		return r.ExportSpan(start, end, func(rec SpanRecord) error { recs = append(recs, rec); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if err := dst.ReplaceSpan(start, end, recs); err != nil {
		t.Fatal(err)
	}
	if err := dst.ImportSpan(start, end, []SpanRecord{{Key: dataKey([]byte("z"), 5), Value: []byte{0}}}); err == nil {
		t.Errorf("importing a record outside the span succeeded")
	}

	for r := int64(2); r <= last; r++ {
		var a, b RangeResult
		var ca, cb []Change
		if err := src.View(func(rd *Reader) error {
			var err error
			if a, err = rd.Range(start, end, r, ReadOptions{}); err != nil {
				return err
			}
			ca, err = rd.Changes(start, end, r, r, 0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := dst.View(func(rd *Reader) error {
			var err error
			if b, err = rd.Range(start, end, r, ReadOptions{}); err != nil {
				return err
			}
			cb, err = rd.Changes(start, end, r, r, 0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(a.KVs) != len(b.KVs) || a.Count != b.Count {
			t.Fatalf("rev %d: source %d keys (count %d), target %d (count %d)", r, len(a.KVs), a.Count, len(b.KVs), b.Count)
		}
		for i := range a.KVs {
			if !proto.Equal(a.KVs[i], b.KVs[i]) {
				t.Fatalf("rev %d key %d: source %v, target %v", r, i, a.KVs[i], b.KVs[i])
			}
		}
		if len(ca) != len(cb) {
			t.Fatalf("rev %d: %d changes in the source, %d in the target", r, len(ca), len(cb))
		}
		for i := range ca {
			if ca[i].Rev != cb[i].Rev || ca[i].Sub != cb[i].Sub || !proto.Equal(ca[i].Event, cb[i].Event) {
				t.Fatalf("rev %d change %d: source %v, target %v", r, i, ca[i], cb[i])
			}
		}
	}
	// Outside the span the target kept its own data.
	if err := dst.View(func(rd *Reader) error {
		for _, k := range []string{"a", "e", "f"} {
			kv, err := rd.Get([]byte(k), math.MaxInt64)
			if err != nil {
				return err
			}
			if kv == nil || string(kv.Value) != "stale" {
				return fmt.Errorf("%s outside the span: %v", k, kv)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
