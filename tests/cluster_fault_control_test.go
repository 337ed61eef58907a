package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The fault schedule of TestClusterFaultsLinearizable, and the splits.

// faultInitialSplits split the keyspace before the workload so that the 30 test keys span
// four ranges, [.., fault/08) [fault/08, fault/15) [fault/15, fault/23) [fault/23, ..), and
// the two keys of every pair (p and p+15) lie in different ranges.
var faultInitialSplits = []string{faultKey(8), faultKey(15), faultKey(23)}

// faultOnlineSplits are the keys the fault loop may split at while the workload runs, in an
// order drawn from the seed; fault/135 lies between two test keys.
var faultOnlineSplits = []string{faultKey(2), faultKey(4), faultKey(11), faultKey(13) + "5", faultKey(19), faultKey(21), faultKey(25), faultKey(27)}

// faultKind is what one step of the fault loop does.
type faultKind int

const (
	killOracleLeader faultKind = iota // SIGKILL the oracle's leader (the member Status names leader)
	killRangeLeader                   // SIGKILL the leader of a range holding test keys
	killFollower                      // SIGKILL a member that is not the oracle's leader
	moveLeader                        // move the lead to another member (etcd's MoveLeader, or Admin TransferLeader)
	moveReplica                       // move a replica of a range holding test keys to a member without one (Admin MoveReplica)
	numFaultKinds
)

// splitResult is one split the test asked for.
type splitResult struct {
	key string
	err error // non-nil: the split's outcome is unknown, it may or may not have happened
}

// faultControl injects the faults and splits and records them.
type faultControl struct {
	t       *testing.T
	cluster *harness.Cluster
	members []*harness.Member
	ctrl    []*clientv3.Client // one per member, for Status, MoveLeader and Admin; they reconnect after restarts
	ids     []uint64           // the members' ids
	etcd    bool               // the subject is etcd, which has no ranges and no Admin service
	say     func(string, ...any)
	base    time.Time // when the workload began; zero before
	onKill  func(int) // if set, called right after a member is SIGKILLed, with its index

	// kinds are the faults the loop injects: every kind but moveReplica, which needs more
	// members than replicas (withReplicaMoves).
	kinds []faultKind

	kills            [numFaultKinds]int
	moves, movesOK   int
	replicaMoves     int // replica moves asked for
	replicaMovesOK   int // and done
	online, onlineOK int // splits during the workload: asked for, acknowledged
	splits           []splitResult
}

func newFaultControl(ctx context.Context, t *testing.T, cluster *harness.Cluster, say func(string, ...any)) *faultControl {
	t.Helper()
	f := &faultControl{t: t, cluster: cluster, members: cluster.Members(), etcd: harness.SubjectIsEtcd(), say: say,
		kinds: []faultKind{killOracleLeader, killRangeLeader, killFollower, moveLeader}}
	for _, m := range f.members {
		c := harness.NewClient(t, m.Endpoint())
		t.Cleanup(func() { c.Close() })
		f.ctrl = append(f.ctrl, c)
		resp, err := c.Status(ctx, m.Endpoint())
		if err != nil {
			t.Fatalf("%s: Status: %v", m.Name(), err)
		}
		f.ids = append(f.ids, resp.Header.MemberId)
	}
	return f
}

// when says when something happens, relative to the start of the workload.
func (f *faultControl) when() string {
	if f.base.IsZero() {
		return "before the workload"
	}
	return fmt.Sprintf("t=%.1fs", time.Since(f.base).Seconds())
}

func (f *faultControl) admin(i int) adminpb.AdminClient {
	return adminpb.NewAdminClient(f.ctrl[i].ActiveConnection())
}

// running lists the running members, starting at a random one.
func (f *faultControl) running(rng *rand.Rand) []int {
	var up []int
	for i := range f.members {
		if f.cluster.Running(i) {
			up = append(up, i)
		}
	}
	rng.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
	return up
}

func (f *faultControl) byID(id uint64) int {
	return slices.Index(f.ids, id)
}

func (f *faultControl) name(i int) string {
	if i < 0 {
		return "none"
	}
	return f.members[i].Name()
}

