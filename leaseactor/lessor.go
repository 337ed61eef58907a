package leaseactor

import (
	"container/heap"
	"context"
	"errors"
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
	Revoke func(ctx context.Context, id int64) error
	// Checkpoint records remaining TTLs in the replicated state.
	Checkpoint func(ctx context.Context, cps []*raftcmdpb.LeaseCheckpoint) error
	// CheckpointInterval: leases with more remaining TTL than this are
	// checkpointed this often (etcd's default is 5 minutes).
	CheckpointInterval time.Duration
	// Tick is how often expiries are checked (default 100ms).
	Tick   time.Duration
	Logger *zap.Logger
}

// Lessor is the handle to the lease actor.
type Lessor struct {
	root *actor.RootContext
	pid  *actor.PID
	stop chan struct{}
}

// Start spawns the lease actor, tracking the given leases from now.
func Start(sys *actor.ActorSystem, c Config, leases map[int64]*raftcmdpb.Lease) (*Lessor, error) {
	if c.Tick <= 0 {
		c.Tick = 100 * time.Millisecond
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 5 * time.Minute
	}
	l := &Lessor{root: sys.Root, stop: make(chan struct{})}
	initial := make([]*raftcmdpb.Lease, 0, len(leases))
	for _, le := range leases {
		initial = append(initial, le)
	}
	props := actor.PropsFromProducer(func() actor.Actor { return newState(c, initial) })
	pid, err := sys.Root.SpawnNamed(props, "lessor")
	if err != nil {
		return nil, err
	}
	l.pid = pid
	go l.ticker(c.Tick, c.CheckpointInterval)
	return l, nil
}

func (l *Lessor) ticker(tick, checkpoint time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	c := time.NewTicker(checkpoint)
	defer c.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.root.Send(l.pid, tickMsg{})
		case <-c.C:
			l.root.Send(l.pid, checkpointMsg{})
		}
	}
}

// Stop stops the actor.
func (l *Lessor) Stop() {
	close(l.stop)
	_ = l.root.StopFuture(l.pid).Wait()
}

// Granted starts tracking a new lease.
func (l *Lessor) Granted(id, ttl int64) { l.root.Send(l.pid, grantedMsg{id: id, ttl: ttl}) }

// Revoked stops tracking a lease.
func (l *Lessor) Revoked(id int64) { l.root.Send(l.pid, revokedMsg{id: id}) }

// Renew restarts a lease's TTL and returns it; ErrNotFound if the lease is
// unknown or already expired.
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

type tickMsg struct{}
type checkpointMsg struct{}
type grantedMsg struct{ id, ttl int64 }
type revokedMsg struct{ id int64 }
type revokeDoneMsg struct {
	id  int64
	err error
}
type renewMsg struct {
	id    int64
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

// lease is one lease's time.
type lease struct {
	id       int64
	ttl      int64
	expiry   time.Time
	revoking bool
	// checkpointed is the remaining TTL last recorded (0: none).
	checkpointed int64
	index        int // in the heap
}

// state is the actor: leases by id and a heap by expiry.
type state struct {
	cfg    Config
	self   *actor.PID
	leases map[int64]*lease
	byTime expiryHeap
}

func newState(c Config, initial []*raftcmdpb.Lease) *state {
	s := &state{cfg: c, leases: map[int64]*lease{}}
	now := time.Now()
	for _, le := range initial {
		left := le.Ttl
		if le.Remaining > 0 {
			left = le.Remaining
		}
		s.add(&lease{id: le.Id, ttl: le.Ttl, expiry: now.Add(time.Duration(left) * time.Second), checkpointed: le.Remaining})
	}
	return s
}

func (s *state) add(l *lease) {
	if old, ok := s.leases[l.id]; ok && old.index >= 0 {
		heap.Remove(&s.byTime, old.index)
	}
	s.leases[l.id] = l
	heap.Push(&s.byTime, l)
}

func (s *state) remove(id int64) {
	if l, ok := s.leases[id]; ok {
		if l.index >= 0 {
			heap.Remove(&s.byTime, l.index)
		}
		delete(s.leases, id)
	}
}

func (s *state) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.self = ctx.Self()
	case grantedMsg:
		s.add(&lease{id: m.id, ttl: m.ttl, expiry: time.Now().Add(time.Duration(m.ttl) * time.Second)})
	case revokedMsg:
		s.remove(m.id)
	case renewMsg:
		l, ok := s.leases[m.id]
		if !ok || l.revoking || !time.Now().Before(l.expiry) {
			m.reply <- renewReply{err: ErrNotFound}
			return
		}
		l.expiry = time.Now().Add(time.Duration(l.ttl) * time.Second)
		heap.Fix(&s.byTime, l.index)
		if l.checkpointed > 0 {
			l.checkpointed = 0
			s.checkpoint(ctx, []*raftcmdpb.LeaseCheckpoint{{Id: l.id, Remaining: 0}})
		}
		m.reply <- renewReply{ttl: l.ttl}
	case remainingMsg:
		l, ok := s.leases[m.id]
		if !ok {
			m.reply <- remainingReply{err: ErrNotFound}
			return
		}
		m.reply <- remainingReply{left: time.Until(l.expiry), ttl: l.ttl}
	case tickMsg:
		s.expire(ctx)
	case revokeDoneMsg:
		l, ok := s.leases[m.id]
		if !ok {
			return
		}
		if m.err == nil || errors.Is(m.err, ErrNotFound) {
			s.remove(m.id)
			return
		}
		// Retry a failed revoke a little later.
		s.cfg.Logger.Warn("revoking an expired lease failed; retrying", zap.Int64("lease", m.id), zap.Error(m.err))
		l.revoking = false
		l.expiry = time.Now().Add(time.Second)
		heap.Push(&s.byTime, l)
	case checkpointMsg:
		var cps []*raftcmdpb.LeaseCheckpoint
		for _, l := range s.leases {
			left := int64(time.Until(l.expiry).Seconds())
			if !l.revoking && left > int64(s.cfg.CheckpointInterval.Seconds()) {
				l.checkpointed = left
				cps = append(cps, &raftcmdpb.LeaseCheckpoint{Id: l.id, Remaining: left})
			}
		}
		if len(cps) > 0 {
			s.checkpoint(ctx, cps)
		}
	}
}

// expire starts the revoke of every lease past its expiry. A lease being
// revoked leaves the heap (index -1) until its revoke settles.
func (s *state) expire(ctx actor.Context) {
	now := time.Now()
	for s.byTime.Len() > 0 {
		l := s.byTime[0]
		if l.expiry.After(now) {
			break
		}
		heap.Pop(&s.byTime)
		l.revoking = true
		id, revoke, self, root := l.id, s.cfg.Revoke, s.self, ctx.ActorSystem().Root
		go func() {
			c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			root.Send(self, revokeDoneMsg{id: id, err: revoke(c, id)})
		}()
	}
}

func (s *state) checkpoint(ctx actor.Context, cps []*raftcmdpb.LeaseCheckpoint) {
	record := s.cfg.Checkpoint
	lg := s.cfg.Logger
	go func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := record(c, cps); err != nil {
			lg.Warn("lease checkpoint failed", zap.Error(err))
		}
	}()
}

// expiryHeap orders leases by expiry.
type expiryHeap []*lease

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *expiryHeap) Push(x any) {
	l := x.(*lease)
	l.index = len(*h)
	*h = append(*h, l)
}
func (h *expiryHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.index = -1
	return l
}
