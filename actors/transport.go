package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/transportpb"
)

// The inter-node Raft transport.
//
// Every node runs one Transport. For each peer node it keeps a queue and one
// sender goroutine that owns one long-lived gRPC stream (RaftTransport.Stream)
// to that peer: the messages of all Raft groups bound for the peer travel on
// it, so there is exactly one stream per ordered node pair, and messages to
// one peer are sent in the order Send queued them. Replies come back on the
// peer's own stream to us, served by Register.
//
// The sender takes everything queued at the moment it wakes and sends it as
// one RaftBatch (split at MaxBatchBytes; a message bigger than that, such as
// a MsgSnap, goes alone), so batches grow by themselves when the network or
// the peer is slower than the producers, and cost one message when idle.
//
// Failure handling follows what Raft expects of a transport: delivery is best
// effort, Raft retransmits. Send never blocks; a message that cannot be sent
// (queue full, peer unknown, stream down or broken, message too big) is
// dropped and the group is told through the unreachable callback (coalesced
// per group and peer), and a dropped MsgSnap is also reported as a failed
// snapshot, without which the Raft leader would wait for it forever. A
// broken stream is reopened with capped, jittered exponential backoff; while
// the peer is down, whatever is queued for it is dropped and reported.
// Messages already handed to a stream that then breaks are lost unreported
// (as on a network), and order holds within a stream: right after a
// reconnect, the peer may still be handling the old stream's last batch
// while the new one starts. Raft copes with both. A peer that hangs without
// closing its connection is detected by gRPC keepalive (about 15 s); until
// then its queue fills and further messages are dropped and reported.
//
// Liveness: a stream that has sent nothing for PingInterval sends an empty
// batch, and the receiving side records when it last heard from each peer
// (Heard). Idle Raft groups stop ticking and heartbeating (see the shard's
// quiescing); this node-level ping is what tells their followers that the
// leader's node is still there.
//
// Limits: the queue is bounded in messages, not bytes; a snapshot travels
// as one message (up to MaxMessageBytes) in memory on both sides; peer TLS
// must come through TransportConfig.DialOptions and the server's own
// credentials.
//
// Callbacks (unreachable, snapshot status) are called from one transport
// goroutine, never concurrently with each other and never from Send's
// caller, so they may take the caller's locks; the handler is called from
// the goroutine of each inbound stream. None is called after Close returns.

const (
	// DefaultTransportQueueSize is the default per-peer queue bound, in
	// messages.
	DefaultTransportQueueSize = 4096
	// DefaultTransportDialTimeout bounds opening a stream to a peer: dialing
	// and the handshake.
	DefaultTransportDialTimeout = 2 * time.Second
	// MaxBatchBytes is the size a batch grows to before the sender starts
	// another; one message bigger than this is sent alone. It stays under
	// gRPC's default 4 MiB receive limit, so only such big single messages
	// (snapshots) need a server built with TransportServerOptions.
	MaxBatchBytes = 4<<20 - 64<<10
	// MaxMessageBytes is the largest marshaled Raft message the transport
	// sends; a bigger one is dropped and reported. Servers passed to
	// Register must accept messages this big plus the batch envelope (see
	// TransportServerOptions); gRPC's default limit is 4 MiB.
	MaxMessageBytes = 256 << 20

	// PingInterval: a stream idle this long sends an empty batch, so that
	// the peer hears from this node (Heard) even when no group talks.
	PingInterval = 200 * time.Millisecond

	// batchOverhead bounds a GroupMessage's envelope: tags, the group and
	// the length prefix.
	batchOverhead = 24
)

// TransportConfig configures NewTransport.
type TransportConfig struct {
	// Self is this node's id: its Raft id in every group.
	Self uint64
	// Cluster is the cluster token (--initial-cluster-token). Streams from
	// nodes with another token are refused, and so are ours by them.
	Cluster string
	Logger  *zap.Logger
	// QueueSize bounds each peer's queue, in messages
	// (DefaultTransportQueueSize if 0).
	QueueSize int
	// DialTimeout bounds opening a stream to a peer
	// (DefaultTransportDialTimeout if 0).
	DialTimeout time.Duration
	// DialOptions are appended to the transport's own (insecure transport
	// credentials, keepalive, connection backoff): peer TLS goes here.
	DialOptions []grpc.DialOption
}

