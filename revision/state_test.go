package revision

import (
	"errors"
	"testing"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

func decide(txns ...uint64) *raftcmdpb.OracleCommand {
	cmd := &raftcmdpb.OracleCommand{}
	for _, t := range txns {
		cmd.Decisions = append(cmd.Decisions, &raftcmdpb.Decision{TxnId: t, Ranges: []uint64{1}})
	}
	return cmd
}

func TestDecisionsTakeConsecutiveRevisions(t *testing.T) {
	s := NewState(Bootstrap(7, 9), nil)
	fx := s.Apply(2, decide(10, 11, 12))
	for i, d := range fx.Decided {
		if want := int64(2 + i); d.Rev != want {
			t.Fatalf("decision %d got rev %d, want %d", i, d.Rev, want)
		}
	}
	fx = s.Apply(3, decide(13))
	if fx.Decided[0].Rev != 5 || s.Proto().Revision != 5 {
		t.Fatalf("next batch rev %d, state rev %d, want 5", fx.Decided[0].Rev, s.Proto().Revision)
	}
	if s.Proto().LastRev[1] != 5 || s.Proto().AppliedIndex != 3 {
		t.Fatalf("last rev of range 1 = %d, applied = %d", s.Proto().LastRev[1], s.Proto().AppliedIndex)
	}
	// Each decision names the revision its range had before it (replicas wait for it).
	if prev, ok := fx.Decided[0].PrevFor(1); !ok || prev != 4 {
		t.Fatalf("rev 5's previous revision on range 1 = %d, %v; want 4", prev, ok)
	}
	if _, ok := fx.Decided[0].PrevFor(2); ok {
		t.Fatal("a previous revision for a range the decision does not touch")
	}
	if fx = s.Apply(4, decide(13)); len(fx.Decided) != 1 || fx.Decided[0].Prev != nil {
		t.Fatalf("a repeated decision must name no previous revision: %+v", fx.Decided)
	}
}

func TestDecidedAtMostOnce(t *testing.T) {
	s := NewState(Bootstrap(1, 1), nil)
	s.Apply(1, &raftcmdpb.OracleCommand{Aborts: []uint64{20}})
	fx := s.Apply(2, decide(20, 21))
	if len(fx.Aborted) != 1 || fx.Aborted[0] != 20 {
		t.Fatalf("an aborted txn must stay aborted, got %+v", fx)
	}
	if len(fx.Decided) != 1 || fx.Decided[0].TxnID != 21 || fx.Decided[0].Rev != 2 {
		t.Fatalf("the abort must take no revision, got %+v", fx.Decided)
	}
	fx = s.Apply(3, decide(21))
	if len(fx.Decided) != 1 || fx.Decided[0].Rev != 2 || s.Proto().Revision != 2 {
		t.Fatalf("a repeated decision must keep its revision and take no new one, got %+v rev %d", fx.Decided, s.Proto().Revision)
	}
	fx = s.Apply(4, &raftcmdpb.OracleCommand{Aborts: []uint64{21}})
	if len(fx.Aborted) != 0 {
		t.Fatalf("a decided txn must not be aborted, got %+v", fx.Aborted)
	}
	if rev, ok := s.Fate(21); !ok || rev != 2 {
		t.Fatalf("fate of 21 = %d, %v", rev, ok)
	}
}

func TestCompactRules(t *testing.T) {
	s := NewState(Bootstrap(1, 1), nil)
	if s.CompactRev() != -1 {
		t.Fatalf("a new store's compact revision is %d, want -1", s.CompactRev())
	}
	s.Apply(1, decide(1, 2, 3)) // rev 4
	cases := []struct {
		rev  int64
		want error
	}{
		{5, ErrFutureRev},
		{3, nil},
		{3, ErrCompactedRev},
		{2, ErrCompactedRev},
		{4, nil},
	}
	for i, c := range cases {
		fx := s.Apply(uint64(2+i), &raftcmdpb.OracleCommand{Compact: &raftcmdpb.Compact{Revision: c.rev}})
		if !errors.Is(fx.CompactErr, c.want) && !(c.want == nil && fx.CompactErr == nil) {
			t.Fatalf("compact %d: err %v, want %v", c.rev, fx.CompactErr, c.want)
		}
	}
	if s.CompactRev() != 4 {
		t.Fatalf("compact rev %d, want 4", s.CompactRev())
	}
}

func TestSplit(t *testing.T) {
	s := NewState(Bootstrap(1, 1), nil)
	s.Apply(1, decide(1)) // range 1 last rev 2
	fx := s.Apply(2, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 1, Key: []byte("m")}})
	if fx.SplitErr != nil {
		t.Fatal(fx.SplitErr)
	}
	if l, r := fx.Split.Left, fx.Split.Right; string(l.End) != "m" || string(r.Start) != "m" || len(r.End) != 0 || r.Id != 2 {
		t.Fatalf("split gave %v / %v", l, r)
	}
	if s.Proto().LastRev[2] != 2 {
		t.Fatalf("the right side must inherit the last revision, got %d", s.Proto().LastRev[2])
	}
	for _, key := range []string{"", "m", "a"} {
		id := uint64(1)
		if key == "a" {
			id = 2 // "a" is left of range 2's start
		}
		fx := s.Apply(3, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: id, Key: []byte(key)}})
		if fx.SplitErr == nil {
			t.Fatalf("split of range %d at %q must fail", id, key)
		}
	}
	fx = s.Apply(4, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 9, Key: []byte("x")}})
	if !errors.Is(fx.SplitErr, ErrUnknownRange) {
		t.Fatalf("unknown range: %v", fx.SplitErr)
	}
	if n := len(s.Proto().Ranges); n != 2 {
		t.Fatalf("%d ranges after failed splits, want 2", n)
	}
}

