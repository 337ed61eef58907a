package tests

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The partition test and its checks. They use the register model of linearizability_test.go
// (kvModel) and are otherwise self-contained.

// Environment variables of the partition test.
const (
	// partSeedEnv sets the seed of the workload, to replay a run.
	partSeedEnv = "MOSAIC_PARTITION_SEED"
)

const (
	partMembers   = 3
	partClients   = 9  // client i is bound to member i % partMembers
	partKeys      = 20 // keys partKeyPrefix00..19
	partKeyPrefix = "partition/k/"
	partProbeKey  = "partition/probe/" // + member name: the test's own probes
	partOpTimeout = 2 * time.Second
	partWarmup    = 2 * time.Second
	partCutFor    = 5 * time.Second // how long a member stays cut off
	partSettle    = 2 * time.Second // workload after a member is back
	// partMajorityAck bounds the time from cutting a member off to the first write
	// acknowledged through another member that was sent after the cut (which, when the
	// leader is cut off, includes electing a new one).
	partMajorityAck = 5 * time.Second
	// partHealDeadline bounds the time from reconnecting a member to its acknowledging a
	// linearizable read and a write again.
	partHealDeadline = 15 * time.Second
	// partPorcupineTimeout bounds the linearizability check.
	partPorcupineTimeout = 30 * time.Second
)

// partOp is one operation of the workload: its linearizability-model input and output plus
// what the other checks need.
type partOp struct {
	client, member int
	in             linInput
	out            linOutput
	call, ret      int64 // ns since the workload began; ret is MaxInt64 if it failed
	err            error // the error it failed with; a failed write's outcome is unknown
	failedAt       int64 // when it failed
	rev            int64 // acknowledged operations: the response header's revision
	modRev         int64 // acknowledged gets of a present key: the key's ModRevision
}

// acked reports whether the operation is an acknowledged write that took a revision: a put,
// a compare-and-set whose compare succeeded or a delete that deleted a key.
func (o *partOp) acked() bool {
	if o.err != nil {
		return false
	}
	switch o.in.op {
	case "put":
		return true
	case "cas", "delete":
		return o.out.ok
	}
	return false
}

// mayHaveWritten reports whether the operation may have changed its key: an acknowledged
// write or a write of unknown outcome.
func (o *partOp) mayHaveWritten() bool {
	return o.acked() || (o.err != nil && o.in.op != "get")
}

