package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestClusterSnapshotCatchUp stops a follower, writes (across two ranges, split into four
// meanwhile) until the others have truncated their range logs past it (checkpoints every 300ms, 10 entries kept), and
// restarts it: it catches up by snapshots of the oracle and of the ranges (two of which it
// never saw made), after which its data, its history at past
// revisions and its watch history are the same as the leader's, and it serves as part of the
// quorum once the leader is killed.
func TestClusterSnapshotCatchUp(t *testing.T) {
	if harness.SubjectIsEtcd() {
		t.Skip("Mosaic's log truncation knobs")
	}
	t.Setenv("MOSAIC_CHECKPOINT_INTERVAL", "300ms")
	t.Setenv("MOSAIC_CATCHUP_ENTRIES", "10")
	c := startCluster3(t, "s/5")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	li := c.Leader(ctx)
	leader, lagger, third := c.Members()[li], c.Members()[(li+1)%3], c.Members()[(li+2)%3]
	lagger.Kill()

	cli := leader.Client()
	first, err := cli.Get(ctx, "s/")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if i == 100 || i == 200 {
			// Splits the stopped follower misses: it must get the new ranges'
			// data from their own snapshots, and its old range must not write
			// the keys that moved.
			at := map[int]string{100: "s/2", 200: "s/7"}[i]
			if _, errOut, err := harness.Mosaicctl(t, leader.Endpoint(), "range", "split", at); err != nil {
				t.Fatalf("split at %s: %v\n%s", at, err, errOut)
			}
		}
		k := fmt.Sprintf("s/%d/%d", i%10, (i/10)%5) // 50 keys, each written and deleted several times
		if i%11 == 10 {
			if _, err := cli.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := cli.Put(ctx, k, fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // a few checkpoints: the logs are truncated past the lagger

	lagger.Restart()
	lcli := lagger.Client()
	want, err := cli.Get(ctx, "s/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the restarted follower catching up", func() error {
		got, err := lcli.Get(ctx, "s/", clientv3.WithPrefix(), clientv3.WithSerializable())
		if err != nil {
			return err
		}
		if got.Header.Revision < want.Header.Revision || len(got.Kvs) != len(want.Kvs) {
			return fmt.Errorf("at revision %d with %d keys, want %d with %d", got.Header.Revision, len(got.Kvs), want.Header.Revision, len(want.Kvs))
		}
		return nil
	})
	for _, what := range []string{"installed a snapshot of the range", "installed a snapshot of the revision oracle"} {
		if !strings.Contains(lagger.Log(), what) {
			t.Errorf("the follower's log does not say %q: the logs were not truncated past it", what)
		}
	}

	// Same data, same past, same history.
	for _, rev := range []int64{first.Header.Revision + 50, first.Header.Revision + 200, want.Header.Revision} {
		a, err := cli.Get(ctx, "s/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		b, err := lcli.Get(ctx, "s/", clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable())
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Kvs) != len(b.Kvs) {
			t.Fatalf("at revision %d: leader %d keys, follower %d", rev, len(a.Kvs), len(b.Kvs))
		}
		for i := range a.Kvs {
			if a.Kvs[i].String() != b.Kvs[i].String() {
				t.Fatalf("at revision %d: leader %v, follower %v", rev, a.Kvs[i], b.Kvs[i])
			}
		}
	}
	history := func(cli *clientv3.Client) []string {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		var evs []string
		for wr := range cli.Watch(wctx, "s/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision+1), clientv3.WithPrevKV()) {
			for _, ev := range wr.Events {
				prev := ""
				if ev.PrevKv != nil {
					prev = string(ev.PrevKv.Value)
				}
				evs = append(evs, fmt.Sprintf("%s %s@%d=%s prev=%s", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.Value, prev))
				if ev.Kv.ModRevision >= want.Header.Revision {
					return evs
				}
			}
		}
		return evs
	}
	ha, hb := history(cli), history(lcli)
	if strings.Join(ha, "\n") != strings.Join(hb, "\n") {
		t.Fatalf("watch history differs: leader %d events, follower %d", len(ha), len(hb))
	}
	puts, dels := 0, 0
	for _, e := range ha {
		if strings.HasPrefix(e, mvccpb.PUT.String()) {
			puts++
		} else {
			dels++
		}
	}
	t.Logf("follower caught up by snapshot: %d keys, %d events (%d puts, %d deletes) alike", len(want.Kvs), len(ha), puts, dels)

	// The follower counts for the quorum: with the leader gone, writes go on.
	leader.Kill()
	tcli := third.Client()
	waitFor(t, 20*time.Second, "a write without the old leader", func() error {
		_, err := tcli.Put(ctx, "s/after", "x")
		return err
	})
	got, err := lcli.Get(ctx, "s/after")
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("follower after the leader's kill: %v %v", got, err)
	}
}