// TestDecisionUnderOldGenerationAborted: a transaction that latched a range before it split
// is aborted when its decision applies after the split (its writes could lie in the span
// that left); one made under the new table is decided.
func TestDecisionUnderOldGenerationAborted(t *testing.T) {
	s := NewState(Bootstrap(1, 1), nil)
	gen := func(id uint64) uint64 {
		for _, r := range s.Proto().Ranges {
			if r.Id == id {
				return r.Generation
			}
		}
		t.Fatalf("no range %d", id)
		return 0
	}
	before := gen(1)
	fx := s.Apply(1, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 1, Key: []byte("m")}})
	if fx.SplitErr != nil {
		t.Fatal(fx.SplitErr)
	}
	if gen(1) == before || gen(2) != gen(1) {
		t.Fatalf("generations after the split: left %d (was %d), right %d", gen(1), before, gen(2))
	}
	rev := s.Proto().Revision
	fx = s.Apply(2, &raftcmdpb.OracleCommand{Decisions: []*raftcmdpb.Decision{
		{TxnId: 10, Ranges: []uint64{1}, Generations: []uint64{before}},
		{TxnId: 11, Ranges: []uint64{1, 2}, Generations: []uint64{gen(1), gen(2)}},
		{TxnId: 12, Ranges: []uint64{2}},                                   // unchecked
		{TxnId: 13, Ranges: []uint64{1, 2}, Generations: []uint64{gen(1)}}, // malformed
	}})
	if len(fx.Aborted) != 2 || fx.Aborted[0] != 10 || fx.Aborted[1] != 13 || fx.AbortErr[10] != ErrRangeChanged || fx.AbortErr[13] != ErrRangeChanged {
		t.Fatalf("aborted %v (reasons %v), want 10 and 13 for a changed range", fx.Aborted, fx.AbortErr)
	}
	if len(fx.Decided) != 2 || fx.Decided[0].Rev != rev+1 || fx.Decided[1].Rev != rev+2 {
		t.Fatalf("decided %+v, want txns 11 and 12 at %d and %d", fx.Decided, rev+1, rev+2)
	}
}

