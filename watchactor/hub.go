package watchactor

// This file is the hub: one goroutine that owns every watcher of the node,
// receives the streams' requests and the results of its reads as messages,
// and hands events to the streams' queues. It never blocks on a stream or
// on the disk: reads run in goroutines and come back through the inbox.
//
// Invariants (cursor, readTo and the groups are the hub's alone):
//   - cursor: every event at or below cursor has been queued for every
//     synced watcher that wants it. readTo is the end of the synced read in
//     flight (cursor when none). cursor <= readTo <= the source's visible
//     revision.
//   - A synced watcher w needs nothing at or below cursor (w.minRev >
//     cursor) and gets every later event from the synced fan-out. It joins
//     the synced group only when that holds and the read in flight, if it
//     reaches w.minRev, was issued after w existed (the synced read spans
//     every watcher that existed when it was issued).
//   - An unsynced watcher needs every event from w.minRev on and is fed by
//     catch-up reads [minRev, readTo] from history; a refused push leaves
//     minRev where it was, so nothing is skipped and nothing is repeated.
//   - A watcher's responses carry non-decreasing header revisions; a
//     progress notification at revision R is queued only after every event
//     at or below R for the watchers it speaks for.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

type wstate uint8

const (
	stSynced wstate = iota
	stUnsynced
	stCompacted // sent its compacted response; stays until canceled
	stRemoved
)

// watcher is one watch of one stream.
type watcher struct {
	id       int64
	st       *stream
	span     span
	prevKV   bool
	noPut    bool
	noDelete bool
	fragment bool
	startRev int64
	seq      uint64

	state    wstate
	slot     int
	minRev   int64 // first revision it still needs
	readyRev int64 // no progress notification before cursor reaches it
	lastRev  int64 // highest header revision queued for it

	buf     []*mvccpb.Event // fan-out scratch
	touched bool
}

func (w *watcher) wants(ev *mvccpb.Event) bool {
	if ev.Type == mvccpb.Event_PUT {
		return !w.noPut
	}
	return !w.noDelete
}

// Messages to the hub.
type (
	createMsg struct {
		st  *stream
		req *pb.WatchCreateRequest
	}
	cancelMsg struct {
		st *stream
		id int64
	}
	progressMsg struct{ st *stream }
	tickMsg     struct {
		st  *stream
		ids []int64
	}
	roomMsg  struct{ st *stream }
	closeMsg struct {
		st   *stream
		done chan struct{}
	}
	syncedResult struct {
		from, to int64
		changes  []mvcc.Change
		err      error
	}
	catchupResult struct {
		ws      []*watcher
		to      int64
		changes []mvcc.Change
		err     error
	}
)

type hub struct {
	srv   *Server
	src   Source
	lg    *zap.Logger
	inbox chan any
	stopc chan struct{}
	donec chan struct{}

	// mu is held by whichever goroutine runs the hub's code: its own loop,
	// or an applier running a small fan-out itself (advanceInline). All
	// the state below is guarded by it.
	mu      sync.Mutex
	stopped bool

	cursor  int64
	readTo  int64
	reading bool
	readSeq uint64

	synced   *group
	unsynced map[*watcher]struct{}
	catching bool
	seq      uint64

	all      bounds // spans of every live watcher
	allDirty bool
	count    int

	progressStreams map[*stream]struct{}
	touchedStreams  []*stream
}

func newHub(srv *Server) *hub {
	visible, _ := srv.src.Revs()
	return &hub{
		srv: srv, src: srv.src, lg: srv.lg,
		inbox:           make(chan any, 1024),
		stopc:           make(chan struct{}),
		donec:           make(chan struct{}),
		cursor:          visible,
		readTo:          visible,
		synced:          newGroup(),
		unsynced:        map[*watcher]struct{}{},
		all:             bounds{empty: true},
		progressStreams: map[*stream]struct{}{},
	}
}

// tell delivers m to the hub unless ctx ends or the hub stopped first.
func (h *hub) tell(ctx context.Context, m any) bool {
	select {
	case h.inbox <- m:
		return true
	case <-ctx.Done():
		return false
	case <-h.stopc:
		return false
	}
}

