package tests

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// Environment variables of the cluster fault test.
const (
	// faultDurationEnv sets how long the workload and the faults run (a Go duration).
	faultDurationEnv = "MOSAIC_FAULT_DURATION"
	// faultSeedEnv sets the seed of the fault schedule and the workload, to replay a run.
	faultSeedEnv = "MOSAIC_FAULT_SEED"
)

const (
	defaultFaultDuration = 15 * time.Second
	faultClients         = 9  // spread evenly over the members
	faultKeys            = 30 // keys faultKeyPrefix00..29
	faultPairs           = faultKeys / 2
	faultKeyPrefix       = "fault/"
	faultOpTimeout       = 2 * time.Second
	porcupineTimeout     = 30 * time.Second
	maxReported          = 5 // problems reported per check; the rest are counted
)

// faultOp is one operation of the fault test's history: its linearizability-model input and
// output plus what the checks after the run need.
type faultOp struct {
	client, member int
	in             faultInput
	out            faultOutput
	call, ret      int64 // nanoseconds since the workload began; ret is MaxInt64 if unknown
	// err is non-nil for an operation that failed: a write whose outcome is unknown, or a
	// read (this test drops failed reads; the partition test keeps them for its isolation
	// check, and the checks here pass over them)
	err      error
	failedAt int64 // when it failed
	rev      int64 // acknowledged operations: the response header's revision
	// acknowledged operations that read (see faultOutput.values): each key's ModRevision,
	// 0 for an absent key
	modRevs []int64
}

// isWrite reports whether the operation is of a kind that may write.
func (o *faultOp) isWrite() bool { return o.in.op != "get" && o.in.op != "getpair" }

// acked reports whether the operation is an acknowledged write that took a revision: a
// put, a compare-and-set or transfer whose compare succeeded or a delete that deleted a key.
func (o *faultOp) acked() bool {
	if o.err != nil {
		return false
	}
	switch o.in.op {
	case "put":
		return true
	case "cas", "transfer", "delete":
		return o.out.ok
	}
	return false
}

// mayHaveWritten reports whether the operation may have changed its keys: an acknowledged
// write (acked) or a write of unknown outcome.
func (o *faultOp) mayHaveWritten() bool {
	return o.acked() || (o.err != nil && o.isWrite())
}

// keyWrite is the change an operation makes to one key if it takes effect.
type keyWrite struct {
	key, value string
	del        bool
}

// writes lists the changes the operation makes if it takes effect (all at one revision).
func (o *faultOp) writes() []keyWrite {
	switch o.in.op {
	case "put", "cas", "transfer":
		ws := make([]keyWrite, len(o.in.keys))
		for i, k := range o.in.keys {
			ws[i] = keyWrite{key: k, value: o.in.values[i]}
		}
		return ws
	case "delete":
		return []keyWrite{{key: o.in.keys[0], del: true}}
	}
	return nil
}

// keyRead is what an acknowledged operation read of one key.
type keyRead struct {
	key, value string // value "" = absent
	modRev     int64
}

// reads lists what the operation read, if it was acknowledged: gets, getpairs, and
// compare-and-sets and transfers whose compare failed.
func (o *faultOp) reads() []keyRead {
	if o.err != nil || len(o.out.values) != len(o.in.keys) || len(o.modRevs) != len(o.in.keys) {
		return nil
	}
	rs := make([]keyRead, len(o.in.keys))
	for i, k := range o.in.keys {
		rs[i] = keyRead{key: k, value: o.out.values[i], modRev: o.modRevs[i]}
	}
	return rs
}

// logEvent is one event of a member's revision history, read by a watch from revision 1.
type logEvent struct {
	rev        int64
	del        bool
	key, value string
}

func (e logEvent) String() string {
	if e.del {
		return fmt.Sprintf("rev %d delete %s", e.rev, e.key)
	}
	return fmt.Sprintf("rev %d put %s=%s", e.rev, e.key, e.value)
}

// finalKV is a key's value after the full restart.
type finalKV struct {
	value  string
	modRev int64
}

// TestClusterFaultsLinearizable runs a 3-member cluster whose keyspace is split into several
// ranges under a concurrent workload from clients bound to single members: single-key
// get/put/cas/delete, and two-key Txns whose keys lie in different ranges (getpair reads
// both, transfer compares both and writes both). Meanwhile a fault loop SIGKILLs and
// restarts members (the oracle's leader, the leader of a range holding test keys, or a
// follower), moves the cluster's lead (etcd's MoveLeader, or Mosaic's Admin TransferLeader
// of range 0), and splits ranges online at new keys (some while a member is down). There is
// no range move: every member holds a replica of every range. Afterwards it checks that:
//
//   - the clients' history is linearizable (porcupine, per pair of keys, see
//     cluster_fault_model_test.go; a write that failed or timed out may or may not have
//     happened);
//   - no two acknowledged writes got the same revision, and revisions follow real time (an
//     operation that began after a write was acknowledged reports a revision at least the
//     write's);
//   - after stopping and restarting every member, each member's revision history (a watch
//     from revision 1) is dense: every revision from the first write (2) to the current one
//     holds exactly one event, or the two events of one transfer;
//   - every member has the same revision history and the same final keys;
//   - every acknowledged write is in that history at the revision it was acknowledged with,
//     every event comes from a write that was sent and may have happened, no write happened
//     twice, every transfer happened whole (both keys at one revision) or not at all, and
//     every acknowledged read saw the value at the revision it reported;
//   - nothing acknowledged was lost: each key's final value is the newest acknowledged
//     write's, or that of a later write of unknown outcome;
//   - (Mosaic) every member's ranges tile the keyspace, the members agree on them, and every
//     acknowledged split is there;
//   - every live watcher's stream equals the committed history of its keys from its start
//     revision to where it stopped: in order, no gap, no duplicate across its resumes on
//     other members after kills, each revision in one response, prev_kv right (see
//     cluster_fault_watch_test.go).
//
// MOSAIC_FAULT_DURATION sets the workload's length, MOSAIC_FAULT_SEED the seed.
// MOSAIC_TEST_SUBJECT=etcd runs it against a 3-member etcd cluster, which must pass (it has
// no ranges: the splits and range checks are skipped there).
func TestClusterFaultsLinearizable(t *testing.T) {
	t.Parallel()
	runClusterFaults(t, 3, false)
}

