package tests

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// crashWrite is one write a crash-test writer sent: a put of one key, or a transaction
// putting two keys in different ranges.
type crashWrite struct {
	keys   []string
	value  string
	acked  bool
	rev    int64 // header revision of the acknowledgement
	failed error
}

// TestCrashAcknowledgedWritesSurvive runs concurrent writers against the subject, kills it
// with SIGKILL mid-run, restarts it and checks durability: every acknowledged write is
// present at its revision with its value, no value that was never sent appears, the write
// a writer had in flight when the server died is all-or-nothing across ranges, and the
// revision counter did not go back.
func TestCrashAcknowledgedWritesSurvive(t *testing.T) {
	t.Parallel()
	subj := harness.StartSubject(t, harness.Options{})
	for _, k := range []string{"crash/w2", "crash/w4", "crash/w6", "crashx/"} {
		harness.SplitRange(t, subj, k)
	}

	const (
		writers        = 8
		acksBeforeKill = 400
		putTimeout     = 3 * time.Second
		runFor         = 3 * time.Second // how long the writers run before the kill
	)
	var (
		history  [writers][]*crashWrite
		acks     atomic.Int64
		enough   = make(chan struct{})
		enoughMu sync.Once
		wg       sync.WaitGroup
	)
	for w := range writers {
		c := harness.NewClient(t, subj.Endpoint())
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				wr := &crashWrite{value: fmt.Sprintf("w%d-%d", w, seq)}
				history[w] = append(history[w], wr)
				ctx, cancel := context.WithTimeout(context.Background(), putTimeout)
				var err error
				if seq%4 == 3 {
					// Two keys in different ranges in one transaction.
					wr.keys = []string{fmt.Sprintf("crash/w%d/t", w), fmt.Sprintf("crashx/w%d/t", w)}
					var resp *clientv3.TxnResponse
					resp, err = c.Txn(ctx).Then(clientv3.OpPut(wr.keys[0], wr.value), clientv3.OpPut(wr.keys[1], wr.value)).Commit()
					if err == nil {
						wr.rev = resp.Header.Revision
					}
				} else {
					wr.keys = []string{fmt.Sprintf("crash/w%d/k%d", w, seq%5)}
					var resp *clientv3.PutResponse
					resp, err = c.Put(ctx, wr.keys[0], wr.value)
					if err == nil {
						wr.rev = resp.Header.Revision
					}
				}
				cancel()
				if err != nil {
					// After the kill every write fails; before it, none should.
					wr.failed = err
					return
				}
				wr.acked = true
				if acks.Add(1) >= acksBeforeKill {
					enoughMu.Do(func() { close(enough) })
				}
			}
		}()
	}
	// Kill once the writers have run for runFor and have enough acknowledged writes.
	start := time.Now()
	select {
	case <-enough:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d writes acknowledged in 30s", acks.Load())
	}
	time.Sleep(time.Until(start.Add(runFor))) // workload duration, not synchronisation
	subj.Kill()
	wg.Wait()
	subj.Restart()

	c := subj.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sent := map[string]map[string]*crashWrite{} // key -> value -> write
	revs := map[int64]*crashWrite{}
	var maxRev int64
	acked, inFlight := 0, 0
	for w := range writers {
		for _, wr := range history[w] {
			for _, k := range wr.keys {
				if sent[k] == nil {
					sent[k] = map[string]*crashWrite{}
				}
				sent[k][wr.value] = wr
			}
			if !wr.acked {
				inFlight++
				continue
			}
			acked++
			if other := revs[wr.rev]; other != nil {
				t.Errorf("writes %q and %q were both acknowledged at revision %d", other.value, wr.value, wr.rev)
			}
			revs[wr.rev] = wr
			maxRev = max(maxRev, wr.rev)
			for _, k := range wr.keys {
				resp, err := c.Get(ctx, k, clientv3.WithRev(wr.rev))
				if err != nil {
					t.Fatalf("get %q at %d after restart: %v", k, wr.rev, err)
				}
				if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != wr.value || resp.Kvs[0].ModRevision != wr.rev {
					t.Errorf("acknowledged write %q=%q at revision %d: after restart read %v", k, wr.value, wr.rev, resp.Kvs)
				}
			}
		}
	}
	t.Logf("%d writes acknowledged, %d in flight at the kill, highest acknowledged revision %d", acked, inFlight, maxRev)

	resp, err := c.Get(ctx, "crash", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("reading all keys after restart: %v", err)
	}
	if resp.Header.Revision < maxRev {
		t.Errorf("revision after restart %d < highest acknowledged revision %d", resp.Header.Revision, maxRev)
	}
	final := map[string]string{}
	for _, kv := range resp.Kvs {
		k, v := string(kv.Key), string(kv.Value)
		final[k] = v
		wr := sent[k][v]
		switch {
		case wr == nil:
			t.Errorf("key %q has value %q, which was never sent", k, v)
		case wr.acked && kv.ModRevision != wr.rev:
			t.Errorf("key %q=%q has mod revision %d, acknowledged at %d", k, v, kv.ModRevision, wr.rev)
		}
	}
	for k := range sent {
		if _, ok := final[k]; !ok {
			t.Errorf("key %q was written but is missing after restart", k)
		}
	}
	// A write in flight at the kill either happened everywhere or nowhere.
	for w := range writers {
		last := history[w][len(history[w])-1]
		if last.acked || len(last.keys) < 2 {
			continue
		}
		a, b := final[last.keys[0]] == last.value, final[last.keys[1]] == last.value
		if a != b {
			t.Errorf("transaction %q in flight at the kill is half applied: %s=%v %s=%v", last.value, last.keys[0], a, last.keys[1], b)
		}
	}
	for w := range writers {
		for _, wr := range history[w][:len(history[w])-1] {
			if wr.failed != nil {
				t.Errorf("writer %d: write %q failed before the kill: %v", w, wr.value, wr.failed)
			}
		}
	}
}
