package actors

import (
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// TestDispatcher: an actor on its own dispatcher gets every message, in
// order, across the goroutine's exits when idle and its restarts.
func TestDispatcher(t *testing.T) {
	sys := actor.NewActorSystem()
	var mu sync.Mutex
	var got []int
	all := make(chan struct{}, 1)
	const perBurst = 1000
	d := NewDispatcher()
	d.idle = 5 * time.Millisecond
	props := actor.PropsFromFunc(func(c actor.Context) {
		if n, ok := c.Message().(int); ok {
			mu.Lock()
			got = append(got, n)
			if len(got)%perBurst == 0 {
				all <- struct{}{}
			}
			mu.Unlock()
		}
	}, actor.WithDispatcher(d))
	pid := sys.Root.Spawn(props)
	next := 0
	for burst := 0; burst < 3; burst++ {
		for i := 0; i < perBurst; i++ {
			sys.Root.Send(pid, next)
			next++
		}
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Fatalf("burst %d: messages not all handled", burst)
		}
		time.Sleep(4 * d.idle) // the goroutine exits
		d.mu.Lock()
		running := d.running
		d.mu.Unlock()
		if running {
			t.Fatalf("burst %d: the goroutine did not exit when idle", burst)
		}
	}
	_ = sys.Root.StopFuture(pid).Wait()
	mu.Lock()
	defer mu.Unlock()
	for i, n := range got {
		if n != i {
			t.Fatalf("message %d is %d: out of order", i, n)
		}
	}
}