// layout returns the oracle's leader (the cluster's leader: -1 if unknown or not running)
// and the ranges, as a running member reports them (no ranges for etcd).
func (f *faultControl) layout(ctx context.Context, rng *rand.Rand) (int, []*adminpb.RangeInfo) {
	if f.etcd {
		return f.cluster.Leader(ctx), nil
	}
	for _, i := range f.running(rng) {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		nodes, err := f.admin(i).ListNodes(actx, &adminpb.ListNodesRequest{}, grpc.WaitForReady(true))
		var ranges *adminpb.ListRangesResponse
		if err == nil {
			ranges, err = f.admin(i).ListRanges(actx, &adminpb.ListRangesRequest{}, grpc.WaitForReady(true))
		}
		cancel()
		if err != nil {
			continue
		}
		lead := -1
		for _, n := range nodes.Nodes {
			if n.OracleLeader {
				lead = f.byID(n.Id)
			}
		}
		if lead >= 0 && f.cluster.Running(lead) {
			return lead, ranges.Ranges
		}
	}
	return f.cluster.Leader(ctx), nil
}

// holdsTestKeys reports whether range r overlaps the test keys' span [fault/, fault0).
func holdsTestKeys(r *adminpb.RangeInfo) bool {
	return (len(r.End) == 0 || string(r.End) > faultKeyPrefix) && string(r.Start) < faultKeyPrefix[:len(faultKeyPrefix)-1]+"0"
}

func describeRange(r *adminpb.RangeInfo) string {
	end := fmt.Sprintf("%q", r.End)
	if len(r.End) == 0 {
		end = "end"
	}
	return fmt.Sprintf("range %d [%q, %s)", r.Id, r.Start, end)
}

// run runs the fault loop until the deadline: a pause, then one fault (each kind once
// first, in an order drawn from the seed, then at random), sometimes a split while the
// killed member is down or after the fault. A killed member stays down 1 to 2 seconds.
func (f *faultControl) run(rng *rand.Rand, deadline time.Time) {
	first := rng.Perm(len(f.kinds))
	if i := slices.Index(f.kinds, moveReplica); i >= 0 {
		// A replica move first, so that a short workload has one.
		j := slices.Index(first, i)
		first[0], first[j] = first[j], first[0]
	}
	splitKeys := slices.Clone(faultOnlineSplits)
	rng.Shuffle(len(splitKeys), func(i, j int) { splitKeys[i], splitKeys[j] = splitKeys[j], splitKeys[i] })
	split := func(when string) {
		if f.etcd || len(splitKeys) == 0 {
			return
		}
		key := splitKeys[0]
		splitKeys = splitKeys[1:]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.online++
		if s := f.split(ctx, rng, key, when); s.err == nil {
			f.onlineOK++
		}
	}
	for step := 0; ; step++ {
		time.Sleep(time.Duration(300+rng.IntN(600)) * time.Millisecond) // uptime between faults
		if time.Until(deadline) < time.Second {
			return
		}
		kind := f.kinds[rng.IntN(len(f.kinds))]
		if step < len(first) {
			kind = f.kinds[first[step]]
		}
		splitAt := rng.IntN(3) // 0: while the member is down (or right after a leader transfer), 1: after the fault, 2: no split
		if kind == moveReplica {
			f.moveReplica(rng)
		} else if kind == moveLeader {
			f.moveLeader(rng)
			if splitAt == 0 {
				split("right after a leader transfer")
			}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			victim, why := f.pickVictim(ctx, rng, kind)
			cancel()
			downtime := time.Duration(1000+rng.IntN(1000)) * time.Millisecond
			f.say("%s SIGKILL %s: %s (for %s)", f.when(), f.name(victim), why, downtime)
			killed := time.Now()
			f.cluster.Kill(victim)
			f.kills[kind]++
			if f.onKill != nil {
				f.onKill(victim)
			}
			if splitAt == 0 {
				split("while " + f.name(victim) + " is down")
			}
			time.Sleep(time.Until(killed.Add(downtime)))
			start := time.Now()
			f.cluster.Restart(victim)
			f.say("%s restarted %s: ready in %s", f.when(), f.name(victim), time.Since(start).Round(time.Millisecond))
		}
		if splitAt == 1 {
			time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
			split("between faults")
		}
	}
}

