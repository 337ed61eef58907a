package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The live watchers of TestClusterFaultsLinearizable.
//
// Before the workload, watchers start at a revision recorded then, two through each member:
// prefix watches over every test key (with and without prev_kv), a watch of the whole
// keyspace from revision 1, and watches of sub-ranges that cross split points (initial and
// online ones). A watcher behaves as a client would: when its member is SIGKILLed (the fault
// loop tells it, as a client's health check would) or its stream ends with an error, it
// opens a new clientv3 watch on another running member from the last revision it saw + 1 (a
// progress notification counts as seen). Every response is recorded. After the workload,
// each watcher asks for progress notifications until it has seen the current revision, and
// stops. After the full restart, each watcher's responses, concatenated across resumes, are
// checked against the committed history (the members' revision history from revision 1),
// see checkWatchStream.

// watchSpan is the keys a watcher watches.
type watchSpan struct {
	key string
	end string // "" a single key, "\x00" every key from key on, else [key, end)
}

func prefixSpan(p string) watchSpan { return watchSpan{key: p, end: clientv3.GetPrefixRangeEnd(p)} }

func (s watchSpan) contains(k string) bool {
	switch s.end {
	case "":
		return k == s.key
	case "\x00":
		return k >= s.key
	}
	return k >= s.key && k < s.end
}

func (s watchSpan) String() string {
	switch {
	case s.end == "":
		return fmt.Sprintf("key %q", s.key)
	case s.end == "\x00" && s.key == "\x00":
		return "every key"
	case s.end == "\x00":
		return fmt.Sprintf("[%q, end)", s.key)
	case s.end == clientv3.GetPrefixRangeEnd(s.key):
		return fmt.Sprintf("prefix %q", s.key)
	}
	return fmt.Sprintf("[%q, %q)", s.key, s.end)
}

// watchEvent is one event of a watch stream, or of the committed history (where prev is
// always set: the key's previous state, "" if it was absent).
type watchEvent struct {
	rev  int64
	del  bool
	key  string
	kv   string // fmtKV of the event's KeyValue
	prev string // fmtKV of its PrevKv; "" for none
}

func (e watchEvent) String() string {
	if e.del {
		return fmt.Sprintf("rev %d delete %s", e.rev, e.key)
	}
	return fmt.Sprintf("rev %d put %s", e.rev, e.kv)
}

// watchResp is one response a watcher received: its events, or a progress notification.
type watchResp struct {
	member   int // the member it came through
	header   int64
	progress bool
	events   []watchEvent
}

// faultWatcher is one live watcher.
type faultWatcher struct {
	name          string
	span          watchSpan
	prevKV        bool
	requireLeader bool  // etcd cancels such a watch when its member has no leader
	start         int64 // the first revision it watches

	mu       sync.Mutex
	member   int                // the member it watches through
	wctx     context.Context    // the current watch's context, for RequestProgress
	cancel   context.CancelFunc // ends the current watch
	kicked   bool               // its member was killed: leave it
	stopping bool
	covered  int64 // every event at or below it was received: start-1, then the last event's or progress notification's revision
	resps    []watchResp
	resumes  []string
	errors   int // resumes after a stream error rather than a kill
}

func (w *faultWatcher) describe() string {
	s := fmt.Sprintf("%s (%s from revision %d", w.name, w.span, w.start)
	if w.prevKV {
		s += ", prev_kv"
	}
	if w.requireLeader {
		s += ", require leader"
	}
	return s + ")"
}

// faultWatches runs the live watchers. The partition test (partition_test.go) runs them too.
type faultWatches struct {
	clients []*clientv3.Client // one per member, for the watches only
	// running reports whether a watcher may resume on member i: it is up (and, in the
	// partition test, not cut off).
	running func(i int) bool
	// revision reads the current revision, linearizably, for drain.
	revision  func(ctx context.Context) (int64, error)
	watchers  []*faultWatcher
	wg        sync.WaitGroup
	closeOnce sync.Once
	stop      int64 // the revision the watchers were drained to
}

