package actors

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// tnode is one node of a transport test: a Transport served by a real gRPC
// server on a loopback port, recording what it receives and reports.
type tnode struct {
	id   uint64
	addr string
	tr   *Transport
	srv  *grpc.Server

	mu      sync.Mutex
	got     []recvd // all but probes
	probes  map[uint64]int
	unreach map[groupTo]int
	snaps   []snapReport
}

type recvd struct {
	group uint64
	m     *raftpb.Message
}

type snapReport struct {
	group, to uint64
	ok        bool
}

func newTNode(t *testing.T, id uint64, cluster string) *tnode {
	t.Helper()
	n := &tnode{id: id, addr: "127.0.0.1:0"}
	restartTNode(t, n, cluster)
	return n
}

// restartTNode gives n a new transport, served on n.addr.
func restartTNode(t *testing.T, n *tnode, cluster string) {
	t.Helper()
	id := n.id
	n.unreach = map[groupTo]int{}
	n.probes = map[uint64]int{}
	n.tr = NewTransport(TransportConfig{
		Self:        id,
		Cluster:     cluster,
		Logger:      zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
		DialTimeout: time.Second,
	})
	n.tr.SetHandler(func(group uint64, m *raftpb.Message) {
		n.mu.Lock()
		if group == probeGroup {
			n.probes[m.GetFrom()]++
		} else {
			n.got = append(n.got, recvd{group, m})
		}
		n.mu.Unlock()
	})
	n.tr.SetUnreachable(func(group, to uint64) {
		n.mu.Lock()
		n.unreach[groupTo{group, to}]++
		n.mu.Unlock()
	})
	n.tr.SetSnapshotStatus(func(group, to uint64, ok bool) {
		n.mu.Lock()
		n.snaps = append(n.snaps, snapReport{group, to, ok})
		n.mu.Unlock()
	})
	n.serve(t)
	tr := n.tr
	t.Cleanup(func() {
		tr.Close()
		n.stop()
	})
}

// serve starts a gRPC server for n's transport on n.addr (the same port
// again after a stop).
func (n *tnode) serve(t *testing.T) {
	t.Helper()
	var lis net.Listener
	var err error
	for i := 0; i < 100; i++ { // the old port may linger briefly
		if lis, err = net.Listen("tcp", n.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	n.srv = grpc.NewServer(TransportServerOptions()...)
	n.tr.Register(n.srv)
	go n.srv.Serve(lis)
}

func (n *tnode) stop() {
	if n.srv != nil {
		n.srv.Stop()
		n.srv = nil
	}
}

func (n *tnode) received() []recvd {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]recvd(nil), n.got...)
}

func (n *tnode) countFrom(from uint64) int {
	c := 0
	for _, r := range n.received() {
		if r.m.GetFrom() == from {
			c++
		}
	}
	return c
}

func (n *tnode) unreachable(group, to uint64) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.unreach[groupTo{group, to}]
}

func (n *tnode) snapReports() []snapReport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]snapReport(nil), n.snaps...)
}

