package mvcc

import (
	"context"
	"fmt"
	"testing"
)

func benchStore(b *testing.B, keys, versions int) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	rev := int64(0)
	for v := 0; v < versions; v++ {
		rev++
		err := s.Update(func(w *Writer) error {
			for k := 0; k < keys; k++ {
				if _, err := w.Put(rev, int32(k), Put{Key: []byte(fmt.Sprintf("key/%06d", k)), Value: make([]byte, 256)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func BenchmarkPut(b *testing.B) {
	s := benchStore(b, 10000, 1)
	val := make([]byte, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rev := int64(i + 2)
		err := s.Update(func(w *Writer) error {
			_, err := w.Put(rev, 0, Put{Key: []byte(fmt.Sprintf("key/%06d", i%10000)), Value: val})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s := benchStore(b, 10000, 3)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		err := s.View(func(r *Reader) error {
			_, err := r.Get([]byte(fmt.Sprintf("key/%06d", i%10000)), 0)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRange(b *testing.B) {
	s := benchStore(b, 10000, 3)
	for _, tc := range []struct {
		name string
		rev  int64
		o    ReadOptions
	}{
		{"100keys-latest", 0, ReadOptions{Limit: 100}},
		{"100keys-historical", 2, ReadOptions{Limit: 100}},
		{"count-10000", 0, ReadOptions{CountOnly: true}},
		{"all-10000", 0, ReadOptions{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				err := s.View(func(r *Reader) error {
					_, err := r.Range([]byte("key/"), []byte("key0"), tc.rev, tc.o)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCompact(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := benchStore(b, 1000, 10)
		b.StartTimer()
		if err := s.Compact(context.Background(), 10); err != nil {
			b.Fatal(err)
		}
	}
}
