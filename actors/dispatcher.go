package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// dispatcherIdle is how long an actor's goroutine waits for more work
// before it exits (the next message starts a new one).
const dispatcherIdle = time.Second

// Dispatcher runs one actor's mailbox on a goroutine that stays for as long
// as messages keep coming, where protoactor's default starts a new
// goroutine for every burst of messages. A shard's or the oracle's handler
// runs deep (Raft, protobuf, badger): a fresh goroutine grows its stack by
// copying it several times in every burst, which cost a single-client put
// tens of microseconds on its critical path. Give each actor its own
// (actor.WithDispatcher(actors.NewDispatcher())).
type Dispatcher struct {
	mu      sync.Mutex
	work    chan func()
	running bool          // a goroutine serves work
	idle    time.Duration // dispatcherIdle, but in tests
}

var _ actor.Dispatcher = (*Dispatcher)(nil)

// NewDispatcher returns a dispatcher for one actor.
func NewDispatcher() *Dispatcher {
	// A mailbox schedules itself only when idle, so at most one run waits
	// while another finishes: the buffer never fills.
	return &Dispatcher{work: make(chan func(), 8), idle: dispatcherIdle}
}

// Schedule runs fn on the actor's goroutine, starting it if needed.
func (d *Dispatcher) Schedule(fn func()) {
	d.mu.Lock()
	d.work <- fn
	if !d.running {
		d.running = true
		go d.serve()
	}
	d.mu.Unlock()
}

// Throughput is how many messages a run handles before it yields the
// processor (protoactor's default).
func (d *Dispatcher) Throughput() int { return 300 }

func (d *Dispatcher) serve() {
	idle := time.NewTimer(d.idle)
	defer idle.Stop()
	for {
		select {
		case fn := <-d.work:
			fn()
			idle.Reset(d.idle)
		case <-idle.C:
			// Work is queued with mu held: none can slip in between this
			// check and the next Schedule starting a new goroutine.
			d.mu.Lock()
			if len(d.work) > 0 {
				d.mu.Unlock()
				idle.Reset(d.idle)
				continue
			}
			d.running = false
			d.mu.Unlock()
			return
		}
	}
}