// TestClusterFaultsReplicaMoves is TestClusterFaultsLinearizable on four members, each
// range on three of them (the default replication factor), with one more fault: moving a
// range's replica (from its leader or a follower) to the member without one, with
// Mosaic's Admin MoveReplica, under the workload.
func TestClusterFaultsReplicaMoves(t *testing.T) {
	if harness.SubjectIsEtcd() {
		t.Skip("Mosaic's replica moves")
	}
	t.Parallel()
	runClusterFaults(t, 4, true)
}

// runClusterFaults runs the fault test on a cluster of n members, with replica moves
// among the faults if moves is set.
func runClusterFaults(t *testing.T, n int, moves bool) {
	duration := defaultFaultDuration
	if s := os.Getenv(faultDurationEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", faultDurationEnv, s, err)
		}
		duration = d
	}
	seed := seedFromEnv(t, faultSeedEnv)
	say := progress(t, "cluster-faults")
	say("seed %d (%s=%d to replay), workload %s", seed, faultSeedEnv, seed, duration)

	testStart := time.Now()
	cluster := harness.StartCluster(t, n, harness.ClusterOptions{})
	members := cluster.Members()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	f := newFaultControl(ctx, t, cluster, say)
	cancel()
	if moves {
		f.kinds = append(f.kinds, moveReplica)
	}
	say("cluster ready %s after the start of the test (building the server included)", time.Since(testStart).Round(time.Millisecond))

	// Many ranges: split so that the keys of every pair lie in different ranges.
	for _, k := range faultInitialSplits {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		s := f.split(sctx, rand.New(rand.NewPCG(seed, 1)), k, "initial")
		scancel()
		if s.err != nil {
			t.Fatalf("split at %q before the workload: %v", k, s.err)
		}
	}
	if moves {
		// The rebalancer takes the initial ranges down to three replicas each, which
		// leaves a member to move a replica to.
		f.awaitReplicas(3, time.Minute)
	}
	f.printRanges("ranges before the workload")
	// Live watchers from a revision before the workload (see cluster_fault_watch_test.go).
	watches := startFaultWatches(t, cluster, seed)
	f.onKill = watches.memberKilled

	// The workload: each client is bound to one member and runs until the deadline.
	var (
		mu      sync.Mutex
		history []*faultOp
		wg      sync.WaitGroup
	)
	base := time.Now()
	f.base = base
	now := func() int64 { return int64(time.Since(base)) }
	deadline := base.Add(duration)
	for cl := range faultClients {
		member := cl % len(members)
		c := harness.NewClient(t, members[member].Endpoint())
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(cl)))
			seen := map[string]string{} // the last value this client saw per key
			failures := 0               // consecutive errors, for backing off
			for n := 0; time.Now().Before(deadline); n++ {
				op := runFaultOp(c, rng, cl, n, seen, now)
				op.member = member
				if op.err != nil {
					// Back off while the member is down, so that its clients do not fill the
					// history with unknown writes (each one makes the check costlier).
					failures++
					time.Sleep(time.Duration(min(failures, 5)) * 100 * time.Millisecond)
					if !op.isWrite() {
						continue // a failed read has no effect
					}
				} else {
					failures = 0
				}
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
			}
		}()
	}

	f.run(rand.New(rand.NewPCG(seed, math.MaxUint64)), deadline)
	wg.Wait()
	resumes := watches.drainAndSay(t, say)

	counts := map[string]int{}
	unknown, transfers := 0, 0
	for _, op := range history {
		counts[op.in.op]++
		if op.err != nil {
			unknown++
		}
		if op.in.op == "transfer" && op.acked() {
			transfers++
		}
	}
	say("%s", f.summary())
	say("%d operations by %d clients on %d keys (%d get, %d getpair, %d put, %d cas, %d delete, %d transfer of which %d committed; %d writes of unknown outcome)",
		len(history), faultClients, faultKeys, counts["get"], counts["getpair"], counts["put"], counts["cas"], counts["delete"],
		counts["transfer"], transfers, unknown)
	f.checkCoverage(duration)
	if kills := f.kills[killOracleLeader] + f.kills[killRangeLeader] + f.kills[killFollower]; kills > 0 && resumes == 0 {
		t.Errorf("%d members killed but no watcher resumed on another member", kills)
	}
	if len(history) < faultClients*20 {
		t.Errorf("only %d operations completed", len(history))
	}
	if transfers == 0 {
		t.Errorf("no cross-range transfer committed")
	}

	lin := checkFaultLinearizable(t, history, say, false)
	checkClientRevisions(t, history)

	// Stop every member and start them all again, then read each member's revision history,
	// final keys and ranges.
	var stops []string
	for i, m := range members { // as cluster.StopAll, timing each member's exit
		start := time.Now()
		cluster.Stop(i)
		stops = append(stops, fmt.Sprintf("%s in %s", m.Name(), time.Since(start).Round(time.Millisecond)))
	}
	restartAt := time.Now()
	cluster.RestartAll()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatalf("cluster not ready after a full restart: %v", err)
	}
	say("full restart of all members done: stopped (SIGTERM, one after the other) %s; all ready in %s", strings.Join(stops, ", "), time.Since(restartAt).Round(time.Millisecond))
	names := make([]string, len(members))
	clients := make([]*clientv3.Client, len(members))
	for i, m := range members {
		names[i], clients[i] = m.Name(), m.Client()
	}
	logs := checkMembersConverged(ctx, t, names, clients, history)
	if lin == porcupine.Unknown {
		checkFaultLinearizable(t, resolveUnknownWrites(history, logs[0]), say, true)
	}
	watches.check(t, logs[0], say)
	f.checkRanges(ctx)
	say("checked %d operations and %d events on %d members; test took %s", len(history), len(logs[0]), len(members), time.Since(testStart).Round(time.Millisecond))
}

