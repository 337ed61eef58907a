package actors

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// trNode is one replica of a single Raft group whose only link to the other
// replicas is a Transport: a RawNode over MemoryStorage, driven by its own
// loop (ticks every 10ms, inbound messages, transport reports).
type trNode struct {
	id  uint64
	net *tnode // the transport, its server, and its delivery record (unused here)

	inbox   chan *raftpb.Message
	reports chan func(*raft.RawNode)
	stop    chan struct{}
	done    chan struct{}

	mu         sync.Mutex
	rn         *raft.RawNode
	ms         *raft.MemoryStorage
	cs         *raftpb.ConfState
	applied    []string // the state machine: every proposal, in log order
	appliedIdx uint64
	snapsIn    int // snapshots applied from the leader
	snapOK     int // successful snapshot reports (as a leader)
}

const trGroup = 42

func startTRNode(t *testing.T, tn *tnode, voters []uint64) *trNode {
	t.Helper()
	n := &trNode{
		id:      tn.id,
		net:     tn,
		inbox:   make(chan *raftpb.Message, 8192),
		reports: make(chan func(*raft.RawNode), 1024),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		ms:      raft.NewMemoryStorage(),
		cs:      &raftpb.ConfState{Voters: voters},
	}
	// Bootstrap from a snapshot at index 1 naming the voters, as RaftGroup
	// does: no conf-change entries to apply.
	if err := n.ms.ApplySnapshot(&raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: n.cs,
	}}); err != nil {
		t.Fatal(err)
	}
	n.appliedIdx = 1
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              n.id,
		ElectionTick:    10,
		HeartbeatTick:   1,
		Storage:         n.ms,
		Applied:         1,
		MaxSizePerMsg:   1 << 20,
		MaxInflightMsgs: 256,
		PreVote:         true,
		CheckQuorum:     true,
		Logger:          quietRaftLogger{},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.rn = rn
	tn.tr.SetHandler(func(group uint64, m *raftpb.Message) {
		if group != trGroup {
			t.Errorf("node %d: message for group %d", n.id, group)
			return
		}
		select {
		case n.inbox <- m:
		default: // a full inbox is a lossy network; raft retries
		}
	})
	tn.tr.SetUnreachable(func(group, to uint64) {
		n.report(func(rn *raft.RawNode) { rn.ReportUnreachable(to) })
	})
	tn.tr.SetSnapshotStatus(func(group, to uint64, ok bool) {
		n.report(func(rn *raft.RawNode) { // runs in the loop, under n.mu
			st := raft.SnapshotFailure
			if ok {
				st = raft.SnapshotFinish
				n.snapOK++
			}
			rn.ReportSnapshot(to, st)
		})
	})
	go n.run()
	t.Cleanup(func() { close(n.stop); <-n.done })
	return n
}

func (n *trNode) report(f func(*raft.RawNode)) {
	select {
	case n.reports <- f:
	default:
	}
}

func (n *trNode) run() {
	defer close(n.done)
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-ticker.C:
			n.mu.Lock()
			n.rn.Tick()
		case m := <-n.inbox:
			n.mu.Lock()
			_ = n.rn.Step(m)
		drain:
			for {
				select {
				case m := <-n.inbox:
					_ = n.rn.Step(m)
				default:
					break drain
				}
			}
		case f := <-n.reports:
			n.mu.Lock()
			f(n.rn)
		}
		n.handleReady()
		n.mu.Unlock()
	}
}