// TransportStats are cumulative counters of one Transport.
type TransportStats struct {
	BatchesSent, MessagesSent uint64
	// MessagesDropped counts messages given to Send that were not sent
	// (queue full, unknown peer, peer down, stream broken, too big,
	// undecodable), not those dropped by a Filter.
	MessagesDropped  uint64
	MessagesFiltered uint64 // dropped by Filter, on send or receive
	BatchesReceived  uint64 // handshakes and pings (empty batches) excluded
	MessagesReceived uint64 // handed to the handler
	StreamsAccepted  uint64 // inbound streams whose handshake was accepted
	StreamsRefused   uint64 // inbound streams refused (cluster token, node id)
	StreamsOpened    uint64 // outbound streams established (handshake done)
}

type transportCounters struct {
	batchesSent, messagesSent, messagesDropped, messagesFiltered atomic.Uint64
	batchesReceived, messagesReceived                            atomic.Uint64
	streamsAccepted, streamsRefused, streamsOpened               atomic.Uint64
}

// Transport carries the Raft messages of all of a node's groups to the other
// nodes and delivers theirs. See the comment at the top of transport.go.
type Transport struct {
	self        uint64
	cluster     string
	lg          *zap.Logger
	queueSize   int
	dialTimeout time.Duration
	dialOpts    []grpc.DialOption
	// Reconnection backoff: the first retry waits about minBackoff, each
	// failure doubles it up to maxBackoff; jittered to [d/2, d).
	minBackoff, maxBackoff time.Duration

	handler     atomic.Pointer[func(group uint64, m *raftpb.Message)]
	unreachable atomic.Pointer[func(group, to uint64)]
	snapStatus  atomic.Pointer[func(group, to uint64, ok bool)]
	filter      atomic.Pointer[func(from, to uint64) bool]

	rep   reporter
	stats transportCounters

	selfLog, unknownLog, badMsgLog rateLimit

	mu     sync.RWMutex
	closed bool
	peers  map[uint64]*peer
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
}

// NewTransport returns a Transport with no peers. Register it on the node's
// peer gRPC server, set its callbacks and add peers.
func NewTransport(c TransportConfig) *Transport {
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	t := &Transport{
		self:        c.Self,
		cluster:     c.Cluster,
		lg:          lg.With(zap.Uint64("node", c.Self)),
		queueSize:   c.QueueSize,
		dialTimeout: c.DialTimeout,
		dialOpts:    c.DialOptions,
		minBackoff:  50 * time.Millisecond,
		maxBackoff:  time.Second,
		peers:       map[uint64]*peer{},
		done:        make(chan struct{}),
	}
	if t.queueSize <= 0 {
		t.queueSize = DefaultTransportQueueSize
	}
	if t.dialTimeout <= 0 {
		t.dialTimeout = DefaultTransportDialTimeout
	}
	t.rep.wake = make(chan struct{}, 1)
	t.wg.Add(1)
	go t.runReporter()
	return t
}

// TransportServerOptions are the options the gRPC server given to Register
// needs: a receive limit that admits MaxMessageBytes messages, and a
// keepalive policy that matches the transport's client pings (and pings
// idle clients itself, so a dead peer's inbound stream is reaped).
func TransportServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes + 1<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    10 * time.Second,
			Timeout: 5 * time.Second,
		}),
	}
}

// Register serves the peers' streams on s, the node's peer listener. s
// must be built with TransportServerOptions: without its keepalive policy,
// gRPC's default one (pings at most every 5 minutes) makes the server
// close peers' connections for pinging too often, and without its receive
// limit a message over 4 MiB (a snapshot) breaks the stream each time.
func (t *Transport) Register(s *grpc.Server) {
	transportpb.RegisterRaftTransportServer(s, &transportServer{t: t})
}

// SetHandler sets the function that receives every inbound message, with its
// group. It is called from the inbound stream's goroutine, in the order the
// peer sent; it must not block long (it stalls the peer's whole stream).
func (t *Transport) SetHandler(h func(group uint64, m *raftpb.Message)) {
	t.handler.Store(&h)
}

// SetUnreachable sets the function told that a message of group to node `to`
// was dropped (raft's ReportUnreachable). Reports are coalesced: one per
// (group, to) for all drops since the previous report.
func (t *Transport) SetUnreachable(f func(group, to uint64)) {
	t.unreachable.Store(&f)
}

