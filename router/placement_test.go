package router

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

func TestPreferredLead(t *testing.T) {
	d := &raftcmdpb.RangeDesc{Id: 1, Replicas: []uint64{2, 3, 4}}
	pinned := &raftcmdpb.RangeDesc{Id: 2, Replicas: []uint64{3, 2, 4}, LeadPinned: true}
	all := &raftcmdpb.RangeDesc{Id: 3}
	for _, c := range []struct {
		d       *raftcmdpb.RangeDesc
		primary uint64
		want    uint64
	}{
		{d, 3, 3},      // the primary holds it: the lead stays with the writes
		{d, 1, 2},      // the primary does not: the first replica
		{d, 0, 0},      // no primary known: nobody can tell
		{pinned, 2, 3}, // pinned: the first replica, whatever the primary
		{pinned, 0, 3},
		{all, 5, 5}, // replicas not recorded: every member holds it
		{all, 0, 0},
	} {
		if got := preferredLead(c.d, c.primary); got != c.want {
			t.Errorf("preferredLead(%v, primary %d) = %d, want %d", c.d, c.primary, got, c.want)
		}
	}
}

// The leads get spread even when no range led by a member with the most has a replica on
// the member with the fewest: a lead first moves between two members one apart, which lets
// a member with the most hand one on. TestClusterReplicationFactorRemoteReads stopped at
// leads 2,1,0,2,1 before that.
func TestLeadMoveSpreadsLeads(t *testing.T) {
	const a, b, c, d, e = 1, 2, 3, 4, 5
	counts := map[uint64]int{a: 4, b: 4, c: 2, d: 4, e: 4}
	pinned := func(id uint64, reps ...uint64) *raftcmdpb.RangeDesc {
		return &raftcmdpb.RangeDesc{Id: id, Replicas: reps, LeadPinned: true}
	}
	ranges := []*raftcmdpb.RangeDesc{
		pinned(1, a, b, d), pinned(2, a, e, d), // led by a
		pinned(3, d, b, e), pinned(4, d, a, b), // led by d
		pinned(5, b, c, e), // led by b
		pinned(6, e, c, a), // led by e
	}
	spread := func() (lo, hi int) {
		leads := map[uint64]int{}
		for _, r := range ranges {
			leads[preferredLead(r, 0)]++
		}
		lo, hi = len(ranges), 0
		for id := range counts {
			lo, hi = min(lo, leads[id]), max(hi, leads[id])
		}
		return lo, hi
	}
	first, to := leadMove(ranges, 0, counts)
	if first == nil || first.Id != 5 || to != c {
		t.Fatalf("first move: range %v to %d, want range 5's lead to %d", first, to, c)
	}
	for moves := 0; ; moves++ {
		r, to := leadMove(ranges, 0, counts)
		if r == nil {
			break
		}
		if moves == 10 {
			t.Fatal("still moving leads after 10 moves")
		}
		r.Replicas = append([]uint64{to}, slices.DeleteFunc(slices.Clone(r.Replicas), func(x uint64) bool { return x == to })...)
	}
	if lo, hi := spread(); hi-lo > 1 {
		t.Errorf("leads spread %d..%d after the moves, want within one", lo, hi)
	}
}

func TestLeastLoaded(t *testing.T) {
	counts := map[uint64]int{1: 3, 2: 1, 3: 1, 4: 2}
	if got := leastLoaded(counts, nil); got != 2 {
		t.Errorf("least loaded = %d, want 2 (fewest, then smallest id)", got)
	}
	if got := leastLoaded(counts, []uint64{2, 3}); got != 4 {
		t.Errorf("least loaded skipping 2 and 3 = %d, want 4", got)
	}
	if got := leastLoaded(counts, []uint64{1, 2, 3, 4}); got != 0 {
		t.Errorf("least loaded skipping all = %d, want 0", got)
	}
}

func change(rev int64, sub int32, key string) mvcc.Change {
	return mvcc.Change{Rev: rev, Sub: sub, Event: &mvccpb.Event{Kv: &mvccpb.KeyValue{Key: []byte(key)}}}
}

func changesString(cs []mvcc.Change) string {
	s := ""
	for _, c := range cs {
		s += fmt.Sprintf("%d.%d:%s ", c.Rev, c.Sub, c.Event.Kv.Key)
	}
	return s
}

// mergeChanges must give what one store holding every range would: revision order, then
// sub-revision and key; with a limit, whole revisions only, and never a revision that a
// limited part may not have reached.
func TestMergeChanges(t *testing.T) {
	a := []mvcc.Change{change(2, 0, "a"), change(4, 0, "a"), change(5, 1, "b")}
	b := []mvcc.Change{change(3, 0, "x"), change(5, 0, "y"), change(6, 0, "x")}
	if got, want := changesString(mergeChanges([][]mvcc.Change{a, b}, 0)), "2.0:a 3.0:x 4.0:a 5.0:y 5.1:b 6.0:x "; got != want {
		t.Errorf("unlimited: %s, want %s", got, want)
	}
	// Part b stopped at its limit after revision 5: it may lack revision 6 and later,
	// so the merge ends at 5 even though part a reaches further.
	bLimited := []mvcc.Change{change(3, 0, "x"), change(5, 0, "y")}
	aLonger := []mvcc.Change{change(2, 0, "a"), change(4, 0, "a"), change(5, 1, "b"), change(7, 0, "a")}
	if got, want := changesString(mergeChanges([][]mvcc.Change{aLonger, bLimited}, 2)), "2.0:a 3.0:x "; got != want {
		t.Errorf("limit 2: %s, want %s", got, want)
	}
	// A revision spread over two parts is kept whole past the limit.
	c := []mvcc.Change{change(2, 0, "a"), change(3, 0, "a")}
	d := []mvcc.Change{change(2, 1, "z")}
	if got, want := changesString(mergeChanges([][]mvcc.Change{c, d}, 1)), "2.0:a 2.1:z "; got != want {
		t.Errorf("limit 1: %s, want %s", got, want)
	}
}

// TestRangeLeadIgnoresStaleSelfHint: a member without a replica of a range, whose hint names
// itself as the leader (it led the range before its replica moved away), asks another
// replica rather than waiting for a lead that is not coming.
func TestRangeLeadIgnoresStaleSelfHint(t *testing.T) {
	n := &Node{nodeID: 7, shards: map[uint64]*shard.Shard{}}
	d := &raftcmdpb.RangeDesc{Id: 1, Replicas: []uint64{2, 3, 4}}
	n.hints.set(d.Id, leadHint{lead: 7})
	if got := n.rangeLead(d); got == 7 || !slices.Contains(d.Replicas, got) {
		t.Fatalf("rangeLead = %d with a stale hint naming this member, want one of the replicas %v", got, d.Replicas)
	}
	n.hints.set(d.Id, leadHint{lead: 3, notLead: 2})
	if got := n.rangeLead(d); got != 3 {
		t.Fatalf("rangeLead = %d, want the hinted leader 3", got)
	}
	only := &raftcmdpb.RangeDesc{Id: 2, Replicas: []uint64{7}}
	n.hints.set(only.Id, leadHint{lead: 7})
	if got := n.rangeLead(only); got != 0 {
		t.Fatalf("rangeLead = %d for a range the table lists on this member alone, not started here; want 0", got)
	}
}
