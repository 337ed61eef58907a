package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/tests/harness"
)

// memberListJSON is `etcdctl member list -w json`.
type memberListJSON struct {
	Members []struct {
		ID         uint64   `json:"ID"`
		Name       string   `json:"name"`
		PeerURLs   []string `json:"peerURLs"`
		ClientURLs []string `json:"clientURLs"`
		IsLearner  bool     `json:"isLearner"`
	} `json:"members"`
}

func memberList(t *testing.T, endpoint string) memberListJSON {
	t.Helper()
	out, errOut, err := harness.Etcdctl(t, endpoint, "member", "list", "-w", "json")
	if err != nil {
		t.Fatalf("member list on %s: %v\n%s", endpoint, err, errOut)
	}
	var l memberListJSON
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("member list on %s: %v\n%s", endpoint, err, out)
	}
	return l
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMembershipWithEtcdctl grows a 3-member cluster with a learner, promotes it, removes
// the leader and checks the cluster keeps every write and keeps serving, all through
// etcdctl's member commands as an etcd operator runs them.
func TestMembershipWithEtcdctl(t *testing.T) {
	t.Parallel()
	c := harness.StartCluster(t, 3, harness.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	m1 := c.Members()[0]
	cli := c.Client()
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	// Two ranges, so that conf changes reach more than one range group.
	if _, errOut, err := harness.Mosaicctl(t, m1.Endpoint(), "range", "split", "k10"); err != nil {
		t.Fatalf("split: %v\n%s", err, errOut)
	}

	// Add m4 as a learner, as etcd's docs do it, and start it with what member add printed.
	peer := harness.FreePeerURL(t)
	out, errOut, err := harness.Etcdctl(t, m1.Endpoint(), "member", "add", "m4", "--learner", "--peer-urls", peer)
	if err != nil {
		t.Fatalf("member add: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "added as learner to cluster") {
		t.Fatalf("member add printed %q", out)
	}
	initial := regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]+)"`).FindStringSubmatch(out)
	state := regexp.MustCompile(`ETCD_INITIAL_CLUSTER_STATE="([^"]+)"`).FindStringSubmatch(out)
	if initial == nil || state == nil || state[1] != "existing" {
		t.Fatalf("member add printed %q", out)
	}
	m4 := c.StartJoining(t, "m4", peer, initial[1])
	m4cli := m4.Client()

	// The learner catches up (serializable reads are local) and refuses what etcd's
	// learners refuse.
	waitFor(t, 20*time.Second, "learner catching up", func() error {
		resp, err := m4cli.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable())
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 20 {
			return fmt.Errorf("%d keys", len(resp.Kvs))
		}
		return nil
	})
	if _, err := m4cli.Put(ctx, "from-learner", "x"); !harness.SameError(err, rpctypes.ErrGRPCNotSupportedForLearner) {
		t.Errorf("put on a learner: %v, want %v", err, rpctypes.ErrGRPCNotSupportedForLearner)
	}
	if st, err := m4cli.Status(ctx, m4.Endpoint()); err != nil || !st.IsLearner {
		t.Errorf("status of the learner: %v %v, want is_learner", st, err)
	}
	l := memberList(t, m4.Endpoint())
	if len(l.Members) != 4 {
		t.Fatalf("member list: %+v", l)
	}
	var m4id uint64
	for _, m := range l.Members {
		if m.Name == "m4" {
			m4id = m.ID
			if !m.IsLearner || len(m.ClientURLs) != 1 || m.ClientURLs[0] != m4.Endpoint() {
				t.Errorf("m4 listed as %+v", m)
			}
		}
	}
	if m4id == 0 {
		t.Fatalf("m4 not in %+v", l)
	}

	// Promote it; it then takes writes and linearizable reads like any member.
	hexID := strconv.FormatUint(m4id, 16)
	waitFor(t, 20*time.Second, "promote", func() error {
		_, errOut, err := harness.Etcdctl(t, m1.Endpoint(), "member", "promote", hexID)
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		return nil
	})
	waitFor(t, 10*time.Second, "write through m4", func() error {
		_, err := m4cli.Put(ctx, "from-m4", "yes")
		return err
	})
	if resp, err := cli.Get(ctx, "from-m4"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get from-m4: %v %v", resp, err)
	}

	// Remove the leader, through another member: it hands the lead on, is removed and
	// stops; the other three keep every write and keep serving.
	li := c.Leader(ctx)
	leader := c.Members()[li]
	other := c.Members()[(li+1)%3]
	st, err := cli.Status(ctx, leader.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	var admin adminpb.AdminClient
	if !harness.SubjectIsEtcd() {
		// Mosaic: with four members and three replicas per range, the member removed
		// holds replicas, and they are moved to the others before it goes.
		admin = adminClient(t, other.Endpoint())
		waitFor(t, 30*time.Second, "the leader holding replicas", func() error {
			held := 0
			for _, r := range listRanges(ctx, t, admin) {
				if slices.Contains(r.Replicas, st.Header.MemberId) {
					held++
				}
			}
			if held == 0 {
				return fmt.Errorf("%s holds no replica", leader.Name())
			}
			return nil
		})
	}
	if _, errOut, err := harness.Etcdctl(t, other.Endpoint(), "member", "remove", strconv.FormatUint(st.Header.MemberId, 16)); err != nil {
		t.Fatalf("member remove: %v\n%s", err, errOut)
	}
	if admin != nil {
		waitFor(t, 10*time.Second, "replicas moved off the removed member", func() error {
			for _, r := range listRanges(ctx, t, admin) {
				if len(r.Replicas) != 3 || slices.Contains(r.Replicas, st.Header.MemberId) {
					return fmt.Errorf("range %d after removing %x: replicas %x, want 3 others", r.Id, st.Header.MemberId, r.Replicas)
				}
			}
			return nil
		})
		// Local reads: the member held a learner of each range it was not a replica of
		// (and its moved replicas stayed on as learners); once it is removed, the ranges'
		// leaders take those out. Three members are left, each a replica of every range.
		waitFor(t, 40*time.Second, "the removed member's learners taken out", func() error {
			for _, r := range listRanges(ctx, t, admin) {
				if len(r.Learners) > 0 {
					return fmt.Errorf("range %d after removing %x: learners %x", r.Id, st.Header.MemberId, r.Learners)
				}
			}
			return nil
		})
	}
	waitFor(t, 20*time.Second, "removed leader stops", func() error {
		if exited, _ := leader.Exited(); !exited {
			return fmt.Errorf("%s still runs", leader.Name())
		}
		return nil
	})
	ocli := other.Client()
	waitFor(t, 10*time.Second, "write after removal", func() error {
		_, err := ocli.Put(ctx, "after-remove", "ok")
		return err
	})
	resp, err := m4cli.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 22 { // 20 + from-m4 + after-remove (the harness's own keys aside)
		got := map[string]bool{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = true
		}
		for _, k := range []string{"k00", "k19", "from-m4", "after-remove"} {
			if !got[k] {
				t.Errorf("%s missing after the removal", k)
			}
		}
	}
	l = memberList(t, other.Endpoint())
	if len(l.Members) != 3 {
		t.Errorf("member list after removal: %+v", l)
	}
	for _, m := range l.Members {
		if m.ID == st.Header.MemberId {
			t.Errorf("removed member still listed: %+v", m)
		}
	}

	// Bad input gets etcd's errors.
	if _, errOut, err := harness.Etcdctl(t, other.Endpoint(), "member", "remove", "1234"); err == nil || !strings.Contains(errOut, rpctypes.ErrGRPCMemberNotFound.Error()) {
		t.Errorf("removing an unknown member: %v %q", err, errOut)
	}
	if _, errOut, err := harness.Etcdctl(t, other.Endpoint(), "member", "add", "dup", "--peer-urls", peer); err == nil || !strings.Contains(errOut, rpctypes.ErrGRPCPeerURLExist.Error()) {
		t.Errorf("adding a member with a taken peer URL: %v %q", err, errOut)
	}

	// m4, killed and restarted, comes back with its data.
	m4.Kill()
	m4.Restart()
	waitFor(t, 20*time.Second, "m4 after restart", func() error {
		resp, err := m4.Client().Get(ctx, "after-remove")
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 {
			return fmt.Errorf("after-remove not there")
		}
		return nil
	})
}