// SetSnapshotStatus sets the function told how a MsgSnap of group to node
// `to` fared (raft's ReportSnapshot): ok=false when it was dropped or its
// stream broke before the peer acknowledged it, ok=true once the peer has
// handed it to its group. Without the failure report a Raft leader waits for
// the snapshot forever.
func (t *Transport) SetSnapshotStatus(f func(group, to uint64, ok bool)) {
	t.snapStatus.Store(&f)
}

// Filter installs a test hook: a message from `from` to `to` for which f
// returns false is dropped, when sent (from = this node) and when received
// (to = this node). Dropped MsgSnaps are reported as failed snapshots; other
// filtered messages are dropped silently, as a lossy network would. nil
// removes the filter.
func (t *Transport) Filter(f func(from, to uint64) bool) {
	if f == nil {
		t.filter.Store(nil)
		return
	}
	t.filter.Store(&f)
}

// Heard is when a batch from node id was last received (pings included);
// zero if never, or if id is not a peer.
func (t *Transport) Heard(id uint64) time.Time {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p == nil {
		return time.Time{}
	}
	if ns := p.heard.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Stats returns the transport's counters.
func (t *Transport) Stats() TransportStats {
	s := &t.stats
	return TransportStats{
		BatchesSent:      s.batchesSent.Load(),
		MessagesSent:     s.messagesSent.Load(),
		MessagesDropped:  s.messagesDropped.Load(),
		MessagesFiltered: s.messagesFiltered.Load(),
		BatchesReceived:  s.batchesReceived.Load(),
		MessagesReceived: s.messagesReceived.Load(),
		StreamsAccepted:  s.streamsAccepted.Load(),
		StreamsRefused:   s.streamsRefused.Load(),
		StreamsOpened:    s.streamsOpened.Load(),
	}
}

// AddPeer makes node id reachable at addr, the host:port of its peer
// listener (an http:// or https:// peer URL is accepted and its host used;
// TLS itself comes from TransportConfig.DialOptions). Adding a known peer
// with a new address replaces its stream; with the same address it is a
// no-op.
func (t *Transport) AddPeer(id uint64, addr string) error {
	if id == 0 {
		return errors.New("raft transport: peer id 0")
	}
	if id == t.self {
		return fmt.Errorf("raft transport: peer %d is this node", id)
	}
	host, err := peerHost(addr)
	if err != nil {
		return fmt.Errorf("raft transport: peer %d: %w", id, err)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                10 * time.Second,
			Timeout:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  t.minBackoff,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   t.maxBackoff,
			},
			MinConnectTimeout: t.dialTimeout,
		}),
	}, t.dialOpts...)

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("raft transport: closed")
	}
	if old := t.peers[id]; old != nil {
		if old.addr == host {
			return nil
		}
		old.cancel()
		delete(t.peers, id)
	}
	conn, err := grpc.NewClient(host, opts...)
	if err != nil {
		return fmt.Errorf("raft transport: peer %d at %s: %w", id, host, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{
		t:      t,
		id:     id,
		addr:   host,
		conn:   conn,
		client: transportpb.NewRaftTransportClient(conn),
		ctx:    ctx,
		cancel: cancel,
		lg:     t.lg.With(zap.Uint64("peer", id), zap.String("peer-addr", host)),
		wake:   make(chan struct{}, 1),
	}
	t.peers[id] = p
	t.wg.Add(1)
	go p.run()
	return nil
}

// RemovePeer forgets node id: its queue is dropped (unreported) and its
// stream closed. It does not wait for the peer's goroutine to end; a report
// about the peer may still be delivered shortly after it returns.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if p != nil {
		p.cancel()
	}
}

