package watchactor

// This file is one gRPC watch stream: its bounded outbound queue, which the
// hub fills without ever blocking, and its sender goroutine, which drains
// the queue into gRPC (blocking there as long as the client does not read),
// splits fragmented responses and keeps the stream's progress-notify timer.
//
// Invariants:
//   - The hub is the only producer; responses leave in the order it queued
//     them, so a watcher's created response precedes its events and its
//     events are in revision order.
//   - Responses that carry events are refused (push returns false) once the
//     queue holds maxQueued responses or maxQueuedBytes of events; the hub
//     then demotes the watcher to unsynced and later re-reads what it
//     missed from history. Control responses (created, canceled, errors)
//     are always accepted; their number is bounded by the control tokens
//     the receive loop takes before forwarding a request (ctrlTokens).
//   - After a refusal the sender tells the hub once the queue has drained
//     (roomMsg), so the hub can resume catching the stream's watchers up.

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ctrlTokens is how many create/cancel requests of one stream may await
// their response (etcd's ctrlStreamBufLen).
const ctrlTokens = 16

// eventsField is the field number of WatchResponse.events.
const eventsField = 11

type msgKind uint8

const (
	kindEvents   msgKind = iota // events, compaction or progress
	kindCreated                 // a watcher's created response
	kindCanceled                // a cancel's response
	kindCtrlErr                 // a refused create (watch id -1)
)

type outMsg struct {
	resp     *pb.WatchResponse
	kind     msgKind
	fragment bool // split per etcd's fragment rule
	progress bool // kindCreated: the watcher asked for progress_notify
	token    bool // release a control token once sent
	size     int  // queued bytes accounted

	w   *watcher // hub bookkeeping for kindEvents from a fan-out
	rev int64
}

// stream is one Watch RPC.
type stream struct {
	srv *Server
	gs  pb.Watch_WatchServer
	ctx context.Context

	tokens chan struct{}
	wake   chan struct{}
	stopc  chan struct{}
	donec  chan struct{}

	mu     sync.Mutex
	q      []outMsg
	qBytes int
	full   bool // refused a push since the queue last drained
	dead   bool // the sender stopped: refuse everything

	// Owned by the hub.
	watchers     map[int64]*watcher
	nextID       int64
	progressWant []int64 // current revisions of pending progress requests
	pend         []outMsg
	inPend       bool
}

func newStream(s *Server, gs pb.Watch_WatchServer) *stream {
	return &stream{
		srv:      s,
		gs:       gs,
		ctx:      gs.Context(),
		tokens:   make(chan struct{}, ctrlTokens),
		wake:     make(chan struct{}, 1),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
		watchers: map[int64]*watcher{},
	}
}

func eventsSize(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += 48
		if kv := ev.Kv; kv != nil {
			n += len(kv.Key) + len(kv.Value)
		}
		if kv := ev.PrevKv; kv != nil {
			n += len(kv.Key) + len(kv.Value)
		}
	}
	return n
}

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// room reports whether the queue is below half its limits, so that a
// catch-up is worth reading for this stream; if not, the sender will say
// when it is (roomMsg).
func (s *stream) room() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := &s.srv.opts
	ok := !s.dead && len(s.q) < o.maxQueued/2 && s.qBytes < o.maxQueuedBytes/2
	if !ok {
		s.full = true
		s.signal()
	}
	return ok
}

// push queues m. Events are refused when the queue is full; control
// responses never are (unless the stream is dead).
func (s *stream) push(m outMsg) bool {
	s.mu.Lock()
	ok := s.pushLocked(m)
	s.mu.Unlock()
	if ok {
		s.signal()
	}
	return ok
}

func (s *stream) pushLocked(m outMsg) bool {
	if s.dead {
		return false
	}
	if m.kind == kindEvents {
		o := &s.srv.opts
		if len(s.q) >= o.maxQueued || (s.qBytes >= o.maxQueuedBytes && len(s.q) > 0) {
			s.full = true
			return false
		}
		m.size = eventsSize(m.resp.Events)
		s.qBytes += m.size
	}
	s.q = append(s.q, m)
	return true
}

