package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestClusterSplitterCrashAfterCommit: the member that splits a range (the left range's
// leader, drained) is the one that makes the new range from its data. Here it exits at once
// (MOSAIC_TEST_CRASH_AFTER_SPLIT) just after the split applied and before it made the new
// range; the other members start the new range empty, waiting for it. Restarted, it makes
// the new range from its record of the drained split: the keys written before the split
// are all there and the new range takes writes through every member. Without the record,
// the new range had no member to make it and stayed unavailable.
func TestClusterSplitterCrashAfterCommit(t *testing.T) {
	if harness.SubjectIsEtcd() {
		t.Skip("Mosaic's ranges")
	}
	t.Parallel()
	c := harness.StartCluster(t, 3, harness.ClusterOptions{Env: []string{"MOSAIC_TEST_CRASH_AFTER_SPLIT=1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	cli := c.Client()
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("sc/%02d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The request is passed to the splitter, which exits: its answer is not looked at.
	_, errOut, err := harness.Mosaicctl(t, c.Members()[0].Endpoint(), "range", "split", "sc/10")
	t.Logf("split answered: err=%v %s", err, errOut)
	// The request goes on to the next replica when the splitter does not answer, which
	// may split again (the same drained range: the split applies once, and it too holds
	// the data and exits).
	exited := func() (out []int) {
		for i := range c.Members() {
			if !c.Running(i) {
				out = append(out, i)
			}
		}
		return out
	}
	waitFor(t, 30*time.Second, "the splitter to exit", func() error {
		if len(exited()) == 0 {
			return errors.New("every member still runs")
		}
		return nil
	})
	time.Sleep(3 * time.Second) // the request's retry through another member, if any
	for _, i := range exited() {
		t.Logf("%s exited after the split applied; restarting it", c.Members()[i].Name())
		c.Restart(i)
	}

	admin := adminClient(t, c.Members()[0].Endpoint())
	waitFor(t, 30*time.Second, "a range starting at sc/10", func() error {
		for _, r := range listRanges(ctx, t, admin) {
			if string(r.Start) == "sc/10" {
				return nil
			}
		}
		return errors.New("no range starts at sc/10")
	})
	for i, m := range c.Members() {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := m.Client().Put(wctx, "sc/15", fmt.Sprintf("via-%d", i))
		wcancel()
		if err != nil {
			t.Fatalf("put into the new range via %s: %v", m.Name(), err)
		}
	}
	resp, err := cli.Get(ctx, "sc/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	for i := range 20 {
		key, want := fmt.Sprintf("sc/%02d", i), fmt.Sprintf("v%d", i)
		if i == 15 {
			want = "via-2"
		}
		if got[key] != want {
			t.Errorf("%s = %q after the splitter's crash and restart, want %q", key, got[key], want)
		}
	}
	t.Logf("the new range took a write through each of the 3 members; %d keys read back", len(got))
}
