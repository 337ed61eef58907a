package mvcc

import (
	"fmt"
	"testing"
)

// TestRangeNoCount: with NoCount the scan stops at Limit and Count is the
// number of KVs returned; without it Count covers the whole span.
func TestRangeNoCount(t *testing.T) {
	s, err := Open("", Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(w *Writer) error {
		for i := 0; i < 10; i++ {
			if _, err := w.Put(2, int32(i), Put{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o          ReadOptions
		kvs, count int
	}{
		{ReadOptions{Limit: 3}, 3, 10},
		{ReadOptions{Limit: 3, NoCount: true}, 3, 3},
		{ReadOptions{Limit: 20, NoCount: true}, 10, 10},
		{ReadOptions{NoCount: true}, 10, 10},
	} {
		_ = s.View(func(r *Reader) error {
			res, err := r.Range([]byte("k"), []byte("l"), 0, c.o)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.KVs) != c.kvs || res.Count != int64(c.count) {
				t.Errorf("%+v: %d kvs, count %d; want %d, %d", c.o, len(res.KVs), res.Count, c.kvs, c.count)
			}
			return nil
		})
	}
}
