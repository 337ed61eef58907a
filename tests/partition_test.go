package tests

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The partition test. Its operations are the fault test's (faultOp, on the first partKeys
// of the fault test's keys), and after the run it applies the fault test's checks
// (cluster_fault_test.go): linearizability (pairModel), the clients' revisions, each
// member's revision history and final keys, and the members' agreement. Its own check is
// the one of each member's time cut off (checkPartIsolation).

// Environment variables of the partition test.
const (
	// partSeedEnv sets the seed of the workload, to replay a run.
	partSeedEnv = "MOSAIC_PARTITION_SEED"
)

const (
	partClientsPerMember = 3                  // client i is bound to member i % members
	partKeys             = 20                 // the fault test's keys faultKey(0..19)
	partProbeKey         = "partition/probe/" // + member name: the test's own probes
	partOpTimeout        = 2 * time.Second
	partWarmup           = 2 * time.Second
	partCutFor           = 5 * time.Second // how long a member stays cut off
	partSettle           = 2 * time.Second // workload after a member is back
	// partMajorityAck bounds the time from cutting a member off to the first write
	// acknowledged through another member that was sent after the cut (which, when the
	// leader is cut off, includes electing a new one).
	partMajorityAck = 5 * time.Second
	// partHealDeadline bounds the time from reconnecting a member to its acknowledging a
	// linearizable read and a write again.
	partHealDeadline = 15 * time.Second
)

// partIsolation is one member's time cut off from the others.
type partIsolation struct {
	member     int
	kind       string // "leader" or "follower": its role when it was cut off
	start, end int64  // ns since the workload began: the cut is done / reconnecting begins
	// newLeader is the member the others named as leader while it was cut off (-1: none),
	// from newLeaderAt on.
	newLeader   int
	newLeaderAt int64
	// probes are the test's own operations through the member while it was cut off (not
	// part of the history: their key is not a workload key).
	probes []*faultOp
	// healedAfter is how long after reconnecting it acknowledged a read and a write.
	healedAfter time.Duration
}

// TestPartitionDocker runs a 3-member cluster in Docker containers on a private network of
// the test, under a concurrent get/put/cas/delete workload from clients bound to single
// members, and cuts members off that network for real (`docker network disconnect`, and
// `docker network connect` after partCutFor): first the leader, then a follower. The
// clients reach every member all along, through a second network on which the members'
// client ports are published. It checks that (issue 4):
//
//   - while cut off, the member acknowledges no write and no linearizable read sent after
//     the cut: they fail with etcd's errors ("etcdserver: ...") or time out; the errors are
//     reported;
//   - the majority keeps acknowledging writes: one sent after the cut is acknowledged within
//     partMajorityAck of it; when the leader is cut off, the others name a new leader;
//   - after reconnecting, the member acknowledges a linearizable read and a write within
//     partHealDeadline;
//   - the whole history is linearizable (porcupine with the fault test's pairModel; a failed
//     write may or may not have happened, and a failed compare-and-set read the value then);
//     acknowledged writes have distinct revisions, in real-time order;
//   - at the end the members have converged: each one's revision history (a watch from
//     revision 1) is dense and the same as the others', every acknowledged write is in it at
//     the revision it was acknowledged with, every acknowledged read saw the keys as they
//     were at its revision, every event comes from a write that was sent and may have
//     happened, and every key holds its newest acknowledged write (or a later write of
//     unknown outcome): no acknowledged write is lost (the fault test's checks, see
//     cluster_fault_test.go);
//   - live watchers started before the workload (issue 5; partition_watch_test.go), resumed
//     on another member when their stream ends (a require-leader watch on a member cut off
//     ends with "etcdserver: no leader"), each saw exactly the revision history's events of
//     its keys, in order, each once, with the right prev_kv (checkWatchStream).
//
// It first found that a write sent through a cut-off follower, which forwards it to the
// leader, failed with the follower's broken connection to the leader passed on as is
// (not one of etcd's errors); forwarding now answers etcd's "request timed out" then.
// Against etcd (MOSAIC_TEST_SUBJECT=etcd, etcd's server built statically into the image)
// it passes.
//
// It needs Docker: it is skipped when `docker info` fails, with MOSAIC_SKIP_DOCKER=1, or
// with -short. MOSAIC_PARTITION_SEED replays a workload.
func TestPartitionDocker(t *testing.T) { testPartition(t, 3, nil) }

