package tests

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestWatchSlowWatcher: a watcher whose client never reads must not stall
// writes or another watcher; once it reads again it gets every event,
// in order, exactly once.
func TestWatchSlowWatcher(t *testing.T) {
	t.Parallel()
	subj := harness.StartSubject(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The slow stream has its own connection, so only it is flow-controlled.
	slowClient := harness.NewClient(t, subj.Endpoint())
	defer slowClient.Close()
	slow, err := pb.NewWatchClient(slowClient.ActiveConnection()).Watch(ctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Send(createReq(&pb.WatchCreateRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0"), PrevKv: true})); err != nil {
		t.Fatal(err)
	}
	if r, err := slow.Recv(); err != nil || !r.Created {
		t.Fatalf("slow watcher: %v %v", r, err)
	}

	c := subj.Client()
	fast := c.Watch(ctx, "slow/", clientv3.WithPrefix())
	const n = 3000
	value := strings.Repeat("x", 8*1024) // with prev_kv, ~50 MB for the slow watcher
	fastDone := make(chan error, 1)
	go func() {
		next := int64(0)
		for r := range fast {
			for _, ev := range r.Events {
				if next != 0 && ev.Kv.ModRevision != next+1 {
					fastDone <- fmt.Errorf("fast watcher: revision %d after %d", ev.Kv.ModRevision, next)
					return
				}
				next = ev.Kv.ModRevision
			}
			if next == n+1 {
				fastDone <- nil
				return
			}
		}
		fastDone <- fmt.Errorf("fast watcher ended at %d", next)
	}()

	start := time.Now()
	var worst time.Duration
	for i := range n {
		t0 := time.Now()
		if _, err := c.Put(ctx, fmt.Sprintf("slow/%d", i%100), value); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(t0))
	}
	writes := time.Since(start)
	select {
	case err := <-fastDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the reading watcher did not get all %d events within 10s of the last write", n)
	}
	t.Logf("%d puts in %v (slowest %v) while a watcher did not read; the other watcher got every event %v after the last put",
		n, writes, worst, time.Since(start)-writes)
	if worst > 2*time.Second {
		t.Errorf("a put took %v while a watcher did not read", worst)
	}

	// Now the slow client reads: everything, in order, once.
	next := int64(2)
	for next <= n+1 {
		r, err := slow.Recv()
		if err != nil {
			t.Fatalf("slow watcher: %v", err)
		}
		for _, ev := range r.Events {
			if ev.Kv.ModRevision != next {
				t.Fatalf("slow watcher: event at %d, want %d", ev.Kv.ModRevision, next)
			}
			if ev.Kv.ModRevision > 101 && ev.PrevKv == nil {
				t.Fatalf("slow watcher: event at %d without prev_kv", ev.Kv.ModRevision)
			}
			next++
		}
	}
}