func (o *partOp) String() string {
	s := fmt.Sprintf("%s %s", o.in.op, o.in.key)
	switch o.in.op {
	case "put":
		s += "=" + o.in.value
	case "cas":
		s += fmt.Sprintf(" %q->%q", o.in.expected, o.in.value)
	}
	switch {
	case o.err != nil:
		s += fmt.Sprintf(" failed (%v)", o.err)
	case o.in.op == "get":
		s += fmt.Sprintf(" -> %q at revision %d", o.out.value, o.rev)
	case o.in.op == "put":
		s += fmt.Sprintf(" at revision %d", o.rev)
	default:
		s += fmt.Sprintf(" (%v) at revision %d", o.out.ok, o.rev)
	}
	if o.client < 0 {
		return fmt.Sprintf("%s (the test's probe via m%d)", s, o.member+1)
	}
	return fmt.Sprintf("%s (client %d via m%d)", s, o.client, o.member+1)
}

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
	probes []*partOp
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
//   - the whole history is linearizable (porcupine, per key; a failed write may or may not
//     have happened); acknowledged writes have distinct revisions, in real-time order;
//   - at the end the members have converged: each one's revision history (a watch from
//     revision 1) is dense and the same as the others', every acknowledged write is in it at
//     the revision it was acknowledged with, every event comes from a write that was sent and
//     may have happened, and every key holds its newest acknowledged write (or a later write
//     of unknown outcome): no acknowledged write is lost;
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
func TestPartitionDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that builds an image and runs containers")
	}
	harness.RequireDocker(t)
	t.Parallel()
	testStart := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(partSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", partSeedEnv, s, err)
		}
		seed = v
	}
	say := func(format string, args ...any) {
		t.Helper()
		t.Logf(format, args...)
		fmt.Printf("partition: "+format+"\n", args...)
	}
	say("seed %d (%s=%d to replay)", seed, partSeedEnv, seed)

	image := harness.BuildServerImage(t)
	cluster := harness.StartDockerCluster(t, partMembers, image)
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

	// Live watchers from a revision before the workload (see partition_watch_test.go); they
	// do not resume on the member cut off at the moment.
	var isolated atomic.Int32
	isolated.Store(-1)
	watches := startPartWatches(t, cluster, ids, &isolated, seed)

	// The workload: each client is bound to one member and runs until stop is closed.
	var (
		mu      sync.Mutex
		history []*partOp // every operation, failed reads included
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }
	for cl := range partClients {
		member := cl % partMembers
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
				op := &partOp{client: -1, member: i, in: linInput{op: kind, key: partProbeKey + m.Name}}
				if kind == "put" {
					op.in.value = fmt.Sprintf("probe-%d", now())
				}
				pctx, pcancel := context.WithTimeout(context.Background(), timeout)
				defer pcancel()
				op.call = now()
				var err error
				if kind == "put" {
					_, err = m.Client().Put(pctx, op.in.key, op.in.value)
				} else {
					_, err = m.Client().Get(pctx, op.in.key)
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
				t.Fatalf("%s does not acknowledge reads and writes %s after it was reconnected: %v", m.Name, partHealDeadline, err)
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
	drainStart := time.Now()
	drained := watches.drain(t, 20*time.Second)
	resumes, streamErrs := watches.resumes()
	say("%d watchers drained to revision %d in %s; %d resumes on another member (%d after a stream error)",
		len(watches.watchers), drained, time.Since(drainStart).Round(time.Millisecond), resumes, streamErrs)

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
	checkPartLinearizable(t, history, say)
	checkPartRevisions(t, history)

	// Every member's revision history and keys, once each has caught up: a linearizable
	// read through it returns only then.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := make([][]partEvent, len(members))
	finals := make([]map[string]partKV, len(members))
	names := make([]string, len(members))
	for i, m := range members {
		names[i] = m.Name
		var err error
		if logs[i], err = readPartLog(ctx, m.Client()); err != nil {
			t.Fatalf("%s: reading the revision history: %v", m.Name, err)
		}
		if finals[i], err = readPartFinal(ctx, m.Client()); err != nil {
			t.Fatalf("%s: reading the keys: %v", m.Name, err)
		}
	}
	for i, name := range names {
		checkPartDense(t, name, logs[i])
		checkPartLog(t, name, logs[i], history)
		checkPartFinal(t, name, finals[i], logs[i], history)
	}
	checkPartAgree(t, names, logs, finals)
	watches.check(t, partLogEvents(logs[0]), say)
	say("checked %d operations and %d revisions on %d members; test took %s", len(history), len(logs[0]), len(members), time.Since(testStart).Round(time.Millisecond))
}

// runPartOp runs one random operation on a random key through c, which is bound to member.
// seen holds the last value the client saw per key: compare-and-sets expect it.
func runPartOp(c *clientv3.Client, rng *rand.Rand, cl, member, n int, seen map[string]string, now func() int64) *partOp {
	key := fmt.Sprintf("%s%02d", partKeyPrefix, rng.IntN(partKeys))
	op := &partOp{client: cl, member: member, in: linInput{key: key, value: fmt.Sprintf("c%d-%d", cl, n)}}
	switch r := rng.IntN(20); {
	case r < 7:
		op.in.op, op.in.value = "get", ""
	case r < 13:
		op.in.op = "put"
	case r < 18:
		op.in.op, op.in.expected = "cas", seen[key]
	default:
		op.in.op, op.in.value = "delete", ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), partOpTimeout)
	defer cancel()
	op.call = now()
	var err error
	switch op.in.op {
	case "get":
		var resp *clientv3.GetResponse
		if resp, err = c.Get(ctx, key); err == nil {
			op.rev = resp.Header.Revision
			if len(resp.Kvs) > 0 {
				op.out.value, op.modRev = string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
			}
		}
	case "put":
		var resp *clientv3.PutResponse
		if resp, err = c.Put(ctx, key, op.in.value); err == nil {
			op.rev = resp.Header.Revision
		}
	case "cas":
		cmp := clientv3.Compare(clientv3.Value(key), "=", op.in.expected)
		if op.in.expected == "" {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		var resp *clientv3.TxnResponse
		if resp, err = c.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, op.in.value)).Else(clientv3.OpGet(key)).Commit(); err == nil {
			op.rev, op.out.ok = resp.Header.Revision, resp.Succeeded
			if !resp.Succeeded {
				seen[key] = ""
				if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
					seen[key] = string(kvs[0].Value)
				}
			}
		}
	case "delete":
		var resp *clientv3.DeleteResponse
		if resp, err = c.Delete(ctx, key); err == nil {
			op.rev, op.out.ok = resp.Header.Revision, resp.Deleted > 0
		}
	}
	op.ret = now()
	if err != nil {
		op.err, op.out, op.failedAt, op.ret = err, linOutput{unknown: true}, op.ret, math.MaxInt64
		return op
	}
	switch op.in.op {
	case "get":
		seen[key] = op.out.value
	case "put":
		seen[key] = op.in.value
	case "cas":
		if op.out.ok {
			seen[key] = op.in.value
		}
	case "delete":
		seen[key] = ""
	}
	return op
}