// TestPartitionDocker5 is TestPartitionDocker on 5 members with ranges of 3
// replicas (the default replication factor): the test's keys are split into
// 5 ranges first, so members hold different ranges and a member cut off may
// not hold the range a request needs.
//
// It found that a member cut off and reconnected did not serve for more
// than 15s: its connection to the primary (forwarded writes, reads of ranges
// held elsewhere) was stuck in an attempt to connect begun during the cut,
// which gRPC's defaults let run for 20s (router/forward.go).
//
// On 2026-12-07 it failed in most runs, with the watchers stuck short of
// the last revision and a member unable to read the revision history: a
// range whose lead had reached the replica being removed from it stayed led
// by that replica, which committed nothing and kept the others from
// electing (actors/raftgroup.go, StepDownOnRemoval). It was out of the
// default run until that was fixed.
//
// Since 2026-12-08 every member holds a learner of each range it is not a
// replica of (local reads); TestPartitionDocker5RemoteReads runs it with
// --local-reads=false, where a member cut off holds only some ranges.
func TestPartitionDocker5(t *testing.T) {
	testPartition(t, 5, []string{faultKey(4), faultKey(8), faultKey(12), faultKey(16)})
}

func TestPartitionDocker5RemoteReads(t *testing.T) {
	if harness.SubjectIsEtcd() {
		t.Skip("a Mosaic flag")
	}
	testPartition(t, 5, []string{faultKey(4), faultKey(8), faultKey(12), faultKey(16)}, "--local-reads=false")
}

