package actors

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// testReplica is a RaftGroup driven by a goroutine that plays its owning
// actor, over an in-memory network.
type testReplica struct {
	id     uint64
	dir    string
	net    *testNet
	ls     *LogStore
	g      *RaftGroup
	events chan any
	done   chan struct{}

	mu      sync.Mutex
	applied []string
	// noTicks stops the replica's clock (no elections, no heartbeats).
	noTicks atomic.Bool
}

type (
	durableEv struct{ err error }
	tickEv    struct{}
	proposeEv struct {
		data  []byte
		reply chan error
	}
	leadEv struct{ reply chan uint64 }
	// batchEv is several events handled before one Drive.
	batchEv []any
	// holdEv makes the replica keep its log writes' completions (hold) or
	// hand them all to Persisted now (!hold).
	holdEv struct{ hold bool }
	busyEv struct{ reply chan bool }
)

// testNet delivers messages between replicas; a down replica gets nothing.
type testNet struct {
	mu       sync.Mutex
	replicas map[uint64]*testReplica
	// held: messages to these replicas are kept, not delivered.
	held map[uint64][]*raftpb.Message
}

func (n *testNet) send(msgs []*raftpb.Message) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range msgs {
		if q, ok := n.held[m.GetTo()]; ok {
			n.held[m.GetTo()] = append(q, m)
			continue
		}
		if r, ok := n.replicas[m.GetTo()]; ok {
			select {
			case r.events <- m:
			default: // a full mailbox drops, as a real transport may
			}
		}
	}
}

func startReplica(t *testing.T, n *testNet, id uint64, dir string, peers []uint64) *testReplica {
	t.Helper()
	ls, err := OpenLogStore(dir, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	r := &testReplica{id: id, dir: dir, net: n, ls: ls, events: make(chan any, 1024), done: make(chan struct{})}
	r.g, err = OpenRaftGroup(GroupConfig{
		Group: 7, NodeID: id, Store: ls, Logger: zap.NewNop(), Peers: peers,
		Durable: func(err error) { r.events <- durableEv{err} },
		Send:    n.send,
	})
	if err != nil {
		t.Fatal(err)
	}
	go r.run(t)
	n.mu.Lock()
	n.replicas[id] = r
	n.mu.Unlock()
	return r
}

func (r *testReplica) apply(ents []*raftpb.Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range ents {
		if e.GetType() == raftpb.EntryNormal && len(e.GetData()) > 0 {
			r.applied = append(r.applied, string(e.GetData()))
		}
	}
}

func (r *testReplica) run(t *testing.T) {
	defer close(r.done)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var holding bool
	var held []durableEv
	persisted := func(e durableEv) bool {
		if e.err != nil {
			t.Errorf("replica %d: log write failed: %v", r.id, e.err)
			return false
		}
		if err := r.g.Persisted(r.apply); err != nil {
			t.Errorf("replica %d: %v", r.id, err)
			return false
		}
		return true
	}
	var handle func(ev any) bool
	handle = func(ev any) bool {
		switch e := ev.(type) {
		case durableEv:
			if holding {
				held = append(held, e)
				break
			}
			return persisted(e)
		case holdEv:
			holding = e.hold
			for !holding && len(held) > 0 {
				e := held[0]
				held = held[1:]
				if !persisted(e) {
					return false
				}
			}
		case batchEv:
			for _, ev := range e {
				if !handle(ev) {
					return false
				}
			}
		case *raftpb.Message:
			_ = r.g.Step(e)
		case tickEv:
			if !r.noTicks.Load() {
				r.g.Tick()
			}
		case proposeEv:
			e.reply <- r.g.Propose(e.data)
		case leadEv:
			e.reply <- r.g.Lead()
		case busyEv:
			e.reply <- r.g.Busy()
		case nil:
			return false
		}
		return true
	}
	for {
		var ev any
		select {
		case ev = <-r.events:
		case <-tick.C:
			ev = tickEv{}
		}
		if !handle(ev) {
			return
		}
		r.g.Drive(r.apply)
	}
}

func (r *testReplica) stop(t *testing.T) {
	r.net.mu.Lock()
	delete(r.net.replicas, r.id)
	r.net.mu.Unlock()
	// Let any in-flight durable callback land before the mailbox closes.
	time.Sleep(20 * time.Millisecond)
	r.events <- nil
	<-r.done
	if err := r.ls.Close(); err != nil {
		t.Fatal(err)
	}
}

func (r *testReplica) lead() uint64 {
	reply := make(chan uint64, 1)
	r.events <- leadEv{reply}
	return <-reply
}

func (r *testReplica) entries() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.applied...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRaftGroupReplicates: three replicas of one group, each on its own log
// store, elect a leader, apply the same entries in the same order, and a
// replica that was down catches up from the others after a restart.
func TestRaftGroupReplicates(t *testing.T) {
	n := &testNet{replicas: map[uint64]*testReplica{}}
	peers := []uint64{1, 2, 3}
	dirs := map[uint64]string{}
	reps := map[uint64]*testReplica{}
	for _, id := range peers {
		dirs[id] = t.TempDir()
		reps[id] = startReplica(t, n, id, dirs[id], peers)
	}
	defer func() {
		for _, r := range reps {
			r.stop(t)
		}
	}()
	leader := func() *testReplica {
		var l uint64
		waitFor(t, "a leader", func() bool {
			for _, r := range reps {
				l = r.lead()
				break
			}
			_, ok := reps[l]
			return l != 0 && ok && reps[l].lead() == l
		})
		return reps[l]
	}
	propose := func(from, count int) {
		for i := from; i < from+count; i++ {
			for {
				reply := make(chan error, 1)
				leader().events <- proposeEv{data: []byte(fmt.Sprintf("e%03d", i)), reply: reply}
				if <-reply == nil {
					break
				}
			}
		}
	}
	propose(0, 100)
	for _, id := range peers {
		r := reps[id]
		waitFor(t, fmt.Sprintf("replica %d to apply 100 entries", id), func() bool { return len(r.entries()) >= 100 })
	}

	// Stop a follower, write on, restart it from its own log.
	l := leader()
	var down uint64
	for _, id := range peers {
		if id != l.id {
			down = id
			break
		}
	}
	reps[down].stop(t)
	delete(reps, down)
	propose(100, 50)
	reps[down] = startReplica(t, n, down, dirs[down], peers)
	for _, id := range peers {
		r := reps[id]
		waitFor(t, fmt.Sprintf("replica %d to apply 150 entries", id), func() bool { return len(r.entries()) >= 150 })
	}
	want := reps[l.id].entries()
	for _, id := range peers {
		got := reps[id].entries()
		// Proposals retried after a dropped message may repeat an entry;
		// what matters is that every replica applied the same sequence.
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("replica %d applied a different sequence:\n%v\nleader:\n%v", id, got, want)
		}
	}
}