func partAt(ns int64) string { return fmt.Sprintf("t=%.2fs", float64(ns)/1e9) }

// checkPartIsolation checks one member's time cut off and reports what it answered:
//   - nothing sent through it after the cut was acknowledged before the reconnection, and
//     what failed failed with an etcd error or a deadline;
//   - a write sent through another member after the cut was acknowledged within
//     partMajorityAck of the cut;
//   - if it was the leader, the others named a new leader.
func checkPartIsolation(t reporter, ep *partIsolation, history []*partOp, members []*harness.DockerMember, say func(string, ...any)) {
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
				p.add("%s was acknowledged (sent at %s, answered at %s)", op, partAt(op.call), partAt(op.ret))
			}
			continue
		}
		class, expected := partErrClass(op.err)
		if op.client >= 0 {
			failed++
			errs[class]++
		}
		if !expected {
			p.add("%s, sent at %s, failed at %s: neither an etcd error nor a timeout", op, partAt(op.call), partAt(op.failedAt))
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

	var first *partOp
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
			name, time.Duration(first.ret-ep.start).Round(time.Millisecond), first, partMajorityAck)
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

// checkPartLinearizable checks the history with porcupine: failed reads are left out, failed
// writes may or may not have happened. On a violation it saves a visualisation and names the
// keys whose own history is not linearizable.
func checkPartLinearizable(t *testing.T, history []*partOp, say func(string, ...any)) {
	t.Helper()
	var ops []porcupine.Operation
	for _, op := range history {
		if op.err != nil && op.in.op == "get" {
			continue
		}
		ops = append(ops, porcupine.Operation{ClientId: op.client, Input: op.in, Output: op.out, Call: op.call, Return: op.ret})
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, partPorcupineTimeout)
	say("porcupine: %s for %d operations in %s", res, len(ops), time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("mosaic-partition-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
			t.Logf("visualisation failed: %v", err)
		}
		var bad []string
		for _, part := range kvModel.Partition(ops) {
			if porcupine.CheckOperationsTimeout(kvModel, part, 2*time.Second) == porcupine.Illegal {
				bad = append(bad, part[0].Input.(linInput).key)
			}
		}
		sort.Strings(bad)
		t.Errorf("history is not linearizable: keys %v have no linearization; visualisation in %s", bad, path)
	default:
		t.Errorf("linearizability check inconclusive (%s) within %s", res, partPorcupineTimeout)
	}
}

