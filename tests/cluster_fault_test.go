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
	faultKeyPrefix       = "fault/"
	faultOpTimeout       = 2 * time.Second
	faultDowntime        = 2 * time.Second // how long a killed member stays down
	porcupineTimeout     = 30 * time.Second
	maxReported          = 5 // problems reported per check; the rest are counted
)

// faultOp is one operation of the fault test's history: its linearizability-model input and
// output plus what the checks after the run need.
type faultOp struct {
	client, member int
	in             linInput
	out            linOutput
	call, ret      int64 // nanoseconds since the workload began; ret is MaxInt64 if unknown
	err            error // non-nil: a write whose outcome is unknown (failed reads are dropped)
	rev            int64 // acknowledged operations: the response header's revision
	modRev         int64 // acknowledged gets of a present key: the key's ModRevision
}

// acked reports whether the operation is an acknowledged write that took a revision: a
// put, a compare-and-set whose compare succeeded or a delete that deleted a key.
func (o *faultOp) acked() bool {
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
// write (acked) or a write of unknown outcome.
func (o *faultOp) mayHaveWritten() bool {
	return o.acked() || (o.err != nil && o.in.op != "get")
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

// TestClusterFaultsLinearizable runs a 3-member cluster under a concurrent get/put/cas/delete
// workload from clients bound to single members, while SIGKILLing members (often the leader)
// and restarting them. Afterwards it checks that:
//
//   - the clients' history is linearizable (porcupine, per key; a write that failed or timed
//     out may or may not have happened);
//   - no two acknowledged writes got the same revision, and revisions follow real time (an
//     operation that began after a write was acknowledged reports a revision at least the
//     write's);
//   - after stopping and restarting every member, each member's revision history (a watch
//     from revision 1) is dense: every revision from the first write (2) to the current one
//     holds exactly one event, since every write of this test touches one key;
//   - every member has the same revision history and the same final keys;
//   - every acknowledged write is in that history at the revision it was acknowledged with,
//     every event comes from a write that was sent and may have happened, no write happened
//     twice, and every acknowledged read saw the value at the revision it reported;
//   - nothing acknowledged was lost: each key's final value is the newest acknowledged
//     write's, or that of a later write of unknown outcome.
//
// MOSAIC_FAULT_DURATION sets the workload's length, MOSAIC_FAULT_SEED the seed.
// MOSAIC_TEST_SUBJECT=etcd runs it against a 3-member etcd cluster, which must pass.
func TestClusterFaultsLinearizable(t *testing.T) {
	t.Parallel()
	duration := defaultFaultDuration
	if s := os.Getenv(faultDurationEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", faultDurationEnv, s, err)
		}
		duration = d
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(faultSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", faultSeedEnv, s, err)
		}
		seed = v
	}
	say := func(format string, args ...any) {
		t.Helper()
		t.Logf(format, args...)
		fmt.Printf("cluster-faults: "+format+"\n", args...)
	}
	say("seed %d (%s=%d to replay), workload %s", seed, faultSeedEnv, seed, duration)

	testStart := time.Now()
	cluster := harness.StartCluster(t, 3, harness.ClusterOptions{})
	members := cluster.Members()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	cancel()

	// The workload: each client is bound to one member and runs until the deadline.
	var (
		mu      sync.Mutex
		history []*faultOp
		wg      sync.WaitGroup
	)
	key := func(i int) string { return fmt.Sprintf("%s%02d", faultKeyPrefix, i) }
	base := time.Now()
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
				op := runFaultOp(c, rng, cl, n, key(rng.IntN(faultKeys)), seen, now)
				op.member = member
				if op.err != nil {
					// Back off while the member is down, so that its clients do not fill the
					// history with unknown writes (each one makes the check costlier).
					failures++
					time.Sleep(time.Duration(min(failures, 5)) * 100 * time.Millisecond)
					if op.in.op == "get" {
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

	// The faults: kill a member (half the time the leader), keep it down, restart it.
	rng := rand.New(rand.NewPCG(seed, math.MaxUint64))
	var faults []string
	kills, leaderKills := 0, 0
	for {
		time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond) // uptime between faults
		if time.Now().After(deadline) {
			break
		}
		victim, why := rng.IntN(len(members)), "random"
		if rng.IntN(2) == 0 {
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			if l := cluster.Leader(sctx); l >= 0 {
				victim, why = l, "leader"
				leaderKills++
			} else {
				why = "random, no leader known"
			}
			scancel()
		}
		at := time.Since(base).Seconds()
		cluster.Kill(victim)
		kills++
		time.Sleep(faultDowntime)
		restartAt := time.Now()
		cluster.Restart(victim)
		faults = append(faults, fmt.Sprintf("t=%.1fs SIGKILL %s (%s), restarted at t=%.1fs, ready in %s",
			at, members[victim].Name(), why, restartAt.Sub(base).Seconds(), time.Since(restartAt).Round(time.Millisecond)))
	}
	wg.Wait()
	for _, f := range faults {
		say("fault: %s", f)
	}

	counts := map[string]int{}
	unknown := 0
	for _, op := range history {
		counts[op.in.op]++
		if op.err != nil {
			unknown++
		}
	}
	say("%d faults (%d of the leader); %d operations by %d clients on %d keys (%d get, %d put, %d cas, %d delete; %d writes of unknown outcome)",
		kills, leaderKills, len(history), faultClients, faultKeys, counts["get"], counts["put"], counts["cas"], counts["delete"], unknown)
	if kills == 0 {
		t.Errorf("no fault injected: %s is too short", duration)
	}
	if len(history) < faultClients*20 {
		t.Errorf("only %d operations completed", len(history))
	}

	checkFaultLinearizable(t, history, say)
	checkClientRevisions(t, history)

	// Stop every member and start them all again, then read each member's revision history
	// and final keys.
	cluster.StopAll()
	cluster.RestartAll()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatalf("cluster not ready after a full restart: %v", err)
	}
	say("full restart of all members done")
	logs := make([][]logEvent, len(members))
	finals := make([]map[string]finalKV, len(members))
	for i, m := range members {
		var err error
		if logs[i], err = readRevisionLog(ctx, m.Client()); err != nil {
			t.Fatalf("%s: reading the revision history: %v", m.Name(), err)
		}
		if finals[i], err = readFinal(ctx, m.Client()); err != nil {
			t.Fatalf("%s: reading the keys: %v", m.Name(), err)
		}
	}
	names := make([]string, len(members))
	for i, m := range members {
		names[i] = m.Name()
		checkDenseLog(t, m.Name(), logs[i])
		checkLogMatchesHistory(t, m.Name(), logs[i], history)
		checkFinal(t, m.Name(), finals[i], logs[i], history)
	}
	checkMembersAgree(t, names, logs, finals)
	say("checked %d operations and %d revisions on %d members; test took %s", len(history), len(logs[0]), len(members), time.Since(testStart).Round(time.Millisecond))
}

// runFaultOp runs one random operation on key through c and returns it. seen holds the last
// value the client saw per key: compare-and-sets expect it.
func runFaultOp(c *clientv3.Client, rng *rand.Rand, cl, n int, key string, seen map[string]string, now func() int64) *faultOp {
	op := &faultOp{client: cl, in: linInput{key: key, value: fmt.Sprintf("c%d-%d", cl, n)}}
	switch r := rng.IntN(20); {
	case r < 7:
		op.in.op, op.in.value = "get", ""
	case r < 13:
		op.in.op = "put"
	case r < 17:
		op.in.op, op.in.expected = "cas", seen[key]
	default:
		op.in.op, op.in.value = "delete", ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
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
		op.err, op.out, op.ret = err, linOutput{unknown: true}, math.MaxInt64
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

// checkFaultLinearizable checks the clients' history with porcupine. On a violation it
// saves a visualisation and names the keys whose own history is not linearizable.
func checkFaultLinearizable(t *testing.T, history []*faultOp, say func(string, ...any)) {
	t.Helper()
	ops := make([]porcupine.Operation, len(history))
	for i, op := range history {
		ops[i] = porcupine.Operation{ClientId: op.client, Input: op.in, Output: op.out, Call: op.call, Return: op.ret}
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, porcupineTimeout)
	say("porcupine: %s for %d operations in %s", res, len(ops), time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("mosaic-cluster-faults-%d.html", time.Now().UnixNano()))
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
		t.Errorf("history is not linearizable: keys %v (%d of %d) have no linearization; visualisation in %s",
			bad, len(bad), faultKeys, path)
	default:
		t.Errorf("linearizability check inconclusive (%s) within %s", res, porcupineTimeout)
	}
}

// readRevisionLog reads every event of every revision of the member's keyspace, by a watch
// from revision 1 up to the current revision.
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
			return events, nil
		}
	}
	return events, fmt.Errorf("watch from revision 1 ended at revision %d, before the current revision %d: %w", last, current, ctx.Err())
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