// seedFromEnv returns the seed that the environment variable env sets, to replay a run, or a
// new one.
func seedFromEnv(t *testing.T, env string) uint64 {
	t.Helper()
	s := os.Getenv(env)
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", env, s, err)
	}
	return v
}

// progress returns a function that logs to the test and prints at once on stdout, after
// prefix, so that a long run shows how it goes.
func progress(t *testing.T, prefix string) func(string, ...any) {
	return func(format string, args ...any) {
		t.Helper()
		t.Logf(format, args...)
		fmt.Printf(prefix+": "+format+"\n", args...)
	}
}

// checkMembersConverged reads every member's revision history and test keys through its
// client (names[i] is the member of clients[i]; the reads are linearizable, so each member
// has caught up first), checks each against the clients' history (checkDenseLog,
// checkLogMatchesHistory, checkFinal) and checks that the members agree. It returns the
// revision histories.
func checkMembersConverged(ctx context.Context, t *testing.T, names []string, clients []*clientv3.Client, history []*faultOp) [][]logEvent {
	t.Helper()
	logs := make([][]logEvent, len(names))
	finals := make([]map[string]finalKV, len(names))
	for i, c := range clients {
		var err error
		if logs[i], err = readRevisionLog(ctx, c); err != nil {
			t.Fatalf("%s: reading the revision history: %v", names[i], err)
		}
		if finals[i], err = readFinal(ctx, c); err != nil {
			t.Fatalf("%s: reading the keys: %v", names[i], err)
		}
	}
	for i, name := range names {
		checkDenseLog(t, name, logs[i], history)
		checkLogMatchesHistory(t, name, logs[i], history)
		checkFinal(t, name, finals[i], logs[i], history)
	}
	checkMembersAgree(t, names, logs, finals)
	return logs
}

// runFaultOp runs one random operation of TestClusterFaultsLinearizable's mix through
// c and returns it: a single-key get, put, compare-and-set or delete on a random key, or a
// getpair or transfer on a random pair. seen holds the last value the client saw per key:
// compare-and-sets and transfers expect it.
func runFaultOp(c *clientv3.Client, rng *rand.Rand, cl, n int, seen map[string]string, now func() int64) *faultOp {
	id := fmt.Sprintf("c%d-%d", cl, n) // unique: the value of the operation's writes
	key := faultKey(rng.IntN(faultKeys))
	pair := pairKeys(rng.IntN(faultPairs))
	var in faultInput
	switch r := rng.IntN(20); {
	case r < 5:
		in = newFaultInput("get", []string{key}, nil, nil)
	case r < 9:
		in = newFaultInput("put", []string{key}, []string{id}, nil)
	case r < 12:
		in = newFaultInput("cas", []string{key}, []string{id}, []string{seen[key]})
	case r < 14:
		in = newFaultInput("delete", []string{key}, nil, nil)
	case r < 17:
		in = newFaultInput("getpair", pair, nil, nil)
	default:
		in = newFaultInput("transfer", pair, []string{transferValue(id, 0), transferValue(id, 1)}, []string{seen[pair[0]], seen[pair[1]]})
	}
	return execFaultOp(c, in, cl, seen, now)
}

// transferValue is the value a transfer with unique id writes to the key of the given slot
// of its pair: id+"a" and id+"b".
func transferValue(id string, slot int) string { return id + string(rune('a'+slot)) }

// execFaultOp runs the operation in through c and returns it, updating seen with what it
// learnt of the keys' values.
func execFaultOp(c *clientv3.Client, in faultInput, cl int, seen map[string]string, now func() int64) *faultOp {
	op := &faultOp{client: cl, in: in}

	// readKVs records the values read by Gets of in.keys, one response each.
	readKVs := func(resps []*clientv3.GetResponse) {
		op.out.values, op.modRevs = make([]string, len(resps)), make([]int64, len(resps))
		for i, r := range resps {
			if len(r.Kvs) > 0 {
				op.out.values[i], op.modRevs[i] = string(r.Kvs[0].Value), r.Kvs[0].ModRevision
			}
		}
	}
	txnGets := func(resp *clientv3.TxnResponse) []*clientv3.GetResponse {
		gets := make([]*clientv3.GetResponse, len(resp.Responses))
		for i, r := range resp.Responses {
			gets[i] = (*clientv3.GetResponse)(r.GetResponseRange())
		}
		return gets
	}
	// compares are the Txn compares of a cas or transfer: each key holds its expected value.
	compares := func() []clientv3.Cmp {
		cmps := make([]clientv3.Cmp, len(in.keys))
		for i, k := range in.keys {
			cmps[i] = clientv3.Compare(clientv3.Value(k), "=", in.expected[i])
			if in.expected[i] == "" {
				cmps[i] = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
			}
		}
		return cmps
	}
	ops := func(put bool) []clientv3.Op {
		o := make([]clientv3.Op, len(in.keys))
		for i, k := range in.keys {
			if put {
				o[i] = clientv3.OpPut(k, in.values[i])
			} else {
				o[i] = clientv3.OpGet(k)
			}
		}
		return o
	}

	ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
	defer cancel()
	op.call = now()
	var err error
	switch in.op {
	case "get":
		var resp *clientv3.GetResponse
		if resp, err = c.Get(ctx, in.keys[0]); err == nil {
			op.rev = resp.Header.Revision
			readKVs([]*clientv3.GetResponse{resp})
		}
	case "getpair":
		var resp *clientv3.TxnResponse
		if resp, err = c.Txn(ctx).Then(ops(false)...).Commit(); err == nil {
			op.rev = resp.Header.Revision
			readKVs(txnGets(resp))
		}
	case "put":
		var resp *clientv3.PutResponse
		if resp, err = c.Put(ctx, in.keys[0], in.values[0]); err == nil {
			op.rev = resp.Header.Revision
		}
	case "cas", "transfer":
		var resp *clientv3.TxnResponse
		if resp, err = c.Txn(ctx).If(compares()...).Then(ops(true)...).Else(ops(false)...).Commit(); err == nil {
			op.rev, op.out.ok = resp.Header.Revision, resp.Succeeded
			if !resp.Succeeded {
				readKVs(txnGets(resp))
			}
		}
	case "delete":
		var resp *clientv3.DeleteResponse
		if resp, err = c.Delete(ctx, in.keys[0]); err == nil {
			op.rev, op.out.ok = resp.Header.Revision, resp.Deleted > 0
		}
	}
	op.ret = now()
	if err != nil {
		op.err, op.out, op.modRevs, op.failedAt, op.ret = err, faultOutput{unknown: true}, nil, op.ret, math.MaxInt64
		return op
	}
	for _, r := range op.reads() {
		seen[r.key] = r.value
	}
	if op.acked() {
		for _, w := range op.writes() {
			seen[w.key] = w.value // "" for a delete
		}
	}
	return op
}