// Send queues msgs, all of group, each for the node m.GetTo(). It never
// blocks. The transport owns the messages from then on: the caller must not
// modify them (raft never modifies the messages of a Ready).
func (t *Transport) Send(group uint64, msgs []*raftpb.Message) {
	var filter func(from, to uint64) bool
	if f := t.filter.Load(); f != nil {
		filter = *f
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	for _, m := range msgs {
		to := m.GetTo()
		snap := m.GetType() == raftpb.MsgSnap
		if to == t.self {
			t.stats.messagesDropped.Add(1)
			if t.selfLog.allow() {
				t.lg.Error("raft transport: message to self dropped (programming error)",
					zap.Uint64("group", group), zap.Stringer("type", m.GetType()))
			}
			continue
		}
		if filter != nil && !filter(t.self, to) {
			t.stats.messagesFiltered.Add(1)
			if snap {
				t.rep.snapshot(group, to, false)
			}
			continue
		}
		p := t.peers[to]
		if p == nil {
			t.stats.messagesDropped.Add(1)
			if t.unknownLog.allow() {
				t.lg.Warn("raft transport: message to unknown peer dropped",
					zap.Uint64("group", group), zap.Uint64("to", to), zap.Stringer("type", m.GetType()))
			}
			t.rep.drop(group, to, snap)
			continue
		}
		p.enqueue(group, m, snap)
	}
}

// Close stops every stream, inbound and outbound, and waits for the
// transport's goroutines; no callback runs after it returns. Inbound streams
// end with codes.Unavailable. It does not stop the gRPC server.
func (t *Transport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.done)
	for id, p := range t.peers {
		p.cancel()
		delete(t.peers, id)
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// track counts an inbound stream goroutine in t.wg unless t is closed.
func (t *Transport) track() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *Transport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func peerHost(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return "", err
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", fmt.Errorf("unsupported peer URL scheme %q", u.Scheme)
		}
		addr = u.Host
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", err
	}
	return addr, nil
}

// ---- reports ----

type groupTo struct{ group, to uint64 }

// reporter coalesces drop and snapshot reports; one goroutine (runReporter)
// hands them to the callbacks, so senders and Send never call them.
type reporter struct {
	mu      sync.Mutex
	unreach map[groupTo]struct{}
	snaps   map[groupTo]bool // the latest status per (group, to)
	wake    chan struct{}
}

// drop records that a message of group to `to` was not sent.
func (r *reporter) drop(group, to uint64, snap bool) {
	r.mu.Lock()
	if r.unreach == nil {
		r.unreach = map[groupTo]struct{}{}
	}
	r.unreach[groupTo{group, to}] = struct{}{}
	if snap {
		if r.snaps == nil {
			r.snaps = map[groupTo]bool{}
		}
		r.snaps[groupTo{group, to}] = false
	}
	r.mu.Unlock()
	r.signal()
}

func (r *reporter) snapshot(group, to uint64, ok bool) {
	r.mu.Lock()
	if r.snaps == nil {
		r.snaps = map[groupTo]bool{}
	}
	r.snaps[groupTo{group, to}] = ok
	r.mu.Unlock()
	r.signal()
}

func (r *reporter) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (t *Transport) runReporter() {
	defer t.wg.Done()
	for {
		select {
		case <-t.done:
			return
		case <-t.rep.wake:
		}
		t.rep.mu.Lock()
		unreach, snaps := t.rep.unreach, t.rep.snaps
		t.rep.unreach, t.rep.snaps = nil, nil
		t.rep.mu.Unlock()
		if f := t.unreachable.Load(); f != nil {
			for k := range unreach {
				if t.isClosed() {
					return
				}
				(*f)(k.group, k.to)
			}
		}
		if f := t.snapStatus.Load(); f != nil {
			for k, ok := range snaps {
				if t.isClosed() {
					return
				}
				(*f)(k.group, k.to, ok)
			}
		}
	}
}

// rateLimit lets one log line through per second.
type rateLimit struct{ last atomic.Int64 }

func (r *rateLimit) allow() bool {
	now := time.Now().UnixNano()
	last := r.last.Load()
	return now-last >= int64(time.Second) && r.last.CompareAndSwap(last, now)
}

// ---- outbound: one peer ----

type queued struct {
	group uint64
	m     *raftpb.Message
}

type peer struct {
	t      *Transport
	id     uint64
	addr   string
	conn   *grpc.ClientConn
	client transportpb.RaftTransportClient
	ctx    context.Context // cancelled by RemovePeer and Close
	cancel context.CancelFunc
	lg     *zap.Logger

	mu    sync.Mutex
	queue []queued
	wake  chan struct{} // capacity 1: something was queued

	heard atomic.Int64 // unix nanoseconds of the last batch received from the peer
}