// startFaultWatches starts the watchers before the workload.
func startFaultWatches(t *testing.T, cluster *harness.Cluster, seed uint64) *faultWatches {
	t.Helper()
	var endpoints []string
	for _, m := range cluster.Members() {
		endpoints = append(endpoints, m.Endpoint())
	}
	fw := newWatches(t, endpoints, cluster.Running, func(ctx context.Context) (int64, error) {
		resp, err := cluster.Client().Get(ctx, faultKeyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return 0, err
		}
		return resp.Header.Revision, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := fw.clients[0].Get(ctx, faultKeyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("reading the revision before the workload: %v", err)
	}
	r0 := resp.Header.Revision
	// Six watchers, dealt to the members in turn so that every member has at least one (a
	// killed member's watchers must resume elsewhere): over all test keys, the whole
	// keyspace, and sub-ranges that cross the initial split points fault/08, fault/15,
	// fault/23 and online ones (fault/04, fault/11, fault/135, fault/19, fault/25, fault/27).
	all := prefixSpan(faultKeyPrefix)
	for i, w := range []*faultWatcher{
		{span: all, prevKV: true, start: r0 + 1},
		{span: watchSpan{key: faultKey(10), end: faultKey(20)}, prevKV: true, start: r0 + 1},
		{span: all, start: r0, requireLeader: true},
		{span: watchSpan{key: "\x00", end: "\x00"}, prevKV: true, start: 1},
		{span: watchSpan{key: faultKey(3), end: faultKey(12)}, start: r0 + 1},
		{span: watchSpan{key: faultKey(21), end: "\x00"}, prevKV: true, start: r0 + 1, requireLeader: true},
	} {
		fw.add(w, i%len(fw.clients), rand.New(rand.NewPCG(seed, uint64(1000+i))))
	}
	return fw
}

// newWatches makes a set of watchers with a client per endpoint (one per member), to which
// add adds watchers.
func newWatches(t *testing.T, endpoints []string, running func(int) bool, revision func(context.Context) (int64, error)) *faultWatches {
	t.Helper()
	fw := &faultWatches{running: running, revision: revision}
	for _, e := range endpoints {
		fw.clients = append(fw.clients, harness.NewClient(t, e))
	}
	t.Cleanup(fw.closeClients)
	return fw
}

// add names w (w1, w2, ... in the order added) and starts it on member, from w.start.
func (fw *faultWatches) add(w *faultWatcher, member int, rng *rand.Rand) {
	w.name, w.member, w.covered = fmt.Sprintf("w%d", len(fw.watchers)+1), member, w.start-1
	fw.watchers = append(fw.watchers, w)
	fw.wg.Add(1)
	go fw.run(w, rng)
}

// run watches through w's member until w is stopped, resuming on another member after a
// kill or a stream error.
func (fw *faultWatches) run(w *faultWatcher, rng *rand.Rand) {
	defer fw.wg.Done()
	// Each watcher on a gRPC stream of its own (clientv3 shares a stream between watches
	// whose contexts carry the same metadata), so that its progress requests are its own.
	base := metadata.AppendToOutgoingContext(context.Background(), "fault-watcher", w.name)
	if w.requireLeader {
		base = clientv3.WithRequireLeader(base)
	}
	for failures := 0; ; {
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return
		}
		member, from, before := w.member, w.covered+1, len(w.resps)
		ctx, cancel := context.WithCancel(base)
		w.wctx, w.cancel = ctx, cancel
		kicked := w.kicked
		w.mu.Unlock()

		why := ""
		if !kicked {
			opts := []clientv3.OpOption{clientv3.WithRev(from)}
			switch w.span.end {
			case "":
			case "\x00":
				opts = append(opts, clientv3.WithFromKey())
			default:
				opts = append(opts, clientv3.WithRange(w.span.end))
			}
			if w.prevKV {
				opts = append(opts, clientv3.WithPrevKV())
			}
			why = w.consume(fw.clients[member].Watch(ctx, w.span.key, opts...), member)
		}
		cancel()

		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return
		}
		killed := w.kicked
		if killed {
			why = fmt.Sprintf("m%d killed", member+1)
			failures = 0
		} else {
			if len(w.resps) > before {
				failures = 0 // the watch worked for a while
			}
			w.errors++
			failures++
		}
		w.kicked = false
		// Another running member (the fault loop kills one member at a time).
		var others []int
		for i := range fw.clients {
			if i != member && fw.running(i) {
				others = append(others, i)
			}
		}
		if len(others) > 0 {
			w.member = others[rng.IntN(len(others))]
		}
		w.resumes = append(w.resumes, fmt.Sprintf("m%d->m%d at revision %d (%s)", member+1, w.member+1, w.covered+1, why))
		w.mu.Unlock()
		if !killed {
			time.Sleep(time.Duration(min(failures, 5)) * 100 * time.Millisecond)
		}
	}
}

