package actors

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

func entryAt(i uint64) []*raftpb.Entry {
	return []*raftpb.Entry{{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: []byte("x")}}
}

// TestRequiredWriteWaitsForItsProvider: a write that requires a transaction
// is not made durable until the write that provides it is, and an abandoned
// transaction fails the writes that wait for it.
func TestRequiredWriteWaitsForItsProvider(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenLogStore(dir, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	decided := make(chan error, 1)
	s.Submit(&LogWrite{Group: 0, Entries: entryAt(1), Requires: []Dep{{Txn: 7, Group: 1}}, Done: func(err error) { decided <- err }})
	// Unrelated writes go through while the decision waits.
	other := make(chan error, 1)
	s.Submit(&LogWrite{Group: 2, Entries: entryAt(1), Done: func(err error) { other <- err }})
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-decided:
		t.Fatalf("decision written before its intent (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	intent := make(chan error, 1)
	s.Submit(&LogWrite{Group: 1, Entries: entryAt(1), Provides: []uint64{7}, Done: func(err error) { intent <- err }})
	if err := <-intent; err != nil {
		t.Fatal(err)
	}
	if err := <-decided; err != nil {
		t.Fatal(err)
	}

	// An abandoned transaction fails its dependants instead of stalling them.
	doomed := make(chan error, 1)
	s.Submit(&LogWrite{Group: 0, Entries: entryAt(2), Requires: []Dep{{Txn: 8, Group: 1}}, Done: func(err error) { doomed <- err }})
	s.Abandon(8)
	if err := <-doomed; !errors.Is(err, errAbandoned) {
		t.Fatalf("want errAbandoned, got %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Both the intent and the decision are in the log after a reopen, and
	// the failed write is not.
	s, err = OpenLogStore(dir, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for group, want := range map[uint64]int{0: 1, 1: 1, 2: 1} {
		gl, err := s.Load(group)
		if err != nil {
			t.Fatal(err)
		}
		if len(gl.Entries) != want {
			t.Fatalf("group %d has %d entries after reopen, want %d", group, len(gl.Entries), want)
		}
	}
}

// TestProviderAndRequirerShareARecord: queued together, an intent and the
// decision that requires it are committed by one fdatasync.
func TestProviderAndRequirerShareARecord(t *testing.T) {
	d := newDependencies()
	req := &LogWrite{Group: 0, Requires: []Dep{{Txn: 5, Group: 1}}}
	prov := &LogWrite{Group: 1, Provides: []uint64{5}}
	got := d.ready([]*LogWrite{req, prov}, nil, time.Now(), false)
	if len(got) != 2 || len(d.waiting) != 0 {
		t.Fatalf("ready %d, waiting %d; want both ready together", len(got), len(d.waiting))
	}
	d.committed(got, []error{nil, nil})
	if len(d.provided) != 0 {
		t.Fatalf("provided set not consumed: %v", d.provided)
	}
}

// TestProviderLingersForItsRequirer: an intent whose decision is not yet
// queued is held back briefly, so the two share a record; past the linger
// time it goes alone.
func TestProviderLingersForItsRequirer(t *testing.T) {
	d := newDependencies()
	now := time.Now()
	prov := &LogWrite{Group: 1, Provides: []uint64{9}}
	if got := d.ready([]*LogWrite{prov}, nil, now, false); len(got) != 0 {
		t.Fatalf("provider went alone at once: %d ready", len(got))
	}
	if left, ok := d.lingerLeft(now); !ok || left <= 0 || left > lingerFor {
		t.Fatalf("linger left %v, %v", left, ok)
	}
	req := &LogWrite{Group: 0, Requires: []Dep{{Txn: 9, Group: 1}}}
	got := d.ready([]*LogWrite{req}, nil, now.Add(lingerFor/2), false)
	if len(got) != 2 {
		t.Fatalf("requirer arrived: want both ready together, got %d", len(got))
	}
	d.committed(got, []error{nil, nil})

	lone := &LogWrite{Group: 1, Provides: []uint64{10}}
	if got := d.ready([]*LogWrite{lone}, nil, now, false); len(got) != 0 {
		t.Fatal("provider went alone at once")
	}
	if got := d.ready(nil, nil, now.Add(2*lingerFor), false); len(got) != 1 {
		t.Fatalf("provider must go alone once its linger expired, got %d", len(got))
	}
}

// TestRequirerNeverLeavesWithoutItsLingeringProvider pins a crash-safety
// bug: an intent write providing two transactions, where only one
// decision has arrived, must go out with (not after) that decision — the
// decision may never be durable without its intent.
func TestRequirerNeverLeavesWithoutItsLingeringProvider(t *testing.T) {
	d := newDependencies()
	now := time.Now()
	prov := &LogWrite{Group: 1, Provides: []uint64{1, 2}}
	req := &LogWrite{Group: 0, Requires: []Dep{{Txn: 1, Group: 1}}}
	got := d.ready([]*LogWrite{prov, req}, nil, now, false)
	has := func(w *LogWrite) bool {
		for _, g := range got {
			if g == w {
				return true
			}
		}
		return false
	}
	if has(req) && !has(prov) {
		t.Fatal("the decision left without the intent it requires")
	}
	if !has(req) || !has(prov) {
		t.Fatalf("want both in one record, got %d writes (waiting %d, lingering %d)", len(got), len(d.waiting), len(d.lingering))
	}
}

// TestCrossRangeDecisionWaitsForEveryIntent pins the second crash-safety
// bug: a cross-range transaction has an intent in each range, and its
// decision must wait for all of them — the first range's durable intent
// does not stand for the second's.
func TestCrossRangeDecisionWaitsForEveryIntent(t *testing.T) {
	d := newDependencies()
	now := time.Now()
	first := &LogWrite{Group: 1, Provides: []uint64{7}}
	req := &LogWrite{Group: 0, Requires: []Dep{{Txn: 7, Group: 1}, {Txn: 7, Group: 2}}}
	got := d.ready([]*LogWrite{first, req}, nil, now, false)
	for _, w := range got {
		if w == req {
			t.Fatal("the decision left with only one of its two intents")
		}
	}
	errs := make([]error, len(got))
	d.committed(got, errs)
	if got := d.ready(nil, nil, now, false); len(got) != 0 {
		t.Fatal("the decision left before the second range's intent was written")
	}
	second := &LogWrite{Group: 2, Provides: []uint64{7}}
	got = d.ready([]*LogWrite{second}, nil, now, false)
	if len(got) != 2 {
		t.Fatalf("the second intent and the decision should leave together, got %d writes", len(got))
	}
}