func (p *peer) enqueue(group uint64, m *raftpb.Message, snap bool) {
	p.mu.Lock()
	if len(p.queue) >= p.t.queueSize {
		p.mu.Unlock()
		p.t.stats.messagesDropped.Add(1)
		p.t.rep.drop(group, p.id, snap)
		return
	}
	p.queue = append(p.queue, queued{group, m})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *peer) take() []queued {
	p.mu.Lock()
	q := p.queue
	p.queue = nil
	p.mu.Unlock()
	return q
}

// dropQueued drops and reports everything queued.
func (p *peer) dropQueued() {
	p.dropMsgs(p.take())
}

func (p *peer) dropMsgs(q []queued) {
	if len(q) == 0 {
		return
	}
	p.t.stats.messagesDropped.Add(uint64(len(q)))
	for _, e := range q {
		p.t.rep.drop(e.group, p.id, e.m.GetType() == raftpb.MsgSnap)
	}
}

// run is the peer's sender goroutine: connect, stream until the stream
// breaks, back off, reconnect; until the peer is removed or the transport
// closed.
func (p *peer) run() {
	defer p.t.wg.Done()
	defer p.conn.Close()
	defer func() { p.take() }() // a removed peer's queue is dropped unreported
	delay := p.t.minBackoff
	failures := 0
	for {
		s, err := p.open()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || failures%30 == 0 {
				p.lg.Warn("raft transport: cannot open stream to peer; retrying", zap.Error(err), zap.Int("failures", failures))
			} else {
				p.lg.Debug("raft transport: cannot open stream to peer", zap.Error(err), zap.Int("failures", failures))
			}
			p.dropQueued()
			if !p.pause(jitter(delay)) {
				return
			}
			delay = min(2*delay, p.t.maxBackoff)
			continue
		}
		p.t.stats.streamsOpened.Add(1)
		if failures > 0 {
			p.lg.Info("raft transport: stream to peer open", zap.Int("failed-attempts", failures))
		} else {
			p.lg.Debug("raft transport: stream to peer open")
		}
		failures, delay = 0, p.t.minBackoff
		err = p.stream(s)
		s.cancel()
		if p.ctx.Err() != nil {
			return
		}
		p.lg.Warn("raft transport: stream to peer broke; reconnecting", zap.Error(err))
		p.dropQueued()
		failures = 1
		if !p.pause(jitter(delay)) {
			return
		}
	}
}

