package tests

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestClusterLocalReads: a serializable read never leaves the member it reaches, as
// etcd's do. Five members, the keys split into five ranges of three replicas each, so
// each member is a replica of only some of them; with local reads (the default) it holds
// a learner of each of the others. With the four other members paused (SIGSTOP, as if
// cut off from them), the fifth still answers a serializable get over every range with
// every key's last value, while a linearizable get and a put there fail; once the others
// run again, writes and linearizable reads through it work again.
//
// Against etcd (MOSAIC_TEST_SUBJECT=etcd) it runs the same, without the splits.
func TestClusterLocalReads(t *testing.T) {
	t.Parallel()
	c := harness.StartCluster(t, 5, harness.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	members := c.Members()
	m1, reader := members[0], members[4]
	cli := c.Client()
	want := map[string]string{}
	for i := range 50 {
		k := fmt.Sprintf("lr/%02d", i)
		if _, err := cli.Put(ctx, k, "v0"); err != nil {
			t.Fatal(err)
		}
		want[k] = "v0"
	}
	mosaic := !harness.SubjectIsEtcd()
	var admin adminpb.AdminClient
	if mosaic {
		for _, at := range []string{"lr/10", "lr/20", "lr/30", "lr/40"} {
			if _, errOut, err := harness.Mosaicctl(t, m1.Endpoint(), "range", "split", at); err != nil {
				t.Fatalf("split at %s: %v\n%s", at, err, errOut)
			}
		}
		admin = adminClient(t, m1.Endpoint())
		waitFor(t, 90*time.Second, "replicas spread", func() error { return checkSpread(ctx, admin, 3) })
	}
	// Writes through every member, after the splits and moves.
	for i := range 50 {
		k := fmt.Sprintf("lr/%02d", i)
		mc := members[i%len(members)].Client()
		if i%10 == 9 {
			if _, err := mc.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			delete(want, k)
			continue
		}
		if _, err := mc.Put(ctx, k, fmt.Sprintf("v1-%d", i)); err != nil {
			t.Fatal(err)
		}
		want[k] = fmt.Sprintf("v1-%d", i)
	}
	last, err := cli.Get(ctx, "lr/00")
	if err != nil {
		t.Fatal(err)
	}

	readerID := memberID(ctx, t, reader.Endpoint())
	if mosaic {
		// The reader is a replica of only some ranges: the test is about the others.
		notHeld, ranges := 0, listRanges(ctx, t, admin)
		for _, r := range ranges {
			if !slices.Contains(r.Replicas, readerID) {
				notHeld++
			}
		}
		if notHeld == 0 {
			t.Fatalf("member %x is a replica of every range; nothing to test", readerID)
		}
		t.Logf("%s (%x) is a replica of %d of the ranges, not of %d", reader.Name(), readerID, len(ranges)-notHeld, notHeld)
		// Wait until the reader's replica (learner or not) of each range has applied what
		// the range's most advanced replica has.
		local := adminClient(t, reader.Endpoint())
		waitFor(t, 60*time.Second, "the reader's replicas caught up", func() error {
			top := map[uint64]int64{}
			for _, m := range members {
				rs, err := adminClient(t, m.Endpoint()).ListRanges(ctx, &adminpb.ListRangesRequest{Local: true, NoStats: true})
				if err != nil {
					return err
				}
				for _, r := range rs.Ranges {
					top[r.Id] = max(top[r.Id], r.AppliedRevision)
				}
			}
			rs, err := local.ListRanges(ctx, &adminpb.ListRangesRequest{Local: true, NoStats: true})
			if err != nil {
				return err
			}
			for _, r := range rs.Ranges {
				if !slices.Contains(r.Replicas, readerID) && !slices.Contains(r.Learners, readerID) {
					return fmt.Errorf("range %d: the reader is neither a replica (%x) nor a learner (%x)", r.Id, r.Replicas, r.Learners)
				}
				if r.AppliedRevision < top[r.Id] {
					return fmt.Errorf("range %d applied to %d on the reader, %d elsewhere", r.Id, r.AppliedRevision, top[r.Id])
				}
			}
			return nil
		})
	} else {
		waitFor(t, 30*time.Second, "the reader caught up", func() error {
			resp, err := reader.Client().Get(ctx, "lr/00", clientv3.WithSerializable())
			if err != nil {
				return err
			}
			if resp.Header.Revision < last.Header.Revision {
				return fmt.Errorf("at revision %d, want %d", resp.Header.Revision, last.Header.Revision)
			}
			return nil
		})
	}

	others := members[:4]
	for _, m := range others {
		m.Pause()
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			for _, m := range others {
				m.Resume()
			}
		}
	}
	defer resume()
	t.Logf("paused %d members; reading through %s alone", len(others), reader.Name())

	rc := reader.Client()
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := rc.Get(sctx, "lr/", clientv3.WithPrefix(), clientv3.WithSerializable())
	scancel()
	if err != nil {
		t.Fatalf("serializable get through %s with the others paused: %v", reader.Name(), err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("serializable get through %s with the others paused: %d keys %v, want %d keys %v", reader.Name(), len(got), got, len(want), want)
	}
	if resp.Header.Revision < last.Header.Revision {
		t.Fatalf("serializable get at revision %d, before the last write's %d", resp.Header.Revision, last.Header.Revision)
	}
	for _, k := range []string{"lr/05", "lr/25", "lr/45"} {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := rc.Get(sctx, k, clientv3.WithSerializable())
		scancel()
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != want[k] {
			t.Fatalf("serializable get %s through %s with the others paused: %v %v, want %s", k, reader.Name(), r, err, want[k])
		}
	}
	// Without a quorum nothing linearizable is answered.
	lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
	if r, err := rc.Get(lctx, "lr/05"); err == nil {
		t.Errorf("linearizable get through %s with the others paused answered %v", reader.Name(), r)
	}
	lcancel()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	if r, err := rc.Put(pctx, "lr/during-pause", "x"); err == nil {
		t.Errorf("put through %s with the others paused answered %v", reader.Name(), r)
	}
	pcancel()

	resume()
	waitFor(t, 60*time.Second, "a put through "+reader.Name()+" after the others resumed", func() error {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		_, err := rc.Put(pctx, "lr/05", "after")
		return err
	})
	r, err := rc.Get(ctx, "lr/05")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "after" {
		t.Fatalf("linearizable get through %s after the others resumed: %v %v", reader.Name(), r, err)
	}
}
