package watchactor

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

func TestCreateAndEvents(t *testing.T) {
	bothSources(t, testCreateAndEvents)
}

// bothSources runs a test on a source whose new revisions come from
// history reads, and on one that also answers them from memory (Recent).
func bothSources(t *testing.T, test func(t *testing.T, src *memSource)) {
	t.Run("reads", func(t *testing.T) { test(t, newMemSource()) })
	t.Run("memory", func(t *testing.T) {
		src := newMemSource()
		src.memory = true
		test(t, src)
		src.mu.Lock()
		defer src.mu.Unlock()
		if src.recents == 0 {
			t.Fatal("no revision was answered from memory")
		}
	})
}

func testCreateAndEvents(t *testing.T, src *memSource) {
	src.write(false, "a", "1")
	_, c := serve(t, src, Options{})
	ws, _ := open(t, c)
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("b"), PrevKv: true})
	if r := recv(t, ws); !r.Created || r.WatchId != 0 || r.Header.Revision != 1 {
		t.Fatalf("created: %v", r)
	}
	src.write(false, "a", "2", "ab", "3", "c", "x")
	r := recv(t, ws)
	if r.Header.Revision != 2 || len(r.Events) != 2 || string(r.Events[0].PrevKv.GetValue()) != "1" {
		t.Fatalf("events: %v", r)
	}
	// duplicate id, empty range, negative revision
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1})
	if r := recv(t, ws); r.WatchId != 7 || !r.Created {
		t.Fatalf("created 7: %v", r)
	}
	for _, want := range []string{errDuplicateID, errEmptyRange, errCompacted} {
		if r := recv(t, ws); r.WatchId != -1 || !r.Canceled || !r.Created || r.CancelReason != want {
			t.Fatalf("want %q, got %v", want, r)
		}
	}
}

// TestCatchUpAndCompaction: past start revisions are served from history
// in one response with the read's header; below the compact revision the
// watcher gets etcd's compacted response.
func TestCatchUpAndCompaction(t *testing.T) {
	src := newMemSource()
	for i := range 10 {
		src.write(false, fmt.Sprintf("k%d", i), "v")
	}
	_, c := serve(t, src, Options{})
	ws, _ := open(t, c)
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), StartRevision: 3})
	recv(t, ws)
	r := recv(t, ws)
	if len(r.Events) != 8 || r.Events[0].Kv.ModRevision != 3 || r.Header.Revision != 10 {
		t.Fatalf("catch-up: %v", r)
	}
	src.compact(5)
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), StartRevision: 4})
	recv(t, ws)
	r = recv(t, ws)
	if !r.Canceled || r.CompactRevision != 5 || r.Header.Revision != 0 || r.WatchId != 1 {
		t.Fatalf("compacted: %v", r)
	}
}

// TestSlowStream: a stream whose client never reads must not hold up
// another stream, and once it reads again it gets every event exactly once.
func TestSlowStream(t *testing.T) {
	bothSources(t, testSlowStream)
}