// pickVictim chooses the member to kill for a kill of the given kind, and says why.
func (f *faultControl) pickVictim(ctx context.Context, rng *rand.Rand, kind faultKind) (int, string) {
	lead, ranges := f.layout(ctx, rng)
	victim, why := -1, ""
	switch kind {
	case killOracleLeader:
		victim, why = lead, "the oracle's leader"
	case killRangeLeader:
		var cands []*adminpb.RangeInfo
		for _, r := range ranges {
			if holdsTestKeys(r) {
				if i := f.byID(r.Leader); i >= 0 && f.cluster.Running(i) {
					cands = append(cands, r)
				}
			}
		}
		if len(cands) == 0 {
			victim, why = lead, "the leader (no range leader known)"
			break
		}
		r := cands[rng.IntN(len(cands))]
		victim, why = f.byID(r.Leader), "the leader of "+describeRange(r)
		if victim == lead {
			why += ", also the oracle's leader"
		} else {
			why += ", not the oracle's leader"
		}
	case killFollower:
		var others []int
		for _, i := range f.running(rng) {
			if i != lead {
				others = append(others, i)
			}
		}
		if lead >= 0 && len(others) > 0 {
			victim, why = others[0], "a follower of the oracle's leader "+f.name(lead)
		}
	}
	if victim < 0 {
		victim = f.running(rng)[0]
		why += " (no leader known: a random member)"
	}
	if len(ranges) > 0 {
		var led []string
		for _, r := range ranges {
			if r.Leader == f.ids[victim] {
				led = append(led, fmt.Sprint(r.Id))
			}
		}
		why += fmt.Sprintf("; it leads %d of %d ranges %v", len(led), len(ranges), led)
	}
	return victim, why
}

// moveReplica moves the replica of a range holding test keys from one member (half the
// time the range's leader) to a running member without one, with the Admin service's
// MoveReplica asked of a random member (one that is not the oracle's leader forwards it).
func (f *faultControl) moveReplica(rng *rand.Rand) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	at := f.when()
	_, ranges := f.layout(ctx, rng)
	var cands []*adminpb.RangeInfo
	for _, r := range ranges {
		if holdsTestKeys(r) && len(r.Replicas) < len(f.members) {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		f.say("%s replica move skipped: no range with a member to spare", at)
		return
	}
	r := cands[rng.IntN(len(cands))]
	from := r.Replicas[rng.IntN(len(r.Replicas))]
	fromWhat := "a follower"
	if rng.IntN(2) == 0 && r.Leader != 0 {
		from = r.Leader
	}
	if from == r.Leader {
		fromWhat = "its leader"
	}
	to := -1
	for _, i := range f.running(rng) {
		if !slices.Contains(r.Replicas, f.ids[i]) {
			to = i
		}
	}
	if to < 0 {
		f.say("%s replica move skipped: the member without %s is down", at, describeRange(r))
		return
	}
	via := f.running(rng)[0]
	f.replicaMoves++
	start := time.Now()
	resp, err := f.admin(via).MoveReplica(ctx, &adminpb.MoveReplicaRequest{RangeId: r.Id, From: from, To: f.ids[to]}, grpc.WaitForReady(true))
	how := fmt.Sprintf("move of %s's replica on %s (%s) to %s (via %s)", describeRange(r), f.name(f.byID(from)), fromWhat, f.name(to), f.name(via))
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		f.say("%s %s failed after %s: %v", at, how, took, err)
		return
	}
	f.replicaMovesOK++
	var names []string
	for _, id := range resp.Range.Replicas {
		names = append(names, f.name(f.byID(id)))
	}
	f.say("%s %s done in %s; replicas now %v", at, how, took, names)
}

