package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The watch checker runs concurrent writers (puts, deletes, cross-range
// txns) over keys spread on several ranges while the ranges split, and many
// watchers with different spans, start revisions and prev_kv. Every write
// is logged with the revision its response names; replaying the log gives
// the committed history, event by event with the exact KeyValue and
// PrevKv. Afterwards each watcher's stream must equal that history from
// its start revision: in revision order, no gap, no duplicate, every
// revision's events in one response.

// ckEvent is one expected or received event.
type ckEvent struct {
	rev  int64
	typ  mvccpb.Event_EventType
	kv   string // key=value c=create v=version
	prev string // "" when none
}

func fmtKV(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return ""
	}
	return fmt.Sprintf("%s=%s c=%d m=%d v=%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
}

// ckWrite is one logged write: the keys it put (with values) and deleted.
type ckWrite struct {
	rev  int64
	puts map[string]string
	dels []string
}

type ckWatcher struct {
	name   string
	key    string
	prefix bool
	end    string // "" single key or prefix; "\x00" from key
	prevKV bool
	start  int64 // first revision it must see

	mu    sync.Mutex
	resps [][]ckEvent
	err   error
}

func (w *ckWatcher) contains(k string) bool {
	switch {
	case w.prefix:
		return strings.HasPrefix(k, w.key)
	case w.end == "\x00":
		return k >= w.key
	case w.end != "":
		return k >= w.key && k < w.end
	default:
		return k == w.key
	}
}

func TestWatchChecker(t *testing.T) {
	t.Parallel()
	subj := harness.StartSubject(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	letters := "abcdefgh"
	key := func(r *rand.Rand) string { return fmt.Sprintf("w/%c/%d", letters[r.IntN(len(letters))], r.IntN(6)) }

	var logMu sync.Mutex
	var log []ckWrite
	record := func(w ckWrite) {
		logMu.Lock()
		log = append(log, w)
		logMu.Unlock()
	}

	// Watchers: spans × start revisions × prev_kv, on a few streams.
	spans := []struct {
		name, key, end string
		prefix         bool
	}{
		{"all", "w/", "", true},
		{"c", "w/c/", "", true},
		{"b..e", "w/b/", "w/e/", false},
		{"key d/3", "w/d/3", "", false},
		{"from f", "w/f/", "\x00", false},
	}
	clients := []*clientv3.Client{harness.NewClient(t, subj.Endpoint()), harness.NewClient(t, subj.Endpoint())}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var watchers []*ckWatcher
	var wg sync.WaitGroup
	startWatch := func(start int64, tag string, stream int) {
		for i, sp := range spans {
			w := &ckWatcher{name: fmt.Sprintf("%s/%s/prev=%v", tag, sp.name, i%2 == 0), key: sp.key, prefix: sp.prefix, end: sp.end, prevKV: i%2 == 0}
			opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
			switch {
			case sp.prefix:
				opts = append(opts, clientv3.WithPrefix())
			case sp.end == "\x00":
				opts = append(opts, clientv3.WithFromKey())
			case sp.end != "":
				opts = append(opts, clientv3.WithRange(sp.end))
			}
			if w.prevKV {
				opts = append(opts, clientv3.WithPrevKV())
			}
			if start > 0 {
				opts = append(opts, clientv3.WithRev(start))
			}
			// clientv3 shares one gRPC stream between watches whose
			// contexts carry the same metadata.
			sctx := metadata.AppendToOutgoingContext(ctx, "ck-stream", fmt.Sprint(stream))
			wc := clients[stream%len(clients)].Watch(sctx, sp.key, opts...)
			created := <-wc
			if !created.Created {
				t.Fatalf("%s: first response is not created: %+v", w.name, created)
			}
			w.start = start
			if start == 0 {
				w.start = created.Header.Revision + 1
			}
			watchers = append(watchers, w)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range wc {
					if err := r.Err(); err != nil {
						w.mu.Lock()
						w.err = err
						w.mu.Unlock()
						return
					}
					var evs []ckEvent
					for _, ev := range r.Events {
						evs = append(evs, ckEvent{rev: ev.Kv.ModRevision, typ: ev.Type, kv: fmtKV(ev.Kv), prev: fmtKV(ev.PrevKv)})
					}
					w.mu.Lock()
					w.resps = append(w.resps, evs)
					w.mu.Unlock()
				}
			}()
		}
	}
	startWatch(0, "early", 0)

	// Writers.
	stop := make(chan struct{})
	var wwg sync.WaitGroup
	var writeErr error
	var errOnce sync.Once
	for wi := range 4 {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			r := rand.New(rand.NewPCG(uint64(wi), 7))
			c := clients[wi%len(clients)]
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch p := r.IntN(20); {
				case p < 12:
					k, v := key(r), fmt.Sprintf("%d-%d", wi, n)
					var resp *clientv3.PutResponse
					if resp, err = c.Put(ctx, k, v); err == nil {
						record(ckWrite{rev: resp.Header.Revision, puts: map[string]string{k: v}})
					}
				case p < 15:
					k := key(r)
					var resp *clientv3.DeleteResponse
					if resp, err = c.Delete(ctx, k); err == nil && resp.Deleted == 1 {
						record(ckWrite{rev: resp.Header.Revision, dels: []string{k}})
					}
				default:
					k1, k2, k3 := key(r), key(r), key(r)
					if k1 == k2 || k1 == k3 || k2 == k3 {
						continue
					}
					v := fmt.Sprintf("t%d-%d", wi, n)
					var resp *clientv3.TxnResponse
					resp, err = c.Txn(ctx).Then(clientv3.OpPut(k1, v), clientv3.OpPut(k2, v), clientv3.OpDelete(k3)).Commit()
					if err == nil {
						w := ckWrite{rev: resp.Header.Revision, puts: map[string]string{k1: v, k2: v}}
						if resp.Responses[2].GetResponseDeleteRange().Deleted == 1 {
							w.dels = []string{k3}
						}
						record(w)
					}
				}
				if err != nil {
					errOnce.Do(func() { writeErr = err })
					return
				}
			}
		}()
	}
	splitAt := []string{"w/b", "w/d", "w/f", "w/h", "w/c/3", "w/e"}
	for i, k := range splitAt {
		time.Sleep(250 * time.Millisecond)
		harness.SplitRange(t, subj, k)
		if i == 2 {
			// Watchers that join mid-run: from the beginning, from a recent
			// revision (catch-up while writes go on), from now, from the future.
			cur := ckCurrentRev(ctx, t, clients[0])
			startWatch(1, "from-1", 2)
			startWatch(cur/2, "from-half", 3)
			startWatch(0, "late", 4)
			startWatch(cur+200, "future", 2)
		}
	}
	time.Sleep(250 * time.Millisecond)
	close(stop)
	wwg.Wait()
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}

	// The committed history, replayed from the log.
	slices.SortFunc(log, func(a, b ckWrite) int { return int(a.rev - b.rev) })
	type kvState struct {
		val                  string
		create, mod, version int64
	}
	live := map[string]*kvState{}
	var history []ckEvent
	last := int64(1)
	for _, w := range log {
		if w.rev != last+1 {
			t.Fatalf("writes logged at revisions %d then %d: the revisions are not dense", last, w.rev)
		}
		last = w.rev
		var keys []string
		for k := range w.puts {
			keys = append(keys, k)
		}
		keys = append(keys, w.dels...)
		slices.Sort(keys)
		for _, k := range keys {
			prev := live[k]
			prevS := ""
			if prev != nil {
				prevS = fmt.Sprintf("%s=%s c=%d m=%d v=%d", k, prev.val, prev.create, prev.mod, prev.version)
			}
			if v, ok := w.puts[k]; ok {
				s := &kvState{val: v, create: w.rev, mod: w.rev, version: 1}
				if prev != nil {
					s.create, s.version = prev.create, prev.version+1
				}
				live[k] = s
				history = append(history, ckEvent{rev: w.rev, typ: mvccpb.PUT, kv: fmt.Sprintf("%s=%s c=%d m=%d v=%d", k, v, s.create, s.mod, s.version), prev: prevS})
			} else {
				delete(live, k)
				history = append(history, ckEvent{rev: w.rev, typ: mvccpb.DELETE, kv: fmt.Sprintf("%s= c=0 m=%d v=0", k, w.rev), prev: prevS})
			}
		}
	}
	t.Logf("%d writes, revisions 2..%d, %d events, %d watchers", len(log), last, len(history), len(watchers))

	keyOf := func(e ckEvent) string { return e.kv[:strings.IndexByte(e.kv, '=')] }
	deadline := time.Now().Add(20 * time.Second)
	for _, w := range watchers {
		var want []ckEvent
		for _, e := range history {
			if e.rev >= w.start && w.contains(keyOf(e)) {
				if !w.prevKV {
					e.prev = ""
				}
				want = append(want, e)
			}
		}
		var got []ckEvent
		var resps [][]ckEvent
		for {
			w.mu.Lock()
			resps = slices.Clone(w.resps)
			err := w.err
			w.mu.Unlock()
			if err != nil {
				t.Fatalf("%s: watch error %v", w.name, err)
			}
			got = slices.Concat(resps...)
			if len(got) >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Within a revision etcd orders a txn's events by operation; the
		// log knows keys, so compare each revision's events sorted by key.
		sortRevs := func(evs []ckEvent) {
			slices.SortStableFunc(evs, func(a, b ckEvent) int {
				if a.rev != b.rev {
					return int(a.rev - b.rev)
				}
				return strings.Compare(a.kv, b.kv)
			})
		}
		for i := 1; i < len(got); i++ {
			if got[i].rev < got[i-1].rev {
				t.Errorf("%s: event at revision %d after %d", w.name, got[i].rev, got[i-1].rev)
				break
			}
		}
		seen := map[int64]int{}
		for i, r := range resps {
			revs := map[int64]bool{}
			for _, e := range r {
				revs[e.rev] = true
			}
			for rev := range revs {
				if j, ok := seen[rev]; ok {
					t.Errorf("%s: revision %d split over responses %d and %d", w.name, rev, j, i)
				}
				seen[rev] = i
			}
		}
		gotS, wantS := slices.Clone(got), slices.Clone(want)
		sortRevs(gotS)
		sortRevs(wantS)
		if !slices.Equal(gotS, wantS) {
			t.Errorf("%s (from %d): %d events, want %d; first difference: %s", w.name, w.start, len(gotS), len(wantS), firstDiff(gotS, wantS))
		}
	}
	cancel()
	wg.Wait()
}

func ckCurrentRev(ctx context.Context, t *testing.T, c *clientv3.Client) int64 {
	t.Helper()
	r, err := c.Get(ctx, "w/")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

func firstDiff(got, want []ckEvent) string {
	for i := range max(len(got), len(want)) {
		var g, w ckEvent
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("#%d got %+v, want %+v", i, g, w)
		}
	}
	return "none"
}
