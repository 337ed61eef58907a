package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestClusterReplicationFactor runs five members with the default replication factor
// of 3: every range ends up on three members, spread so that no member holds (or leads)
// more than one range more than another, and every member serves every request (writes,
// linearizable and serializable reads, cross-range transactions, watches) whether or
// not it holds the ranges involved. Then, under writes, `mosaicctl range move` moves
// replicas (one off the oracle's leader), a member holding replicas is killed, and
// nothing acknowledged is lost.
func TestClusterReplicationFactor(t *testing.T) { testReplicationFactor(t) }

// TestClusterReplicationFactorRemoteReads is TestClusterReplicationFactor with
// --local-reads=false: members hold only their ranges' replicas, read the others from
// members that hold them, and stop the replicas moved off them.
func TestClusterReplicationFactorRemoteReads(t *testing.T) {
	testReplicationFactor(t, "--local-reads=false")
}

func testReplicationFactor(t *testing.T, args ...string) {
	if harness.SubjectIsEtcd() {
		t.Skip("Mosaic's ranges")
	}
	t.Parallel()
	c := harness.StartCluster(t, 5, harness.ClusterOptions{Args: args})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	m1 := c.Members()[0]
	cli := c.Client()
	for i := range 60 {
		if _, err := cli.Put(ctx, fmt.Sprintf("rf/%02d", i), "v0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, at := range []string{"rf/10", "rf/20", "rf/30", "rf/40", "rf/50"} {
		if _, errOut, err := harness.Mosaicctl(t, m1.Endpoint(), "range", "split", at); err != nil {
			t.Fatalf("split at %s: %v\n%s", at, err, errOut)
		}
	}
	// Six ranges of three replicas on five members: 18 replicas, 3 or 4 each.
	admin := adminClient(t, m1.Endpoint())
	waitFor(t, 90*time.Second, "replicas spread", func() error {
		return checkSpread(ctx, admin, 3)
	})

	// Every member serves everything, holding the ranges or not.
	for i, m := range c.Members() {
		mc := m.Client()
		if _, err := mc.Put(ctx, fmt.Sprintf("rf/%02d", i*10+5), fmt.Sprintf("via-%d", i)); err != nil {
			t.Fatalf("put via %s: %v", m.Name(), err)
		}
		txn, err := mc.Txn(ctx).If(clientv3.Compare(clientv3.Value("rf/00"), "=", "v0")).
			Then(clientv3.OpPut("rf/01", fmt.Sprintf("txn-%d", i)), clientv3.OpPut("rf/59", fmt.Sprintf("txn-%d", i))).Commit()
		if err != nil || !txn.Succeeded {
			t.Fatalf("cross-range txn via %s: %v %v", m.Name(), txn, err)
		}
		resp, err := mc.Get(ctx, "rf/", clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("get via %s: %v", m.Name(), err)
		}
		got := map[string]string{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = string(kv.Value)
		}
		if len(got) != 60 || got["rf/01"] != fmt.Sprintf("txn-%d", i) || got["rf/59"] != got["rf/01"] || got[fmt.Sprintf("rf/%02d", i*10+5)] != fmt.Sprintf("via-%d", i) {
			t.Fatalf("linearizable get via %s after its writes: %d keys, %v", m.Name(), len(got), got)
		}
	}
	// Every member's range list counts the keys of every range, held there or not.
	waitFor(t, 10*time.Second, "the same key counts from every member", func() error {
		var want []int64
		for i, m := range c.Members() {
			rs, err := adminClient(t, m.Endpoint()).ListRanges(ctx, &adminpb.ListRangesRequest{})
			if err != nil {
				return err
			}
			var got []int64
			total := int64(0)
			for _, r := range rs.Ranges {
				got = append(got, r.Keys)
				total += r.Keys
			}
			if total < 60 {
				return fmt.Errorf("%s counts %d keys over its range list %v", m.Name(), total, got)
			}
			if i == 0 {
				want = got
			} else if !slices.Equal(got, want) {
				return fmt.Errorf("%s counts %v keys per range, %s %v", m.Name(), got, c.Members()[0].Name(), want)
			}
		}
		return nil
	})
	last, err := cli.Get(ctx, "rf/00")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		waitFor(t, 10*time.Second, "serializable get via "+m.Name(), func() error {
			resp, err := m.Client().Get(ctx, "rf/", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
			if err != nil {
				return err
			}
			if resp.Count != 60 || resp.Header.Revision < last.Header.Revision {
				return fmt.Errorf("count %v at %v", resp.Count, resp.Header.Revision)
			}
			return nil
		})
		// The whole history from revision 1, in order, from a member that lacks some
		// of the ranges: one event per put of this test.
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		wch := m.Client().Watch(wctx, "rf/", clientv3.WithPrefix(), clientv3.WithRev(1))
		events, prev := 0, int64(0)
		for events < 60+5*3 {
			wr, ok := <-wch
			if !ok {
				t.Fatalf("watch via %s ended after %d events: %v", m.Name(), events, wctx.Err())
			}
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision < prev {
					t.Fatalf("watch via %s: revision %d after %d", m.Name(), ev.Kv.ModRevision, prev)
				}
				prev = ev.Kv.ModRevision
				events++
			}
		}
		wcancel()
		if events != 75 {
			t.Fatalf("watch via %s: %d events, want 75", m.Name(), events)
		}
	}

	// Moves under writes, then the loss of a member.
	var (
		mu    sync.Mutex
		acked = map[string]string{}
		wg    sync.WaitGroup
	)
	wctx, stopWriters := context.WithCancel(ctx)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wcli := c.Members()[w].Client()
			for n := 0; wctx.Err() == nil; n++ {
				// A key of its own per write, across every range.
				k, v := fmt.Sprintf("rf/%02d/w%d-%d", (n*7+w*13)%60, w, n), fmt.Sprintf("v%d", n)
				pctx, pcancel := context.WithTimeout(wctx, 10*time.Second)
				_, err := wcli.Put(pctx, k, v)
				pcancel()
				if err == nil {
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				}
			}
		}()
	}
	ranges := listRanges(ctx, t, admin)
	nodes := listNodes(ctx, t, admin)
	var primary uint64
	for _, n := range nodes {
		if n.OracleLeader {
			primary = n.Id
		}
	}
	moved := 0
	for _, r := range ranges {
		if moved == 2 {
			break
		}
		// The first move takes a replica off the oracle's leader when it has one.
		from := r.Replicas[0]
		if moved == 0 && !slices.Contains(r.Replicas, primary) {
			continue
		}
		if moved == 0 {
			from = primary
		}
		var to uint64
		for _, n := range nodes {
			if !slices.Contains(r.Replicas, n.Id) {
				to = n.Id
			}
		}
		out, errOut, err := harness.Mosaicctl(t, m1.Endpoint(), "range", "move", strconv.FormatUint(r.Id, 10),
			"--to", strconv.FormatUint(to, 16), "--from", strconv.FormatUint(from, 16), "--json")
		if err != nil {
			t.Fatalf("range move %d from %x to %x: %v\n%s", r.Id, from, to, err, errOut)
		}
		var after []struct{ Replicas []uint64 }
		if err := json.Unmarshal([]byte(out), &after); err != nil || len(after) != 1 {
			t.Fatalf("range move printed %q: %v", out, err)
		}
		if slices.Contains(after[0].Replicas, from) || !slices.Contains(after[0].Replicas, to) || len(after[0].Replicas) != 3 {
			t.Fatalf("range %d after moving %x to %x: replicas %x", r.Id, from, to, after[0].Replicas)
		}
		t.Logf("moved range %d's replica from %x to %x under writes", r.Id, from, to)
		moved++
	}
	if moved != 2 {
		t.Fatalf("made %d moves", moved)
	}
	// Kill a member that holds replicas and is not the oracle's leader.
	var victim int
	for i, m := range c.Members() {
		if id := memberID(ctx, t, m.Endpoint()); id != primary {
			victim = i
			break
		}
	}
	c.Kill(victim)
	t.Logf("killed %s", c.Members()[victim].Name())
	time.Sleep(3 * time.Second)
	stopWriters()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged under the moves")
	}
	// Every acknowledged write (the last one of each key) is there, read through
	// every member still up.
	for i, m := range c.Members() {
		if i == victim {
			continue
		}
		resp, err := m.Client().Get(ctx, "rf/", clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("get via %s after the kill: %v", m.Name(), err)
		}
		got := map[string]string{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = string(kv.Value)
		}
		for k, v := range acked {
			if got[k] != v {
				t.Fatalf("via %s: acknowledged put %s=%s reads %q", m.Name(), k, v, got[k])
			}
		}
	}
	t.Logf("%d keys written under 2 moves and a kill", len(acked))
}