// reply delivers a read result; the hub may have stopped.
func (h *hub) reply(m any) {
	select {
	case h.inbox <- m:
	case <-h.stopc:
	}
}

func (h *hub) run() {
	defer close(h.donec)
	tick := time.NewTicker(h.srv.opts.resyncInterval)
	defer tick.Stop()
	for {
		adv := h.src.Advanced()
		h.mu.Lock()
		h.advance()
		h.mu.Unlock()
		select {
		case <-h.stopc:
			h.mu.Lock()
			h.stopped = true
			h.mu.Unlock()
			return
		case <-adv:
		case <-tick.C:
			h.mu.Lock()
			h.catchup()
			h.mu.Unlock()
		case m := <-h.inbox:
			h.mu.Lock()
			h.handle(m)
			h.mu.Unlock()
		}
	}
}

// inlineWatchers bounds the synced watchers whose fan-out an applier runs
// itself.
const inlineWatchers = 128

// advanceInline runs advance on the caller's goroutine, an applier that
// just made a revision visible, when the hub is free and has a few synced
// watchers (1 to inlineWatchers): their events then leave without waiting
// for the hub's own goroutine to be scheduled (etcd, too, hands events to
// its watchers in the write's apply). Otherwise it does nothing, and the
// hub's loop, woken by Advanced, does the work. It never blocks: advance
// queues without waiting and reads the history in a goroutine.
func (h *hub) advanceInline() {
	if !h.mu.TryLock() {
		return
	}
	defer h.mu.Unlock()
	if h.stopped || h.synced.size() == 0 || h.synced.size() > inlineWatchers {
		return
	}
	h.advance()
}

func (h *hub) handle(m any) {
	switch m := m.(type) {
	case *createMsg:
		h.create(m.st, m.req)
	case *cancelMsg:
		h.cancel(m.st, m.id)
	case *progressMsg:
		h.progressAll(m.st)
	case *tickMsg:
		h.tick(m.st, m.ids)
	case *roomMsg:
		h.catchup()
	case *closeMsg:
		for _, w := range m.st.watchers {
			h.remove(w)
		}
		m.st.watchers = nil
		delete(h.progressStreams, m.st)
		close(m.done)
	case *syncedResult:
		h.syncedDone(m)
	case *catchupResult:
		h.catchupDone(m)
	}
}

// advance starts the next synced read if the visible revision moved.
func (h *hub) advance() {
	if h.reading {
		return
	}
	visible, _ := h.src.Revs()
	if visible <= h.cursor {
		return
	}
	if h.synced.size() == 0 {
		h.cursor, h.readTo = visible, visible
		h.afterCursor()
		return
	}
	if h.allDirty {
		h.recomputeAll()
	}
	key, end := h.all.request()
	from, to := h.cursor+1, visible
	h.reading, h.readTo, h.readSeq = true, to, h.seq
	limit := h.srv.opts.readLimit
	if ch, ok := h.src.Recent(key, end, from, to, limit); ok {
		h.syncedDone(&syncedResult{from: from, to: to, changes: ch})
		return
	}
	go func() {
		ch, err := h.src.Changes(context.Background(), key, end, from, to, limit)
		h.reply(&syncedResult{from: from, to: to, changes: ch, err: err})
	}()
}

func (h *hub) recomputeAll() {
	h.allDirty = false
	h.all = bounds{empty: true}
	for _, w := range h.unsyncedAndSynced() {
		h.all = h.all.union(w.span.bounds())
	}
}

func (h *hub) unsyncedAndSynced() []*watcher {
	out := make([]*watcher, 0, h.count)
	for w := range h.unsynced {
		out = append(out, w)
	}
	for _, set := range h.synced.keys {
		out = append(out, *set...)
	}
	for _, e := range h.synced.ranges {
		out = append(out, e.ws...)
	}
	return out
}