// TestReplicasKeepGeneration: recording a range's replicas (a move) leaves its span and so its
// generation alone; a decision made under the generation before the range's split stays
// aborted after the move.
func TestReplicasKeepGeneration(t *testing.T) {
	s := NewState(Bootstrap(1, 1), nil)
	before := s.Proto().Ranges[0].Generation
	if fx := s.Apply(1, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 1, Key: []byte("m")}}); fx.SplitErr != nil {
		t.Fatal(fx.SplitErr)
	}
	after := s.Proto().Ranges[0].Generation
	s.Apply(2, &raftcmdpb.OracleCommand{Replicas: &raftcmdpb.SetReplicas{RangeId: 1, Replicas: []uint64{7, 8, 9}}})
	if r := s.Proto().Ranges[0]; r.Id != 1 || r.Generation != after || len(r.Replicas) != 3 {
		t.Fatalf("range after the move: %v, want generation %d and 3 replicas", r, after)
	}
	fx := s.Apply(3, &raftcmdpb.OracleCommand{Decisions: []*raftcmdpb.Decision{
		{TxnId: 20, Ranges: []uint64{1}, Generations: []uint64{before}},
	}})
	if len(fx.Aborted) != 1 || fx.Aborted[0] != 20 {
		t.Fatalf("aborted %v, want txn 20 (decided under the generation before the split)", fx.Aborted)
	}
}

// TestSplitGuard: a guarded split applies only to the range as its splitter drained it (same
// generation, no revision assigned since); asked again once applied it says so, and a split
// whose range changed meanwhile fails for good. Unguarded splits are unchecked.
func TestSplitGuard(t *testing.T) {
	s := NewState(Bootstrap(1, 1), nil)
	s.Apply(1, decide(1))
	drained := &raftcmdpb.SplitGuard{Generation: s.Proto().Ranges[0].Generation, LastRev: s.Proto().LastRev[1]}
	s.Apply(2, decide(2)) // a write the splitter did not drain
	split := func(idx uint64, g *raftcmdpb.SplitGuard) Effects {
		return s.Apply(idx, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 1, Key: []byte("m"), Guard: g}})
	}
	if fx := split(3, drained); !errors.Is(fx.SplitErr, ErrSplitStale) || fx.Split != nil {
		t.Fatalf("split guarded at last revision %d after a later write: %+v, want ErrSplitStale", drained.LastRev, fx)
	}
	if n := len(s.Proto().Ranges); n != 1 {
		t.Fatalf("%d ranges after a stale split, want 1", n)
	}
	drained = &raftcmdpb.SplitGuard{Generation: s.Proto().Ranges[0].Generation, LastRev: s.Proto().LastRev[1]}
	fx := split(4, drained)
	if fx.SplitErr != nil || fx.Split == nil || fx.Split.StartRev != drained.LastRev || fx.Split.Guard != drained {
		t.Fatalf("split as drained: %+v", fx)
	}
	if fx := split(5, drained); !errors.Is(fx.SplitErr, ErrAlreadySplit) {
		t.Fatalf("the same split asked again: %v, want ErrAlreadySplit", fx.SplitErr)
	}
	other := &raftcmdpb.SplitGuard{Generation: drained.Generation, LastRev: drained.LastRev}
	fx = s.Apply(6, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 1, Key: []byte("f"), Guard: other}})
	if !errors.Is(fx.SplitErr, ErrSplitStale) {
		t.Fatalf("a split guarded at the generation before the last split, at another key: %v, want ErrSplitStale", fx.SplitErr)
	}
	if fx := s.Apply(7, &raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: 1, Key: []byte("f")}}); fx.SplitErr != nil {
		t.Fatalf("unguarded split: %v", fx.SplitErr)
	}
	if n := len(s.Proto().Ranges); n != 3 {
		t.Fatalf("%d ranges, want 3", n)
	}
}