// handleReady persists (to MemoryStorage), sends, applies and advances;
// n.mu is held.
func (n *trNode) handleReady() {
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		if !raft.IsEmptySnap(rd.Snapshot) {
			if err := n.ms.ApplySnapshot(rd.Snapshot); err != nil {
				panic(err)
			}
			n.applied = decodeTRState(rd.Snapshot.GetData())
			n.appliedIdx = rd.Snapshot.GetMetadata().GetIndex()
			n.snapsIn++
		}
		if err := n.ms.Append(rd.Entries); err != nil {
			panic(err)
		}
		if rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState) {
			if err := n.ms.SetHardState(rd.HardState); err != nil {
				panic(err)
			}
		}
		n.net.tr.Send(trGroup, rd.Messages)
		for _, e := range rd.CommittedEntries {
			if e.GetIndex() <= n.appliedIdx {
				continue
			}
			if e.GetType() == raftpb.EntryNormal && len(e.GetData()) > 0 {
				n.applied = append(n.applied, string(e.GetData()))
			}
			n.appliedIdx = e.GetIndex()
		}
		n.rn.Advance(rd)
	}
}

func decodeTRState(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// compact snapshots the state machine at its applied index and truncates
// the log there, so a replica behind it can only catch up by snapshot.
func (n *trNode) compact(t *testing.T) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	data := []byte(strings.Join(n.applied, "\n"))
	if _, err := n.ms.CreateSnapshot(n.appliedIdx, n.cs, data); err != nil {
		t.Fatal(err)
	}
	if err := n.ms.Compact(n.appliedIdx); err != nil {
		t.Fatal(err)
	}
	return n.appliedIdx
}

func (n *trNode) status() raft.BasicStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rn.BasicStatus()
}

func (n *trNode) state() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.applied)
}

func (n *trNode) propose(v string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = n.rn.Propose([]byte(v)) // dropped proposals are retried by the caller
}

// trLeader returns the node among ns that is leader and that the others of
// ns follow, or nil.
func trLeader(ns []*trNode) *trNode {
	for _, n := range ns {
		st := n.status()
		if st.RaftState != raft.StateLeader {
			continue
		}
		agree := true
		for _, o := range ns {
			if o.status().Lead != n.id {
				agree = false
			}
		}
		if agree {
			return n
		}
	}
	return nil
}

func waitTRLeader(t *testing.T, ns []*trNode) *trNode {
	t.Helper()
	var l *trNode
	waitUntil(t, 5*time.Second, "a leader", func() bool { l = trLeader(ns); return l != nil })
	return l
}

