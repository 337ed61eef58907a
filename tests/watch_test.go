package tests

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The differential watch tests drive raw Watch streams (the gRPC service
// itself, so every response field is compared, not what clientv3 makes of
// it) with the same script on the embedded etcd and on the subject: after
// each step the reference's responses are collected until it has been
// quiet for refQuiet, the subject's until it sent as many (and then stayed
// quiet for subjQuiet), and the two lists must be equal after Normalize.

const (
	refQuiet  = 250 * time.Millisecond
	subjQuiet = 50 * time.Millisecond
	subjWait  = 5 * time.Second
)

// rawStream is one Watch RPC with a goroutine feeding its responses to a
// channel.
type rawStream struct {
	ws     pb.Watch_WatchClient
	cancel context.CancelFunc
	resps  chan *pb.WatchResponse
	errc   chan error
}

func openRaw(t *testing.T, c *clientv3.Client) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ws, err := pb.NewWatchClient(c.ActiveConnection()).Watch(ctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		cancel()
		t.Fatalf("open watch stream: %v", err)
	}
	s := &rawStream{ws: ws, cancel: cancel, resps: make(chan *pb.WatchResponse, 1<<16), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := ws.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.resps <- r
		}
	}()
	t.Cleanup(cancel)
	return s
}

func (s *rawStream) send(t *testing.T, r *pb.WatchRequest) {
	t.Helper()
	if err := s.ws.Send(r); err != nil {
		t.Fatalf("send %v: %v", r, err)
	}
}

// drain returns the responses that arrived so far.
func (s *rawStream) drain() []*pb.WatchResponse {
	var out []*pb.WatchResponse
	for {
		select {
		case r := <-s.resps:
			out = append(out, r)
		default:
			return out
		}
	}
}

// collectQuiet gathers each stream's responses until none of them sent
// anything for quiet.
func collectQuiet(ss []*rawStream, quiet time.Duration) [][]*pb.WatchResponse {
	out := make([][]*pb.WatchResponse, len(ss))
	for {
		time.Sleep(quiet)
		more := false
		for i, s := range ss {
			rs := s.drain()
			more = more || len(rs) > 0
			out[i] = append(out[i], rs...)
		}
		if !more {
			return out
		}
	}
}

// collectN gathers each stream's responses until it has want[i] of them
// (or wait passes), then for quiet more.
func collectN(ss []*rawStream, want []int, quiet, wait time.Duration) [][]*pb.WatchResponse {
	out := make([][]*pb.WatchResponse, len(ss))
	deadline := time.Now().Add(wait)
	for i, s := range ss {
		for len(out[i]) < want[i] && time.Now().Before(deadline) {
			select {
			case r := <-s.resps:
				out[i] = append(out[i], r)
			case <-time.After(time.Until(deadline)):
			}
		}
	}
	time.Sleep(quiet)
	for i, s := range ss {
		out[i] = append(out[i], s.drain()...)
	}
	return out
}

func createReq(r *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}}
}

func cancelReq(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

func progressReq() *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
}

// wstep is one step of a watch script: a request on stream `on`, or a KV
// operation when kv is set.
type wstep struct {
	on  int
	req *pb.WatchRequest
	kv  func(ctx context.Context, c *clientv3.Client) error
}

func onStream(i int, r *pb.WatchRequest) wstep { return wstep{on: i, req: r} }

func kvStep(f func(ctx context.Context, c *clientv3.Client) error) wstep { return wstep{kv: f} }

func putStep(k, v string) wstep {
	return kvStep(func(ctx context.Context, c *clientv3.Client) error { _, err := c.Put(ctx, k, v); return err })
}

func delStep(k string, opts ...clientv3.OpOption) wstep {
	return kvStep(func(ctx context.Context, c *clientv3.Client) error { _, err := c.Delete(ctx, k, opts...); return err })
}

func txnStep(ops ...clientv3.Op) wstep {
	return kvStep(func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Txn(ctx).Then(ops...).Commit()
		return err
	})
}

func compactStep(rev int64) wstep {
	return kvStep(func(ctx context.Context, c *clientv3.Client) error { _, err := c.Compact(ctx, rev); return err })
}

