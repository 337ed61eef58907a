package mvcc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func TestCompact(t *testing.T) {
	s := history(t)
	ctx := context.Background()
	if err := s.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{1, 4} {
		if _, err := rangeAt(t, s, "a", "z", rev, ReadOptions{}); !errors.Is(err, ErrCompacted) {
			t.Errorf("Range at %d after Compact(5): err %v, want ErrCompacted", rev, err)
		}
	}
	tests := []struct {
		key, end string
		rev      int64
		want     string
	}{
		{"a", "z", 5, `"a"="5"@5/5/1 "b"="2"@2/2/1`},
		{"a", "z", 6, `"a"="5"@5/5/1 "c"="6"@6/6/1 "d"="6"@6/6/1`},
		{"\x00", "\x00", 0, `"\x00"="zero"@7/7/1 "a"="5"@5/5/1 "a\x00"="z"@7/7/1 "c"="6"@6/6/1 "d"="6"@6/6/1`},
	}
	for _, tt := range tests {
		res, err := rangeAt(t, s, tt.key, tt.end, tt.rev, ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := kvString(res.KVs); got != tt.want {
			t.Errorf("Range(%q, %q, %d) after compaction = %s, want %s", tt.key, tt.end, tt.rev, got, tt.want)
		}
	}
	err := s.View(func(r *Reader) error {
		if r.CompactedRev() != 5 {
			t.Errorf("CompactedRev = %d, want 5", r.CompactedRev())
		}
		if _, err := r.Changes([]byte("a"), []byte("z"), 4, 0, 0); !errors.Is(err, ErrCompacted) {
			t.Errorf("Changes from 4: err %v, want ErrCompacted", err)
		}
		cs, err := r.Changes([]byte("\x00"), []byte("\x00"), 5, 0, 0)
		if err != nil {
			return err
		}
		want := `5.0 PUT "a"="5"@5/5/1 | 6.0 PUT "c"="6"@6/6/1 | 6.1 PUT "d"="6"@6/6/1 | 6.2 DELETE "b"@6/0/0 prev "b"="2"@2/2/1 | 7.0 PUT "a\x00"="z"@7/7/1 | 7.1 PUT "\x00"="zero"@7/7/1`
		if got := changesString(cs); got != want {
			t.Errorf("Changes from 5:\n got %s\nwant %s", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// a: 1 and 3 superseded, tombstone 4 dropped, 5 kept; b: 2 kept (newest <= 5), tombstone 6
	// kept (> 5); c, d, a\x00, \x00 kept.
	data, changes := rawCounts(t, s)
	if data != 7 || changes != 6 {
		t.Errorf("after Compact(5): %d versions, %d change entries; want 7, 6", data, changes)
	}

	// Compacting backwards or to the same revision changes nothing.
	for _, rev := range []int64{3, 5} {
		if err := s.Compact(ctx, rev); err != nil {
			t.Fatal(err)
		}
		if _, err := rangeAt(t, s, "a", "", 5, ReadOptions{}); err != nil {
			t.Errorf("Compact(%d) after Compact(5) broke reads at 5: %v", rev, err)
		}
	}

	// Compacting to the head keeps only the live latest state.
	if err := s.Compact(ctx, 7); err != nil {
		t.Fatal(err)
	}
	data, changes = rawCounts(t, s)
	if data != 5 || changes != 2 {
		t.Errorf("after Compact(7): %d versions, %d change entries; want 5, 2", data, changes)
	}
	res, err := rangeAt(t, s, "\x00", "\x00", 7, ReadOptions{})
	if err != nil || res.Count != 5 {
		t.Errorf("Range at 7 after Compact(7): %d keys, %v", res.Count, err)
	}
}

func TestCompactInterruptedResumes(t *testing.T) {
	s := history(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Compact(ctx, 6); !errors.Is(err, context.Canceled) {
		t.Fatalf("Compact with cancelled ctx: err %v", err)
	}
	// The compacted revision is recorded even though nothing was removed yet.
	if _, err := rangeAt(t, s, "a", "", 5, ReadOptions{}); !errors.Is(err, ErrCompacted) {
		t.Errorf("Range at 5 after interrupted Compact(6): err %v", err)
	}
	if data, _ := rawCounts(t, s); data != 10 {
		t.Errorf("interrupted compaction removed data: %d versions left, want 10", data)
	}
	// A no-op Compact finishes the job.
	if err := s.Compact(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	data, changes := rawCounts(t, s)
	if data != 5 || changes != 5 {
		t.Errorf("after resumed compaction: %d versions, %d change entries; want 5, 5", data, changes)
	}
}

func TestCompactManyChangesInBatches(t *testing.T) {
	s := openMem(t)
	const n = compactBatch*2 + 10
	for rev := int64(1); rev <= n; rev++ {
		put(t, s, rev, string(rune('a'+rev%5)), "v")
	}
	if err := s.Compact(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	data, changes := rawCounts(t, s)
	if data != 5 || changes != 1 {
		t.Errorf("after Compact(%d): %d versions, %d change entries; want 5, 1", n, data, changes)
	}
}

// A lagging replica may apply writes below the compacted revision; the next compaction still
// removes what they superseded.
func TestCompactCatchesLateWrites(t *testing.T) {
	s := openMem(t)
	put(t, s, 1, "fast", "1")
	put(t, s, 5, "fast", "5")
	if err := s.Compact(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	put(t, s, 2, "slow", "2")
	put(t, s, 3, "slow", "3")
	put(t, s, 8, "fast", "8")
	if err := s.Compact(context.Background(), 8); err != nil {
		t.Fatal(err)
	}
	data, changes := rawCounts(t, s)
	if data != 2 || changes != 1 {
		t.Errorf("%d versions, %d change entries; want 2, 1", data, changes)
	}
	res, err := rangeAt(t, s, "\x00", "\x00", 0, ReadOptions{})
	if err != nil || kvString(res.KVs) != `"fast"="8"@8/1/3 "slow"="3"@3/2/2` {
		t.Errorf("latest after compaction: %s, %v", kvString(res.KVs), err)
	}
}

// Shards write disjoint keys concurrently while readers and compaction run; every reader sees a
// consistent state and nothing races.
func TestConcurrentShardsReadersAndCompaction(t *testing.T) {
	s := openMem(t)
	const shards, revsPerShard = 4, 155
	var rev atomic.Int64 // the oracle
	var wg sync.WaitGroup
	errs := make(chan error, shards+2)
	for sh := 0; sh < shards; sh++ {
		wg.Add(1)
		go func(sh int) {
			defer wg.Done()
			key := []byte(fmt.Sprintf("shard%d/key", sh))
			for i := 0; i < revsPerShard; i++ {
				err := s.Update(func(w *Writer) error {
					r := rev.Add(1)
					if i%10 == 9 {
						_, err := w.DeleteRange(r, 0, key, nil)
						return err
					}
					_, err := w.Put(r, 0, Put{Key: key, Value: []byte(fmt.Sprint(i))})
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}(sh)
	}
	done := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // reader
		defer bg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			err := s.View(func(r *Reader) error {
				res, err := r.Range([]byte("shard"), []byte("shard~"), 0, ReadOptions{})
				if err != nil {
					return err
				}
				for _, kv := range res.KVs {
					if kv.Version < 1 || kv.CreateRevision > kv.ModRevision {
						return fmt.Errorf("inconsistent kv %s", kvOne(kv))
					}
				}
				return nil
			})
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() { // compactor
		defer bg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := s.Compact(context.Background(), rev.Load()/2); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	res, err := rangeAt(t, s, "shard", "shard~", 0, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Each shard's last ops are puts i = 150..154 after the delete at i = 149.
	for _, kv := range res.KVs {
		if kv.Version != 5 || string(kv.Value) != "154" {
			t.Errorf("final state %s", kvOne(kv))
		}
	}
	if len(res.KVs) != shards {
		t.Errorf("%d keys, want %d", len(res.KVs), shards)
	}
}