func (h *hub) syncedDone(r *syncedResult) {
	h.reading = false
	if r.err != nil {
		if errors.Is(r.err, mvcc.ErrCompacted) {
			// The history the synced watchers still needed is gone: they
			// take the unsynced path, which answers etcd's compacted
			// response.
			for _, w := range h.unsyncedAndSynced() {
				if w.state == stSynced {
					h.synced.remove(w)
					w.state = stUnsynced
					w.minRev = max(w.minRev, r.from)
					h.unsynced[w] = struct{}{}
				}
			}
			h.cursor = r.to
			h.readTo = r.to
			h.catchup()
			return
		}
		h.lg.Warn("watch: reading changes failed", zap.Error(r.err))
		h.readTo = h.cursor
		return
	}
	end := r.to
	if n := len(r.changes); n >= h.srv.opts.readLimit && n > 0 {
		end = r.changes[n-1].Rev
	}
	h.fanout(r.changes)
	h.cursor, h.readTo = end, end
	h.afterCursor()
}

// fanout hands each revision's events to the synced watchers, one response
// per watcher per revision, queued per stream in one batch.
func (h *hub) fanout(changes []mvcc.Change) {
	stripped := make(map[int]*mvccpb.Event)
	var touched []*watcher
	for i := 0; i < len(changes); {
		rev := changes[i].Rev
		j := i
		for j < len(changes) && changes[j].Rev == rev {
			j++
		}
		touched = touched[:0]
		for k := i; k < j; k++ {
			ev := changes[k].Event
			h.synced.each(ev.Kv.Key, func(w *watcher) {
				if w.minRev > rev || !w.wants(ev) {
					return
				}
				e := ev
				if !w.prevKV && ev.PrevKv != nil {
					e = stripped[k]
					if e == nil {
						e = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
						stripped[k] = e
					}
				}
				if !w.touched {
					w.touched = true
					touched = append(touched, w)
				}
				w.buf = append(w.buf, e)
			})
		}
		if len(touched) > 0 {
			hdr := h.srv.header(rev)
			for _, w := range touched {
				st := w.st
				st.pend = append(st.pend, outMsg{
					resp: &pb.WatchResponse{Header: hdr, WatchId: w.id, Events: w.buf},
					kind: kindEvents, fragment: w.fragment, w: w, rev: rev,
				})
				if !st.inPend {
					st.inPend = true
					h.touchedStreams = append(h.touchedStreams, st)
				}
				w.buf, w.touched = nil, false
			}
		}
		i = j
	}
	h.flush()
}

// flush queues every stream's pending responses; a watcher whose response
// is refused becomes unsynced at that revision.
func (h *hub) flush() {
	for _, st := range h.touchedStreams {
		n := st.pushBatch(st.pend)
		for i, m := range st.pend {
			if i < n {
				if m.w.lastRev < m.rev {
					m.w.lastRev = m.rev
				}
			} else if m.w.state == stSynced {
				h.synced.remove(m.w)
				m.w.state = stUnsynced
				m.w.minRev = m.rev
				h.unsynced[m.w] = struct{}{}
			}
			st.pend[i] = outMsg{}
		}
		st.pend = st.pend[:0]
		st.inPend = false
	}
	h.touchedStreams = h.touchedStreams[:0]
}

// afterCursor answers progress requests the cursor now covers and lets
// unsynced watchers continue.
func (h *hub) afterCursor() {
	for st := range h.progressStreams {
		h.answerProgress(st)
	}
	h.catchup()
}

// join moves an unsynced (or new) watcher to the synced group if it may.
func (h *hub) join(w *watcher) bool {
	if w.minRev <= h.cursor {
		return false
	}
	if h.reading && w.minRev <= h.readTo && w.seq > h.readSeq {
		return false
	}
	if w.state == stUnsynced {
		delete(h.unsynced, w)
	}
	w.state = stSynced
	h.synced.add(w)
	return true
}

func (h *hub) remove(w *watcher) {
	switch w.state {
	case stSynced:
		h.synced.remove(w)
	case stUnsynced:
		delete(h.unsynced, w)
	}
	if w.state != stRemoved {
		h.count--
		h.allDirty = true
	}
	w.state = stRemoved
}