// proposeAll gets every value of vals applied on every node of ns, through
// the leader of ns, proposing again what a leader change lost.
func proposeAll(t *testing.T, ns []*trNode, vals []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	missing := vals
	for len(missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d proposals not applied", len(missing), len(vals))
		}
		l := waitTRLeader(t, ns)
		for _, v := range missing {
			l.propose(v)
		}
		wait := time.Now().Add(time.Second)
		for time.Now().Before(wait) {
			missing = missingOn(ns, vals)
			if len(missing) == 0 {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func missingOn(ns []*trNode, vals []string) []string {
	var missing []string
	have := make([]map[string]bool, len(ns))
	for i, n := range ns {
		have[i] = map[string]bool{}
		for _, v := range n.state() {
			have[i][v] = true
		}
	}
	for _, v := range vals {
		for i := range ns {
			if !have[i][v] {
				missing = append(missing, v)
				break
			}
		}
	}
	return missing
}

func values(prefix string, from, to int) []string {
	var vs []string
	for i := from; i < to; i++ {
		vs = append(vs, fmt.Sprintf("%s%03d", prefix, i))
	}
	return vs
}

// TestTransportRaftConsensus: three RawNodes linked only by Transports elect
// a leader and replicate; when the leader is partitioned away the other two
// elect a new one and go on; their logs are then truncated, so after the
// partition heals the old leader catches up by a snapshot sent over the
// transport, and all three hold the same state.
func TestTransportRaftConsensus(t *testing.T) {
	start := time.Now()
	tns := newTCluster(t, 3)
	voters := []uint64{1, 2, 3}
	ns := make([]*trNode, len(tns))
	for i, tn := range tns {
		ns[i] = startTRNode(t, tn, voters)
	}

	old := waitTRLeader(t, ns)
	t.Logf("leader %d elected after %v", old.id, time.Since(start))
	proposeAll(t, ns, values("a", 0, 200))
	t.Logf("200 proposals applied on all three after %v", time.Since(start))

	// Partition the leader away, on every transport, both ways.
	cut := func(from, to uint64) bool { return from != old.id && to != old.id }
	for _, tn := range tns {
		tn.tr.Filter(cut)
	}
	var rest []*trNode
	for _, n := range ns {
		if n != old {
			rest = append(rest, n)
		}
	}
	oldTerm := old.status().GetTerm()
	nl := waitTRLeader(t, rest)
	if nl.status().GetTerm() <= oldTerm {
		t.Fatalf("new leader %d at term %d, old term %d", nl.id, nl.status().GetTerm(), oldTerm)
	}
	t.Logf("partitioned %d; %d leads at term %d after %v", old.id, nl.id, nl.status().GetTerm(), time.Since(start))
	proposeAll(t, rest, values("b", 0, 100))
	// CheckQuorum: the isolated old leader steps down by itself.
	waitUntil(t, 5*time.Second, "the old leader to step down", func() bool {
		return old.status().RaftState != raft.StateLeader
	})
	if got := len(old.state()); got != 200 {
		t.Fatalf("the partitioned node applied %d entries, want 200", got)
	}
	for _, n := range rest {
		n.compact(t)
	}
	proposeAll(t, rest, values("c", 0, 20))

	// Heal: the old leader catches up, through a snapshot.
	for _, tn := range tns {
		tn.tr.Filter(nil)
	}
	want := nl.state()
	waitUntil(t, 10*time.Second, "the old leader to catch up", func() bool {
		return slices.Equal(old.state(), nl.state())
	})
	t.Logf("healed; old leader caught up after %v", time.Since(start))
	old.mu.Lock()
	snapsIn := old.snapsIn
	old.mu.Unlock()
	if snapsIn == 0 {
		t.Errorf("the old leader caught up without a snapshot")
	}
	// The snapshot's ack comes back on the leader's stream, possibly after
	// the follower has already caught up.
	waitUntil(t, 5*time.Second, "a snapshot reported finished", func() bool {
		snapOK := 0
		for _, n := range ns {
			n.mu.Lock()
			snapOK += n.snapOK
			n.mu.Unlock()
		}
		return snapOK > 0
	})
	proposeAll(t, ns, values("d", 0, 20))
	final := ns[0].state()
	for _, n := range ns[1:] {
		if !slices.Equal(n.state(), final) {
			t.Fatalf("node %d state differs from node %d", n.id, ns[0].id)
		}
	}
	if len(missingOn(ns, slices.Concat(values("a", 0, 200), values("b", 0, 100), values("c", 0, 20), values("d", 0, 20)))) != 0 {
		t.Fatal("a proposal is missing")
	}
	if len(final) < len(want)+20 {
		t.Fatalf("final state has %d entries", len(final))
	}
	for _, tn := range tns {
		s := tn.tr.Stats()
		t.Logf("node %d: %d messages in %d batches sent, %d received, %d dropped, %d filtered",
			tn.id, s.MessagesSent, s.BatchesSent, s.MessagesReceived, s.MessagesDropped, s.MessagesFiltered)
	}
}

// quietRaftLogger drops raft's logs below warnings.
type quietRaftLogger struct{}

func (quietRaftLogger) Debug(...any)              {}
func (quietRaftLogger) Debugf(string, ...any)     {}
func (quietRaftLogger) Info(...any)               {}
func (quietRaftLogger) Infof(string, ...any)      {}
func (quietRaftLogger) Warning(...any)            {}
func (quietRaftLogger) Warningf(string, ...any)   {}
func (quietRaftLogger) Error(v ...any)            {}
func (quietRaftLogger) Errorf(string, ...any)     {}
func (quietRaftLogger) Fatal(v ...any)            { panic(fmt.Sprint(v...)) }
func (quietRaftLogger) Fatalf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
func (quietRaftLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (quietRaftLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