// TestRaftGroupAppliesCommittedWhileWriting: a leader hands out entries that
// its followers' acknowledgements committed while its next write is still
// in flight, if an earlier write made them durable here; its own unwritten
// entries wait for their write.
func TestRaftGroupAppliesCommittedWhileWriting(t *testing.T) {
	n := &testNet{replicas: map[uint64]*testReplica{}, held: map[uint64][]*raftpb.Message{}}
	peers := []uint64{1, 2, 3}
	reps := map[uint64]*testReplica{}
	for _, id := range peers {
		reps[id] = startReplica(t, n, id, t.TempDir(), peers)
	}
	defer func() {
		for _, r := range reps {
			r.stop(t)
		}
	}()
	var l *testReplica
	waitFor(t, "a leader", func() bool {
		lead := reps[1].lead()
		l = reps[lead]
		return l != nil && l.lead() == lead
	})
	propose := func(data string) {
		reply := make(chan error, 1)
		l.events <- proposeEv{data: []byte(data), reply: reply}
		if err := <-reply; err != nil {
			t.Fatalf("propose %s: %v", data, err)
		}
	}
	propose("e0")
	for _, r := range reps {
		waitFor(t, fmt.Sprintf("replica %d to apply e0", r.id), func() bool { return len(r.entries()) == 1 })
	}
	// No elections or heartbeats from here on: the leader's mail is held.
	for _, r := range reps {
		r.noTicks.Store(true)
	}
	n.mu.Lock()
	n.held[l.id] = nil
	n.mu.Unlock()
	propose("x1")
	var acks []any
	waitFor(t, "both followers to acknowledge x1", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		acks = acks[:0]
		for _, m := range n.held[l.id] {
			if m.GetType() == raftpb.MsgAppResp && !m.GetReject() {
				acks = append(acks, m)
			}
		}
		return len(acks) >= 2
	})
	busy := func() bool {
		reply := make(chan bool, 1)
		l.events <- busyEv{reply}
		return <-reply
	}
	waitFor(t, "the leader to write x1", func() bool { return !busy() })
	n.mu.Lock()
	delete(n.held, l.id)
	n.mu.Unlock()
	if got := l.entries(); len(got) != 1 {
		t.Fatalf("leader applied %v before x1 was known committed", got)
	}
	// One Ready then holds x2 to write and x1 committed; x2's write is held.
	l.events <- holdEv{hold: true}
	l.events <- batchEv(append([]any{proposeEv{data: []byte("x2"), reply: make(chan error, 1)}}, acks...))
	waitFor(t, "the leader to apply x1 while writing x2", func() bool { return len(l.entries()) == 2 })
	if !busy() {
		t.Fatal("the leader's write of x2 is not in flight")
	}
	time.Sleep(50 * time.Millisecond)
	if got := l.entries(); fmt.Sprint(got) != "[e0 x1]" {
		t.Fatalf("leader applied %v while its write of x2 was held, want [e0 x1]", got)
	}
	l.events <- holdEv{hold: false}
	for _, r := range reps {
		r.noTicks.Store(false)
	}
	for _, r := range reps {
		waitFor(t, fmt.Sprintf("replica %d to apply x2", r.id), func() bool { return fmt.Sprint(r.entries()) == "[e0 x1 x2]" })
	}
}