// catchup starts a catch-up read for the unsynced watchers whose streams
// have room, oldest first, or answers their compaction.
func (h *hub) catchup() {
	if h.catching || len(h.unsynced) == 0 {
		return
	}
	_, compacted := h.src.Revs()
	var cands []*watcher
	for w := range h.unsynced {
		if w.st.room() {
			cands = append(cands, w)
		}
	}
	slices.SortFunc(cands, func(a, b *watcher) int {
		switch {
		case a.minRev < b.minRev:
			return -1
		case a.minRev > b.minRev:
			return 1
		}
		return 0
	})
	to := h.readTo
	var chosen []*watcher
	b := bounds{empty: true}
	from := int64(0)
	for _, w := range cands {
		if len(chosen) >= h.srv.opts.maxCatchup {
			break
		}
		if w.minRev < compacted {
			resp := &pb.WatchResponse{
				Header:  h.srv.header(0),
				WatchId: w.id, Canceled: true, CompactRevision: compacted,
			}
			if w.st.push(outMsg{resp: resp, kind: kindEvents}) {
				delete(h.unsynced, w)
				w.state = stCompacted
			}
			continue
		}
		if w.minRev > to {
			h.join(w)
			continue
		}
		if from == 0 || w.minRev < from {
			from = w.minRev
		}
		b = b.union(w.span.bounds())
		chosen = append(chosen, w)
	}
	if len(chosen) == 0 {
		return
	}
	h.catching = true
	key, end := b.request()
	limit := h.srv.opts.readLimit
	go func() {
		ch, err := h.src.Changes(context.Background(), key, end, from, to, limit)
		h.reply(&catchupResult{ws: chosen, to: to, changes: ch, err: err})
	}()
}

func (h *hub) catchupDone(r *catchupResult) {
	h.catching = false
	if r.err != nil {
		if !errors.Is(r.err, mvcc.ErrCompacted) {
			h.lg.Warn("watch: catch-up read failed", zap.Error(r.err))
		}
		return // retried on the next resync tick
	}
	end := r.to
	if n := len(r.changes); n >= h.srv.opts.readLimit && n > 0 {
		end = r.changes[n-1].Rev
	}
	// The header is the end of the read, not the current revision as
	// etcd has it: the synced events that follow start right after it, so
	// header revisions never go back.
	hdr := h.srv.header(r.to)
	for _, w := range r.ws {
		if w.state != stUnsynced {
			continue
		}
		var evs []*mvccpb.Event
		upTo := end
		revs := 0
		last := int64(0)
		for _, c := range r.changes {
			if c.Rev < w.minRev || c.Rev > end {
				continue
			}
			ev := c.Event
			if !w.span.contains(ev.Kv.Key) || !w.wants(ev) {
				continue
			}
			if c.Rev != last {
				revs++
				if revs > h.srv.opts.maxBatchRevs {
					upTo = c.Rev - 1
					break
				}
				last = c.Rev
			}
			if !w.prevKV && ev.PrevKv != nil {
				ev = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			}
			evs = append(evs, ev)
		}
		if len(evs) > 0 {
			if !w.st.push(outMsg{resp: &pb.WatchResponse{Header: hdr, WatchId: w.id, Events: evs}, kind: kindEvents, fragment: w.fragment}) {
				continue
			}
			w.lastRev = max(w.lastRev, hdr.Revision)
		}
		// A read that began below this watcher's minRev may end before
		// it: minRev never goes back.
		w.minRev = max(w.minRev, upTo+1)
		if w.minRev > r.to {
			h.join(w)
		}
	}
	h.catchup()
}

