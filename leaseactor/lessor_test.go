package leaseactor

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// fake records what the lessor asks of the replicated state.
type fake struct {
	mu        sync.Mutex
	revoked   map[int64]time.Time
	revokes   int
	failFirst int // revokes that fail before one succeeds
	cps       []*raftcmdpb.LeaseCheckpoint
	inflight  atomic.Int32
	maxFlight atomic.Int32
	block     chan struct{} // if set, revokes wait for it
}

func (f *fake) revoke(ctx context.Context, id int64) error {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxFlight.Load()
		if n <= m || f.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokes++
	if f.revokes <= f.failFirst {
		return errors.New("injected revoke failure")
	}
	if _, ok := f.revoked[id]; ok {
		return ErrNotFound
	}
	f.revoked[id] = time.Now()
	return nil
}

func (f *fake) checkpoint(ctx context.Context, cps []*raftcmdpb.LeaseCheckpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cps = append(f.cps, cps...)
	return nil
}

func (f *fake) revokedAt(id int64) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.revoked[id]
	return t, ok
}

func (f *fake) checkpoints() []*raftcmdpb.LeaseCheckpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*raftcmdpb.LeaseCheckpoint(nil), f.cps...)
}

type leaseTable []*raftcmdpb.Lease

func (t leaseTable) All() []*raftcmdpb.Lease { return t }

func start(t *testing.T, f *fake, c Config, initial ...*raftcmdpb.Lease) *Lessor {
	t.Helper()
	if f.revoked == nil {
		f.revoked = map[int64]time.Time{}
	}
	c.Revoke, c.Checkpoint = f.revoke, f.checkpoint
	if c.Tick == 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.Extend == 0 {
		c.Extend = -1
	}
	l, err := Start(actor.NewActorSystem(), c, leaseTable(initial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	return l
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestExpiryRevokesOnceAtTTL(t *testing.T) {
	t.Parallel()
	f := &fake{}
	l := start(t, f, Config{})
	granted := time.Now()
	l.Granted(1, 1)
	l.Granted(2, 3)
	waitFor(t, "lease 1 revoked", 3*time.Second, func() bool { _, ok := f.revokedAt(1); return ok })
	at, _ := f.revokedAt(1)
	if d := at.Sub(granted); d < time.Second || d > 1300*time.Millisecond {
		t.Errorf("lease with TTL 1s revoked after %s", d)
	}
	if _, err := l.Renew(ctx(t), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew of expired lease: %v, want ErrNotFound", err)
	}
	if _, _, err := l.Remaining(ctx(t), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("remaining of revoked lease: %v, want ErrNotFound", err)
	}
	left, ttl, err := l.Remaining(ctx(t), 2)
	if err != nil || ttl != 3 || left <= time.Second || left > 2*time.Second {
		t.Errorf("lease 2 remaining %s ttl %d err %v, want ~1.9s of 3", left, ttl, err)
	}
	f.mu.Lock()
	n := f.revokes
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("%d revokes, want 1", n)
	}
}

func TestRenewKeepsLeaseAlive(t *testing.T) {
	t.Parallel()
	f := &fake{}
	l := start(t, f, Config{})
	l.Granted(7, 1)
	for range 6 {
		time.Sleep(300 * time.Millisecond)
		ttl, err := l.Renew(ctx(t), 7)
		if err != nil || ttl != 1 {
			t.Fatalf("renew: ttl %d err %v", ttl, err)
		}
	}
	if _, ok := f.revokedAt(7); ok {
		t.Fatal("lease revoked while kept alive")
	}
	renewed := time.Now()
	waitFor(t, "revoked after renewals stop", 3*time.Second, func() bool { _, ok := f.revokedAt(7); return ok })
	at, _ := f.revokedAt(7)
	if d := at.Sub(renewed); d < time.Second-20*time.Millisecond {
		t.Errorf("revoked %s after the last renewal, want ≥ 1s", d)
	}
	if _, err := l.Renew(ctx(t), 99); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew of unknown lease: %v", err)
	}
}

func TestStartFromCheckpointPlusExtend(t *testing.T) {
	t.Parallel()
	f := &fake{}
	begin := time.Now()
	l := start(t, f, Config{Extend: 500 * time.Millisecond},
		&raftcmdpb.Lease{Id: 1, Ttl: 100, Remaining: 1}, // checkpointed: 1s left
		&raftcmdpb.Lease{Id: 2, Ttl: 2})                 // never checkpointed: full TTL
	left, _, err := l.Remaining(ctx(t), 1)
	if err != nil || left < 1400*time.Millisecond || left > 1500*time.Millisecond {
		t.Errorf("lease 1 starts with %s (err %v), want 1s + 0.5s", left, err)
	}
	left, _, _ = l.Remaining(ctx(t), 2)
	if left < 2400*time.Millisecond || left > 2500*time.Millisecond {
		t.Errorf("lease 2 starts with %s, want 2s + 0.5s", left)
	}
	waitFor(t, "lease 1 revoked", 3*time.Second, func() bool { _, ok := f.revokedAt(1); return ok })
	if at, _ := f.revokedAt(1); at.Sub(begin) < 1500*time.Millisecond {
		t.Errorf("checkpointed lease revoked after %s, want ≥ 1.5s", at.Sub(begin))
	}
}

func TestCheckpointThenClearOnRenew(t *testing.T) {
	t.Parallel()
	f := &fake{}
	l := start(t, f, Config{CheckpointInterval: time.Second})
	l.Granted(5, 3) // 3s > 1s interval: checkpointed 1s after the grant
	l.Granted(6, 1) // not longer than the interval: never checkpointed
	waitFor(t, "checkpoint", 2*time.Second, func() bool { return len(f.checkpoints()) > 0 })
	cps := f.checkpoints()
	if len(cps) != 1 || cps[0].Id != 5 || cps[0].Remaining != 2 {
		t.Fatalf("checkpoints %v, want lease 5 with 2s (rounded up) left", cps)
	}
	if _, err := l.Renew(ctx(t), 5); err != nil {
		t.Fatal(err)
	}
	// The clear is recorded before Renew answers.
	cps = f.checkpoints()
	if last := cps[len(cps)-1]; last.Id != 5 || last.Remaining != 0 {
		t.Fatalf("checkpoints after renew %v, want a clear of lease 5 last", cps)
	}
	// A second renew has nothing to clear.
	if _, err := l.Renew(ctx(t), 5); err != nil {
		t.Fatal(err)
	}
	if n := len(f.checkpoints()); n != len(cps) {
		t.Errorf("second renew recorded %d more checkpoints", n-len(cps))
	}
	// Checkpoints go on after the clear, since the lease is still long.
	waitFor(t, "next checkpoint", 4*time.Second, func() bool { return len(f.checkpoints()) > len(cps) })
}

func TestFailedRevokeRetriesAndStaysExpired(t *testing.T) {
	t.Parallel()
	f := &fake{failFirst: 2}
	l := start(t, f, Config{RetryInterval: 200 * time.Millisecond})
	l.Granted(3, 1)
	waitFor(t, "first revoke attempt", 3*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.revokes >= 1
	})
	if _, err := l.Renew(ctx(t), 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew between failed revokes: %v, want ErrNotFound", err)
	}
	waitFor(t, "revoked on retry", 3*time.Second, func() bool { _, ok := f.revokedAt(3); return ok })
	f.mu.Lock()
	n := f.revokes
	f.mu.Unlock()
	if n != 3 {
		t.Errorf("%d revoke attempts, want 3", n)
	}
	waitFor(t, "forgotten", time.Second, func() bool { _, _, err := l.Remaining(ctx(t), 3); return errors.Is(err, ErrNotFound) })
}