func testSlowStream(t *testing.T, src *memSource) {
	_, c := serve(t, src, Options{maxQueued: 8, maxQueuedBytes: 1 << 10, readLimit: 16})
	slow, _ := open(t, c)
	fast, _ := open(t, c)
	create(t, slow, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	recv(t, slow)
	create(t, fast, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	recv(t, fast)
	big := string(bytes.Repeat([]byte("x"), 4096))
	const n = 600
	for i := range n {
		src.write(false, fmt.Sprintf("k%03d", i%50), big)
	}
	check := func(name string, ws pb.Watch_WatchClient) {
		next := int64(1)
		var hist []string
		for next <= n {
			r := recv(t, ws)
			hist = append(hist, fmt.Sprintf("hdr=%d n=%d first=%d", r.Header.Revision, len(r.Events), r.Events[0].Kv.ModRevision))
			for _, ev := range r.Events {
				if ev.Kv.ModRevision != next {
					t.Fatalf("%s: event rev %d, want %d; responses %v", name, ev.Kv.ModRevision, next, hist[max(0, len(hist)-10):])
				}
				next++
			}
		}
	}
	check("fast", fast)
	check("slow", slow)
}

func TestProgress(t *testing.T) {
	src := newMemSource()
	src.write(false, "a", "1")
	_, c := serve(t, src, Options{ProgressNotifyInterval: 100 * time.Millisecond})
	ws, _ := open(t, c)
	// No watchers: no answer.
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
		t.Fatal(err)
	}
	create(t, ws, &pb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true, WatchId: 3})
	if r := recv(t, ws); !r.Created {
		t.Fatalf("%v", r)
	}
	r := recv(t, ws)
	if r.WatchId != 3 || r.Header.Revision != 1 || len(r.Events) != 0 {
		t.Fatalf("progress notify: %v", r)
	}
	// Held revision: a progress request waits for the visible revision to
	// reach the current one.
	rev := src.write(true, "b", "1")
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	src.show(rev)
	for {
		r = recv(t, ws)
		if r.WatchId == -1 {
			break
		}
	}
	if r.Header.Revision != 2 {
		t.Fatalf("progress response: %v", r)
	}
}

func TestSendFragments(t *testing.T) {
	var evs []*mvccpb.Event
	for i := range 20 {
		evs = append(evs, &mvccpb.Event{Kv: &mvccpb.KeyValue{Key: []byte(fmt.Sprint(i)), Value: bytes.Repeat([]byte("v"), 100+i*13)}})
	}
	wr := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 9}, WatchId: 4, Events: evs}
	for _, limit := range []int{1, 150, 500, 1000, 5000, 1 << 20} {
		var got []*pb.WatchResponse
		if err := sendFragments(wr, limit, func(r *pb.WatchResponse) error { got = append(got, r); return nil }); err != nil {
			t.Fatal(err)
		}
		// the reference: etcd's algorithm with proto.Size each step
		var want [][]*mvccpb.Event
		if proto.Size(wr) < limit {
			want = [][]*mvccpb.Event{evs}
		} else {
			idx := 0
			for idx < len(evs) {
				cur := &pb.WatchResponse{Header: wr.Header, WatchId: wr.WatchId, Fragment: true}
				for _, ev := range evs[idx:] {
					cur.Events = append(cur.Events, ev)
					if len(cur.Events) > 1 && proto.Size(cur) >= limit {
						cur.Events = cur.Events[:len(cur.Events)-1]
						break
					}
					idx++
				}
				want = append(want, cur.Events)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("limit %d: %d responses, want %d", limit, len(got), len(want))
		}
		for i := range got {
			if !slices.Equal(got[i].Events, want[i]) || got[i].Fragment != (i < len(got)-1 && len(want) > 1) {
				t.Fatalf("limit %d: response %d differs", limit, i)
			}
		}
	}
}

// TestGroupIndex checks the span index against a linear scan.
func TestGroupIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte { return []byte(fmt.Sprintf("%c%c", 'a'+rng.IntN(6), 'a'+rng.IntN(6))) }
	g := newGroup()
	var ws []*watcher
	for round := range 2000 {
		if len(ws) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(ws))
			g.remove(ws[i])
			ws = slices.Delete(ws, i, i+1)
		} else {
			w := &watcher{id: int64(round)}
			switch rng.IntN(3) {
			case 0:
				w.span = span{key: key()}
			case 1:
				w.span = span{key: key(), end: []byte{}}
			default:
				a, b := key(), key()
				if bytes.Compare(a, b) >= 0 {
					a, b = b, append(a, 'z')
				}
				w.span = span{key: a, end: b}
			}
			g.add(w)
			ws = append(ws, w)
		}
		k := key()
		var got, want []int64
		g.each(k, func(w *watcher) { got = append(got, w.id) })
		for _, w := range ws {
			if w.span.contains(k) {
				want = append(want, w.id)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d key %q: got %v want %v", round, k, got, want)
		}
	}
}