// reporter is where the checks report problems: the test, or a recorder in the checks' own
// test.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// problems reports the first maxReported problems of one check as test errors and counts
// the rest.
type problems struct {
	t     reporter
	check string
	n     int
}

func (p *problems) add(format string, args ...any) {
	p.t.Helper()
	p.n++
	if p.n <= maxReported {
		p.t.Errorf("%s: %s", p.check, fmt.Sprintf(format, args...))
	}
}

func (p *problems) done() {
	p.t.Helper()
	if p.n > maxReported {
		p.t.Errorf("%s: %d problems in all, %d not shown", p.check, p.n, p.n-maxReported)
	}
}

// checkFaultLinearizable checks the clients' history with porcupine: failed reads are left
// out (they answered nothing and changed nothing), failed writes may or may not have
// happened. On a violation it saves a visualisation and names the pairs of keys whose own
// history is not linearizable. An inconclusive check (porcupine ran out of time) fails the
// test only if final is set: the caller may check again once the revision log tells which
// writes of unknown outcome happened (resolveUnknownWrites).
func checkFaultLinearizable(t *testing.T, history []*faultOp, say func(string, ...any), final bool) porcupine.CheckResult {
	t.Helper()
	var ops []porcupine.Operation
	for _, op := range history {
		if op.err != nil && !op.isWrite() {
			continue
		}
		ops = append(ops, porcupine.Operation{ClientId: op.client, Input: op.in, Output: op.out, Call: op.call, Return: op.ret})
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(pairModel, ops, porcupineTimeout)
	say("porcupine: %s for %d operations in %s", res, len(ops), time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("mosaic-cluster-faults-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(pairModel, info, path); err != nil {
			t.Logf("visualisation failed: %v", err)
		}
		var bad []string
		for _, part := range pairModel.Partition(ops) {
			if porcupine.CheckOperationsTimeout(pairModel, part, 2*time.Second) == porcupine.Illegal {
				bad = append(bad, strings.Join(pairKeys(part[0].Input.(faultInput).pair), "+"))
			}
		}
		sort.Strings(bad)
		t.Errorf("history is not linearizable: pairs %v (%d of %d) have no linearization; visualisation in %s",
			bad, len(bad), faultPairs, path)
	default:
		if final {
			t.Errorf("linearizability check inconclusive (%s) within %s", res, porcupineTimeout)
		}
	}
	return res
}

// resolveUnknownWrites returns the history with the puts, compare-and-sets and transfers of
// unknown outcome resolved by the revision log (each written value is unique): one whose
// value the log holds happened, with its compare succeeding (its return time stays
// unknown); one whose value it does not hold had no effect and is left out. Deletes of
// unknown outcome stay unknown. Fewer open outcomes keep porcupine's search small.
func resolveUnknownWrites(history []*faultOp, log []logEvent) []*faultOp {
	written := map[string]bool{} // key + "=" + value
	for _, e := range log {
		if !e.del {
			written[e.key+"="+e.value] = true
		}
	}
	var out []*faultOp
	for _, op := range history {
		if op.err == nil || !op.isWrite() || len(op.in.values) == 0 {
			out = append(out, op)
			continue
		}
		happened := written[op.in.keys[0]+"="+op.in.values[0]]
		if !happened {
			continue
		}
		r := *op
		r.err = nil
		r.out = faultOutput{ok: true}
		out = append(out, &r)
	}
	return out
}

// readRevisionLog reads every event of every revision of the member's keyspace, by a watch
// from revision 1 up to the current revision. The events of one revision are sorted by key,
// so that members reporting them in different orders compare equal.
func readRevisionLog(ctx context.Context, c *clientv3.Client) ([]logEvent, error) {
	resp, err := c.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	current := resp.Header.Revision
	var events []logEvent
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
			events = append(events, logEvent{rev: ev.Kv.ModRevision, del: ev.Type == mvccpb.DELETE,
				key: string(ev.Kv.Key), value: string(ev.Kv.Value)})
			last = ev.Kv.ModRevision
		}
		if last >= current {
			break
		}
	}
	if last < current {
		return events, fmt.Errorf("watch from revision 1 ended at revision %d, before the current revision %d: %w", last, current, ctx.Err())
	}
	for i := 0; i < len(events); {
		j := i + 1
		for j < len(events) && events[j].rev == events[i].rev {
			j++
		}
		run := events[i:j]
		sort.Slice(run, func(a, b int) bool { return run[a].key < run[b].key })
		i = j
	}
	return events, nil
}