// pause waits d, dropping (and reporting) whatever gets queued meanwhile:
// the peer is down, and stale messages are worth less to Raft than prompt
// unreachable reports. It returns false if the peer was stopped.
func (p *peer) pause(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-p.wake:
			p.dropQueued()
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// outStream is an open, handshaken stream to a peer.
type outStream struct {
	s       transportpb.RaftTransport_StreamClient
	cancel  context.CancelFunc
	acked   atomic.Uint64 // the highest ack received
	ackWake chan struct{} // capacity 1: acked grew
	recvErr chan error    // capacity 1: the receive side ended
}

// open dials (if needed), opens a stream and does the handshake, within the
// dial timeout.
func (p *peer) open() (*outStream, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	timer := time.AfterFunc(p.t.dialTimeout, cancel)
	fail := func(err error) (*outStream, error) {
		timer.Stop()
		cancel()
		if ctx.Err() != nil && p.ctx.Err() == nil {
			err = fmt.Errorf("timed out after %v: %w", p.t.dialTimeout, err)
		}
		return nil, err
	}
	s, err := p.client.Stream(ctx)
	if err != nil {
		return fail(err)
	}
	if err := s.Send(p.header()); err != nil {
		if err == io.EOF {
			_, err = s.Recv() // the stream's real status
		}
		return fail(err)
	}
	ack, err := s.Recv()
	if err != nil {
		return fail(err)
	}
	if ack.GetBatches() != 1 {
		return fail(fmt.Errorf("bad handshake ack: %d batches", ack.GetBatches()))
	}
	if !timer.Stop() {
		return fail(context.DeadlineExceeded)
	}
	o := &outStream{s: s, cancel: cancel, ackWake: make(chan struct{}, 1), recvErr: make(chan error, 1)}
	go o.receive() // ends when the stream does (cancel or error); not tracked
	return o, nil
}

func (p *peer) header() *transportpb.RaftBatch {
	return &transportpb.RaftBatch{From: p.t.self, To: p.id, Cluster: p.t.cluster}
}

func (os *outStream) receive() {
	for {
		ack, err := os.s.Recv()
		if err != nil {
			os.recvErr <- err
			return
		}
		if n := ack.GetBatches(); n > os.acked.Load() {
			os.acked.Store(n)
			select {
			case os.ackWake <- struct{}{}:
			default:
			}
		}
	}
}

type pendingSnap struct {
	batch, group uint64
}

// stream sends batches on s until it breaks or the peer is stopped.
func (p *peer) stream(s *outStream) (err error) {
	sent := uint64(1) // the handshake
	var pending []pendingSnap
	defer func() {
		// Snapshots whose ack never came failed, as far as we know.
		for _, ps := range pending {
			p.t.rep.snapshot(ps.group, p.id, false)
		}
	}()
	settle := func() {
		acked := s.acked.Load()
		i := 0
		for ; i < len(pending) && pending[i].batch <= acked; i++ {
			p.t.rep.snapshot(pending[i].group, p.id, true)
		}
		pending = pending[i:]
	}
	ping := time.NewTicker(PingInterval)
	defer ping.Stop()
	lastSent := sent
	for {
		settle()
		q := p.take()
		if len(q) == 0 {
			select {
			case <-p.ctx.Done():
				return p.ctx.Err()
			case err := <-s.recvErr:
				return err
			case <-s.ackWake:
			case <-p.wake:
			case <-ping.C:
				if sent == lastSent {
					if err := s.s.Send(p.header()); err != nil {
						return err
					}
					sent++
				}
				lastSent = sent
			}
			continue
		}
		// Marshal and send q in batches of at most MaxBatchBytes (a bigger
		// message alone), in order.
		var (
			b     *transportpb.RaftBatch
			in    []queued // b's messages, for reporting
			snaps []uint64
			size  int
		)
		flush := func() error {
			if err := s.s.Send(b); err != nil {
				if err == io.EOF { // the server ended the stream: get why
					select {
					case err = <-s.recvErr:
					case <-time.After(100 * time.Millisecond):
					}
				}
				p.dropMsgs(in)
				return err
			}
			sent++
			p.t.stats.batchesSent.Add(1)
			p.t.stats.messagesSent.Add(uint64(len(in)))
			for _, g := range snaps {
				pending = append(pending, pendingSnap{sent, g})
			}
			b, in, snaps, size = nil, nil, nil, 0
			return nil
		}
		for i, e := range q {
			data, err := proto.Marshal(e.m)
			snap := e.m.GetType() == raftpb.MsgSnap
			if err == nil && len(data) > MaxMessageBytes {
				err = fmt.Errorf("%d bytes, more than %d", len(data), MaxMessageBytes)
			}
			if err != nil {
				p.lg.Error("raft transport: cannot send message; dropped", zap.Uint64("group", e.group),
					zap.Stringer("type", e.m.GetType()), zap.Error(err))
				p.dropMsgs(q[i : i+1])
				continue
			}
			if b != nil && size+len(data)+batchOverhead > MaxBatchBytes {
				if err := flush(); err != nil {
					p.dropMsgs(q[i:])
					return err
				}
			}
			if b == nil {
				b = p.header()
			}
			b.Messages = append(b.Messages, &transportpb.GroupMessage{Group: e.group, Message: data})
			in = append(in, e)
			size += len(data) + batchOverhead
			if snap {
				snaps = append(snaps, e.group)
			}
		}
		if b != nil {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// ---- inbound ----

type transportServer struct {
	transportpb.UnimplementedRaftTransportServer
	t *Transport
}

var errTransportClosed = status.Error(codes.Unavailable, "raft transport: closed")

// Stream serves one peer's stream: handshake, then batches until the peer
// ends it, it breaks, or the transport closes.
func (ts *transportServer) Stream(s transportpb.RaftTransport_StreamServer) error {
	t := ts.t
	if !t.track() {
		return errTransportClosed
	}
	defer t.wg.Done()

	hs, err := s.Recv()
	if err != nil {
		return err
	}
	from := hs.GetFrom()
	if err := t.checkHandshake(hs); err != nil {
		t.stats.streamsRefused.Add(1)
		t.lg.Warn("raft transport: refused a peer's stream", zap.Uint64("from", from), zap.Error(err))
		return err
	}
	if len(hs.GetMessages()) > 0 {
		return status.Error(codes.InvalidArgument, "raft transport: handshake carries messages")
	}
	if err := s.Send(&transportpb.RaftBatchAck{Batches: 1}); err != nil {
		return err
	}
	t.stats.streamsAccepted.Add(1)

	// Receive on another goroutine so that Close ends the stream even while
	// the peer sends nothing; deliver on this one, which owns Send.
	batches := make(chan *transportpb.RaftBatch)
	recvErr := make(chan error, 1)
	if !t.track() {
		return errTransportClosed
	}
	go func() {
		defer t.wg.Done()
		for {
			b, err := s.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case batches <- b:
			case <-s.Context().Done():
				return
			}
		}
	}()
	n := uint64(1)
	for {
		select {
		case <-t.done:
			return errTransportClosed
		case err := <-recvErr:
			if err == io.EOF {
				return nil
			}
			return err
		case b := <-batches:
			if b.GetFrom() != from || b.GetTo() != t.self || b.GetCluster() != t.cluster {
				return status.Errorf(codes.InvalidArgument,
					"raft transport: batch header changed mid-stream (from %d to %d)", b.GetFrom(), b.GetTo())
			}
			n++
			if t.deliver(from, b) {
				if err := s.Send(&transportpb.RaftBatchAck{Batches: n}); err != nil {
					return err
				}
			}
		}
	}
}

func (t *Transport) checkHandshake(hs *transportpb.RaftBatch) error {
	switch {
	case hs.GetCluster() != t.cluster:
		return status.Errorf(codes.FailedPrecondition,
			"raft transport: cluster token mismatch: peer has %q, this node %q", hs.GetCluster(), t.cluster)
	case hs.GetTo() != t.self:
		return status.Errorf(codes.FailedPrecondition,
			"raft transport: stream for node %d reached node %d", hs.GetTo(), t.self)
	case hs.GetFrom() == 0 || hs.GetFrom() == t.self:
		return status.Errorf(codes.InvalidArgument, "raft transport: bad sender id %d", hs.GetFrom())
	}
	return nil
}

// deliver hands b's messages to the handler and reports whether b held a
// snapshot, which the sender wants acknowledged. A batch that Filter drops
// is acknowledged too: like a network loss, the leader learns of it from
// the follower's response (or its absence), not from the transport.
func (t *Transport) deliver(from uint64, b *transportpb.RaftBatch) (hasSnap bool) {
	if len(b.GetMessages()) > 0 {
		t.stats.batchesReceived.Add(1)
	}
	msgs := make([]*raftpb.Message, len(b.GetMessages()))
	for i, gm := range b.GetMessages() {
		m := &raftpb.Message{}
		err := proto.Unmarshal(gm.GetMessage(), m)
		if err == nil && (m.GetTo() != t.self || m.GetFrom() != from) {
			err = fmt.Errorf("message from %d to %d on the stream from %d", m.GetFrom(), m.GetTo(), from)
		}
		if err != nil {
			t.stats.messagesDropped.Add(1)
			if t.badMsgLog.allow() {
				t.lg.Error("raft transport: bad inbound message dropped", zap.Uint64("from", from),
					zap.Uint64("group", gm.GetGroup()), zap.Error(err))
			}
			continue
		}
		hasSnap = hasSnap || m.GetType() == raftpb.MsgSnap
		msgs[i] = m
	}
	if f := t.filter.Load(); f != nil && !(*f)(from, t.self) {
		t.stats.messagesFiltered.Add(uint64(len(msgs)))
		return hasSnap
	}
	t.mu.RLock()
	p := t.peers[from]
	t.mu.RUnlock()
	if p != nil {
		p.heard.Store(time.Now().UnixNano())
	}
	var h func(uint64, *raftpb.Message)
	if hp := t.handler.Load(); hp != nil {
		h = *hp
	}
	for i, m := range msgs {
		if m == nil || h == nil || t.isClosed() {
			continue
		}
		h(b.GetMessages()[i].GetGroup(), m)
		t.stats.messagesReceived.Add(1)
	}
	return hasSnap
}