// checkDenseLog checks that the revisions of a member's history are dense: every revision
// from 2 (a new store is at revision 1 and its first write takes 2) to the last holds
// exactly one event. Every write of this test (and of WaitReady) touches a single key, so a
// revision with several events would be several writes sharing it, and a missing revision
// a write that was numbered but lost.
func checkDenseLog(t reporter, member string, log []logEvent) {
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

func describeOp(op *faultOp) string {
	s := fmt.Sprintf("%s %s", op.in.op, op.in.key)
	switch op.in.op {
	case "put":
		s += "=" + op.in.value
	case "cas":
		s += fmt.Sprintf(" %q->%q (%v)", op.in.expected, op.in.value, op.out.ok)
	case "get":
		s += fmt.Sprintf(" -> %q", op.out.value)
	case "delete":
		s += fmt.Sprintf(" (%v)", op.out.ok)
	}
	return fmt.Sprintf("%s at revision %d (client %d via m%d)", s, op.rev, op.client, op.member+1)
}

// checkLogMatchesHistory checks a member's revision history against what the clients did:
//   - every acknowledged write is the event at the revision it was acknowledged with;
//   - every acknowledged read of a present key saw the value put at the ModRevision it
//     reported, and that ModRevision is not above the revision of its response header;
//   - every event of a test key comes from a write that was sent and may have happened
//     (acknowledged or of unknown outcome; never a compare-and-set whose compare failed),
//     and no put happened twice (every value written is unique).
func checkLogMatchesHistory(t reporter, member string, log []logEvent, history []*faultOp) {
	t.Helper()
	byRev := map[int64]logEvent{}
	for _, ev := range log {
		byRev[ev.rev] = ev
	}

	acked := &problems{t: t, check: member + ": acknowledged writes at their revisions"}
	reads := &problems{t: t, check: member + ": reads match the revision history"}
	for _, op := range history {
		switch {
		case op.acked():
			want := logEvent{rev: op.rev, del: op.in.op == "delete", key: op.in.key, value: op.in.value}
			if got, ok := byRev[op.rev]; !ok || got != want {
				acked.add("%s: the history has %s", describeOp(op), describeRev(byRev, op.rev))
			}
		case op.in.op == "get" && op.err == nil && op.out.value != "":
			want := logEvent{rev: op.modRev, key: op.in.key, value: op.out.value}
			if got, ok := byRev[op.modRev]; !ok || got != want || op.modRev > op.rev {
				reads.add("%s read mod revision %d: the history has %s", describeOp(op), op.modRev, describeRev(byRev, op.modRev))
			}
		}
	}
	acked.done()
	reads.done()

	sent := &problems{t: t, check: member + ": events come from writes sent"}
	byValue := map[string]*faultOp{}
	unknownDeletes := map[string]int{}
	ackedDeletes := map[int64]string{}
	for _, op := range history {
		switch {
		case op.in.op == "put" || op.in.op == "cas":
			byValue[op.in.value] = op
		case op.in.op == "delete" && op.err != nil:
			unknownDeletes[op.in.key]++
		case op.in.op == "delete" && op.acked():
			ackedDeletes[op.rev] = op.in.key
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

func describeRev(byRev map[int64]logEvent, rev int64) string {
	if ev, ok := byRev[rev]; ok {
		return ev.String()
	}
	return fmt.Sprintf("nothing at revision %d", rev)
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
	byValue := map[string]*faultOp{}
	newestAcked := map[string]*faultOp{}
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
	for i := range faultKeys {
		k := fmt.Sprintf("%s%02d", faultKeyPrefix, i)
		got, present := final[k]
		if r, rok := replayed[k]; r != got || rok != present {
			p.add("%s reads %s but the revision history ends with %s", k, describeFinal(got, present), describeFinal(r, rok))
		}
		var writer *faultOp
		if present {
			writer = byValue[got.value]
			if writer == nil || writer.in.key != k || !writer.mayHaveWritten() {
				p.add("%s holds %s, which no write that may have happened sent", k, describeFinal(got, present))
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
				p.add("%s holds %s, acknowledged at revision %d", k, describeFinal(got, present), w.rev)
			}
		case present && writer.err != nil && got.modRev > w.rev:
			// overwritten by a write of unknown outcome after W
		case !present && unknownDelete[k]:
			// deleted by a delete of unknown outcome, presumably after W
		default:
			p.add("%s holds %s: the newest acknowledged write, %s, is lost", k, describeFinal(got, present), describeOp(w))
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
			key := fmt.Sprintf("%s%02d", faultKeyPrefix, k)
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
	k0, k1 := faultKeyPrefix+"00", faultKeyPrefix+"01"
	history := func() []*faultOp {
		return []*faultOp{
			{client: 0, in: linInput{op: "put", key: k0, value: "a"}, call: 0, ret: 10, rev: 2},
			{client: 1, in: linInput{op: "put", key: k1, value: "b"}, call: 20, ret: 30, rev: 3},
			{client: 2, in: linInput{op: "get", key: k0}, out: linOutput{value: "a"}, call: 40, ret: 50, rev: 3, modRev: 2},
			{client: 0, in: linInput{op: "delete", key: k1}, out: linOutput{ok: true}, call: 60, ret: 70, rev: 4},
			{client: 1, in: linInput{op: "cas", key: k0, expected: "x", value: "d"}, out: linOutput{ok: false}, call: 80, ret: 90, rev: 4},
			{client: 2, in: linInput{op: "put", key: k0, value: "c"}, out: linOutput{unknown: true}, call: 100, ret: math.MaxInt64, err: context.DeadlineExceeded},
		}
	}
	log := func() []logEvent {
		return []logEvent{{rev: 2, key: k0, value: "a"}, {rev: 3, key: k1, value: "b"}, {rev: 4, del: true, key: k1}}
	}
	final := func() map[string]finalKV { return map[string]finalKV{k0: {value: "a", modRev: 2}} }
	run := func(h []*faultOp, l []logEvent, f map[string]finalKV) []string {
		r := &recorder{}
		checkClientRevisions(r, h)
		checkDenseLog(r, "m1", l)
		checkLogMatchesHistory(r, "m1", l, h)
		checkFinal(r, "m1", f, l, h)
		return r.errs
	}
	if errs := run(history(), log(), final()); len(errs) > 0 {
		t.Fatalf("correct run rejected: %q", errs)
	}
	// The write of unknown outcome may have happened after all.
	applied := append(log(), logEvent{rev: 5, key: k0, value: "c"})
	if errs := run(history(), applied, map[string]finalKV{k0: {value: "c", modRev: 5}}); len(errs) > 0 {
		t.Fatalf("correct run with an unknown write applied rejected: %q", errs)
	}

	for _, tc := range []struct {
		name   string
		mutate func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV)
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
			return h, append(l, logEvent{rev: 4, key: k0, value: "c"}), map[string]finalKV{k0: {value: "c", modRev: 4}}
		}, "revision 4 holds several events"},
		{"acknowledged write elsewhere", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			l[1].value = "c"
			return h, l, f
		}, "the history has rev 3 put " + k1 + "=c"},
		{"read of another revision", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			h[2].modRev = 3
			return h, l, f
		}, "read mod revision 3"},
		{"value never sent", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			return h, append(l, logEvent{rev: 5, key: k0, value: "zzz"}), map[string]finalKV{k0: {value: "zzz", modRev: 5}}
		}, "no such write was sent"},
		{"failed compare-and-set applied", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			return h, append(l, logEvent{rev: 5, key: k0, value: "d"}), map[string]finalKV{k0: {value: "d", modRev: 5}}
		}, "answered 'compare failed'"},
		{"delete never sent", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			return h, append(l, logEvent{rev: 5, del: true, key: k0}), map[string]finalKV{}
		}, "no delete of unknown outcome left"},
		{"acknowledged write lost after restart", func(h []*faultOp, l []logEvent, f map[string]finalKV) ([]*faultOp, []logEvent, map[string]finalKV) {
			return h, l, map[string]finalKV{}
		}, "is lost"},
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