// readFinal reads every test key.
func readFinal(ctx context.Context, c *clientv3.Client) (map[string]finalKV, error) {
	resp, err := c.Get(ctx, faultKeyPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	final := map[string]finalKV{}
	for _, kv := range resp.Kvs {
		final[string(kv.Key)] = finalKV{value: string(kv.Value), modRev: kv.ModRevision}
	}
	return final, nil
}

// valueSource is the operation that sent a value, and the key it sent it for.
type valueSource struct {
	op  *faultOp
	key string
}

// sentValues maps every value a write sent (every one is unique) to its source.
func sentValues(history []*faultOp) map[string]valueSource {
	byValue := map[string]valueSource{}
	for _, op := range history {
		for _, w := range op.writes() {
			if !w.del {
				byValue[w.value] = valueSource{op: op, key: w.key}
			}
		}
	}
	return byValue
}

// checkDenseLog checks that the revisions of a member's history are dense: every revision
// from 2 (a new store is at revision 1 and its first write takes 2) to the last holds
// exactly one event, or the two puts of one transfer. Every other write of this test (and
// of WaitReady) touches a single key, so a revision with several events would be several
// writes sharing it, and a missing revision a write that was numbered but lost.
func checkDenseLog(t reporter, member string, log []logEvent, history []*faultOp) {
	t.Helper()
	p := &problems{t: t, check: member + ": dense revisions"}
	byValue := sentValues(history)
	// oneTransfer reports whether the events are exactly the puts of one transfer.
	oneTransfer := func(evs []logEvent) bool {
		src := byValue[evs[0].value]
		if evs[0].del || src.op == nil || src.op.in.op != "transfer" {
			return false
		}
		ws := src.op.writes()
		if len(ws) != len(evs) {
			return false
		}
		for _, w := range ws {
			found := false
			for _, ev := range evs {
				found = found || (!ev.del && ev.key == w.key && ev.value == w.value)
			}
			if !found {
				return false
			}
		}
		return true
	}
	want := int64(2)
	for i := 0; i < len(log); {
		j := i + 1
		for j < len(log) && log[j].rev == log[i].rev {
			j++
		}
		group, rev := log[i:j], log[i].rev
		switch {
		case rev == want:
		case rev < want:
			p.add("event %s after revision %d: out of order", group[0], want-1)
		default:
			p.add("revisions %d to %d are missing (next event %s)", want, rev-1, group[0])
		}
		if len(group) > 1 && !oneTransfer(group) {
			p.add("revision %d holds several events: %s and %s", rev, group[0], group[1])
		}
		want = max(want, rev+1)
		i = j
	}
	p.done()
}

// checkClientRevisions checks the revisions the clients were answered with, before any
// restart:
//   - no two acknowledged writes share a revision;
//   - revisions follow real time: an operation acknowledged after a write was acknowledged
//     (and started after it) reports a revision at least that write's, and above it if it
//     is itself an acknowledged write.
func checkClientRevisions(t reporter, history []*faultOp) {
	t.Helper()
	p := &problems{t: t, check: "distinct acknowledged revisions"}
	byRev := map[int64]*faultOp{}
	var writes, done []*faultOp
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
			p.add("%s and %s were both acknowledged at revision %d", describeOp(other), describeOp(op), op.rev)
		}
		byRev[op.rev] = op
	}
	p.done()

	p = &problems{t: t, check: "revisions follow real time"}
	sort.Slice(writes, func(i, j int) bool { return writes[i].ret < writes[j].ret })
	sort.Slice(done, func(i, j int) bool { return done[i].call < done[j].call })
	var newest *faultOp // the acknowledged write with the highest revision returned so far
	w := 0
	for _, op := range done {
		for ; w < len(writes) && writes[w].ret < op.call; w++ {
			if newest == nil || writes[w].rev > newest.rev {
				newest = writes[w]
			}
		}
		if newest == nil {
			continue
		}
		if op.rev < newest.rev || (op.acked() && op.rev == newest.rev) {
			p.add("%s, which started after %s had returned, reports revision %d", describeOp(op), describeOp(newest), op.rev)
		}
	}
	p.done()
}

// describeOp describes an operation for the checks' reports. An operation of client -1 is
// one of the partition test's own probes.
func describeOp(op *faultOp) string {
	in := op.in
	var s string
	switch in.op {
	case "get", "getpair":
		s = fmt.Sprintf("%s %s", in.op, strings.Join(in.keys, " "))
		if op.err == nil {
			s += fmt.Sprintf(" -> %q", op.out.values)
		}
	case "put":
		s = fmt.Sprintf("put %s=%s", in.keys[0], in.values[0])
	case "cas", "transfer":
		var parts []string
		for i, k := range in.keys {
			parts = append(parts, fmt.Sprintf("%s %q->%q", k, in.expected[i], in.values[i]))
		}
		s = fmt.Sprintf("%s %s (%v", in.op, strings.Join(parts, ", "), op.out.ok)
		if op.out.values != nil {
			s += fmt.Sprintf(", read %q", op.out.values)
		}
		s += ")"
	case "delete":
		s = fmt.Sprintf("delete %s (%v)", in.keys[0], op.out.ok)
	}
	who := fmt.Sprintf("client %d via m%d", op.client, op.member+1)
	if op.client < 0 {
		who = fmt.Sprintf("the test's probe via m%d", op.member+1)
	}
	if op.err != nil {
		outcome := "of unknown outcome"
		if !op.isWrite() {
			outcome = "failed"
		}
		return fmt.Sprintf("%s %s (%v) (%s, sent at t=%.3fs)", s, outcome, op.err, who, float64(op.call)/1e9)
	}
	return fmt.Sprintf("%s at revision %d (%s, t=%.3fs to %.3fs)", s, op.rev, who, float64(op.call)/1e9, float64(op.ret)/1e9)
}