func (h *hub) create(st *stream, creq *pb.WatchCreateRequest) {
	cur := h.src.Current()
	fail := func(reason string) {
		st.push(outMsg{
			resp: &pb.WatchResponse{Header: h.srv.header(cur), WatchId: -1, Created: true, Canceled: true, CancelReason: reason},
			kind: kindCtrlErr, token: true,
		})
	}
	if st.watchers == nil { // closed
		st.releaseToken()
		return
	}
	if creq.StartRevision < 0 {
		fail(errCompacted)
		return
	}
	key := creq.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	var end []byte
	switch {
	case len(creq.RangeEnd) == 0:
	case len(creq.RangeEnd) == 1 && creq.RangeEnd[0] == 0:
		end = []byte{}
	default:
		end = creq.RangeEnd
	}
	if len(end) != 0 && string(key) >= string(end) {
		fail(errEmptyRange)
		return
	}
	id := creq.WatchId
	if id == autoWatchID {
		for st.watchers[st.nextID] != nil {
			st.nextID++
		}
		id = st.nextID
		st.nextID++
	} else if st.watchers[id] != nil {
		fail(errDuplicateID)
		return
	}
	h.seq++
	w := &watcher{
		id: id, st: st, span: span{key: key, end: end},
		prevKV: creq.PrevKv, fragment: creq.Fragment, startRev: creq.StartRevision,
		seq: h.seq, slot: -1, state: stUnsynced,
		minRev: creq.StartRevision, readyRev: max(creq.StartRevision, cur),
	}
	for _, f := range creq.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	if w.minRev == 0 {
		w.minRev = cur + 1
	}
	st.watchers[id] = w
	st.push(outMsg{
		resp: &pb.WatchResponse{Header: h.srv.header(cur), WatchId: id, Created: true},
		kind: kindCreated, progress: creq.ProgressNotify, token: true,
	})
	w.lastRev = cur
	h.count++
	if !h.allDirty {
		h.all = h.all.union(w.span.bounds())
	}
	if !h.join(w) {
		h.unsynced[w] = struct{}{}
		h.catchup()
	}
}

func (h *hub) cancel(st *stream, id int64) {
	w := st.watchers[id]
	if w == nil {
		st.releaseToken()
		return
	}
	h.remove(w)
	delete(st.watchers, id)
	st.push(outMsg{
		resp: &pb.WatchResponse{Header: h.srv.header(h.src.Current()), WatchId: id, Canceled: true},
		kind: kindCanceled, token: true,
	})
}

// progressEligible is etcd's "synced and rev >= startRev" at the cursor.
func (h *hub) progressEligible(w *watcher) bool {
	return w.state == stSynced && h.cursor >= w.readyRev && h.cursor >= w.lastRev
}

// progressAll is a WatchProgressRequest: answered (watch id -1, header at
// the cursor) once the cursor reaches the current revision of the moment
// of the request, if every watcher of the stream is synced then; dropped
// otherwise, as etcd drops it. A stream without watchers gets nothing.
func (h *hub) progressAll(st *stream) {
	if len(st.watchers) == 0 || len(st.progressWant) >= ctrlTokens {
		return
	}
	st.progressWant = append(st.progressWant, h.src.Current())
	h.progressStreams[st] = struct{}{}
	h.answerProgress(st)
}

func (h *hub) answerProgress(st *stream) {
	n := 0
	for _, target := range st.progressWant {
		if target > h.cursor {
			break
		}
		n++
	}
	if n == 0 {
		return
	}
	st.progressWant = st.progressWant[n:]
	if len(st.progressWant) == 0 {
		delete(h.progressStreams, st)
	}
	if len(st.watchers) == 0 {
		return
	}
	for _, w := range st.watchers {
		if !h.progressEligible(w) {
			return
		}
	}
	hdr := h.srv.header(h.cursor)
	for range n {
		if !st.push(outMsg{resp: &pb.WatchResponse{Header: hdr, WatchId: -1}, kind: kindEvents}) {
			return
		}
	}
	for _, w := range st.watchers {
		w.lastRev = max(w.lastRev, h.cursor)
	}
}

// tick is the stream's progress timer: a notification for each listed
// watcher that is synced.
func (h *hub) tick(st *stream, ids []int64) {
	for _, id := range ids {
		w := st.watchers[id]
		if w == nil || !h.progressEligible(w) {
			continue
		}
		if st.push(outMsg{resp: &pb.WatchResponse{Header: h.srv.header(h.cursor), WatchId: id}, kind: kindEvents, fragment: w.fragment}) {
			w.lastRev = max(w.lastRev, h.cursor)
		}
	}
}
