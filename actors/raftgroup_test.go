package actors

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
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
}

type (
	durableEv struct{ err error }
	tickEv    struct{}
	proposeEv struct {
		data  []byte
		reply chan error
	}
	leadEv struct{ reply chan uint64 }
	confEv struct {
		cc    *raftpb.ConfChangeV2
		reply chan error
	}
)

// testNet delivers messages between replicas; a down replica gets nothing.
type testNet struct {
	mu       sync.Mutex
	replicas map[uint64]*testReplica
}

func (n *testNet) send(msgs []*raftpb.Message) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range msgs {
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
	for {
		var ev any
		select {
		case ev = <-r.events:
		case <-tick.C:
			ev = tickEv{}
		}
		switch e := ev.(type) {
		case durableEv:
			if e.err != nil {
				t.Errorf("replica %d: log write failed: %v", r.id, e.err)
				return
			}
			if err := r.g.Persisted(r.apply); err != nil {
				t.Errorf("replica %d: %v", r.id, err)
				return
			}
		case *raftpb.Message:
			_ = r.g.Step(e)
		case tickEv:
			r.g.Tick()
		case proposeEv:
			e.reply <- r.g.Propose(e.data)
		case leadEv:
			e.reply <- r.g.Lead()
		case confEv:
			r.g.ChangeConf(e.cc, e.reply)
		case nil:
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

// TestRaftGroupRemovedLeaderStepsDown: a leader that applies its own
// removal steps down, so that the remaining voters elect a leader and go
// on committing. (Raft's default keeps it leader: it can commit nothing,
// and its heartbeats keep the others from electing, for good.)
func TestRaftGroupRemovedLeaderStepsDown(t *testing.T) {
	n := &testNet{replicas: map[uint64]*testReplica{}}
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
	var old uint64
	waitFor(t, "a leader", func() bool {
		old = reps[1].lead()
		return old != 0 && reps[old].lead() == old
	})
	reply := make(chan error, 1)
	cc := &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(old)}}}
	reps[old].events <- confEv{cc: cc, reply: reply}
	if err := <-reply; err != nil {
		t.Fatalf("removing the leader %d: %v", old, err)
	}
	var rest []*testReplica
	for _, id := range peers {
		if id != old {
			rest = append(rest, reps[id])
		}
	}
	var lead uint64
	waitFor(t, "a leader among the remaining voters", func() bool {
		lead = rest[0].lead()
		return lead != 0 && lead != old && rest[1].lead() == lead
	})
	pr := make(chan error, 1)
	reps[lead].events <- proposeEv{data: []byte("after"), reply: pr}
	if err := <-pr; err != nil {
		t.Fatalf("proposing on the new leader %d: %v", lead, err)
	}
	for _, r := range rest {
		waitFor(t, fmt.Sprintf("replica %d to apply the entry proposed after the removal", r.id), func() bool {
			es := r.entries()
			return len(es) > 0 && es[len(es)-1] == "after"
		})
	}
}