// runWatchScript runs steps on both servers of d with `streams` raw
// streams each and compares the responses after every step.
func runWatchScript(t *testing.T, d *harness.Diff, streams int, steps []wstep, before func(i int)) {
	t.Helper()
	open := func(s harness.Server) []*rawStream {
		var out []*rawStream
		for range streams {
			out = append(out, openRaw(t, s.Client()))
		}
		return out
	}
	ref, subj := open(d.Ref), open(d.Subj)
	for i, st := range steps {
		if before != nil {
			before(i)
		}
		name := fmt.Sprintf("step %d", i)
		if st.kv != nil {
			for _, s := range []harness.Server{d.Ref, d.Subj} {
				ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
				err := st.kv(ctx, s.Client())
				cancel()
				if err != nil {
					t.Fatalf("%s: kv on %s: %v", name, s.Name(), err)
				}
			}
		} else {
			name = fmt.Sprintf("step %d (stream %d: %v)", i, st.on, st.req)
			ref[st.on].send(t, st.req)
			subj[st.on].send(t, st.req)
		}
		want := collectQuiet(ref, refQuiet)
		counts := make([]int, streams)
		for j := range want {
			counts[j] = len(want[j])
		}
		got := collectN(subj, counts, subjQuiet, subjWait)
		for j := range streams {
			compareResps(t, fmt.Sprintf("%s, stream %d", name, j), want[j], got[j])
		}
	}
}

// byWatcher orders responses by watch id, keeping each watcher's own order:
// etcd hands one revision to its watchers in map order, so only the order
// within a watcher (and among the id -1 responses) is defined.
func byWatcher(rs []*pb.WatchResponse) []*pb.WatchResponse {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b *pb.WatchResponse) int { return cmp.Compare(a.WatchId, b.WatchId) })
	return out
}

func normalizedResps(rs []*pb.WatchResponse) []*pb.WatchResponse {
	out := make([]*pb.WatchResponse, len(rs))
	for i, r := range rs {
		c := proto.Clone(r).(*pb.WatchResponse)
		harness.Normalize(c)
		out[i] = c
	}
	return out
}

func compareResps(t *testing.T, name string, want, got []*pb.WatchResponse) {
	t.Helper()
	if diff := gocmp.Diff(normalizedResps(byWatcher(want)), normalizedResps(byWatcher(got)), protocmp.Transform()); diff != "" {
		t.Errorf("%s: responses differ (-etcd +subject):\n%s", name, shorten(diff))
	}
}

func shorten(s string) string {
	if len(s) > 6000 {
		return s[:6000] + "\n…"
	}
	return s
}

// TestWatchBasic: key, range, prefix, from-key and all-keys watches from
// now, prev_kv, NOPUT and NODELETE, puts, deletes and txns, several
// watchers on one stream.
func TestWatchBasic(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	steps := []wstep{
		putStep("seed", "0"),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("a")})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("c"), PrevKv: true})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("m"), RangeEnd: []byte{0}})),
		onStream(0, createReq(&pb.WatchCreateRequest{RangeEnd: []byte{0}, PrevKv: true})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("d"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("d"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}, PrevKv: true})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("d"), RangeEnd: []byte("e"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT, pb.WatchCreateRequest_NODELETE}})),
		putStep("a", "1"),
		putStep("a", "2"),
		putStep("b1", "x"),
		putStep("b2", "y"),
		putStep("bzz", "y"),
		putStep("c", "not in b..c"),
		putStep("m", "z"),
		putStep("zz", "z"),
		putStep("d", "1"),
		putStep("d", "2"),
		delStep("d"),
		delStep("d"), // deletes nothing: no revision, no event
		txnStep(clientv3.OpPut("a", "3"), clientv3.OpPut("b1", "x2"), clientv3.OpDelete("b2"), clientv3.OpPut("d", "t"), clientv3.OpPut("zz", "t")),
		delStep("b", clientv3.WithPrefix(), clientv3.WithPrevKV()),
		delStep("", clientv3.WithFromKey()),
		putStep("a", "after"),
	}
	runWatchScript(t, d, 2, steps, nil)
}