// checkLogMatchesHistory checks a member's revision history against what the clients did:
//   - every acknowledged write is in the history at the revision it was acknowledged with
//     (both keys of a transfer);
//   - every acknowledged read of a present key saw the value put at the ModRevision it
//     reported, and that ModRevision is not above the revision of its response header;
//   - every acknowledged read saw each key as it was at the revision of its response header
//     (present with that value and ModRevision, or absent), as etcd reads at that revision:
//     for a getpair or a failed transfer this is a snapshot of both keys at one revision;
//   - every event of a test key comes from a write that was sent and may have happened
//     (acknowledged or of unknown outcome; never a compare-and-set or transfer whose
//     compare failed), and no put happened twice (every value written is unique);
//   - every transfer that happened, happened whole: both its puts, at one revision.
func checkLogMatchesHistory(t reporter, member string, log []logEvent, history []*faultOp) {
	t.Helper()
	byRev := map[int64][]logEvent{}
	for _, ev := range log {
		byRev[ev.rev] = append(byRev[ev.rev], ev)
	}
	has := func(want logEvent) bool {
		for _, ev := range byRev[want.rev] {
			if ev == want {
				return true
			}
		}
		return false
	}

	// stateAt returns what key holds at revision rev by the history: its value and mod
	// revision, or "" and 0 if absent.
	byKey := map[string][]logEvent{}
	for _, ev := range log {
		byKey[ev.key] = append(byKey[ev.key], ev)
	}
	stateAt := func(key string, rev int64) (string, int64) {
		evs := byKey[key]
		i := sort.Search(len(evs), func(i int) bool { return evs[i].rev > rev }) - 1
		if i < 0 || evs[i].del {
			return "", 0
		}
		return evs[i].value, evs[i].rev
	}

	acked := &problems{t: t, check: member + ": acknowledged writes at their revisions"}
	reads := &problems{t: t, check: member + ": reads match the revision history"}
	for _, op := range history {
		if op.acked() {
			for _, w := range op.writes() {
				want := logEvent{rev: op.rev, del: w.del, key: w.key, value: w.value}
				if !has(want) {
					acked.add("%s: the history has %s", describeOp(op), describeRev(byRev, op.rev))
					break
				}
			}
		}
		for _, r := range op.reads() {
			if r.value != "" {
				want := logEvent{rev: r.modRev, key: r.key, value: r.value}
				if !has(want) || r.modRev > op.rev {
					reads.add("%s read %s at mod revision %d: the history has %s", describeOp(op), r.key, r.modRev, describeRev(byRev, r.modRev))
					continue
				}
			}
			// A read answers with the store's revision, and reads the keys as of it.
			if v, mod := stateAt(r.key, op.rev); v != r.value || mod != r.modRev {
				reads.add("%s read %s = %q (mod revision %d), but at revision %d it holds %q (mod revision %d)",
					describeOp(op), r.key, r.value, r.modRev, op.rev, v, mod)
			}
		}
	}
	acked.done()
	reads.done()

	sent := &problems{t: t, check: member + ": events come from writes sent"}
	byValue := sentValues(history)
	unknownDeletes := map[string]int{}
	ackedDeletes := map[int64]string{}
	for _, op := range history {
		switch {
		case op.in.op == "delete" && op.err != nil:
			unknownDeletes[op.in.keys[0]]++
		case op.in.op == "delete" && op.acked():
			ackedDeletes[op.rev] = op.in.keys[0]
		}
	}
	applied := map[string]int64{} // value -> revision it was put at
	for _, ev := range log {
		if !strings.HasPrefix(ev.key, faultKeyPrefix) {
			continue
		}
		if ev.del {
			// Deletes carry no value: a delete event is an acknowledged delete at that
			// revision or uses up one delete of unknown outcome of the same key.
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
		src := byValue[ev.value]
		switch {
		case src.op == nil || src.key != ev.key:
			sent.add("%s: no such write was sent", ev)
		case !src.op.mayHaveWritten():
			sent.add("%s: the %s that sent it was answered 'compare failed'", ev, src.op.in.op)
		case applied[ev.value] != 0:
			sent.add("%s: the same put was already applied at revision %d", ev, applied[ev.value])
		}
		applied[ev.value] = ev.rev
	}
	sent.done()

	whole := &problems{t: t, check: member + ": transfers are atomic"}
	for _, op := range history {
		if op.in.op != "transfer" {
			continue
		}
		var at []string
		some, all, rev := false, true, int64(0)
		for _, w := range op.writes() {
			r := applied[w.value]
			at = append(at, fmt.Sprintf("%s at revision %d", w.key, r))
			some, all = some || r != 0, all && r != 0 && (rev == 0 || r == rev)
			rev = r
		}
		if some && !all {
			whole.add("%s: applied in part (%s; 0 = not applied)", describeOp(op), strings.Join(at, ", "))
		}
	}
	whole.done()
}

func describeRev(byRev map[int64][]logEvent, rev int64) string {
	evs := byRev[rev]
	if len(evs) == 0 {
		return fmt.Sprintf("nothing at revision %d", rev)
	}
	s := make([]string, len(evs))
	for i, ev := range evs {
		s[i] = ev.String()
	}
	return strings.Join(s, " and ")
}

// checkFinal checks each test key's value after the full restart:
//   - it is what the member's revision history ends with for that key (reads agree with
//     the history of revisions);
//   - it comes from a write that may have happened;
//   - no acknowledged write was lost: let W be the acknowledged write of the key with the
//     highest revision. Either the key holds W's outcome (W's value at W's revision, or
//     absence if W was a delete), or a write of unknown outcome came after it: the key holds
//     such a write's value at a revision above W's, or is absent and a delete of unknown
//     outcome was sent.
func checkFinal(t reporter, member string, final map[string]finalKV, log []logEvent, history []*faultOp) {
	t.Helper()
	p := &problems{t: t, check: member + ": final values"}
	replayed := map[string]finalKV{}
	for _, ev := range log {
		if !strings.HasPrefix(ev.key, faultKeyPrefix) {
			continue
		}
		if ev.del {
			delete(replayed, ev.key)
		} else {
			replayed[ev.key] = finalKV{value: ev.value, modRev: ev.rev}
		}
	}
	byValue := sentValues(history)
	type ackedWrite struct {
		op *faultOp
		w  keyWrite
	}
	newestAcked := map[string]ackedWrite{}
	unknownDelete := map[string]bool{}
	for _, op := range history {
		if op.acked() {
			for _, w := range op.writes() {
				if n := newestAcked[w.key]; n.op == nil || op.rev > n.op.rev {
					newestAcked[w.key] = ackedWrite{op: op, w: w}
				}
			}
		}
		if op.in.op == "delete" && op.err != nil {
			unknownDelete[op.in.keys[0]] = true
		}
	}
	for i := range faultKeys {
		k := faultKey(i)
		got, present := final[k]
		if r, rok := replayed[k]; r != got || rok != present {
			p.add("%s reads %s but the revision history ends with %s", k, describeFinal(got, present), describeFinal(r, rok))
		}
		var writer *faultOp
		if present {
			src := byValue[got.value]
			if src.op == nil || src.key != k || !src.op.mayHaveWritten() {
				p.add("%s holds %s, which no write that may have happened sent", k, describeFinal(got, present))
				continue
			}
			writer = src.op
		}
		w := newestAcked[k]
		if w.op == nil {
			continue
		}
		switch {
		case w.w.del && !present:
		case !w.w.del && present && got.value == w.w.value:
			if got.modRev != w.op.rev {
				p.add("%s holds %s, acknowledged at revision %d", k, describeFinal(got, present), w.op.rev)
			}
		case present && writer.err != nil && got.modRev > w.op.rev:
			// overwritten by a write of unknown outcome after W
		case !present && unknownDelete[k]:
			// deleted by a delete of unknown outcome, presumably after W
		default:
			p.add("%s holds %s: the newest acknowledged write, %s, is lost", k, describeFinal(got, present), describeOp(w.op))
		}
	}
	p.done()
}

func describeFinal(kv finalKV, present bool) string {
	if !present {
		return "nothing"
	}
	return fmt.Sprintf("%q (mod revision %d)", kv.value, kv.modRev)
}

// checkMembersAgree checks that every member has the same revision history and final keys
// as the first: replicas of one store must not diverge.
func checkMembersAgree(t reporter, names []string, logs [][]logEvent, finals []map[string]finalKV) {
	t.Helper()
	p := &problems{t: t, check: "members agree"}
	for i := 1; i < len(names); i++ {
		a, b := names[0], names[i]
		for j := range max(len(logs[0]), len(logs[i])) {
			var x, y any = "nothing", "nothing"
			if j < len(logs[0]) {
				x = logs[0][j]
			}
			if j < len(logs[i]) {
				y = logs[i][j]
			}
			if x != y {
				p.add("event %d of the revision history: %s has %v, %s has %v (histories of %d and %d events)", j, a, x, b, y, len(logs[0]), len(logs[i]))
				break
			}
		}
		for k := range faultKeys {
			key := faultKey(k)
			x, xok := finals[0][key]
			y, yok := finals[i][key]
			if x != y || xok != yok {
				p.add("%s: %s reads %s, %s reads %s", key, a, describeFinal(x, xok), b, describeFinal(y, yok))
			}
		}
	}
	p.done()
}

// TestKVModelDelete checks the delete step of the register model: a read may not see a
// value that an acknowledged delete removed before the read began, and a delete of unknown
// outcome may or may not have happened.
func TestKVModelDelete(t *testing.T) {
	put := porcupine.Operation{ClientId: 0, Input: linInput{op: "put", key: "k", value: "a"}, Output: linOutput{}, Call: 0, Return: 10}
	del := porcupine.Operation{ClientId: 1, Input: linInput{op: "delete", key: "k"}, Output: linOutput{ok: true}, Call: 20, Return: 30}
	get := func(v string) porcupine.Operation {
		return porcupine.Operation{ClientId: 2, Input: linInput{op: "get", key: "k"}, Output: linOutput{value: v}, Call: 40, Return: 50}
	}
	if porcupine.CheckOperations(kvModel, []porcupine.Operation{put, del, get("a")}) {
		t.Errorf("read of a deleted value accepted")
	}
	if !porcupine.CheckOperations(kvModel, []porcupine.Operation{put, del, get("")}) {
		t.Errorf("read of absence after a delete rejected")
	}
	noop := del
	noop.Output = linOutput{ok: false}
	if porcupine.CheckOperations(kvModel, []porcupine.Operation{put, noop}) {
		t.Errorf("delete that deleted nothing accepted after a put")
	}
	unknown := del
	unknown.Output, unknown.Return = linOutput{unknown: true}, math.MaxInt64
	for _, v := range []string{"a", ""} {
		if !porcupine.CheckOperations(kvModel, []porcupine.Operation{put, unknown, get(v)}) {
			t.Errorf("read of %q after a delete of unknown outcome rejected", v)
		}
	}
}

// recorder is a reporter that keeps the problems reported.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestFaultCheckersCatchViolations runs the checks made after the fault run on a small
// synthetic history: they accept a correct run and catch each kind of violation.
func TestFaultCheckersCatchViolations(t *testing.T) {
	k0, k1 := faultKey(0), faultKey(1)
	pa, pb := faultKey(2), faultKey(2+faultPairs) // one pair, in two ranges in the real run
	one := func(op, key string, values, expected []string) faultInput {
		return newFaultInput(op, []string{key}, values, expected)
	}
	history := func() []*faultOp {
		return []*faultOp{
			{client: 0, in: one("put", k0, []string{"a"}, nil), call: 0, ret: 10, rev: 2},
			{client: 1, in: one("put", k1, []string{"b"}, nil), call: 20, ret: 30, rev: 3},
			{client: 2, in: one("get", k0, nil, nil), out: faultOutput{values: []string{"a"}}, call: 40, ret: 50, rev: 3, modRevs: []int64{2}},
			{client: 0, in: one("delete", k1, nil, nil), out: faultOutput{ok: true}, call: 60, ret: 70, rev: 4},
			{client: 1, in: one("cas", k0, []string{"d"}, []string{"x"}), out: faultOutput{values: []string{"a"}}, call: 80, ret: 90, rev: 4, modRevs: []int64{2}},
			{client: 2, in: one("put", k0, []string{"c"}, nil), out: faultOutput{unknown: true}, call: 100, ret: math.MaxInt64, err: context.DeadlineExceeded},
			{client: 0, in: newFaultInput("transfer", []string{pa, pb}, []string{"ta", "tb"}, []string{"", ""}), out: faultOutput{ok: true}, call: 110, ret: 120, rev: 5},
			{client: 1, in: newFaultInput("getpair", []string{pa, pb}, nil, nil), out: faultOutput{values: []string{"ta", "tb"}}, call: 130, ret: 140, rev: 5, modRevs: []int64{5, 5}},
			{client: 1, in: newFaultInput("transfer", []string{pa, pb}, []string{"ua", "ub"}, []string{"x", "y"}), out: faultOutput{values: []string{"ta", "tb"}}, call: 150, ret: 160, rev: 5, modRevs: []int64{5, 5}},
		}
	}
	log := func() []logEvent {
		return []logEvent{{rev: 2, key: k0, value: "a"}, {rev: 3, key: k1, value: "b"}, {rev: 4, del: true, key: k1},
			{rev: 5, key: pa, value: "ta"}, {rev: 5, key: pb, value: "tb"}}
	}
	final := func() map[string]finalKV {
		return map[string]finalKV{k0: {value: "a", modRev: 2}, pa: {value: "ta", modRev: 5}, pb: {value: "tb", modRev: 5}}
	}
	run := func(h []*faultOp, l []logEvent, f map[string]finalKV) []string {
		r := &recorder{}
		checkClientRevisions(r, h)
		checkDenseLog(r, "m1", l, h)
		checkLogMatchesHistory(r, "m1", l, h)
		checkFinal(r, "m1", f, l, h)
		return r.errs
	}
	if errs := run(history(), log(), final()); len(errs) > 0 {
		t.Fatalf("correct run rejected: %q", errs)
	}
	// The write of unknown outcome may have happened after all.
	applied := append(log(), logEvent{rev: 6, key: k0, value: "c"})
	withC := final()
	withC[k0] = finalKV{value: "c", modRev: 6}
	if errs := run(history(), applied, withC); len(errs) > 0 {
		t.Fatalf("correct run with an unknown write applied rejected: %q", errs)
	}

	type mutation func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV)
	for _, tc := range []struct {
		name   string
		mutate mutation
		want   string // a substring of some problem reported
	}{
		{"two writes at one revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[1].rev = 2
			return h, l, f
		}, "both acknowledged at revision 2"},
		{"revision going back in real time", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[2].rev = 2
			return h, l, f
		}, "had returned, reports revision 2"},
		{"missing revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			return h, append(l[:1], l[2:]...), f
		}, "revisions 3 to 3 are missing"},
		{"two events at one revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			l = append(l[:3], append([]logEvent{{rev: 4, key: k0, value: "c"}}, l[3:]...)...)
			f[k0] = finalKV{value: "c", modRev: 4}
			return h, l, f
		}, "revision 4 holds several events"},
		{"a write sharing a transfer's revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			f[k0] = finalKV{value: "c", modRev: 5}
			return h, append(l, logEvent{rev: 5, key: k0, value: "c"}), f
		}, "revision 5 holds several events"},
		{"acknowledged write elsewhere", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			l[1].value = "c"
			return h, l, f
		}, "the history has rev 3 put " + k1 + "=c"},
		{"read of another revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[2].modRevs[0] = 3
			return h, l, f
		}, "at mod revision 3"},
		{"pair read of another revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[7].modRevs[1] = 2
			return h, l, f
		}, "read " + pb + " at mod revision 2"},
		{"read older than its revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h = append(h, &faultOp{client: 2, in: one("get", k0, nil, nil), out: faultOutput{values: []string{"a"}}, call: 170, ret: 180, rev: 6, modRevs: []int64{2}})
			f[k0] = finalKV{value: "c", modRev: 6}
			return h, append(l, logEvent{rev: 6, key: k0, value: "c"}), f
		}, "but at revision 6 it holds \"c\" (mod revision 6)"},
		{"read of absence at a revision where the key is present", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[7].out.values[1], h[7].modRevs[1] = "", 0
			return h, l, f
		}, "but at revision 5 it holds \"tb\""},
		{"value never sent", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			f[k0] = finalKV{value: "zzz", modRev: 6}
			return h, append(l, logEvent{rev: 6, key: k0, value: "zzz"}), f
		}, "no such write was sent"},
		{"failed compare-and-set applied", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			f[k0] = finalKV{value: "d", modRev: 6}
			return h, append(l, logEvent{rev: 6, key: k0, value: "d"}), f
		}, "the cas that sent it was answered 'compare failed'"},
		{"failed transfer applied", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			f[pa], f[pb] = finalKV{value: "ua", modRev: 6}, finalKV{value: "ub", modRev: 6}
			return h, append(l, logEvent{rev: 6, key: pa, value: "ua"}, logEvent{rev: 6, key: pb, value: "ub"}), f
		}, "the transfer that sent it was answered 'compare failed'"},
		{"transfer applied in part", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			delete(f, pb)
			return h, l[:4], f
		}, "applied in part (" + pa + " at revision 5, " + pb + " at revision 0"},
		{"transfer applied at two revisions", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[6].err, h[6].out, h[6].ret = context.DeadlineExceeded, faultOutput{unknown: true}, math.MaxInt64
			h = h[:7] // nothing read the pair
			f[pb] = finalKV{value: "tb", modRev: 6}
			return h, append(l[:4], logEvent{rev: 6, key: pb, value: "tb"}), f
		}, "applied in part (" + pa + " at revision 5, " + pb + " at revision 6"},
		{"transfer's half at a revision of its own", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			l[4].rev = 6
			return h, l, f
		}, "acknowledged writes at their revisions"},
		{"delete never sent", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			delete(f, k0)
			return h, append(l, logEvent{rev: 6, del: true, key: k0}), f
		}, "no delete of unknown outcome left"},
		{"acknowledged write lost after restart", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			delete(f, k0)
			return h, l, f
		}, "is lost"},
		{"acknowledged transfer lost after restart", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			delete(f, pb)
			return h, l, f
		}, pb + " holds nothing: the newest acknowledged write, transfer"},
		{"acknowledged delete undone after restart", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			f[k1] = finalKV{value: "b", modRev: 3}
			return h, l, f
		}, "is lost"},
	} {
		errs := run(tc.mutate(history(), log(), final()))
		if !strings.Contains(strings.Join(errs, "\n"), tc.want) {
			t.Errorf("%s: want a problem mentioning %q, got %q", tc.name, tc.want, errs)
		}
	}

	r := &recorder{}
	checkMembersAgree(r, []string{"m1", "m2"}, [][]logEvent{log(), log()[:2]}, []map[string]finalKV{final(), final()})
	if len(r.errs) == 0 {
		t.Errorf("members with different revision histories accepted")
	}
}
