package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestCrashDuringSplits kills Mosaic with SIGKILL while writers run and
// ranges split one after another, then checks after the restart that every
// acknowledged write is there at its revision, that the ranges still cover
// the keyspace exactly once with every acknowledged split in place, and
// that every range takes writes again with the revision counting on.
func TestCrashDuringSplits(t *testing.T) {
	t.Parallel()
	subj := harness.StartMosaic(t, harness.Options{})

	type write struct {
		key, value string
		rev        int64
	}
	var (
		mu      sync.Mutex
		acked   []write
		stop    atomic.Bool
		wg      sync.WaitGroup
		splitOK []string
	)
	for w := range 4 {
		c := harness.NewClient(t, subj.Endpoint())
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("cs/%c/w%d/%d", 'a'+rune(i%20), w, i%7)
				value := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				resp, err := c.Put(ctx, key, value)
				cancel()
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked = append(acked, write{key, value, resp.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 19 && !stop.Load(); i++ {
			key := fmt.Sprintf("cs/%c", 'b'+rune(i))
			if _, _, err := harness.Mosaicctl(t, subj.Endpoint(), "range", "split", "--", key); err != nil {
				return // the server is gone
			}
			mu.Lock()
			splitOK = append(splitOK, key)
			mu.Unlock()
			time.Sleep(60 * time.Millisecond)
		}
	}()
	time.Sleep(1000 * time.Millisecond) // workload duration, not synchronisation: splits are still under way
	subj.Kill()
	stop.Store(true)
	wg.Wait()
	subj.Restart()

	c := subj.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	revs := map[int64]string{}
	var maxRev int64
	for _, w := range acked {
		if other, dup := revs[w.rev]; dup {
			t.Errorf("revision %d acknowledged for %s and %s", w.rev, other, w.value)
		}
		revs[w.rev] = w.value
		maxRev = max(maxRev, w.rev)
		resp, err := c.Get(ctx, w.key, clientv3.WithRev(w.rev))
		if err != nil {
			t.Fatalf("get %q at %d: %v", w.key, w.rev, err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != w.value {
			t.Errorf("acknowledged %s=%s at %d: read %v after restart", w.key, w.value, w.rev, resp.Kvs)
		}
	}
	t.Logf("%d writes and %d splits acknowledged before the kill", len(acked), len(splitOK))
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}

	out, stderr, err := harness.Mosaicctl(t, subj.Endpoint(), "range", "list", "--json")
	if err != nil {
		t.Fatalf("range list: %v %s", err, stderr)
	}
	var ranges []struct {
		ID         uint64 `json:"id"`
		Start, End string
	}
	if err := json.Unmarshal([]byte(out), &ranges); err != nil {
		t.Fatalf("range list --json: %v\n%s", err, out)
	}
	sort.Slice(ranges, func(i, j int) bool { return ranges[i].Start < ranges[j].Start })
	starts := map[string]bool{}
	for i, r := range ranges {
		starts[r.Start] = true
		switch {
		case i == 0 && r.Start != "":
			t.Errorf("the first range starts at %q, not at the beginning of the keyspace", r.Start)
		case i > 0 && ranges[i-1].End != r.Start:
			t.Errorf("ranges %d and %d do not meet: %q then %q", ranges[i-1].ID, r.ID, ranges[i-1].End, r.Start)
		}
	}
	if last := ranges[len(ranges)-1]; last.End != "" {
		t.Errorf("the last range ends at %q, not at the end of the keyspace", last.End)
	}
	for _, k := range splitOK {
		if !starts[k] {
			t.Errorf("acknowledged split at %q is missing after the restart", k)
		}
	}
	// Every range takes a write, at the next revisions.
	head, err := c.Get(ctx, "cs/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if head.Header.Revision < maxRev {
		t.Fatalf("revision %d after restart is below the acknowledged %d", head.Header.Revision, maxRev)
	}
	next := head.Header.Revision
	for _, r := range ranges {
		next++
		resp, err := c.Put(ctx, r.Start+"after-restart", "x")
		if err != nil {
			t.Fatalf("put into range %d after restart: %v", r.ID, err)
		}
		if resp.Header.Revision != next {
			t.Fatalf("put into range %d took revision %d, want %d", r.ID, resp.Header.Revision, next)
		}
	}
}