// TestWatchIDs: automatic and client-chosen ids, duplicates, cancel
// (canceled response), cancel of an unknown id (no response), reuse of a
// canceled id, bad ranges and a negative start revision.
func TestWatchIDs(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	c := func(id int64, key string) wstep {
		return onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte(key), WatchId: id}))
	}
	steps := []wstep{
		putStep("k", "0"),
		c(0, "k"),
		c(5, "k"),
		c(5, "k"),
		c(0, "k"),
		c(1, "k"),
		c(0, "k"),
		c(0, "k"),
		putStep("k", "1"),
		onStream(0, cancelReq(5)),
		onStream(0, cancelReq(5)),
		onStream(0, cancelReq(99)),
		c(5, "k"),
		putStep("k", "2"),
		onStream(0, cancelReq(0)),
		c(0, "k"), // auto ids never go back
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("a")})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1, WatchId: 40})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("k"), WatchId: 5})), // ids are per stream
		putStep("k", "3"),
		onStream(1, &pb.WatchRequest{}), // no request: ignored
	}
	runWatchScript(t, d, 2, steps, nil)
}

// TestWatchHistory: start revisions in the past (catch-up), now, the
// future; compaction (etcd's compacted response, and a cancel of the
// compacted watcher).
func TestWatchHistory(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	var steps []wstep
	for i := range 20 {
		steps = append(steps, putStep(fmt.Sprintf("h/%02d", i%7), fmt.Sprint(i)))
		if i%5 == 4 {
			steps = append(steps, delStep(fmt.Sprintf("h/%02d", i%7)))
		}
	}
	cr := func(on int, r *pb.WatchCreateRequest) wstep { return onStream(on, createReq(r)) }
	steps = append(steps,
		cr(0, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 1, PrevKv: true}),
		cr(0, &pb.WatchCreateRequest{Key: []byte("h/03"), StartRevision: 2}),
		cr(0, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 17, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}}),
		cr(0, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 25}), // current + 1
		cr(1, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 28, PrevKv: true}),
		cr(1, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 1000}),
		putStep("h/01", "a"),
		putStep("h/02", "b"),
		putStep("h/03", "c"),
		putStep("h/04", "d"),
		putStep("h/05", "e"),
		compactStep(10),
		cr(2, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 5}),
		cr(2, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 9, WatchId: 7}),
		cr(2, &pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 10, PrevKv: true}),
		onStream(2, cancelReq(7)),
		onStream(2, createReq(&pb.WatchCreateRequest{Key: []byte("h/"), RangeEnd: []byte("h0"), StartRevision: 9, WatchId: 7})),
		putStep("h/06", "f"),
	)
	runWatchScript(t, d, 3, steps, nil)
}

// TestWatchProgressRequest: WatchProgressRequest answers with watch id -1
// at the current revision when the stream's watchers are synced; nothing
// for a stream without watchers, nor while a watcher waits for a future
// revision or was compacted.
func TestWatchProgressRequest(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	steps := []wstep{
		putStep("p", "1"),
		onStream(0, progressReq()),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("p")})),
		onStream(0, progressReq()),
		putStep("p", "2"),
		putStep("q", "2"),
		onStream(0, progressReq()),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("p"), StartRevision: 1})),
		onStream(0, progressReq()),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("p"), StartRevision: 6})),
		onStream(1, progressReq()),
		putStep("q", "3"),
		putStep("q", "4"),
		onStream(1, progressReq()),
		compactStep(4),
		onStream(2, createReq(&pb.WatchCreateRequest{Key: []byte("p"), StartRevision: 2})),
		onStream(2, progressReq()),
		onStream(2, createReq(&pb.WatchCreateRequest{Key: []byte("q")})),
		onStream(2, progressReq()),
	}
	runWatchScript(t, d, 3, steps, nil)
}