// awaitReplicas waits until every range has rf replicas, failing the test after d.
func (f *faultControl) awaitReplicas(rf int, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		_, ranges := f.layout(ctx, rand.New(rand.NewPCG(0, 0)))
		done := len(ranges) > 0
		for _, r := range ranges {
			done = done && len(r.Replicas) == rf
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			f.t.Fatalf("ranges did not get %d replicas each in %s", rf, d)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// moveLeader moves the cluster's lead to another member: with etcd's MoveLeader sent to the
// leader or, half the time on Mosaic after the first transfer, with the Admin service's
// TransferLeader of range 0 (the oracle, whose leader every range follows) sent to a random
// member. A MoveLeader that reaches a member that is no longer the leader is sent again to
// the new one. It reports whom Status names leader afterwards.
//
// It waits up to 10s: etcd's own server gives a transfer 7s with its default timings (its
// request timeout), and a target restarted a moment before must first catch up (one run,
// with six cluster tests at once on 2 cores, timed out at 5s).
func (f *faultControl) moveLeader(rng *rand.Rand) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	at := f.when()
	lead := f.cluster.Leader(ctx)
	if lead < 0 {
		f.say("%s leader transfer skipped: no leader known", at)
		return
	}
	var others []int
	for _, i := range f.running(rng) {
		if i != lead {
			others = append(others, i)
		}
	}
	if len(others) == 0 {
		f.say("%s leader transfer skipped: no other member runs", at)
		return
	}
	target := others[rng.IntN(len(others))]
	admin := !f.etcd && f.moves > 0 && rng.IntN(2) == 0 // the first is always a MoveLeader
	f.moves++
	start := time.Now()
	var how string
	var err error
	if admin {
		via := f.running(rng)[0]
		how = fmt.Sprintf("Admin TransferLeader of range 0 %s -> %s (via %s)", f.name(lead), f.name(target), f.name(via))
		_, err = f.admin(via).TransferLeader(ctx, &adminpb.TransferLeaderRequest{RangeId: 0, To: f.ids[target]}, grpc.WaitForReady(true))
	} else {
		how = fmt.Sprintf("MoveLeader %s -> %s", f.name(lead), f.name(target))
		for {
			_, err = f.ctrl[lead].MoveLeader(ctx, f.ids[target])
			if !errors.Is(err, rpctypes.ErrNotLeader) || ctx.Err() != nil {
				break
			}
			// The lead moved meanwhile: ask the new leader, unless it is the target.
			time.Sleep(100 * time.Millisecond)
			if l := f.cluster.Leader(ctx); l >= 0 && l != lead {
				if l == target {
					err = nil
					break
				}
				lead = l
				how += fmt.Sprintf(", sent again to %s", f.name(lead))
			}
		}
	}
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		f.say("%s %s failed after %s: %v", at, how, took, err)
		return
	}
	f.movesOK++
	now := f.cluster.Leader(ctx)
	for wait := time.Now(); now != target && time.Since(wait) < 2*time.Second; now = f.cluster.Leader(ctx) {
		time.Sleep(50 * time.Millisecond)
	}
	f.say("%s %s done in %s; Status names %s leader", at, how, took, f.name(now))
}

// split splits the range holding key at key, asking a random running member (one that is
// not the leader forwards it), and prints the outcome. While the cluster has no leader the
// members answer Unavailable: the split is asked again (of another member) until ctx ends.
// An error, the last attempt's, leaves the split's outcome unknown.
func (f *faultControl) split(ctx context.Context, rng *rand.Rand, key, why string) splitResult {
	s := splitResult{key: key}
	if f.etcd {
		f.say("%s split at %q skipped: etcd has no ranges", f.when(), key)
		return s
	}
	at, start := f.when(), time.Now()
	var (
		via      []string
		resp     *adminpb.SplitRangeResponse
		err      error
		attempts int
	)
	for {
		i := f.running(rng)[0]
		via = append(via, f.name(i))
		attempts++
		resp, err = f.admin(i).SplitRange(ctx, &adminpb.SplitRangeRequest{Key: []byte(key)}, grpc.WaitForReady(true))
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond) // while a leader is elected
	}
	took := time.Since(start).Round(time.Millisecond)
	s.err = err
	if err == nil {
		f.say("%s split at %q (%s) via %s in %s: %s | %s", at, key, why, strings.Join(via, ", "), took, describeRange(resp.Left), describeRange(resp.Right))
	} else {
		f.say("%s split at %q (%s) via %s failed after %s (%d attempts): %v", at, key, why, strings.Join(via, ", "), took, attempts, err)
	}
	f.splits = append(f.splits, s)
	return s
}