// checkPartRevisions checks the revisions the clients were answered with:
//   - no two acknowledged writes share a revision;
//   - revisions follow real time: an operation that started after a write was acknowledged
//     reports a revision at least that write's, and above it if it is itself an
//     acknowledged write.
func checkPartRevisions(t reporter, history []*partOp) {
	t.Helper()
	p := &problems{t: t, check: "distinct acknowledged revisions"}
	byRev := map[int64]*partOp{}
	var writes, done []*partOp
	for _, op := range history {
		if op.err != nil {
			continue
		}
		done = append(done, op)
		if !op.acked() {
			continue
		}
		writes = append(writes, op)
		if other := byRev[op.rev]; other != nil {
			p.add("%s and %s were both acknowledged at revision %d", other, op, op.rev)
		}
		byRev[op.rev] = op
	}
	p.done()

	p = &problems{t: t, check: "revisions follow real time"}
	sort.Slice(writes, func(i, j int) bool { return writes[i].ret < writes[j].ret })
	sort.Slice(done, func(i, j int) bool { return done[i].call < done[j].call })
	var newest *partOp // the acknowledged write with the highest revision returned so far
	w := 0
	for _, op := range done {
		for ; w < len(writes) && writes[w].ret < op.call; w++ {
			if newest == nil || writes[w].rev > newest.rev {
				newest = writes[w]
			}
		}
		if newest != nil && (op.rev < newest.rev || (op.acked() && op.rev == newest.rev)) {
			p.add("%s, which started after %s had returned, reports revision %d", op, newest, op.rev)
		}
	}
	p.done()
}

// partEvent is one event of a member's revision history, read by a watch from revision 1.
type partEvent struct {
	rev        int64
	del        bool
	key, value string
}

func (e partEvent) String() string {
	if e.del {
		return fmt.Sprintf("rev %d delete %s", e.rev, e.key)
	}
	return fmt.Sprintf("rev %d put %s=%s", e.rev, e.key, e.value)
}

// partKV is a key's value at the end.
type partKV struct {
	value  string
	modRev int64
}

// readPartLog reads every event of every revision of the member's keyspace, by a watch from
// revision 1 up to the current revision (read linearizably, so the member has caught up).
func readPartLog(ctx context.Context, c *clientv3.Client) ([]partEvent, error) {
	resp, err := c.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	current := resp.Header.Revision
	var events []partEvent
	if current <= 1 {
		return events, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	last := int64(0)
	for wr := range c.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			return events, fmt.Errorf("watch from revision 1: %w", err)
		}
		for _, ev := range wr.Events {
			events = append(events, partEvent{rev: ev.Kv.ModRevision, del: ev.Type == mvccpb.DELETE,
				key: string(ev.Kv.Key), value: string(ev.Kv.Value)})
			last = ev.Kv.ModRevision
		}
		if last >= current {
			return events, nil
		}
	}
	return events, fmt.Errorf("watch from revision 1 ended at revision %d, before the current revision %d: %w", last, current, ctx.Err())
}

