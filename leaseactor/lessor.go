package leaseactor

import (
	"container/heap"
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// ErrNotFound: the lease does not exist or has expired.
var ErrNotFound = errors.New("leaseactor: lease not found")

// Config configures a Lessor.
type Config struct {
	// Revoke revokes an expired lease (deleting its keys at one revision).
	// It returns ErrNotFound if the lease is already gone.
	Revoke func(ctx context.Context, id int64) error
	// Checkpoint records remaining TTLs in the replicated state.
	Checkpoint func(ctx context.Context, cps []*raftcmdpb.LeaseCheckpoint) error
	// CheckpointInterval: a lease with more remaining TTL than this is
	// checkpointed this long after it was granted, promoted or last
	// checkpointed (etcd's default is 5 minutes).
	CheckpointInterval time.Duration
	// NoCheckpoints: no remaining TTL is ever recorded (etcd's default).
	NoCheckpoints bool
	// Extend is added to every lease's TTL when the lessor starts (etcd's
	// Promote extends leases by one election timeout on a new leader, so a
	// restart never cuts a lease). Zero: etcd's default election timeout,
	// one second; negative: none.
	Extend time.Duration
	// Tick is how often expiries and checkpoints are checked (default 100ms).
	Tick time.Duration
	// RevokeRate is how many expired leases may start their revoke per
	// second (default 1000, etcd's leaseRevokeRate); MaxRevoking bounds the
	// revokes in flight (default 64).
	RevokeRate  int
	MaxRevoking int
	// RetryInterval is how long a failed revoke waits before its retry
	// (default 1s). The lease stays expired meanwhile.
	RetryInterval time.Duration
	Logger        *zap.Logger
}

// Leases is the replicated lease table the lessor starts from
// (revision.View's lease set).
type Leases interface {
	All() []*raftcmdpb.Lease
}

// Lessor is the handle to the lease actor.
type Lessor struct {
	root *actor.RootContext
	pid  *actor.PID
	stop chan struct{}
	cpw  *checkpointWriter
	done sync.WaitGroup
}

const (
	maxCheckpointBatch = 1000 // etcd's maxLeaseCheckpointBatchSize
	defaultRevokeRate  = 1000 // etcd's leaseRevokeRate
)

// Start spawns the lease actor, tracking the given leases from now: each
// from its checkpointed remaining TTL, or its full TTL, plus Extend.
func Start(sys *actor.ActorSystem, c Config, leases Leases) (*Lessor, error) {
	if c.Tick <= 0 {
		c.Tick = 100 * time.Millisecond
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 5 * time.Minute
	}
	switch {
	case c.Extend == 0:
		c.Extend = time.Second
	case c.Extend < 0:
		c.Extend = 0
	}
	if c.RevokeRate <= 0 {
		c.RevokeRate = defaultRevokeRate
	}
	if c.MaxRevoking <= 0 {
		c.MaxRevoking = 64
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	var initial []*raftcmdpb.Lease
	if leases != nil {
		initial = leases.All()
	}
	l := &Lessor{root: sys.Root, stop: make(chan struct{})}
	l.cpw = newCheckpointWriter(c.Checkpoint, c.Logger)
	props := actor.PropsFromProducer(func() actor.Actor { return newState(c, initial, l.cpw) })
	pid, err := sys.Root.SpawnNamed(props, "lessor")
	if err != nil {
		return nil, err
	}
	l.pid = pid
	l.done.Add(2)
	go func() { defer l.done.Done(); l.cpw.run(l.stop) }()
	go func() { defer l.done.Done(); l.ticker(c.Tick) }()
	return l, nil
}

func (l *Lessor) ticker(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.root.Send(l.pid, tickMsg{})
		}
	}
}

// Stop stops the actor.
func (l *Lessor) Stop() {
	close(l.stop)
	l.cpw.wake()
	_ = l.root.StopFuture(l.pid).Wait()
	l.done.Wait()
}

// Granted starts tracking a new lease.
func (l *Lessor) Granted(id, ttl int64) { l.root.Send(l.pid, grantedMsg{id: id, ttl: ttl}) }

// Revoked stops tracking a lease.
func (l *Lessor) Revoked(id int64) { l.root.Send(l.pid, revokedMsg{id: id}) }