// testPartition runs the partition test on a cluster of n members whose
// keys are first split at splitAt, each member started with the extra
// flags args.
func testPartition(t *testing.T, n int, splitAt []string, args ...string) {
	if testing.Short() {
		t.Skip("-short: skipping a test that builds an image and runs containers")
	}
	harness.RequireDocker(t)
	t.Parallel()
	testStart := time.Now()
	seed := seedFromEnv(t, partSeedEnv)
	say := progress(t, "partition")
	say("seed %d (%s=%d to replay)", seed, partSeedEnv, seed)

	image := harness.BuildServerImage(t)
	cluster := harness.StartDockerCluster(t, n, image, args...)
	members := cluster.Members()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	cancel()
	ids := cluster.MemberIDs(context.Background())
	if slices.Contains(ids, 0) {
		t.Fatalf("not every member answers Status: member ids %x", ids)
	}
	say("cluster ready %s after the start of the test", time.Since(testStart).Round(time.Millisecond))
	if len(splitAt) > 0 && !harness.SubjectIsEtcd() {
		for _, key := range splitAt {
			if out, errOut, err := harness.Mosaicctl(t, members[0].Endpoint, "range", "split", "--", key); err != nil {
				t.Fatalf("mosaicctl range split %q: %v\n%s%s", key, err, out, errOut)
			}
		}
		out, errOut, err := harness.Mosaicctl(t, members[0].Endpoint, "range", "list")
		if err != nil {
			t.Fatalf("mosaicctl range list: %v\n%s", err, errOut)
		}
		var named []string
		for i, m := range members {
			named = append(named, fmt.Sprintf("%s=%x", m.Name, ids[i]))
		}
		say("ranges after splitting (members %s):\n%s", strings.Join(named, " "), out)
	}
	partClients := partClientsPerMember * n

	// Live watchers from a revision before the workload (see partition_watch_test.go); they
	// do not resume on the member cut off at the moment.
	var isolated atomic.Int32
	isolated.Store(-1)
	watches := startPartWatches(t, cluster, ids, &isolated, seed)

	// The workload: each client is bound to one member and runs until stop is closed.
	var (
		mu      sync.Mutex
		history []*faultOp // every operation, failed reads included
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }
	for cl := range partClients {
		member := cl % n
		c := harness.NewClient(t, members[member].Endpoint)
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(cl)))
			seen := map[string]string{} // the last value this client saw per key
			failures := 0
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				op := runPartOp(c, rng, cl, member, n, seen, now)
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
				if op.err != nil {
					// Back off while the member is cut off, so that its clients do not fill
					// the history with writes of unknown outcome.
					failures++
					time.Sleep(time.Duration(min(failures, 5)) * 100 * time.Millisecond)
				} else {
					failures = 0
				}
			}
		}()
	}

	// The faults: cut the leader off, then a follower.
	others := func(i int) []int {
		var o []int
		for j := range members {
			if j != i {
				o = append(o, j)
			}
		}
		return o
	}
	leaderOf := func(within time.Duration) int {
		deadline := time.Now().Add(within)
		for {
			if l := cluster.LeaderAmong(context.Background(), ids, nil); l >= 0 {
				return l
			}
			if time.Now().After(deadline) {
				return -1
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var episodes []*partIsolation
	isolate := func(i int, kind string) {
		m := members[i]
		ep := &partIsolation{member: i, kind: kind, newLeader: -1}
		episodes = append(episodes, ep)
		isolated.Store(int32(i))
		cluster.Isolate(i)
		ep.start = now()
		cutAt := time.Now()
		say("t=%.2fs: %s (%s) cut off from the peer network", float64(ep.start)/1e9, m.Name, kind)

		// The others name a leader among themselves: a new one if the leader was cut off.
		var watchWG sync.WaitGroup
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			for time.Since(cutAt) < partCutFor {
				if l := cluster.LeaderAmong(context.Background(), ids, others(i)); l >= 0 && l != i {
					ep.newLeader, ep.newLeaderAt = l, now()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		// The test's own probes through the member: a put and a linearizable get once it
		// had a second to notice, and a put still waiting when it is reconnected.
		var probeMu sync.Mutex
		probe := func(kind string, after, timeout time.Duration) {
			watchWG.Add(1)
			go func() {
				defer watchWG.Done()
				time.Sleep(time.Until(cutAt.Add(after)))
				op := &faultOp{client: -1, member: i, in: faultInput{op: kind, keys: []string{partProbeKey + m.Name}}}
				if kind == "put" {
					op.in.values = []string{fmt.Sprintf("probe-%d", now())}
				}
				pctx, pcancel := context.WithTimeout(context.Background(), timeout)
				defer pcancel()
				op.call = now()
				var err error
				if kind == "put" {
					_, err = m.Client().Put(pctx, op.in.keys[0], op.in.values[0])
				} else {
					_, err = m.Client().Get(pctx, op.in.keys[0])
				}
				op.ret = now()
				if err != nil {
					op.err, op.failedAt, op.ret = err, op.ret, math.MaxInt64
				}
				probeMu.Lock()
				ep.probes = append(ep.probes, op)
				probeMu.Unlock()
			}()
		}
		probe("put", time.Second, partOpTimeout)
		probe("get", time.Second, partOpTimeout)
		probe("put", partCutFor-time.Second, 3*time.Second)
		time.Sleep(time.Until(cutAt.Add(partCutFor)))
		ep.end = now()
		cluster.Heal(i)
		isolated.Store(-1)
		say("t=%.2fs: %s reconnected", float64(ep.end)/1e9, m.Name)

		// It acknowledges a linearizable read and a write again.
		healedAt := time.Now()
		for {
			hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
			_, err := m.Client().Get(hctx, partProbeKey+m.Name)
			if err == nil {
				_, err = m.Client().Put(hctx, partProbeKey+m.Name, "reconnected")
			}
			hcancel()
			if err == nil {
				break
			}
			if time.Since(healedAt) > partHealDeadline {
				t.Fatalf("%s does not acknowledge reads and writes %s after it was reconnected: %v; %s", m.Name, partHealDeadline, err, reachability(m))
			}
			time.Sleep(100 * time.Millisecond)
		}
		ep.healedAfter = time.Since(healedAt)
		watchWG.Wait()
		say("%s acknowledges reads and writes again %s after reconnecting", m.Name, ep.healedAfter.Round(time.Millisecond))
	}

	time.Sleep(partWarmup)
	leader := leaderOf(10 * time.Second)
	if leader < 0 {
		t.Fatalf("the members do not agree on a leader")
	}
	isolate(leader, "leader")
	time.Sleep(partSettle)
	if leader = leaderOf(10 * time.Second); leader < 0 {
		t.Fatalf("the members do not agree on a leader after the first reconnection")
	}
	follower := -1
	for _, j := range others(leader) {
		if follower < 0 || j != episodes[0].member { // preferably not the member cut off before
			follower = j
		}
	}
	isolate(follower, "follower")
	time.Sleep(partSettle)
	close(stop)
	wg.Wait()
	watches.drainAndSay(t, say)

	counts := map[string]int{}
	unknown, failedReads := 0, 0
	for _, op := range history {
		counts[op.in.op]++
		switch {
		case op.err != nil && op.in.op == "get":
			failedReads++
		case op.err != nil:
			unknown++
		}
	}
	say("%d operations by %d clients on %d keys (%d get, %d put, %d cas, %d delete); %d writes of unknown outcome, %d failed reads",
		len(history), partClients, partKeys, counts["get"], counts["put"], counts["cas"], counts["delete"], unknown, failedReads)
	if len(history)-unknown-failedReads < partClients*20 {
		t.Errorf("only %d operations were acknowledged", len(history)-unknown-failedReads)
	}

	for _, ep := range episodes {
		checkPartIsolation(t, ep, history, members, say)
	}
	lin := checkFaultLinearizable(t, history, say, false)
	checkClientRevisions(t, history)

	// Every member's revision history and keys, once each has caught up: a linearizable
	// read through it returns only then.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := make([]string, len(members))
	clients := make([]*clientv3.Client, len(members))
	for i, m := range members {
		names[i], clients[i] = m.Name, m.Client()
	}
	logs := checkMembersConverged(ctx, t, names, clients, history)
	if lin == porcupine.Unknown {
		checkFaultLinearizable(t, resolveUnknownWrites(history, logs[0]), say, true)
	}
	watches.check(t, logs[0], say)
	say("checked %d operations and %d revisions on %d members; test took %s", len(history), len(logs[0]), len(members), time.Since(testStart).Round(time.Millisecond))
}

// reachability says whether the member's published client port answers a
// TCP connect, and a Status through a new client, and what Docker publishes
// it as: it tells a member that does not serve from a port that does not
// reach it.
func reachability(m *harness.DockerMember) string {
	host := strings.TrimPrefix(m.Endpoint, "http://")
	tcp := "TCP connect ok"
	if conn, err := net.DialTimeout("tcp", host, time.Second); err != nil {
		tcp = "TCP connect: " + err.Error()
	} else {
		conn.Close()
	}
	status := "Status through a new client ok"
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint}, DialTimeout: 2 * time.Second})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = c.Status(ctx, m.Endpoint)
		cancel()
		c.Close()
	}
	if err != nil {
		status = "Status through a new client: " + err.Error()
	}
	port, _ := harness.Docker(context.Background(), "port", m.Container)
	if os.Getenv(harness.KeepLogsEnv) == "1" {
		// A read in flight while the member dumps its goroutines into its
		// log (Go's SIGQUIT; the member exits): what it waits on.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			m.Client().Get(ctx, partProbeKey+m.Name)
		}()
		time.Sleep(time.Second)
		harness.Docker(context.Background(), "kill", "--signal", "QUIT", m.Container)
		time.Sleep(time.Second)
	}
	return fmt.Sprintf("%s; %s; docker port: %q", tcp, status, strings.TrimSpace(port))
}