// consume records the responses of one watch until it ends, and says why it ended.
func (w *faultWatcher) consume(wc clientv3.WatchChan, member int) string {
	for wr := range wc {
		if err := wr.Err(); err != nil {
			return "stream error: " + err.Error()
		}
		if wr.Canceled {
			return "canceled: " + wr.CancelReason
		}
		progress := wr.IsProgressNotify()
		if len(wr.Events) == 0 && !progress {
			continue
		}
		r := watchResp{member: member, header: wr.Header.Revision, progress: progress}
		for _, ev := range wr.Events {
			r.events = append(r.events, watchEvent{rev: ev.Kv.ModRevision, del: ev.Type == mvccpb.DELETE,
				key: string(ev.Kv.Key), kv: fmtKV(ev.Kv), prev: fmtKV(ev.PrevKv)})
		}
		w.mu.Lock()
		w.resps = append(w.resps, r)
		if progress {
			w.covered = max(w.covered, r.header)
		}
		for _, ev := range r.events {
			w.covered = max(w.covered, ev.rev)
		}
		w.mu.Unlock()
	}
	return "the watch channel closed"
}

// memberKilled makes the watchers of member i leave it; the fault loop calls it right
// after the SIGKILL.
func (fw *faultWatches) memberKilled(i int) {
	for _, w := range fw.watchers {
		w.mu.Lock()
		if w.member == i {
			w.kicked = true
			if w.cancel != nil {
				w.cancel()
			}
		}
		w.mu.Unlock()
	}
}