// pushBatch queues a prefix of ms and returns its length: once one response
// is refused every later one is too.
func (s *stream) pushBatch(ms []outMsg) int {
	s.mu.Lock()
	n := 0
	for _, m := range ms {
		if !s.pushLocked(m) {
			break
		}
		n++
	}
	s.mu.Unlock()
	if n > 0 {
		s.signal()
	}
	return n
}

func (s *stream) releaseToken() {
	select {
	case <-s.tokens:
	default:
	}
}

// sendLoop drains the queue into gRPC until stop or a send error.
func (s *stream) sendLoop() {
	defer close(s.donec)
	interval := s.srv.opts.ProgressNotifyInterval
	interval += time.Duration(rand.Int64N(int64(interval)/10 + 1))
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// progress[id] is true while no events were sent to id since the last
	// tick (etcd's elision of redundant progress notifications).
	progress := map[int64]bool{}
	var batch []outMsg
	for {
		select {
		case <-s.stopc:
			return
		case <-s.ctx.Done():
			s.kill()
			return
		case <-ticker.C:
			var ids []int64
			for id, quiet := range progress {
				if quiet {
					ids = append(ids, id)
				}
				progress[id] = true
			}
			if len(ids) > 0 {
				s.srv.hub.tell(s.ctx, &tickMsg{st: s, ids: ids})
			}
			continue
		case <-s.wake:
		}
		s.mu.Lock()
		batch, s.q = s.q, batch[:0]
		s.qBytes = 0
		s.mu.Unlock()
		for i := range batch {
			m := &batch[i]
			var err error
			if m.fragment {
				err = sendFragments(m.resp, s.srv.opts.MaxRequestBytes, s.gs.Send)
			} else {
				err = s.gs.Send(m.resp)
			}
			if m.token {
				s.releaseToken()
			}
			if err != nil {
				s.srv.lg.Debug("watch stream send failed", zap.Error(err))
				s.kill()
				return
			}
			switch m.kind {
			case kindCreated:
				if m.progress {
					progress[m.resp.WatchId] = true
				}
			case kindCanceled:
				delete(progress, m.resp.WatchId)
			case kindEvents:
				if len(m.resp.Events) > 0 {
					if _, ok := progress[m.resp.WatchId]; ok {
						progress[m.resp.WatchId] = false
					}
				}
			}
			batch[i] = outMsg{}
		}
		s.mu.Lock()
		wasFull := s.full && len(s.q) < s.srv.opts.maxQueued/2
		if wasFull {
			s.full = false
		}
		s.mu.Unlock()
		if wasFull {
			s.srv.hub.tell(s.ctx, &roomMsg{st: s})
		}
	}
}

func (s *stream) kill() {
	s.mu.Lock()
	s.dead = true
	s.q = nil
	s.qBytes = 0
	s.mu.Unlock()
}

// sendFragments sends wr whole if it is smaller than limit or has fewer than
// two events; otherwise it splits the events over responses with Fragment
// set on all but the last, each as large as fits under limit (but at least
// one event) — etcd's rule, sizes computed incrementally.
func sendFragments(wr *pb.WatchResponse, limit int, send func(*pb.WatchResponse) error) error {
	if proto.Size(wr) < limit || len(wr.Events) < 2 {
		return send(wr)
	}
	base := proto.Size(&pb.WatchResponse{
		Header: wr.Header, WatchId: wr.WatchId, Created: wr.Created, Canceled: wr.Canceled,
		CompactRevision: wr.CompactRevision, CancelReason: wr.CancelReason, Fragment: true,
	})
	idx := 0
	for idx < len(wr.Events) {
		cur := &pb.WatchResponse{
			Header: wr.Header, WatchId: wr.WatchId, Created: wr.Created, Canceled: wr.Canceled,
			CompactRevision: wr.CompactRevision, CancelReason: wr.CancelReason, Fragment: true,
		}
		size := base
		start := idx
		for idx < len(wr.Events) {
			es := protowire.SizeTag(eventsField) + protowire.SizeBytes(proto.Size(wr.Events[idx]))
			if idx > start && size+es >= limit {
				break
			}
			size += es
			idx++
		}
		cur.Events = wr.Events[start:idx:idx]
		if idx == len(wr.Events) {
			cur.Fragment = false
		}
		if err := send(cur); err != nil {
			return err
		}
	}
	return nil
}