// runPartOp runs one random single-key operation (get, put, compare-and-set or delete) on
// a random key through c, which is bound to member. seen holds the last value the client saw
// per key: compare-and-sets expect it.
func runPartOp(c *clientv3.Client, rng *rand.Rand, cl, member, n int, seen map[string]string, now func() int64) *faultOp {
	key := faultKey(rng.IntN(partKeys))
	id := []string{fmt.Sprintf("c%d-%d", cl, n)} // unique: the value a put or cas writes
	var in faultInput
	switch r := rng.IntN(20); {
	case r < 7:
		in = newFaultInput("get", []string{key}, nil, nil)
	case r < 13:
		in = newFaultInput("put", []string{key}, id, nil)
	case r < 18:
		in = newFaultInput("cas", []string{key}, id, []string{seen[key]})
	default:
		in = newFaultInput("delete", []string{key}, nil, nil)
	}
	op := execFaultOp(c, in, cl, seen, now)
	op.member = member
	return op
}

func partAt(ns int64) string { return fmt.Sprintf("t=%.2fs", float64(ns)/1e9) }

// checkPartIsolation checks one member's time cut off and reports what it answered:
//   - nothing sent through it after the cut was acknowledged before the reconnection, and
//     what failed failed with an etcd error or a deadline;
//   - a write sent through another member after the cut was acknowledged within
//     partMajorityAck of the cut;
//   - if it was the leader, the others named a new leader.
func checkPartIsolation(t reporter, ep *partIsolation, history []*faultOp, members []*harness.DockerMember, say func(string, ...any)) {
	t.Helper()
	name := members[ep.member].Name
	p := &problems{t: t, check: fmt.Sprintf("%s cut off (%s to %s)", name, partAt(ep.start), partAt(ep.end))}
	errs := map[string]int{}
	sent, failed := 0, 0
	for _, op := range append(slices.Clone(history), ep.probes...) {
		if op.member != ep.member || op.call < ep.start || op.call > ep.end {
			continue
		}
		if op.client >= 0 {
			sent++
		}
		if op.err == nil {
			if op.ret <= ep.end {
				p.add("%s was acknowledged (sent at %s, answered at %s)", describeOp(op), partAt(op.call), partAt(op.ret))
			}
			continue
		}
		class, expected := partErrClass(op.err)
		if op.client >= 0 {
			failed++
			errs[class]++
		}
		if !expected {
			p.add("%s, sent at %s, failed at %s: neither an etcd error nor a timeout", describeOp(op), partAt(op.call), partAt(op.failedAt))
		}
	}
	p.done()
	if sent == 0 {
		t.Errorf("%s: no operation was sent through it while it was cut off: the check is empty", name)
	}
	var classes []string
	for c, n := range errs {
		classes = append(classes, fmt.Sprintf("%q x%d", c, n))
	}
	sort.Strings(classes)
	var probes []string
	for _, op := range ep.probes {
		res := "acknowledged at " + partAt(op.ret)
		if op.err != nil {
			res = fmt.Sprintf("failed at %s: %v", partAt(op.failedAt), op.err)
		}
		probes = append(probes, fmt.Sprintf("%s sent at %s %s", op.in.op, partAt(op.call), res))
	}
	say("%s (%s) cut off %s to %s: %d operations sent through it, %d failed: %s; the test's own probes: %s",
		name, ep.kind, partAt(ep.start), partAt(ep.end), sent, failed, strings.Join(classes, ", "), strings.Join(probes, "; "))

	var first *faultOp
	writes := 0
	for _, op := range history {
		if op.member == ep.member || op.call < ep.start || op.call > ep.end || !op.acked() {
			continue
		}
		writes++
		if first == nil || op.ret < first.ret {
			first = op
		}
	}
	leader := "none"
	if ep.newLeader >= 0 {
		leader = fmt.Sprintf("%s from %s", members[ep.newLeader].Name, partAt(ep.newLeaderAt))
	}
	switch {
	case first == nil:
		t.Errorf("while %s was cut off (%s to %s), the others acknowledged no write", name, partAt(ep.start), partAt(ep.end))
	case time.Duration(first.ret-ep.start) > partMajorityAck:
		t.Errorf("while %s was cut off, the others acknowledged their first write %s after the cut (%s), more than %s",
			name, time.Duration(first.ret-ep.start).Round(time.Millisecond), describeOp(first), partMajorityAck)
	default:
		say("the others while %s was cut off: %d writes acknowledged, the first %s after the cut; leader they named: %s",
			name, writes, time.Duration(first.ret-ep.start).Round(time.Millisecond), leader)
	}
	if ep.kind == "leader" && ep.newLeader < 0 {
		t.Errorf("while the leader %s was cut off, the others named no new leader", name)
	}
}

