package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestClusterSplitterLost: the member that splits a range (the left range's leader,
// drained) exits just after the split applied, before it made the new range
// (MOSAIC_TEST_CRASH_AFTER_SPLIT=m1), and never comes back: its data directory is gone.
// The two other members had applied the left range up to the split with nothing left out,
// so each makes the new range from its own data; the range elects a leader among them, its
// keys read back whole and it takes writes through both. Before, only the member that
// split made the new range, which stayed unavailable for good without it.
func TestClusterSplitterLost(t *testing.T) {
	if harness.SubjectIsEtcd() {
		t.Skip("Mosaic's ranges")
	}
	t.Parallel()
	c := harness.StartCluster(t, 3, harness.ClusterOptions{Env: []string{"MOSAIC_TEST_CRASH_AFTER_SPLIT=m1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	m1 := c.Members()[0]
	cli := c.Client()
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("sl/%02d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// m1 must be the splitter: the oracle's lead goes there, and the range's lead follows.
	m1ID := memberID(ctx, t, m1.Endpoint())
	if li := c.Leader(ctx); li != 0 {
		if _, err := c.Members()[li].Client().MoveLeader(ctx, m1ID); err != nil {
			t.Fatalf("move the lead to m1: %v", err)
		}
	}
	admin := adminClient(t, c.Members()[1].Endpoint())
	waitFor(t, 30*time.Second, "m1 leading range 1", func() error {
		for _, r := range listRanges(ctx, t, admin) {
			if r.Id == 1 && r.Leader != m1ID {
				return fmt.Errorf("range 1 led by %x", r.Leader)
			}
		}
		return nil
	})

	_, errOut, err := harness.Mosaicctl(t, m1.Endpoint(), "range", "split", "sl/10")
	t.Logf("split answered: err=%v %s", err, errOut)
	waitFor(t, 30*time.Second, "m1 to exit", func() error {
		if c.Running(0) {
			return errors.New("m1 still runs")
		}
		return nil
	})
	if err := os.RemoveAll(m1.DataDir); err != nil {
		t.Fatal(err)
	}
	t.Logf("m1 exited after the split applied; its data dir is removed and it stays down")

	waitFor(t, 30*time.Second, "a range starting at sl/10", func() error {
		for _, r := range listRanges(ctx, t, admin) {
			if string(r.Start) == "sl/10" {
				return nil
			}
		}
		return errors.New("no range starts at sl/10")
	})
	for i, m := range c.Members()[1:] {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := m.Client().Put(wctx, "sl/15", fmt.Sprintf("via-%d", i+1))
		wcancel()
		if err != nil {
			t.Fatalf("put into the new range via %s with the splitter lost: %v", m.Name(), err)
		}
	}
	for _, m := range c.Members()[1:] {
		resp, err := m.Client().Get(ctx, "sl/", clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("get via %s: %v", m.Name(), err)
		}
		got := map[string]string{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = string(kv.Value)
		}
		for i := range 20 {
			key, want := fmt.Sprintf("sl/%02d", i), fmt.Sprintf("v%d", i)
			if i == 15 {
				want = "via-2"
			}
			if got[key] != want {
				t.Errorf("%s via %s = %q with the splitter lost, want %q", key, m.Name(), got[key], want)
			}
		}
	}
}
