package watchactor

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// memSource is an in-memory Source: a list of changes, a visible revision
// the test moves, and a compact revision.
type memSource struct {
	mu        sync.Mutex
	changes   []mvcc.Change
	live      map[string]*mvccpb.KeyValue
	rev       int64
	visible   int64
	compacted int64
	adv       chan struct{}
	reads     int
	// memory makes Recent answer (as a store's feed does) for revisions
	// above memorySince; otherwise every read goes through Changes.
	memory      bool
	memorySince int64
	recents     int
	hooks       []func() // OnAdvance's
}

func newMemSource() *memSource {
	return &memSource{live: map[string]*mvccpb.KeyValue{}, adv: make(chan struct{}), compacted: -1}
}

func (m *memSource) Revs() (int64, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.visible, m.compacted
}

func (m *memSource) Current() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

func (m *memSource) OnAdvance(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hooks = append(m.hooks, fn)
}

func (m *memSource) Advanced() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.adv
}

func (m *memSource) Changes(_ context.Context, key, end []byte, from, to int64, limit int) ([]mvcc.Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if from < m.compacted {
		return nil, mvcc.ErrCompacted
	}
	return m.changesLocked(key, end, from, to, limit), nil
}

func (m *memSource) Recent(key, end []byte, from, to int64, limit int) ([]mvcc.Change, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.memory || from <= m.memorySince {
		return nil, false
	}
	m.recents++
	return m.changesLocked(key, end, from, to, limit), true
}

func (m *memSource) changesLocked(key, end []byte, from, to int64, limit int) []mvcc.Change {
	sp := span{key: key, end: end}
	if len(end) == 1 && end[0] == 0 {
		sp.end = []byte{}
	} else if len(end) == 0 {
		sp.end = nil
	}
	var out []mvcc.Change
	for _, c := range m.changes {
		if c.Rev < from || c.Rev > to || !sp.contains(c.Event.Kv.Key) {
			continue
		}
		if limit > 0 && len(out) >= limit && c.Rev != out[len(out)-1].Rev {
			break
		}
		out = append(out, c)
	}
	return out
}

// write applies one revision of puts (value != "") and deletes, visible at
// once unless hold.
func (m *memSource) write(hold bool, kvs ...string) int64 {
	m.mu.Lock()
	m.rev++
	rev := m.rev
	for i := 0; i+1 < len(kvs); i += 2 {
		k, v := kvs[i], kvs[i+1]
		prev := m.live[k]
		ev := &mvccpb.Event{PrevKv: prev}
		if v == "" {
			if prev == nil {
				continue
			}
			ev.Type = mvccpb.Event_DELETE
			ev.Kv = &mvccpb.KeyValue{Key: []byte(k), ModRevision: rev}
			delete(m.live, k)
		} else {
			kv := &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), ModRevision: rev, CreateRevision: rev, Version: 1}
			if prev != nil {
				kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
			}
			ev.Kv = kv
			m.live[k] = kv
		}
		m.changes = append(m.changes, mvcc.Change{Rev: rev, Sub: int32(i / 2), Event: ev})
	}
	m.mu.Unlock()
	if !hold {
		m.show(rev)
	}
	return rev
}

func (m *memSource) show(rev int64) {
	m.mu.Lock()
	if rev > m.visible {
		m.visible = rev
	}
	hooks := m.hooks
	m.mu.Unlock()
	for _, fn := range hooks {
		fn()
	}
	m.mu.Lock()
	close(m.adv)
	m.adv = make(chan struct{})
	m.mu.Unlock()
}

func (m *memSource) compact(rev int64) {
	m.mu.Lock()
	m.compacted = rev
	m.mu.Unlock()
}

// serve starts a Server over src behind an in-memory gRPC listener and
// returns a Watch client connection.
func serve(t *testing.T, src Source, opts Options) (*Server, pb.WatchClient) {
	t.Helper()
	srv := NewServer(src, opts)
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	pb.RegisterWatchServer(gs, srv)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		srv.Close()
	})
	return srv, pb.NewWatchClient(conn)
}

func open(t *testing.T, c pb.WatchClient) (pb.Watch_WatchClient, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ws, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return ws, cancel
}

func create(t *testing.T, ws pb.Watch_WatchClient, r *pb.WatchCreateRequest) {
	t.Helper()
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}}); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, ws pb.Watch_WatchClient) *pb.WatchResponse {
	t.Helper()
	type res struct {
		r   *pb.WatchResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := ws.Recv()
		ch <- res{r, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("recv: %v", r.err)
		}
		return r.r
	case <-time.After(5 * time.Second):
		t.Fatalf("no response within 5s")
	}
	return nil
}