// readPartFinal reads every test key.
func readPartFinal(ctx context.Context, c *clientv3.Client) (map[string]partKV, error) {
	resp, err := c.Get(ctx, partKeyPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	final := map[string]partKV{}
	for _, kv := range resp.Kvs {
		final[string(kv.Key)] = partKV{value: string(kv.Value), modRev: kv.ModRevision}
	}
	return final, nil
}

// checkPartDense checks that a member's revisions are dense: every revision from 2 (a new
// store is at revision 1, its first write takes 2) to the last holds exactly one event, as
// every write of the test touches one key.
func checkPartDense(t reporter, member string, log []partEvent) {
	t.Helper()
	p := &problems{t: t, check: member + ": dense revisions"}
	want := int64(2)
	for i, ev := range log {
		switch {
		case ev.rev == want:
			want++
		case ev.rev == want-1:
			p.add("revision %d holds several events: %s and %s", ev.rev, log[i-1], ev)
		case ev.rev > want:
			p.add("revisions %d to %d are missing (next event %s)", want, ev.rev-1, ev)
			want = ev.rev + 1
		default:
			p.add("event %s after revision %d: out of order", ev, want-1)
		}
	}
	p.done()
}

// checkPartLog checks a member's revision history against the clients' history:
//   - every acknowledged write is the event at the revision it was acknowledged with;
//   - every acknowledged read of a present key saw the value put at the ModRevision it
//     reported, which is not above the revision of its response;
//   - every event of a test key comes from a write that was sent and may have happened, and
//     no put happened twice (every value written is unique).
func checkPartLog(t reporter, member string, log []partEvent, history []*partOp) {
	t.Helper()
	byRev := map[int64]partEvent{}
	for _, ev := range log {
		byRev[ev.rev] = ev
	}
	describe := func(rev int64) string {
		if ev, ok := byRev[rev]; ok {
			return ev.String()
		}
		return fmt.Sprintf("nothing at revision %d", rev)
	}
	acked := &problems{t: t, check: member + ": acknowledged writes at their revisions"}
	reads := &problems{t: t, check: member + ": reads match the revision history"}
	byValue := map[string]*partOp{}
	unknownDeletes := map[string]int{}
	ackedDeletes := map[int64]string{}
	for _, op := range history {
		switch {
		case op.acked():
			want := partEvent{rev: op.rev, del: op.in.op == "delete", key: op.in.key, value: op.in.value}
			if got, ok := byRev[op.rev]; !ok || got != want {
				acked.add("%s: the history has %s", op, describe(op.rev))
			}
		case op.in.op == "get" && op.err == nil && op.out.value != "":
			want := partEvent{rev: op.modRev, key: op.in.key, value: op.out.value}
			if got, ok := byRev[op.modRev]; !ok || got != want || op.modRev > op.rev {
				reads.add("%s read mod revision %d: the history has %s", op, op.modRev, describe(op.modRev))
			}
		}
		switch {
		case op.in.op == "put" || op.in.op == "cas":
			byValue[op.in.value] = op
		case op.in.op == "delete" && op.err != nil:
			unknownDeletes[op.in.key]++
		case op.in.op == "delete" && op.acked():
			ackedDeletes[op.rev] = op.in.key
		}
	}
	acked.done()
	reads.done()

	sent := &problems{t: t, check: member + ": events come from writes sent"}
	applied := map[string]int64{} // value -> revision it was put at
	for _, ev := range log {
		if !strings.HasPrefix(ev.key, partKeyPrefix) {
			continue
		}
		if ev.del {
			// A delete event is an acknowledged delete at that revision, or uses up one
			// delete of unknown outcome of the same key.
			if ackedDeletes[ev.rev] == ev.key {
				continue
			}
			if unknownDeletes[ev.key] == 0 {
				sent.add("%s: no acknowledged delete at this revision and no delete of unknown outcome left", ev)
				continue
			}
			unknownDeletes[ev.key]--
			continue
		}
		op := byValue[ev.value]
		switch {
		case op == nil || op.in.key != ev.key:
			sent.add("%s: no such write was sent", ev)
		case !op.mayHaveWritten():
			sent.add("%s: the compare-and-set that sent it was answered 'compare failed'", ev)
		case applied[ev.value] != 0:
			sent.add("%s: the same put was already applied at revision %d", ev, applied[ev.value])
		}
		applied[ev.value] = ev.rev
	}
	sent.done()
}

// checkPartFinal checks each test key's value at the end:
//   - it is what the member's revision history ends with for that key;
//   - it comes from a write that may have happened;
//   - no acknowledged write was lost: let W be the key's acknowledged write with the highest
//     revision. Either the key holds W's outcome (W's value at W's revision, or absence if W
//     was a delete), or a write of unknown outcome came after it: the key holds such a
//     write's value at a revision above W's, or is absent and a delete of unknown outcome
//     was sent.
func checkPartFinal(t reporter, member string, final map[string]partKV, log []partEvent, history []*partOp) {
	t.Helper()
	p := &problems{t: t, check: member + ": final values"}
	replayed := map[string]partKV{}
	for _, ev := range log {
		if !strings.HasPrefix(ev.key, partKeyPrefix) {
			continue
		}
		if ev.del {
			delete(replayed, ev.key)
		} else {
			replayed[ev.key] = partKV{value: ev.value, modRev: ev.rev}
		}
	}
	byValue := map[string]*partOp{}
	newestAcked := map[string]*partOp{}
	unknownDelete := map[string]bool{}
	for _, op := range history {
		if op.in.op == "put" || op.in.op == "cas" {
			byValue[op.in.value] = op
		}
		if op.acked() && (newestAcked[op.in.key] == nil || op.rev > newestAcked[op.in.key].rev) {
			newestAcked[op.in.key] = op
		}
		if op.in.op == "delete" && op.err != nil {
			unknownDelete[op.in.key] = true
		}
	}
	describe := func(kv partKV, present bool) string {
		if !present {
			return "nothing"
		}
		return fmt.Sprintf("%q (mod revision %d)", kv.value, kv.modRev)
	}
	for i := range partKeys {
		k := fmt.Sprintf("%s%02d", partKeyPrefix, i)
		got, present := final[k]
		if r, rok := replayed[k]; r != got || rok != present {
			p.add("%s reads %s but the revision history ends with %s", k, describe(got, present), describe(r, rok))
		}
		var writer *partOp
		if present {
			writer = byValue[got.value]
			if writer == nil || writer.in.key != k || !writer.mayHaveWritten() {
				p.add("%s holds %s, which no write that may have happened sent", k, describe(got, present))
				continue
			}
		}
		w := newestAcked[k]
		if w == nil {
			continue
		}
		switch {
		case w.in.op == "delete" && !present:
		case w.in.op != "delete" && present && got.value == w.in.value:
			if got.modRev != w.rev {
				p.add("%s holds %s, acknowledged at revision %d", k, describe(got, present), w.rev)
			}
		case present && writer.err != nil && got.modRev > w.rev:
			// overwritten by a write of unknown outcome after W
		case !present && unknownDelete[k]:
			// deleted by a delete of unknown outcome, presumably after W
		default:
			p.add("%s holds %s: the newest acknowledged write, %s, is lost", k, describe(got, present), w)
		}
	}
	p.done()
}

// checkPartAgree checks that every member has the same revision history and final keys as
// the first: replicas must converge.
func checkPartAgree(t reporter, names []string, logs [][]partEvent, finals []map[string]partKV) {
	t.Helper()
	p := &problems{t: t, check: "members agree"}
	for i := 1; i < len(names); i++ {
		for j := range max(len(logs[0]), len(logs[i])) {
			var x, y any = "nothing", "nothing"
			if j < len(logs[0]) {
				x = logs[0][j]
			}
			if j < len(logs[i]) {
				y = logs[i][j]
			}
			if x != y {
				p.add("event %d of the revision history: %s has %v, %s has %v (histories of %d and %d events)", j, names[0], x, names[i], y, len(logs[0]), len(logs[i]))
				break
			}
		}
		for k := range partKeys {
			key := fmt.Sprintf("%s%02d", partKeyPrefix, k)
			x, xok := finals[0][key]
			y, yok := finals[i][key]
			if x != y || xok != yok {
				p.add("%s: %s reads %v (%v), %s reads %v (%v)", key, names[0], x, xok, names[i], y, yok)
			}
		}
	}
	p.done()
}

// partRecorder is a reporter that keeps the problems reported.
type partRecorder struct{ errs []string }

func (r *partRecorder) Helper() {}
func (r *partRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestPartitionCheckersCatchViolations runs the partition test's checks on small synthetic
// histories: they accept a correct run and catch each kind of violation. It needs no Docker.
func TestPartitionCheckersCatchViolations(t *testing.T) {
	k0, k1 := partKeyPrefix+"00", partKeyPrefix+"01"
	history := func() []*partOp {
		return []*partOp{
			{client: 0, member: 0, in: linInput{op: "put", key: k0, value: "a"}, call: 0, ret: 10, rev: 2},
			{client: 1, member: 1, in: linInput{op: "put", key: k1, value: "b"}, call: 20, ret: 30, rev: 3},
			{client: 2, member: 2, in: linInput{op: "get", key: k0}, out: linOutput{value: "a"}, call: 40, ret: 50, rev: 3, modRev: 2},
			{client: 0, member: 0, in: linInput{op: "delete", key: k1}, out: linOutput{ok: true}, call: 60, ret: 70, rev: 4},
			{client: 1, member: 1, in: linInput{op: "cas", key: k0, expected: "x", value: "d"}, out: linOutput{ok: false}, call: 80, ret: 90, rev: 4},
			{client: 2, member: 2, in: linInput{op: "put", key: k0, value: "c"}, out: linOutput{unknown: true}, call: 100, ret: math.MaxInt64, err: context.DeadlineExceeded},
		}
	}
	log := func() []partEvent {
		return []partEvent{{rev: 2, key: k0, value: "a"}, {rev: 3, key: k1, value: "b"}, {rev: 4, del: true, key: k1}}
	}
	final := func() map[string]partKV { return map[string]partKV{k0: {value: "a", modRev: 2}} }
	run := func(h []*partOp, l []partEvent, f map[string]partKV) []string {
		r := &partRecorder{}
		checkPartRevisions(r, h)
		checkPartDense(r, "m1", l)
		checkPartLog(r, "m1", l, h)
		checkPartFinal(r, "m1", f, l, h)
		return r.errs
	}
	if errs := run(history(), log(), final()); len(errs) > 0 {
		t.Fatalf("correct run rejected: %q", errs)
	}
	applied := append(log(), partEvent{rev: 5, key: k0, value: "c"})
	if errs := run(history(), applied, map[string]partKV{k0: {value: "c", modRev: 5}}); len(errs) > 0 {
		t.Fatalf("correct run with the write of unknown outcome applied rejected: %q", errs)
	}
	type state struct {
		h []*partOp
		l []partEvent
		f map[string]partKV
	}
	for _, tc := range []struct {
		name   string
		mutate func(s *state)
		want   string
	}{
		{"two writes at one revision", func(s *state) { s.h[1].rev = 2 }, "both acknowledged at revision 2"},
		{"revision going back in real time", func(s *state) { s.h[2].rev = 2 }, "had returned, reports revision 2"},
		{"missing revision", func(s *state) { s.l = append(s.l[:1], s.l[2:]...) }, "revisions 3 to 3 are missing"},
		{"two events at one revision", func(s *state) {
			s.l = append(s.l, partEvent{rev: 4, key: k0, value: "c"})
			s.f = map[string]partKV{k0: {value: "c", modRev: 4}}
		}, "revision 4 holds several events"},
		{"acknowledged write elsewhere", func(s *state) { s.l[1].value = "c" }, "the history has rev 3 put " + k1 + "=c"},
		{"read of another revision", func(s *state) { s.h[2].modRev = 3 }, "read mod revision 3"},
		{"value never sent", func(s *state) {
			s.l = append(s.l, partEvent{rev: 5, key: k0, value: "zzz"})
			s.f = map[string]partKV{k0: {value: "zzz", modRev: 5}}
		}, "no such write was sent"},
		{"failed compare-and-set applied", func(s *state) {
			s.l = append(s.l, partEvent{rev: 5, key: k0, value: "d"})
			s.f = map[string]partKV{k0: {value: "d", modRev: 5}}
		}, "answered 'compare failed'"},
		{"delete never sent", func(s *state) {
			s.l = append(s.l, partEvent{rev: 5, del: true, key: k0})
			s.f = map[string]partKV{}
		}, "no delete of unknown outcome left"},
		{"acknowledged write lost", func(s *state) { s.f = map[string]partKV{} }, "is lost"},
		{"acknowledged delete undone", func(s *state) { s.f[k1] = partKV{value: "b", modRev: 3} }, "is lost"},
	} {
		s := &state{history(), log(), final()}
		tc.mutate(s)
		if errs := run(s.h, s.l, s.f); !strings.Contains(strings.Join(errs, "\n"), tc.want) {
			t.Errorf("%s: want a problem mentioning %q, got %q", tc.name, tc.want, errs)
		}
	}

	r := &partRecorder{}
	checkPartAgree(r, []string{"m1", "m2"}, [][]partEvent{log(), log()[:2]}, []map[string]partKV{final(), final()})
	if len(r.errs) == 0 {
		t.Errorf("members with different revision histories accepted")
	}

	// The isolation check: an acknowledgement through the member cut off, an error that is
	// not etcd's, and a majority that acknowledges nothing are all reported.
	members := []*harness.DockerMember{{Name: "m1"}, {Name: "m2"}, {Name: "m3"}}
	ep := &partIsolation{member: 0, kind: "follower", start: 100, end: 1000, newLeader: -1}
	quiet := func(string, ...any) {}
	good := []*partOp{
		{client: 0, member: 0, in: linInput{op: "put", key: k0, value: "x"}, call: 200, ret: math.MaxInt64, err: errors.New("etcdserver: request timed out")},
		{client: 3, member: 0, in: linInput{op: "get", key: k0}, call: 300, ret: math.MaxInt64, err: context.DeadlineExceeded},
		{client: 1, member: 1, in: linInput{op: "put", key: k1, value: "y"}, call: 150, ret: 250, rev: 9},
		{client: 0, member: 0, in: linInput{op: "get", key: k0}, call: 900, ret: 1100, rev: 9}, // answered after the reconnection
	}
	r = &partRecorder{}
	checkPartIsolation(r, ep, good, members, quiet)
	if len(r.errs) > 0 {
		t.Errorf("correct isolation rejected: %q", r.errs)
	}
	for _, tc := range []struct {
		name string
		op   *partOp
		want string
	}{
		{"read acknowledged while cut off", &partOp{client: 3, member: 0, in: linInput{op: "get", key: k0}, call: 400, ret: 500, rev: 9}, "was acknowledged"},
		{"write acknowledged while cut off", &partOp{client: 3, member: 0, in: linInput{op: "put", key: k0, value: "z"}, call: 400, ret: 500, rev: 10}, "was acknowledged"},
		{"foreign error", &partOp{client: 3, member: 0, in: linInput{op: "get", key: k0}, call: 400, ret: math.MaxInt64, err: errors.New("rpc error: code = Unknown desc = boom")}, "neither an etcd error"},
	} {
		r := &partRecorder{}
		checkPartIsolation(r, ep, append(slices.Clone(good), tc.op), members, quiet)
		if !strings.Contains(strings.Join(r.errs, "\n"), tc.want) {
			t.Errorf("%s: want a problem mentioning %q, got %q", tc.name, tc.want, r.errs)
		}
	}
	for _, probe := range []*partOp{
		{client: -1, member: 0, in: linInput{op: "put", key: partProbeKey + "m1", value: "p"}, call: 400, ret: 500, rev: 10},
		{client: -1, member: 0, in: linInput{op: "put", key: partProbeKey + "m1", value: "p"}, call: 900, ret: math.MaxInt64, failedAt: 1200, err: errors.New("rpc error: code = Unavailable desc = error reading from server: connection reset by peer")},
	} {
		r := &partRecorder{}
		bad := *ep
		bad.probes = []*partOp{probe}
		checkPartIsolation(r, &bad, good, members, quiet)
		if len(r.errs) == 0 {
			t.Errorf("probe %s accepted", probe)
		}
	}
	r = &partRecorder{}
	checkPartIsolation(r, &partIsolation{member: 0, kind: "leader", start: 100, end: 1000, newLeader: -1}, good[:2], members, quiet)
	if got := strings.Join(r.errs, "\n"); !strings.Contains(got, "acknowledged no write") || !strings.Contains(got, "named no new leader") {
		t.Errorf("a stalled majority accepted: %q", r.errs)
	}
}