func TestRevokesAreBounded(t *testing.T) {
	t.Parallel()
	f := &fake{block: make(chan struct{})}
	l := start(t, f, Config{MaxRevoking: 4, RevokeRate: 1000})
	for id := int64(1); id <= 20; id++ {
		l.Granted(id, 1)
	}
	waitFor(t, "revokes started", 3*time.Second, func() bool { return f.inflight.Load() == 4 })
	time.Sleep(100 * time.Millisecond)
	if n := f.maxFlight.Load(); n != 4 {
		t.Errorf("%d revokes in flight, want at most 4", n)
	}
	close(f.block)
	waitFor(t, "all revoked", 3*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.revoked) == 20
	})
	ex, err := l.Expiries(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all forgotten", time.Second, func() bool { ex, _ = l.Expiries(ctx(t)); return len(ex) == 0 })
}

func TestRevokeRateLimit(t *testing.T) {
	t.Parallel()
	f := &fake{}
	l := start(t, f, Config{RevokeRate: 20})
	for id := int64(1); id <= 30; id++ {
		l.Granted(id, 1)
	}
	time.Sleep(1200 * time.Millisecond)
	f.mu.Lock()
	n := len(f.revoked)
	f.mu.Unlock()
	// A burst of half a second's worth (10), then 20/s.
	if n < 8 || n > 16 {
		t.Errorf("%d of 30 revoked within 0.2s of expiry at 20/s, want about 10-14", n)
	}
	waitFor(t, "all revoked", 3*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.revoked) == 30
	})
}