// Renew restarts a lease's TTL and returns it; ErrNotFound if the lease is
// unknown or already expired. A lease whose remaining TTL was checkpointed
// has the checkpoint cleared (committed) before it is renewed, as in etcd,
// so a restart after the answer never cuts the lease.
func (l *Lessor) Renew(ctx context.Context, id int64) (int64, error) {
	reply := make(chan renewReply, 1)
	l.root.Send(l.pid, renewMsg{id: id, reply: reply})
	select {
	case r := <-reply:
		return r.ttl, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Remaining returns a lease's remaining time and granted TTL.
func (l *Lessor) Remaining(ctx context.Context, id int64) (time.Duration, int64, error) {
	reply := make(chan remainingReply, 1)
	l.root.Send(l.pid, remainingMsg{id: id, reply: reply})
	select {
	case r := <-reply:
		return r.left, r.ttl, r.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// Expiries returns the expiry of every tracked lease.
func (l *Lessor) Expiries(ctx context.Context) (map[int64]time.Time, error) {
	reply := make(chan map[int64]time.Time, 1)
	l.root.Send(l.pid, expiriesMsg{reply: reply})
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type tickMsg struct{}
type grantedMsg struct{ id, ttl int64 }
type revokedMsg struct{ id int64 }
type revokeDoneMsg struct {
	id  int64
	err error
}
type checkpointedMsg struct {
	ids []int64
	err error
}
type renewMsg struct {
	id    int64
	reply chan renewReply
}
type clearedMsg struct {
	id    int64
	err   error
	reply chan renewReply
}
type renewReply struct {
	ttl int64
	err error
}
type remainingMsg struct {
	id    int64
	reply chan remainingReply
}
type remainingReply struct {
	left time.Duration
	ttl  int64
	err  error
}
type expiriesMsg struct{ reply chan map[int64]time.Time }

// lease is one lease's time.
type lease struct {
	id     int64
	ttl    int64
	expiry time.Time
	// expired: its revoke has started; it can no longer be renewed.
	expired   bool
	revoking  bool
	due       time.Time // when the expiry heap next looks at it
	dueIndex  int       // in the expiry heap, -1 if not
	cpAt      time.Time // next scheduled checkpoint
	cpIndex   int       // in the checkpoint heap, -1 if not
	remaining int64     // the replicated checkpointed remaining TTL (0: none)
}

// left is what a restart would start the lease from, as etcd's
// getRemainingTTL.
func (l *lease) left() int64 {
	if l.remaining > 0 {
		return l.remaining
	}
	return l.ttl
}

// state is the actor: leases by id, a heap by expiry and a heap of
// scheduled checkpoints.
type state struct {
	cfg      Config
	self     *actor.PID
	leases   map[int64]*lease
	byExpiry leaseHeap
	byCp     leaseHeap
	cpw      *checkpointWriter
	revoking int
	// revokeBudget is how many revokes may still start this second.
	revokeBudget  float64
	lastBudgetAdd time.Time
}

func newState(c Config, initial []*raftcmdpb.Lease, cpw *checkpointWriter) *state {
	s := &state{cfg: c, leases: map[int64]*lease{}, cpw: cpw, revokeBudget: float64(c.RevokeRate) / 2}
	s.byExpiry = leaseHeap{at: func(l *lease) time.Time { return l.due }, idx: func(l *lease) *int { return &l.dueIndex }}
	s.byCp = leaseHeap{at: func(l *lease) time.Time { return l.cpAt }, idx: func(l *lease) *int { return &l.cpIndex }}
	now := time.Now()
	for _, le := range initial {
		l := &lease{id: le.Id, ttl: le.Ttl, remaining: le.Remaining, dueIndex: -1, cpIndex: -1}
		l.expiry = now.Add(c.Extend + time.Duration(l.left())*time.Second)
		s.add(l, now)
	}
	s.lastBudgetAdd = now
	return s
}

// add tracks l (replacing a lease with its id) and schedules its checkpoint.
func (s *state) add(l *lease, now time.Time) {
	s.remove(l.id)
	s.leases[l.id] = l
	l.due = l.expiry
	heap.Push(&s.byExpiry, l)
	s.scheduleCheckpoint(l, now)
}

// scheduleCheckpoint schedules l's next checkpoint if its remaining TTL is
// longer than the interval (etcd's scheduleCheckpointIfNeeded).
func (s *state) scheduleCheckpoint(l *lease, now time.Time) {
	if s.cfg.NoCheckpoints || l.cpIndex >= 0 || l.left() <= int64(s.cfg.CheckpointInterval.Seconds()) {
		return
	}
	l.cpAt = now.Add(s.cfg.CheckpointInterval)
	heap.Push(&s.byCp, l)
}

func (s *state) remove(id int64) {
	l, ok := s.leases[id]
	if !ok {
		return
	}
	if l.dueIndex >= 0 {
		heap.Remove(&s.byExpiry, l.dueIndex)
	}
	if l.cpIndex >= 0 {
		heap.Remove(&s.byCp, l.cpIndex)
	}
	delete(s.leases, id)
}

func (s *state) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.self = ctx.Self()
	case grantedMsg:
		now := time.Now()
		s.add(&lease{id: m.id, ttl: m.ttl, expiry: now.Add(time.Duration(m.ttl) * time.Second), dueIndex: -1, cpIndex: -1}, now)
	case revokedMsg:
		s.remove(m.id)
	case renewMsg:
		l, ok := s.leases[m.id]
		if !ok || l.expired || !time.Now().Before(l.expiry) {
			m.reply <- renewReply{err: ErrNotFound}
			return
		}
		if l.remaining > 0 {
			// Clear the checkpoint first (etcd's Renew waits for it too).
			l.remaining = 0
			id, reply, self, root := l.id, m.reply, s.self, ctx.ActorSystem().Root
			s.cpw.write([]*raftcmdpb.LeaseCheckpoint{{Id: id, Remaining: 0}}, func(err error) {
				root.Send(self, clearedMsg{id: id, err: err, reply: reply})
			})
			return
		}
		s.renew(l, m.reply)
	case clearedMsg:
		if m.err != nil {
			m.reply <- renewReply{err: m.err}
			return
		}
		l, ok := s.leases[m.id]
		if !ok || l.expired {
			m.reply <- renewReply{err: ErrNotFound}
			return
		}
		s.renew(l, m.reply)
	case remainingMsg:
		l, ok := s.leases[m.id]
		if !ok {
			m.reply <- remainingReply{err: ErrNotFound}
			return
		}
		m.reply <- remainingReply{left: time.Until(l.expiry), ttl: l.ttl}
	case expiriesMsg:
		out := make(map[int64]time.Time, len(s.leases))
		for id, l := range s.leases {
			out[id] = l.expiry
		}
		m.reply <- out
	case tickMsg:
		now := time.Now()
		s.expire(ctx, now)
		s.checkpoint(ctx, now)
	case revokeDoneMsg:
		s.revoking--
		l, ok := s.leases[m.id]
		if !ok {
			return
		}
		l.revoking = false
		if m.err == nil || errors.Is(m.err, ErrNotFound) {
			s.remove(m.id)
			return
		}
		// Retry later; the lease stays expired (not renewable) meanwhile.
		s.cfg.Logger.Warn("revoking an expired lease failed; retrying", zap.Int64("lease", m.id), zap.Error(m.err))
		l.due = time.Now().Add(s.cfg.RetryInterval)
		heap.Push(&s.byExpiry, l)
	case checkpointedMsg:
		// etcd schedules the next checkpoint when one applies.
		if m.err != nil {
			return
		}
		now := time.Now()
		for _, id := range m.ids {
			if l, ok := s.leases[id]; ok && !l.expired {
				s.scheduleCheckpoint(l, now)
			}
		}
	}
}

func (s *state) renew(l *lease, reply chan renewReply) {
	l.expiry = time.Now().Add(time.Duration(l.ttl) * time.Second)
	l.due = l.expiry
	if l.dueIndex >= 0 {
		heap.Fix(&s.byExpiry, l.dueIndex)
	} else if !l.revoking {
		heap.Push(&s.byExpiry, l)
	}
	reply <- renewReply{ttl: l.ttl}
}

// expire starts the revoke of leases past their expiry, at most RevokeRate
// a second and MaxRevoking at once. A lease being revoked is out of the
// heap until its revoke settles.
func (s *state) expire(ctx actor.Context, now time.Time) {
	rate := float64(s.cfg.RevokeRate)
	s.revokeBudget = min(rate/2, s.revokeBudget+rate*now.Sub(s.lastBudgetAdd).Seconds())
	s.lastBudgetAdd = now
	for s.byExpiry.Len() > 0 && s.revoking < s.cfg.MaxRevoking && s.revokeBudget >= 1 {
		l := s.byExpiry.items[0]
		if l.due.After(now) {
			break
		}
		heap.Pop(&s.byExpiry)
		if l.cpIndex >= 0 {
			heap.Remove(&s.byCp, l.cpIndex)
		}
		l.expired, l.revoking = true, true
		s.revoking++
		s.revokeBudget--
		id, revoke, self, root := l.id, s.cfg.Revoke, s.self, ctx.ActorSystem().Root
		go func() {
			c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			root.Send(self, revokeDoneMsg{id: id, err: revoke(c, id)})
		}()
	}
}

// checkpoint records the remaining TTL of the leases whose checkpoint is
// due, as etcd's findDueScheduledCheckpoints: rounded up, and only when
// less than the TTL.
func (s *state) checkpoint(ctx actor.Context, now time.Time) {
	var cps []*raftcmdpb.LeaseCheckpoint
	var ids []int64
	for s.byCp.Len() > 0 && len(cps) < maxCheckpointBatch {
		l := s.byCp.items[0]
		if l.cpAt.After(now) {
			break
		}
		heap.Pop(&s.byCp)
		if l.expired || !now.Before(l.expiry) {
			continue
		}
		left := int64(math.Ceil(l.expiry.Sub(now).Seconds()))
		if left >= l.ttl {
			// Just renewed: nothing to record now. (etcd drops the lease
			// from its schedule here; looking again later is safer.)
			s.scheduleCheckpoint(l, now)
			continue
		}
		l.remaining = left
		cps = append(cps, &raftcmdpb.LeaseCheckpoint{Id: l.id, Remaining: left})
		ids = append(ids, l.id)
	}
	if len(cps) == 0 {
		return
	}
	self, root := s.self, ctx.ActorSystem().Root
	s.cpw.write(cps, func(err error) { root.Send(self, checkpointedMsg{ids: ids, err: err}) })
}

// checkpointWriter records checkpoints in the order the actor asked for
// them (a clear on renew must not be overtaken by an older checkpoint of
// the same lease), merging what queued up into one oracle command.
type checkpointWriter struct {
	record func(ctx context.Context, cps []*raftcmdpb.LeaseCheckpoint) error
	lg     *zap.Logger
	mu     sync.Mutex
	queue  []cpJob
	signal chan struct{}
}

type cpJob struct {
	cps  []*raftcmdpb.LeaseCheckpoint
	done func(error)
}

func newCheckpointWriter(record func(context.Context, []*raftcmdpb.LeaseCheckpoint) error, lg *zap.Logger) *checkpointWriter {
	if record == nil {
		record = func(context.Context, []*raftcmdpb.LeaseCheckpoint) error { return nil }
	}
	return &checkpointWriter{record: record, lg: lg, signal: make(chan struct{}, 1)}
}

func (w *checkpointWriter) write(cps []*raftcmdpb.LeaseCheckpoint, done func(error)) {
	w.mu.Lock()
	w.queue = append(w.queue, cpJob{cps: cps, done: done})
	w.mu.Unlock()
	w.wake()
}

func (w *checkpointWriter) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *checkpointWriter) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-w.signal:
		}
		for {
			w.mu.Lock()
			jobs := w.queue
			w.queue = nil
			w.mu.Unlock()
			if len(jobs) == 0 {
				break
			}
			var cps []*raftcmdpb.LeaseCheckpoint
			for _, j := range jobs {
				cps = append(cps, j.cps...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := w.record(ctx, cps)
			cancel()
			if err != nil {
				w.lg.Warn("lease checkpoint failed", zap.Int("leases", len(cps)), zap.Error(err))
			}
			for _, j := range jobs {
				if j.done != nil {
					j.done(err)
				}
			}
		}
	}
}

// leaseHeap orders leases by a time of theirs, keeping each one's index.
type leaseHeap struct {
	items []*lease
	at    func(*lease) time.Time
	idx   func(*lease) *int
}

func (h leaseHeap) Len() int           { return len(h.items) }
func (h leaseHeap) Less(i, j int) bool { return h.at(h.items[i]).Before(h.at(h.items[j])) }
func (h leaseHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	*h.idx(h.items[i]) = i
	*h.idx(h.items[j]) = j
}
func (h *leaseHeap) Push(x any) {
	l := x.(*lease)
	*h.idx(l) = len(h.items)
	h.items = append(h.items, l)
}
func (h *leaseHeap) Pop() any {
	old := h.items
	l := old[len(old)-1]
	old[len(old)-1] = nil
	h.items = old[:len(old)-1]
	*h.idx(l) = -1
	return l
}