// printRanges prints the ranges as a running member reports them.
func (f *faultControl) printRanges(label string) {
	if f.etcd {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lead, ranges := f.layout(ctx, rand.New(rand.NewPCG(0, 0)))
	var rs []string
	for _, r := range ranges {
		rs = append(rs, fmt.Sprintf("%s led by %s", describeRange(r), f.name(f.byID(r.Leader))))
	}
	f.say("%s (oracle's leader %s): %s", label, f.name(lead), strings.Join(rs, ", "))
}

func (f *faultControl) summary() string {
	return fmt.Sprintf("faults: %d SIGKILLs (%d of the oracle's leader, %d of a range's leader, %d of a follower), %d leader transfers (%d done), %d replica moves (%d done), %d online splits (%d acknowledged)",
		f.kills[killOracleLeader]+f.kills[killRangeLeader]+f.kills[killFollower], f.kills[killOracleLeader], f.kills[killRangeLeader], f.kills[killFollower],
		f.moves, f.movesOK, f.replicaMoves, f.replicaMovesOK, f.online, f.onlineOK)
}

// checkCoverage fails the test if the faults did not happen: no kill at all, or every
// MoveLeader or online split asked for failed.
func (f *faultControl) checkCoverage(duration time.Duration) {
	t := f.t
	t.Helper()
	if f.kills[killOracleLeader]+f.kills[killRangeLeader]+f.kills[killFollower] == 0 {
		t.Errorf("no member killed: %s is too short", duration)
	}
	if f.moves > 0 && f.movesOK == 0 {
		t.Errorf("none of %d leader transfers succeeded", f.moves)
	}
	if f.online > 0 && f.onlineOK == 0 {
		t.Errorf("none of %d online splits was acknowledged", f.online)
	}
	if slices.Contains(f.kinds, moveReplica) && f.replicaMovesOK == 0 {
		t.Errorf("none of %d replica moves was done", f.replicaMoves)
	}
}

// checkRanges checks, after the full restart, that each member's ranges tile the keyspace,
// that every acknowledged split is there, and that the members agree on the ranges.
func (f *faultControl) checkRanges(ctx context.Context) {
	t := f.t
	t.Helper()
	if f.etcd {
		return
	}
	p := &problems{t: t, check: "ranges after the full restart"}
	var tables []string
	for i, m := range f.members {
		var resp *adminpb.ListRangesResponse
		var err error
		for {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err = f.admin(i).ListRanges(actx, &adminpb.ListRangesRequest{}, grpc.WaitForReady(true))
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			p.add("%s: ListRanges: %v", m.Name(), err)
			continue
		}
		ranges := resp.Ranges
		sort.Slice(ranges, func(a, b int) bool { return bytes.Compare(ranges[a].Start, ranges[b].Start) < 0 })
		starts := map[string]bool{}
		var table []string
		for j, r := range ranges {
			starts[string(r.Start)] = true
			table = append(table, fmt.Sprintf("%d:%q", r.Id, r.Start))
			switch {
			case j == 0 && len(r.Start) != 0:
				p.add("%s: the first range, %s, does not start at the beginning of the keyspace", m.Name(), describeRange(r))
			case j > 0 && !bytes.Equal(ranges[j-1].End, r.Start):
				p.add("%s: %s and %s do not meet", m.Name(), describeRange(ranges[j-1]), describeRange(r))
			}
		}
		if len(ranges) > 0 && len(ranges[len(ranges)-1].End) != 0 {
			p.add("%s: the last range, %s, does not end at the end of the keyspace", m.Name(), describeRange(ranges[len(ranges)-1]))
		}
		for _, s := range f.splits {
			if s.err == nil && !starts[s.key] {
				p.add("%s: the acknowledged split at %q is missing", m.Name(), s.key)
			}
		}
		tables = append(tables, strings.Join(table, " "))
		if i == 0 {
			f.say("ranges after the full restart on %s: %d, starting at %s", m.Name(), len(ranges), strings.Join(table, " "))
		}
	}
	for i := 1; i < len(tables); i++ {
		if tables[i] != tables[0] {
			p.add("%s has ranges %s, %s has %s", f.members[0].Name(), tables[0], f.members[i].Name(), tables[i])
		}
	}
	p.done()
}