// checkSpread checks that every range has rf replicas and that members' replica counts,
// and the counts of ranges they lead, differ by at most one.
func checkSpread(ctx context.Context, admin adminpb.AdminClient, rf int) error {
	rs, err := admin.ListRanges(ctx, &adminpb.ListRangesRequest{})
	if err != nil {
		return err
	}
	counts := map[uint64]int{}
	for _, r := range rs.Ranges {
		if len(r.Replicas) != rf {
			return fmt.Errorf("range %d has replicas %x", r.Id, r.Replicas)
		}
		for _, id := range r.Replicas {
			counts[id]++
		}
	}
	ns, err := admin.ListNodes(ctx, &adminpb.ListNodesRequest{})
	if err != nil {
		return err
	}
	lo, hi := 1<<30, 0
	llo, lhi := 1<<30, 0
	leads := map[uint64]uint32{}
	for _, n := range ns.Nodes {
		if int(n.Ranges) != counts[n.Id] {
			return fmt.Errorf("node list says %x holds %d ranges, range list %d", n.Id, n.Ranges, counts[n.Id])
		}
		lo, hi = min(lo, counts[n.Id]), max(hi, counts[n.Id])
		llo, lhi = min(llo, int(n.Leaders)), max(lhi, int(n.Leaders))
		leads[n.Id] = n.Leaders
	}
	if hi-lo > 1 {
		return fmt.Errorf("replica counts %v", counts)
	}
	if lhi-llo > 1 {
		return fmt.Errorf("leader counts %v", leads)
	}
	return nil
}

func adminClient(t *testing.T, endpoint string) adminpb.AdminClient {
	t.Helper()
	conn, err := grpc.NewClient(endpoint[len("http://"):], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminpb.NewAdminClient(conn)
}

func listRanges(ctx context.Context, t *testing.T, admin adminpb.AdminClient) []*adminpb.RangeInfo {
	t.Helper()
	resp, err := admin.ListRanges(ctx, &adminpb.ListRangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Ranges
}

func listNodes(ctx context.Context, t *testing.T, admin adminpb.AdminClient) []*adminpb.NodeInfo {
	t.Helper()
	resp, err := admin.ListNodes(ctx, &adminpb.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Nodes
}

func memberID(ctx context.Context, t *testing.T, endpoint string) uint64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return st.Header.MemberId
}