// partErrClass names the error a member answered, and reports whether it is one a member cut
// off from the others may give: one of etcd's server errors ("etcdserver: no leader",
// "etcdserver: leader changed", "etcdserver: request timed out", ...) or a deadline.
func partErrClass(err error) (string, bool) {
	if errors.Is(err, context.DeadlineExceeded) {
		return "context deadline exceeded", true
	}
	msg := err.Error()
	if i := strings.Index(msg, "etcdserver: "); i >= 0 {
		return msg[i:], true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.DeadlineExceeded {
		return "DeadlineExceeded: " + s.Message(), true
	}
	return msg, false
}

// TestPartitionCheckersCatchViolations runs the partition test's own check, that of a
// member's time cut off, on small synthetic histories: it accepts a correct episode and
// catches each kind of violation. (The checks it shares with the fault test are tested by
// TestFaultCheckersCatchViolations.) It needs no Docker.
func TestPartitionCheckersCatchViolations(t *testing.T) {
	k0, k1 := faultKey(0), faultKey(1)
	one := func(op, key string, values ...string) faultInput {
		return newFaultInput(op, []string{key}, values, nil)
	}
	// An acknowledgement through the member cut off, an error that is not etcd's, and a
	// majority that acknowledges nothing are all reported.
	members := []*harness.DockerMember{{Name: "m1"}, {Name: "m2"}, {Name: "m3"}}
	ep := &partIsolation{member: 0, kind: "follower", start: 100, end: 1000, newLeader: -1}
	quiet := func(string, ...any) {}
	good := []*faultOp{
		{client: 0, member: 0, in: one("put", k0, "x"), out: faultOutput{unknown: true}, call: 200, ret: math.MaxInt64, failedAt: 400, err: errors.New("etcdserver: request timed out")},
		{client: 3, member: 0, in: one("get", k0), out: faultOutput{unknown: true}, call: 300, ret: math.MaxInt64, failedAt: 500, err: context.DeadlineExceeded},
		{client: 1, member: 1, in: one("put", k1, "y"), call: 150, ret: 250, rev: 9},
		{client: 0, member: 0, in: one("get", k0), out: faultOutput{values: []string{""}}, call: 900, ret: 1100, rev: 9, modRevs: []int64{0}}, // answered after the reconnection
	}
	r := &recorder{}
	checkPartIsolation(r, ep, good, members, quiet)
	if len(r.errs) > 0 {
		t.Errorf("correct isolation rejected: %q", r.errs)
	}
	for _, tc := range []struct {
		name string
		op   *faultOp
		want string
	}{
		{"read acknowledged while cut off", &faultOp{client: 3, member: 0, in: one("get", k0), out: faultOutput{values: []string{""}}, call: 400, ret: 500, rev: 9, modRevs: []int64{0}}, "was acknowledged"},
		{"write acknowledged while cut off", &faultOp{client: 3, member: 0, in: one("put", k0, "z"), call: 400, ret: 500, rev: 10}, "was acknowledged"},
		{"foreign error", &faultOp{client: 3, member: 0, in: one("get", k0), out: faultOutput{unknown: true}, call: 400, ret: math.MaxInt64, failedAt: 600, err: errors.New("rpc error: code = Unknown desc = boom")}, "neither an etcd error"},
	} {
		r := &recorder{}
		checkPartIsolation(r, ep, append(slices.Clone(good), tc.op), members, quiet)
		if !strings.Contains(strings.Join(r.errs, "\n"), tc.want) {
			t.Errorf("%s: want a problem mentioning %q, got %q", tc.name, tc.want, r.errs)
		}
	}
	probeKey := partProbeKey + "m1"
	for _, probe := range []*faultOp{
		{client: -1, member: 0, in: faultInput{op: "put", keys: []string{probeKey}, values: []string{"p"}}, call: 400, ret: 500, rev: 10},
		{client: -1, member: 0, in: faultInput{op: "put", keys: []string{probeKey}, values: []string{"p"}}, call: 900, ret: math.MaxInt64, failedAt: 1200, err: errors.New("rpc error: code = Unavailable desc = error reading from server: connection reset by peer")},
	} {
		r := &recorder{}
		bad := *ep
		bad.probes = []*faultOp{probe}
		checkPartIsolation(r, &bad, good, members, quiet)
		if len(r.errs) == 0 {
			t.Errorf("probe %s accepted", describeOp(probe))
		}
	}
	r = &recorder{}
	checkPartIsolation(r, &partIsolation{member: 0, kind: "leader", start: 100, end: 1000, newLeader: -1}, good[:2], members, quiet)
	if got := strings.Join(r.errs, "\n"); !strings.Contains(got, "acknowledged no write") || !strings.Contains(got, "named no new leader") {
		t.Errorf("a stalled majority accepted: %q", r.errs)
	}
}