// TestWatchFragment: responses larger than the request limit (1.5 MiB +
// etcd's 512 KiB allowance) are split only for watchers that asked for
// fragment, at the same event boundaries as etcd.
func TestWatchFragment(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	big := strings.Repeat("v", 100*1024)
	var steps []wstep
	for i := range 25 {
		steps = append(steps, putStep(fmt.Sprintf("f/%02d", i), big))
	}
	steps = append(steps,
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte("f0"), StartRevision: 1, Fragment: true})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte("f0"), StartRevision: 1})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte("f0"), PrevKv: true, Fragment: true})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte("f0"), Fragment: true})),
		delStep("f/", clientv3.WithPrefix()),
	)
	runWatchScript(t, d, 2, steps, nil)
}

// TestWatchClient uses clientv3 as Kubernetes does: a prefix watch from a
// revision with prev_kv, RequestProgress, and a watch below the compact
// revision (ErrCompacted), and compares what the client hands over.
func TestWatchClient(t *testing.T) {
	t.Parallel()
	d, _ := harness.StartPair(t)
	type got struct {
		Events   []string
		Progress []int64
		Err      string
		Compact  int64
	}
	run := func(s harness.Server) got {
		c := s.Client()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for i := range 10 {
			if _, err := c.Put(ctx, fmt.Sprintf("/registry/pods/p%d", i%4), fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer wcancel()
		wc := c.Watch(wctx, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithRev(3), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
		var g got
		seen := int64(0)
		for seen < 10 {
			r := <-wc
			for _, ev := range r.Events {
				g.Events = append(g.Events, fmt.Sprintf("%s %s=%s@%d prev=%s", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision, ev.PrevKv.GetValue()))
				seen = ev.Kv.ModRevision
			}
		}
		if err := c.RequestProgress(wctx); err != nil {
			t.Fatal(err)
		}
		r := <-wc
		if r.IsProgressNotify() {
			g.Progress = append(g.Progress, r.Header.Revision)
		}
		if _, err := c.Compact(ctx, 8); err != nil {
			t.Fatal(err)
		}
		r = <-c.Watch(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithRev(2))
		if r.Err() != nil {
			g.Err = r.Err().Error()
		}
		g.Compact = r.CompactRevision
		return g
	}
	ref, subj := run(d.Ref), run(d.Subj)
	if diff := gocmp.Diff(ref, subj); diff != "" {
		t.Errorf("clientv3 watch differs (-etcd +subject):\n%s", diff)
	}
	if len(ref.Progress) != 1 || ref.Err == "" {
		t.Errorf("reference did not behave as the test expects: %+v", ref)
	}
}

// TestWatchSplit: watchers on keys of several ranges keep receiving
// exactly etcd's stream while the subject's ranges split under them.
func TestWatchSplit(t *testing.T) {
	t.Parallel()
	d, subj := harness.StartPair(t)
	var steps []wstep
	for i := range 40 {
		k := fmt.Sprintf("s/%c%d", 'a'+i%8, i)
		steps = append(steps, putStep(k, fmt.Sprint(i)))
		if i%6 == 5 {
			steps = append(steps, txnStep(clientv3.OpPut("s/a-txn", fmt.Sprint(i)), clientv3.OpPut("s/h-txn", fmt.Sprint(i)), clientv3.OpDelete(k)))
		}
	}
	steps = append([]wstep{
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("s/"), RangeEnd: []byte("s0"), PrevKv: true})),
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("s/c"), RangeEnd: []byte("s/f")})),
		onStream(1, createReq(&pb.WatchCreateRequest{Key: []byte("s/"), RangeEnd: []byte{0}})),
	}, steps...)
	splits := map[int]string{5: "s/b", 12: "s/d", 20: "s/e", 28: "s/g", 35: "s/c5"}
	runWatchScript(t, d, 2, steps, func(i int) {
		if k, ok := splits[i]; ok {
			harness.SplitRange(t, subj, k)
		}
	})
	// A watch from revision 1 over the split ranges replays the same history.
	runWatchScript(t, d, 1, []wstep{
		onStream(0, createReq(&pb.WatchCreateRequest{Key: []byte("s/"), RangeEnd: []byte("s0"), StartRevision: 1, PrevKv: true})),
	}, nil)
}