// newTCluster starts nodes 1..size, each a peer of all others.
func newTCluster(t *testing.T, size int) []*tnode {
	t.Helper()
	ns := make([]*tnode, size)
	for i := range ns {
		ns[i] = newTNode(t, uint64(i+1), "test-cluster")
	}
	for _, a := range ns {
		for _, b := range ns {
			if a != b {
				if err := a.tr.AddPeer(b.id, b.addr); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return ns
}

func msg(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{
		Type:  raftpb.MsgApp.Enum(),
		From:  proto.Uint64(from),
		To:    proto.Uint64(to),
		Index: proto.Uint64(index),
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// probeGroup carries connect's probes, which received() leaves out.
const probeGroup = 1 << 60

// connect waits until a's stream to b is open, by sending probes until one
// arrives.
func connect(t *testing.T, a, b *tnode) {
	t.Helper()
	waitUntil(t, 5*time.Second, fmt.Sprintf("stream %d->%d", a.id, b.id), func() bool {
		a.tr.Send(probeGroup, []*raftpb.Message{msg(a.id, b.id, 0)})
		time.Sleep(10 * time.Millisecond)
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.probes[a.id] > 0
	})
}

func TestTransportDelivery(t *testing.T) {
	ns := newTCluster(t, 3)
	for _, a := range ns {
		for _, b := range ns {
			if a != b {
				for i := uint64(1); i <= 10; i++ {
					a.tr.Send(a.id*10+b.id, []*raftpb.Message{msg(a.id, b.id, i)})
				}
			}
		}
	}
	for _, b := range ns {
		waitUntil(t, 5*time.Second, fmt.Sprintf("node %d to receive 20 messages", b.id), func() bool {
			return len(b.received()) == 20
		})
		for _, r := range b.received() {
			if r.m.GetTo() != b.id || r.group != r.m.GetFrom()*10+b.id || r.m.GetType() != raftpb.MsgApp {
				t.Fatalf("node %d got group %d message %v", b.id, r.group, r.m)
			}
		}
	}
	if s := ns[0].tr.Stats(); s.MessagesSent != 20 || s.MessagesReceived != 20 || s.MessagesDropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTransportFIFOUnderConcurrentSend(t *testing.T) {
	ns := newTCluster(t, 2)
	a, b := ns[0], ns[1]
	connect(t, a, b)
	base := len(b.received())
	const senders, per = 8, 500
	var wg sync.WaitGroup
	for g := uint64(1); g <= senders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= per; {
				k := uint64(1 + rand.IntN(5))
				var ms []*raftpb.Message
				for ; k > 0 && i <= per; k, i = k-1, i+1 {
					ms = append(ms, msg(a.id, b.id, i))
				}
				a.tr.Send(g, ms)
				if rand.IntN(3) == 0 {
					time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	waitUntil(t, 10*time.Second, "all messages", func() bool { return len(b.received()) == base+senders*per })
	next := map[uint64]uint64{}
	for _, r := range b.received()[base:] {
		next[r.group]++
		if r.m.GetIndex() != next[r.group] {
			t.Fatalf("group %d: got index %d, want %d", r.group, r.m.GetIndex(), next[r.group])
		}
	}
	if s := a.tr.Stats(); s.BatchesSent >= senders*per/2 {
		t.Errorf("%d messages took %d batches", senders*per, s.BatchesSent)
	}
	t.Logf("%d messages in %d batches", senders*per, a.tr.Stats().BatchesSent)
}

func TestTransportBatching(t *testing.T) {
	ns := newTCluster(t, 2)
	a, b := ns[0], ns[1]
	connect(t, a, b)
	base := len(b.received())
	b0 := b.tr.Stats().BatchesReceived

	// 1,000 small messages queued in 10 Sends: a handful of batches.
	for k := uint64(0); k < 10; k++ {
		var ms []*raftpb.Message
		for i := uint64(1); i <= 100; i++ {
			ms = append(ms, msg(a.id, b.id, k*100+i))
		}
		a.tr.Send(1, ms)
	}
	waitUntil(t, 5*time.Second, "1000 messages", func() bool { return len(b.received()) == base+1000 })
	if n := b.tr.Stats().BatchesReceived - b0; n > 10 {
		t.Errorf("1000 messages in 10 Sends took %d batches", n)
	} else {
		t.Logf("1000 messages took %d batches", n)
	}

	// Size bound: ten 1 MiB messages take several batches of at most
	// MaxBatchBytes; a 6 MiB snapshot goes alone, is acknowledged, and is
	// reported as a finished snapshot.
	base, b0 = len(b.received()), b.tr.Stats().BatchesReceived
	big := make([]byte, 1<<20)
	var ms []*raftpb.Message
	for i := uint64(1); i <= 10; i++ {
		m := msg(a.id, b.id, i)
		m.Entries = []*raftpb.Entry{{Index: proto.Uint64(i), Data: big}}
		ms = append(ms, m)
	}
	snap := &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(a.id), To: proto.Uint64(b.id),
		Snapshot: &raftpb.Snapshot{Data: make([]byte, 6<<20), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(99)}},
	}
	a.tr.Send(7, append(ms, snap))
	waitUntil(t, 5*time.Second, "big messages", func() bool { return len(b.received()) == base+11 })
	// 3+3+3+1 messages of 1 MiB under the 4 MiB bound, then the snapshot.
	if n := b.tr.Stats().BatchesReceived - b0; n != 5 {
		t.Errorf("ten 1 MiB messages and a 6 MiB snapshot took %d batches, want 5", n)
	}
	last := b.received()[base+10]
	if last.group != 7 || last.m.GetType() != raftpb.MsgSnap || len(last.m.GetSnapshot().GetData()) != 6<<20 {
		t.Fatalf("last message: group %d type %v", last.group, last.m.GetType())
	}
	waitUntil(t, 5*time.Second, "snapshot report", func() bool { return len(a.snapReports()) > 0 })
	if r := a.snapReports(); len(r) != 1 || r[0] != (snapReport{7, b.id, true}) {
		t.Fatalf("snapshot reports %+v", r)
	}
}

func TestTransportStoppedPeer(t *testing.T) {
	ns := newTCluster(t, 3)
	a, c := ns[0], ns[2]
	connect(t, a, c)
	c.stop()

	start := time.Now()
	var slowest time.Duration
	for i := uint64(0); i < 20000; i++ {
		s := time.Now()
		a.tr.Send(5, []*raftpb.Message{msg(a.id, c.id, i)})
		slowest = max(slowest, time.Since(s))
	}
	a.tr.Send(6, []*raftpb.Message{{
		Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(a.id), To: proto.Uint64(c.id),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(5)}},
	}})
	total := time.Since(start)
	// Generous bounds: Send does no I/O and waits for nothing, but a loaded
	// machine (-race, parallel packages) may deschedule it.
	if total > 5*time.Second || slowest > time.Second {
		t.Fatalf("20000 Sends to a stopped peer took %v (slowest %v)", total, slowest)
	}
	t.Logf("20000 Sends to a stopped peer: %v, slowest %v", total, slowest)
	waitUntil(t, 5*time.Second, "unreachable reports", func() bool {
		return a.unreachable(5, c.id) > 0 && a.unreachable(6, c.id) > 0
	})
	waitUntil(t, 5*time.Second, "failed snapshot report", func() bool {
		for _, r := range a.snapReports() {
			if r == (snapReport{6, c.id, false}) {
				return true
			}
		}
		return false
	})
	// Reports are coalesced: far fewer than the messages dropped.
	if n := a.unreachable(5, c.id); n > 1000 {
		t.Errorf("%d unreachable reports for 20000 drops", n)
	}
	// The other peer is unaffected.
	b := ns[1]
	a.tr.Send(1, []*raftpb.Message{msg(a.id, b.id, 1)})
	waitUntil(t, 5*time.Second, "delivery to the live peer", func() bool { return b.countFrom(a.id) > 0 })
}

func TestTransportReconnect(t *testing.T) {
	ns := newTCluster(t, 2)
	a, b := ns[0], ns[1]
	connect(t, a, b)
	opened := a.tr.Stats().StreamsOpened

	b.stop()
	// A message may still go into the dying stream unreported; the ones
	// after it are dropped and reported.
	waitUntil(t, 5*time.Second, "unreachable report", func() bool {
		a.tr.Send(1, []*raftpb.Message{msg(a.id, b.id, 1)})
		time.Sleep(5 * time.Millisecond)
		return a.unreachable(1, b.id) > 0
	})
	time.Sleep(300 * time.Millisecond) // let the backoff grow a little
	b.serve(t)

	start := time.Now()
	before := b.countFrom(a.id)
	waitUntil(t, 5*time.Second, "delivery after restart", func() bool {
		a.tr.Send(2, []*raftpb.Message{msg(a.id, b.id, 2)})
		time.Sleep(10 * time.Millisecond)
		return b.countFrom(a.id) > before
	})
	t.Logf("reconnected %v after the server restarted", time.Since(start))
	if s := a.tr.Stats(); s.StreamsOpened <= opened {
		t.Fatalf("no new stream: %+v", s)
	}
	b.tr.Send(3, []*raftpb.Message{msg(b.id, a.id, 1)})
	waitUntil(t, 5*time.Second, "b->a", func() bool { return a.countFrom(b.id) > 0 })

	// A process restart: b's transport and server go away; a new node 2
	// comes up on the same address. Both directions work again.
	b.tr.Close()
	b.stop()
	b2 := &tnode{id: b.id, addr: b.addr}
	restartTNode(t, b2, "test-cluster")
	if err := b2.tr.AddPeer(a.id, a.addr); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "a->b2", func() bool {
		a.tr.Send(4, []*raftpb.Message{msg(a.id, b.id, 4)})
		time.Sleep(10 * time.Millisecond)
		return b2.countFrom(a.id) > 0
	})
	before = a.countFrom(b.id)
	b2.tr.Send(5, []*raftpb.Message{msg(b.id, a.id, 2)})
	waitUntil(t, 5*time.Second, "b2->a", func() bool { return a.countFrom(b.id) > before })
}

func TestTransportClusterMismatch(t *testing.T) {
	a := newTNode(t, 1, "cluster-a")
	x := newTNode(t, 2, "cluster-x")
	if err := x.tr.AddPeer(a.id, a.addr); err != nil {
		t.Fatal(err)
	}
	if err := a.tr.AddPeer(x.id, x.addr); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		x.tr.Send(9, []*raftpb.Message{msg(x.id, a.id, uint64(i))})
		a.tr.Send(8, []*raftpb.Message{msg(a.id, x.id, uint64(i))})
		time.Sleep(10 * time.Millisecond)
	}
	waitUntil(t, 5*time.Second, "refusals and reports", func() bool {
		return a.tr.Stats().StreamsRefused > 0 && x.tr.Stats().StreamsRefused > 0 &&
			x.unreachable(9, a.id) > 0 && a.unreachable(8, x.id) > 0
	})
	if n := len(a.received()) + len(x.received()); n != 0 {
		t.Fatalf("%d messages crossed clusters", n)
	}
	if s := x.tr.Stats(); s.StreamsOpened != 0 || s.MessagesSent != 0 {
		t.Fatalf("stats of the foreign node: %+v", s)
	}
}

func TestTransportFilter(t *testing.T) {
	ns := newTCluster(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	connect(t, a, b)
	connect(t, a, c)
	baseB, baseC := b.countFrom(a.id), c.countFrom(a.id)

	// Partition on send: a drops what it sends to b.
	a.tr.Filter(func(from, to uint64) bool { return to != b.id })
	for i := uint64(1); i <= 10; i++ {
		a.tr.Send(1, []*raftpb.Message{msg(a.id, b.id, i), msg(a.id, c.id, i)})
	}
	waitUntil(t, 5*time.Second, "c's messages", func() bool { return c.countFrom(a.id) == baseC+10 })
	time.Sleep(50 * time.Millisecond)
	if n := b.countFrom(a.id); n != baseB {
		t.Fatalf("b got %d messages through the partition", n-baseB)
	}

	// Partition on receive: b drops what comes from a.
	a.tr.Filter(nil)
	b.tr.Filter(func(from, to uint64) bool { return from != a.id })
	a.tr.Send(1, []*raftpb.Message{msg(a.id, b.id, 11)})
	c.tr.Send(1, []*raftpb.Message{msg(c.id, b.id, 1)})
	waitUntil(t, 5*time.Second, "c->b", func() bool { return b.countFrom(c.id) == 1 })
	waitUntil(t, 5*time.Second, "a's batch to be filtered", func() bool { return b.tr.Stats().MessagesFiltered > 0 })
	if n := b.countFrom(a.id); n != baseB {
		t.Fatalf("b got %d messages through the partition", n-baseB)
	}

	// Heal.
	b.tr.Filter(nil)
	a.tr.Send(1, []*raftpb.Message{msg(a.id, b.id, 12)})
	waitUntil(t, 5*time.Second, "delivery after healing", func() bool { return b.countFrom(a.id) == baseB+1 })
	if r := b.received(); r[len(r)-1].m.GetIndex() != 12 {
		t.Fatalf("got index %d", r[len(r)-1].m.GetIndex())
	}
}

func TestTransportMisuse(t *testing.T) {
	a := newTNode(t, 1, "c")
	for _, addr := range []string{"", "nohost", "ftp://x:1"} {
		if err := a.tr.AddPeer(2, addr); err == nil {
			t.Errorf("AddPeer(2, %q) succeeded", addr)
		}
	}
	if err := a.tr.AddPeer(1, "127.0.0.1:1"); err == nil {
		t.Error("AddPeer(self) succeeded")
	}
	if err := a.tr.AddPeer(0, "127.0.0.1:1"); err == nil {
		t.Error("AddPeer(0) succeeded")
	}
	if err := a.tr.AddPeer(3, "http://127.0.0.1:1"); err != nil {
		t.Errorf("AddPeer with a peer URL: %v", err)
	}
	// To self: dropped, no report. To an unknown node: dropped, reported.
	a.tr.Send(1, []*raftpb.Message{msg(1, 1, 1), msg(1, 9, 1)})
	waitUntil(t, 5*time.Second, "unknown-peer report", func() bool { return a.unreachable(1, 9) == 1 })
	if a.unreachable(1, 1) != 0 || len(a.received()) != 0 {
		t.Fatal("message to self was delivered or reported")
	}
	if s := a.tr.Stats(); s.MessagesDropped != 2 {
		t.Fatalf("stats %+v", s)
	}
	a.tr.RemovePeer(3)
	a.tr.RemovePeer(3)
	a.tr.Close()
	a.tr.Close()
	a.tr.Send(1, []*raftpb.Message{msg(1, 9, 2)})
	if err := a.tr.AddPeer(4, "127.0.0.1:1"); err == nil {
		t.Error("AddPeer after Close succeeded")
	}
}

// TestTransportSlowPeer: a peer whose handler stalls keeps its stream open
// but stops reading; once gRPC's flow-control window is full the sender
// blocks, the queue fills, and Send still returns at once, dropping and
// reporting. When the peer resumes, traffic flows again.
func TestTransportSlowPeer(t *testing.T) {
	ns := newTCluster(t, 2)
	a, b := ns[0], ns[1]
	a.tr.queueSize = 64
	connect(t, a, b)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	b.tr.SetHandler(func(group uint64, m *raftpb.Message) {
		<-release
		b.mu.Lock()
		b.got = append(b.got, recvd{group, m})
		b.mu.Unlock()
	})
	data := make([]byte, 4<<10)
	start := time.Now()
	for i := uint64(1); i <= 5000; i++ {
		m := msg(a.id, b.id, i)
		m.Entries = []*raftpb.Entry{{Data: data}}
		a.tr.Send(77, []*raftpb.Message{m})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("5000 Sends to a stalled peer took %v", d)
	}
	waitUntil(t, 5*time.Second, "unreachable reports", func() bool { return a.unreachable(77, b.id) > 0 })
	if s := a.tr.Stats(); s.MessagesDropped == 0 || s.StreamsOpened != 1 {
		t.Fatalf("stats %+v", s)
	}
	unblock()
	waitUntil(t, 10*time.Second, "delivery after the peer resumed", func() bool {
		a.tr.Send(78, []*raftpb.Message{msg(a.id, b.id, 1)}) // the queue may still be full
		time.Sleep(10 * time.Millisecond)
		for _, r := range b.received() {
			if r.group == 78 {
				return true
			}
		}
		return false
	})
}