// drain waits, after the workload, until every watcher has seen the current revision (by
// an event or a progress notification it asks for), then stops the watchers. It returns
// the revision they were drained to.
func (fw *faultWatches) drain(t *testing.T, timeout time.Duration) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var current int64
	for current == 0 {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		rev, err := fw.revision(rctx)
		rcancel()
		if err == nil {
			current = rev
		} else if ctx.Err() != nil {
			t.Fatalf("reading the revision after the workload: %v", err)
		}
	}
	for _, w := range fw.watchers {
		for {
			w.mu.Lock()
			covered, wctx, member := w.covered, w.wctx, w.member
			w.mu.Unlock()
			if covered >= current || ctx.Err() != nil {
				break
			}
			if wctx != nil {
				// Dropped while the watch catches up: asked again.
				_ = fw.clients[member].RequestProgress(wctx)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	for _, w := range fw.watchers {
		w.mu.Lock()
		w.stopping = true
		if w.cancel != nil {
			w.cancel()
		}
		w.mu.Unlock()
	}
	fw.wg.Wait()
	// Closing the clients ends their gRPC streams: clientv3 may keep a watch stream open
	// after its last watch was cancelled while the member was down, and a member's graceful
	// stop would wait for it.
	fw.closeClients()
	fw.stop = current
	return current
}

func (fw *faultWatches) closeClients() {
	fw.closeOnce.Do(func() {
		for _, c := range fw.clients {
			c.Close()
		}
	})
}

// drainAndSay drains the watchers after the workload (drain, within 20s), says how it went
// and returns how many times they resumed on another member.
func (fw *faultWatches) drainAndSay(t *testing.T, say func(string, ...any)) int {
	t.Helper()
	start := time.Now()
	drained := fw.drain(t, 20*time.Second)
	resumes, streamErrs := fw.resumes()
	say("%d watchers drained to revision %d in %s; %d resumes on another member (%d after a stream error)",
		len(fw.watchers), drained, time.Since(start).Round(time.Millisecond), resumes, streamErrs)
	return resumes
}

// resumes counts the watchers' resumes.
func (fw *faultWatches) resumes() (n, errs int) {
	for _, w := range fw.watchers {
		n, errs = n+len(w.resumes), errs+w.errors
	}
	return n, errs
}

// check checks every watcher's stream against the committed history and prints what each
// one checked.
func (fw *faultWatches) check(t reporter, log []logEvent, say func(string, ...any)) {
	t.Helper()
	history := replayWatchHistory(log)
	for _, w := range fw.watchers {
		if w.covered < fw.stop {
			t.Errorf("watch %s: saw revisions up to %d only, not the revision after the workload, %d", w.describe(), w.covered, fw.stop)
		}
		n := checkWatchStream(t, w.describe(), w.span, w.prevKV, w.start, w.covered, w.resps, history)
		rs := w.resumes
		if len(rs) > 4 {
			rs = append(rs[:4:4], fmt.Sprintf("%d more", len(w.resumes)-4))
		}
		list := ""
		if len(rs) > 0 {
			list = ": " + strings.Join(rs, ", ")
		}
		say("watch %s: %d events in %d responses checked up to revision %d; %d resumes (%d after a stream error)%s",
			w.describe(), n, len(w.resps), w.covered, len(w.resumes), w.errors, list)
	}
}

// replayWatchHistory turns the revision history (a watch from revision 1, so complete) into
// the events a watcher must see, with each key's full KeyValue and previous state.
func replayWatchHistory(log []logEvent) []watchEvent {
	type state struct {
		value                string
		create, mod, version int64
	}
	format := func(key string, s state) string {
		return fmt.Sprintf("%s=%s c=%d m=%d v=%d", key, s.value, s.create, s.mod, s.version)
	}
	live := map[string]state{}
	events := make([]watchEvent, 0, len(log))
	for _, ev := range log {
		e := watchEvent{rev: ev.rev, del: ev.del, key: ev.key}
		prev, existed := live[ev.key]
		if existed {
			e.prev = format(ev.key, prev)
		}
		if ev.del {
			delete(live, ev.key)
			e.kv = fmt.Sprintf("%s= c=0 m=%d v=0", ev.key, ev.rev)
		} else {
			s := state{value: ev.value, create: ev.rev, mod: ev.rev, version: 1}
			if existed {
				s.create, s.version = prev.create, prev.version+1
			}
			live[ev.key] = s
			e.kv = format(ev.key, s)
		}
		events = append(events, e)
	}
	return events
}

// checkWatchStream checks a watcher's responses, concatenated across its resumes, against
// the committed history: they hold exactly the history's events of the span from revision
// start to stop (where the watcher stopped), in revision order (a progress notification
// comes after every event at or below its revision), each once, all the events of a
// revision in one response (no fragment asked), each with the history's KeyValue and, if
// prevKV, the key's previous state in the history as prev_kv (none for a create), else no
// prev_kv. It returns the number of events found right.
func checkWatchStream(t reporter, name string, span watchSpan, prevKV bool, start, stop int64, resps []watchResp, history []watchEvent) int {
	t.Helper()
	p := &problems{t: t, check: "watch " + name}
	type evKey struct {
		rev int64
		key string
	}
	want := map[evKey]watchEvent{}
	var order []evKey
	for _, e := range history {
		if e.rev < start || e.rev > stop || !span.contains(e.key) {
			continue
		}
		if !prevKV {
			e.prev = ""
		}
		k := evKey{e.rev, e.key}
		want[k] = e
		order = append(order, k)
	}

	got := map[evKey]bool{}
	respOf := map[int64]int{} // revision -> the response that held it
	last, lastWhat := int64(0), ""
	right := 0
	for i, r := range resps {
		where := fmt.Sprintf("response %d, via m%d", i, r.member+1)
		for _, ev := range r.events {
			k := evKey{ev.rev, ev.key}
			if got[k] {
				p.add("duplicate: %s received again (%s)", ev, where)
				continue
			}
			got[k] = true
			if ev.rev < last {
				p.add("out of order: %s (%s) after %s", ev, where, lastWhat)
			}
			if j, ok := respOf[ev.rev]; ok && j != i {
				p.add("split revision: the events of revision %d came in responses %d and %d (%s)", ev.rev, j, i, where)
			}
			respOf[ev.rev] = i
			if ev.rev > last {
				last, lastWhat = ev.rev, fmt.Sprintf("an event of revision %d", ev.rev)
			}
			w, ok := want[k]
			switch {
			case !ok:
				p.add("unexpected event: %s (%s) is not in the history of %s from revision %d to %d", ev, where, span, start, stop)
			case w.kv != ev.kv || w.del != ev.del:
				p.add("wrong event: %s (%s); the history has %s", ev, where, w)
			case w.prev != ev.prev && !prevKV:
				p.add("wrong prev_kv: %s (%s) has prev_kv %q, not asked for", ev, where, ev.prev)
			case w.prev != ev.prev:
				p.add("wrong prev_kv: %s (%s) has prev_kv %q; the history's previous state is %q", ev, where, ev.prev, w.prev)
			default:
				right++
			}
		}
		if r.progress && r.header > last {
			last, lastWhat = r.header, fmt.Sprintf("a progress notification at revision %d (response %d)", r.header, i)
		}
	}

	missing := map[int64][]string{}
	var revs []int64
	for _, k := range order {
		if !got[k] {
			if missing[k.rev] == nil {
				revs = append(revs, k.rev)
			}
			missing[k.rev] = append(missing[k.rev], want[k].String())
		}
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	for _, rev := range revs {
		p.add("gap: %s missing from the stream", strings.Join(missing[rev], " and "))
	}
	p.done()
	return right
}

// TestFaultWatchCheckerCatchesViolations feeds checkWatchStream a correct stream, and
// doctored ones: each violation must be reported.
func TestFaultWatchCheckerCatchesViolations(t *testing.T) {
	k0, k1, k2 := faultKey(0), faultKey(1), faultKey(16)
	log := []logEvent{
		{rev: 2, key: "harness/ready/m1", value: "m1"},
		{rev: 3, key: k0, value: "a"},
		{rev: 4, key: k1, value: "b"},
		{rev: 5, key: k0, value: "c"},
		{rev: 6, key: k1, value: "ta"}, {rev: 6, key: k2, value: "tb"}, // a transfer
		{rev: 7, del: true, key: k0},
		{rev: 8, key: k0, value: "d"},
	}
	history := replayWatchHistory(log)
	if h := history[3]; h.kv != k0+"=c c=3 m=5 v=2" || h.prev != k0+"=a c=3 m=3 v=1" {
		t.Fatalf("replayed %+v", h)
	}
	if h := history[6]; h.kv != k0+"= c=0 m=7 v=0" || h.prev != k0+"=c c=3 m=5 v=2" {
		t.Fatalf("replayed %+v", h)
	}
	// A correct stream from revision 3 to 8 of the prefix, with a resume after revision 5.
	stream := func(prevKV bool) []watchResp {
		var rs []watchResp
		for _, e := range history[1:] {
			if !prevKV {
				e.prev = ""
			}
			if n := len(rs); n > 0 && rs[n-1].events[0].rev == e.rev {
				rs[n-1].events = append(rs[n-1].events, e)
				continue
			}
			member := 0
			if e.rev > 5 {
				member = 1
			}
			rs = append(rs, watchResp{member: member, header: e.rev, events: []watchEvent{e}})
		}
		return rs
	}
	span := prefixSpan(faultKeyPrefix)
	check := func(prevKV bool, start, stop int64, rs []watchResp) []string {
		r := &recorder{}
		checkWatchStream(r, "w", span, prevKV, start, stop, rs, history)
		return r.errs
	}
	for _, prevKV := range []bool{true, false} {
		if errs := check(prevKV, 3, 8, stream(prevKV)); len(errs) > 0 {
			t.Fatalf("correct stream (prev_kv %v) rejected: %q", prevKV, errs)
		}
	}
	withProgress := append(stream(true), watchResp{member: 1, header: 9, progress: true})
	if errs := check(true, 3, 9, withProgress); len(errs) > 0 {
		t.Fatalf("correct stream with a progress notification rejected: %q", errs)
	}
	if errs := check(true, 5, 6, stream(true)[2:4]); len(errs) > 0 {
		t.Fatalf("correct stream of revisions 5 to 6 rejected: %q", errs)
	}
	sub := watchSpan{key: faultKey(1), end: faultKey(20)} // k1 and k2, not k0
	r := &recorder{}
	if n := checkWatchStream(r, "w", sub, true, 3, 8, []watchResp{{events: []watchEvent{history[2]}}, {events: history[4:6]}}, history); len(r.errs) > 0 || n != 3 {
		t.Fatalf("correct stream of a sub-range rejected or miscounted (%d events): %q", n, r.errs)
	}

	for _, tc := range []struct {
		name   string
		prevKV bool
		stop   int64
		mutate func([]watchResp) []watchResp
		want   string
	}{
		{"gap across a resume", true, 8, func(rs []watchResp) []watchResp {
			return append(rs[:2], rs[3:]...) // revision 5 lost
		}, "gap: rev 5 put " + k0 + "=c"},
		{"tail missing", true, 8, func(rs []watchResp) []watchResp { return rs[:len(rs)-1] }, "gap: rev 8 put"},
		{"half of a transfer", true, 8, func(rs []watchResp) []watchResp {
			rs[3].events = rs[3].events[:1]
			return rs
		}, "gap: rev 6 put " + k2},
		{"duplicate after a resume", true, 8, func(rs []watchResp) []watchResp {
			return append(rs[:4], append([]watchResp{rs[2]}, rs[4:]...)...)
		}, "duplicate: rev 5 put"},
		{"reordered", true, 8, func(rs []watchResp) []watchResp {
			rs[1], rs[2] = rs[2], rs[1]
			return rs
		}, "out of order: rev 4 put " + k1},
		{"event after a progress notification covering it", true, 9, func(rs []watchResp) []watchResp {
			return append(rs[:4], append([]watchResp{{member: 1, header: 9, progress: true}}, rs[4:]...)...)
		}, "after a progress notification at revision 9"},
		{"split revision", true, 8, func(rs []watchResp) []watchResp {
			tr := rs[3]
			a := watchResp{member: tr.member, header: 6, events: tr.events[:1]}
			b := watchResp{member: tr.member, header: 6, events: tr.events[1:]}
			return append(rs[:3], append([]watchResp{a, b}, rs[4:]...)...)
		}, "split revision: the events of revision 6 came in responses 3 and 4"},
		{"wrong prev_kv", true, 8, func(rs []watchResp) []watchResp {
			rs[2].events[0].prev = k0 + "=x c=3 m=3 v=1"
			return rs
		}, "wrong prev_kv: rev 5 put"},
		{"prev_kv on a create", true, 8, func(rs []watchResp) []watchResp {
			rs[5].events[0].prev = k0 + "=c c=3 m=5 v=2" // the create after the delete
			return rs
		}, "wrong prev_kv: rev 8 put"},
		{"no prev_kv where asked", true, 8, func(rs []watchResp) []watchResp {
			rs[3].events[0].prev = ""
			return rs
		}, "wrong prev_kv: rev 6 put"},
		{"prev_kv not asked", false, 8, func(rs []watchResp) []watchResp {
			rs[2].events[0].prev = k0 + "=a c=3 m=3 v=1"
			return rs
		}, "wrong prev_kv: rev 5 put"},
		{"wrong value", false, 8, func(rs []watchResp) []watchResp {
			rs[0].events[0].kv = k0 + "=z c=3 m=3 v=1"
			return rs
		}, "wrong event: rev 3 put " + k0 + "=z"},
		{"event outside the span", false, 8, func(rs []watchResp) []watchResp {
			rs[0].events = append(rs[0].events, history[0])
			return rs
		}, "unexpected event: rev 2 put harness/ready/m1"},
	} {
		if errs := check(tc.prevKV, 3, tc.stop, tc.mutate(stream(tc.prevKV))); !strings.Contains(strings.Join(errs, "\n"), tc.want) {
			t.Errorf("%s: want a problem mentioning %q, got %q", tc.name, tc.want, errs)
		}
	}
}
