package tests

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestClusterQuiescence: a 3-member cluster holding many ranges lets the idle ones stop
// ticking and heartbeating (every replica on every member reports itself quiescent), and
// quiescing costs nothing in availability or safety:
//   - a write to a quiesced range wakes it and is acknowledged;
//   - after a SIGKILL of the member leading every range, every range elects a leader on the
//     survivors (its quiesced followers notice the dead leader through the transport's
//     pings), takes writes, and quiesces again with the member still down;
//   - the killed member, restarted, catches up on what it missed although the leaders had
//     quiesced without it (its pre-votes wake them), and every range quiesces on all three.
func TestClusterQuiescence(t *testing.T) {
	if harness.SubjectIsEtcd() {
		t.Skip("Mosaic's ranges")
	}
	t.Parallel()
	const nRanges = 150
	c := harness.StartCluster(t, 3, harness.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	admin := adminClient(t, c.Members()[0].Endpoint())
	key := func(i int) string { return fmt.Sprintf("q/%03d", i) }
	for i := 1; i < nRanges; i++ {
		if _, err := admin.SplitRange(ctx, &adminpb.SplitRangeRequest{Key: []byte(key(i))}); err != nil {
			t.Fatalf("split at %s: %v", key(i), err)
		}
	}
	cli := c.Client()
	for i := range nRanges {
		if _, err := cli.Put(ctx, key(i), "v1"); err != nil {
			t.Fatal(err)
		}
	}
	total := len(listRanges(ctx, t, admin))
	if total < nRanges {
		t.Fatalf("%d ranges after %d splits", total, nRanges-1)
	}
	up := []int{0, 1, 2}
	waitFor(t, 60*time.Second, "every replica quiescent", func() error { return allQuiescent(ctx, t, c, up, total) })
	t.Logf("%d ranges, every replica quiescent on 3 members; idle CPU over 5s: %s", total, idleCPU(c, up, 5*time.Second))

	// A write wakes its range; the range quiesces again once idle.
	if _, err := c.Members()[1].Client().Put(ctx, key(7), "v2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "quiescent again after a write", func() error { return allQuiescent(ctx, t, c, up, total) })

	// Kill the member leading the ranges (with three members, the oracle's leader leads all).
	victim := c.Leader(ctx)
	if victim < 0 {
		t.Fatal("no oracle leader")
	}
	victimID := memberID(ctx, t, c.Members()[victim].Endpoint())
	c.Kill(victim)
	killed := time.Now()
	up = nil
	for i := range 3 {
		if i != victim {
			up = append(up, i)
		}
	}
	survivor := c.Members()[up[0]]
	sadmin := adminClient(t, survivor.Endpoint())
	waitFor(t, 30*time.Second, "every range led by a survivor", func() error {
		for _, r := range listRanges(ctx, t, sadmin) {
			if r.Leader == 0 || r.Leader == victimID {
				return fmt.Errorf("range %d led by %x", r.Id, r.Leader)
			}
		}
		return nil
	})
	t.Logf("every range led by a survivor %s after killing %s", time.Since(killed).Round(100*time.Millisecond), c.Members()[victim].Name())
	scli := survivor.Client()
	for i := range nRanges {
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := scli.Put(pctx, key(i), "v3")
		pcancel()
		if err != nil {
			t.Fatalf("put %s with %s down: %v", key(i), c.Members()[victim].Name(), err)
		}
	}
	waitFor(t, 30*time.Second, "quiescent with a member down", func() error { return allQuiescent(ctx, t, c, up, total) })

	// The killed member comes back and catches up from quiesced leaders.
	c.Restart(victim)
	up = []int{0, 1, 2}
	back := c.Members()[victim].Client()
	waitFor(t, 60*time.Second, "restarted member caught up", func() error {
		resp, err := back.Get(ctx, "q/", clientv3.WithPrefix(), clientv3.WithSerializable())
		if err != nil {
			return err
		}
		if len(resp.Kvs) != nRanges {
			return fmt.Errorf("%d keys", len(resp.Kvs))
		}
		for _, kv := range resp.Kvs {
			if string(kv.Value) != "v3" {
				return fmt.Errorf("%s=%s", kv.Key, kv.Value)
			}
		}
		return nil
	})
	waitFor(t, 60*time.Second, "quiescent on all three again", func() error { return allQuiescent(ctx, t, c, up, total) })
}

// allQuiescent checks that each of the given members holds a quiescent replica of each of
// the cluster's ranges (want of them).
func allQuiescent(ctx context.Context, t *testing.T, c *harness.Cluster, members []int, want int) error {
	for _, i := range members {
		m := c.Members()[i]
		rs, err := adminClient(t, m.Endpoint()).ListRanges(ctx, &adminpb.ListRangesRequest{})
		if err != nil {
			return err
		}
		if len(rs.Ranges) != want {
			return fmt.Errorf("%s lists %d ranges, want %d", m.Name(), len(rs.Ranges), want)
		}
		awake := 0
		for _, r := range rs.Ranges {
			if !r.Quiescent {
				awake++
			}
		}
		if awake > 0 {
			return fmt.Errorf("%s: %d of %d replicas awake", m.Name(), awake, want)
		}
	}
	return nil
}

// idleCPU reports the CPU time each member used over d, for the log.
func idleCPU(c *harness.Cluster, members []int, d time.Duration) string {
	before := make([]time.Duration, len(members))
	for k, i := range members {
		before[k] = procCPU(c.Members()[i].Pid())
	}
	time.Sleep(d)
	var out []string
	for k, i := range members {
		used := procCPU(c.Members()[i].Pid()) - before[k]
		out = append(out, fmt.Sprintf("%s %.1f%%", c.Members()[i].Name(), 100*used.Seconds()/d.Seconds()))
	}
	return strings.Join(out, ", ")
}

// procCPU is a process's user and system CPU time from /proc (0 where there is none).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime and stime are
	// the 14th and 15th fields of the line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
