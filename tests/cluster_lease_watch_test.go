package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// startCluster3 starts a 3-member cluster (Mosaic, or etcd with MOSAIC_TEST_SUBJECT=etcd,
// which checks the test itself) and, on Mosaic, splits the keyspace at each of splits.
func startCluster3(t *testing.T, splits ...string) *harness.Cluster {
	t.Helper()
	c := harness.StartCluster(t, 3, harness.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if !harness.SubjectIsEtcd() {
		for _, k := range splits {
			if _, errOut, err := harness.Mosaicctl(t, c.Members()[0].Endpoint(), "range", "split", k); err != nil {
				t.Fatalf("split at %q: %v\n%s", k, err, errOut)
			}
		}
	}
	return c
}

// TestClusterLeasePrimaryKill kills the member that leads (and so runs the leases) while
// leases hold keys in several ranges: a lease left to expire neither goes before its TTL
// nor outlives it by more than etcd allows a new leader (the TTL again, plus an election
// timeout, from the moment the new leader takes over); its keys go at one revision, with
// their DELETE events; a lease kept alive through the failover keeps its key.
func TestClusterLeasePrimaryKill(t *testing.T) {
	t.Parallel()
	c := startCluster3(t, "lease/b")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	li := c.Leader(ctx)
	leader := c.Members()[li]
	f1, f2 := c.Members()[(li+1)%3], c.Members()[(li+2)%3]
	cli := f1.Client()

	const ttl = 6
	short, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	long, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"lease/a1", "lease/b1"} { // two ranges on Mosaic
		if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(short.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "lease/kept", "v", clientv3.WithLease(long.ID)); err != nil {
		t.Fatal(err)
	}
	// The long lease is kept alive through a follower for the whole test.
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	if _, err := f2.Client().KeepAlive(kctx, long.ID); err != nil {
		t.Fatal(err)
	}
	w := f2.Client().Watch(ctx, "lease/", clientv3.WithPrefix())

	time.Sleep(time.Second)
	leader.Kill()
	killed := time.Now()

	// Poll from a survivor when the short lease's keys vanish.
	var gone time.Time
	for time.Since(killed) < 30*time.Second {
		resp, err := cli.Get(ctx, "lease/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == 1 {
			gone = time.Now()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if gone.IsZero() {
		t.Fatalf("the %ds lease's keys still exist 30s after the leader was killed", ttl)
	}
	early := gone.Sub(granted)
	late := gone.Sub(killed)
	t.Logf("short lease: keys gone %.1fs after the grant, %.1fs after the leader's kill", early.Seconds(), late.Seconds())
	if early < ttl*time.Second {
		t.Errorf("the %ds lease expired %.1fs after its grant: early", ttl, early.Seconds())
	}
	// A new leader restarts the TTL (no checkpoint for so short a lease) plus one election
	// timeout (1s); the election itself takes up to about 3s, and polling adds a little.
	if max := time.Duration(ttl+1+3+2) * time.Second; late > max {
		t.Errorf("the %ds lease outlived the leader's kill by %.1fs (more than %s)", ttl, late.Seconds(), max)
	}

	// One revision deleted both keys, and the watcher saw both DELETEs in it.
	var dels []*clientv3.Event
	deadline := time.After(10 * time.Second)
	for len(dels) < 2 {
		select {
		case wr := <-w:
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					dels = append(dels, ev)
				}
			}
		case <-deadline:
			t.Fatalf("watch saw %d DELETE events, want 2", len(dels))
		}
	}
	if dels[0].Kv.ModRevision != dels[1].Kv.ModRevision {
		t.Errorf("the lease's keys were deleted at revisions %d and %d, want one", dels[0].Kv.ModRevision, dels[1].Kv.ModRevision)
	}

	// The kept lease and its key are still there.
	ttlResp, err := cli.TimeToLive(ctx, long.ID)
	if err != nil || ttlResp.TTL <= 0 {
		t.Errorf("kept-alive lease after the failover: %+v %v", ttlResp, err)
	}
	resp, err := cli.Get(ctx, "lease/kept")
	if err != nil || len(resp.Kvs) != 1 {
		t.Errorf("kept-alive lease's key after the failover: %v %v", resp, err)
	}
}

// TestClusterWatchResume watches through one member while writes go through the others,
// drops that member (SIGKILL) half way, and resumes on another member from the last
// revision seen + 1: the two streams together hold every write exactly once, in revision
// order, each revision whole, across ranges.
func TestClusterWatchResume(t *testing.T) {
	t.Parallel()
	c := startCluster3(t, "w/3", "w/6")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ms := c.Members()
	// The member killed under the watch is not the leader: writes forwarded to a leader
	// that dies may time out (in etcd as in Mosaic), and this test wants every write
	// acknowledged.
	lead := c.Leader(ctx)
	if lead < 0 {
		t.Fatal("no leader")
	}
	others := []*harness.Member{}
	for i, m := range ms {
		if i != lead {
			others = append(others, m)
		}
	}
	watcher, writerA, writerB := others[0], others[1], ms[lead]

	start, err := writerA.Client().Get(ctx, "w/")
	if err != nil {
		t.Fatal(err)
	}
	from := start.Header.Revision + 1

	const writes = 300
	acked := make(chan int64, writes)
	go func() {
		defer close(acked)
		for i := range writes {
			cli := writerA.Client()
			if i%2 == 1 {
				cli = writerB.Client()
			}
			// Two keys in different ranges per revision, in one txn.
			k1, k2 := fmt.Sprintf("w/%d-%03d", i%10, i), fmt.Sprintf("w/%d-%03d", (i+5)%10, i)
			resp, err := cli.Txn(ctx).Then(clientv3.OpPut(k1, "v"), clientv3.OpPut(k2, "v")).Commit()
			if err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			acked <- resp.Header.Revision
			time.Sleep(5 * time.Millisecond)
		}
	}()

	type rev struct {
		rev  int64
		keys int
	}
	var seen []rev
	collect := func(wc clientv3.WatchChan, until func() bool) error {
		for !until() {
			select {
			case wr, ok := <-wc:
				if !ok {
					return fmt.Errorf("watch closed")
				}
				if err := wr.Err(); err != nil {
					return err
				}
				for _, ev := range wr.Events {
					if n := len(seen); n > 0 && seen[n-1].rev == ev.Kv.ModRevision {
						seen[n-1].keys++
						continue
					}
					seen = append(seen, rev{ev.Kv.ModRevision, 1})
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	wctx, wcancel := context.WithCancel(ctx)
	if err := collect(watcher.Client().Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(from)), func() bool { return len(seen) >= writes/2 }); err != nil {
		t.Fatal(err)
	}
	wcancel()
	watcher.Kill()
	last := seen[len(seen)-1].rev
	// The events of the last revision came in one response: resume after it.
	if err := collect(writerB.Client().Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(last+1)), func() bool { return len(seen) >= writes }); err != nil {
		t.Fatal(err)
	}
	var want []int64
	for r := range acked {
		want = append(want, r)
	}
	if len(want) != writes {
		t.Fatalf("%d writes acknowledged, want %d", len(want), writes)
	}
	// Revisions are dense and every write here is under w/, so the writes' revisions are
	// exactly from..from+writes-1 in order.
	for i, s := range seen {
		if s.rev != from+int64(i) || s.keys != 2 {
			t.Fatalf("event %d: revision %d with %d keys, want revision %d with 2 (resumed after %d)", i, s.rev, s.keys, from+int64(i), last)
		}
	}
	for i, r := range want {
		if r != from+int64(i) {
			t.Fatalf("write %d acknowledged at %d, want %d", i, r, from+int64(i))
		}
	}
	t.Logf("%d revisions watched, resumed on another member after revision %d", len(seen), last)
}

// TestClusterRequireLeader: a member that lost its quorum refuses require-leader requests and
// ends require-leader watches (as Kubernetes opens them) with etcd's "no leader", while it
// still answers serializable reads and keeps plain watches open.
func TestClusterRequireLeader(t *testing.T) {
	t.Parallel()
	c := startCluster3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ms := c.Members()
	last := ms[2]
	cli := last.Client()
	if _, err := cli.Put(ctx, "rl/k", "v"); err != nil {
		t.Fatal(err)
	}
	plainCtx, plainCancel := context.WithCancel(ctx)
	defer plainCancel()
	plainWatch := cli.Watch(plainCtx, "rl/", clientv3.WithPrefix())
	// Both watches must be running before the quorum goes: a write shows it. A
	// require-leader watch opened in a moment without a leader (an election under a
	// loaded machine) is refused, as etcd refuses it, and is opened again.
	var rlWatch clientv3.WatchChan
	// A watch opened on a member that has not yet applied the write before it (a
	// follower, in etcd too) starts before that write and sees it first.
	established := func(wc clientv3.WatchChan, key string) bool {
		timeout := time.After(5 * time.Second)
		for {
			select {
			case wr, ok := <-wc:
				if !ok || wr.Err() != nil {
					return false
				}
				for _, ev := range wr.Events {
					if string(ev.Kv.Key) == key {
						return true
					}
				}
			case <-timeout:
				return false
			}
		}
	}
	for attempt := 0; ; attempt++ {
		rlCtx, rlCancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer rlCancel()
		rlWatch = cli.Watch(rlCtx, "rl/", clientv3.WithPrefix())
		key := fmt.Sprintf("rl/ready-%d", attempt)
		if _, err := cli.Put(ctx, key, "v"); err != nil {
			t.Fatal(err)
		}
		if !established(plainWatch, key) {
			t.Fatalf("plain watch did not see %s", key)
		}
		if established(rlWatch, key) {
			break
		}
		rlCancel()
		if attempt == 5 {
			t.Fatalf("the require-leader watch never started")
		}
	}

	ms[0].Kill()
	ms[1].Kill()
	lost := time.Now()

	// The require-leader watch ends with "no leader" once the member has had no leader for
	// three election timeouts (etcd: 3 x 1s).
	select {
	case wr, ok := <-rlWatch:
		if ok && !harness.SameError(wr.Err(), rpctypes.ErrNoLeader) && !strings.Contains(fmt.Sprint(wr.Err()), "no leader") {
			t.Errorf("require-leader watch ended with %v, want %v", wr.Err(), rpctypes.ErrNoLeader)
		}
		t.Logf("require-leader watch ended %.1fs after the quorum was lost: %v", time.Since(lost).Seconds(), wr.Err())
	case <-time.After(20 * time.Second):
		t.Fatalf("require-leader watch still open 20s after the quorum was lost")
	}
	select {
	case wr, ok := <-plainWatch:
		t.Errorf("plain watch ended too: %v %v", ok, wr.Err())
	default:
	}
	if _, err := cli.Get(clientv3.WithRequireLeader(ctx), "rl/k", clientv3.WithSerializable()); err == nil || !strings.Contains(err.Error(), "no leader") {
		t.Errorf("require-leader get without a leader: %v, want %v", err, rpctypes.ErrNoLeader)
	}
	resp, err := cli.Get(ctx, "rl/k", clientv3.WithSerializable())
	if err != nil || len(resp.Kvs) != 1 {
		t.Errorf("serializable get without a leader: %v %v", resp, err)
	}
}
