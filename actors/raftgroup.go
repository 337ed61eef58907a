package actors

import (
	"encoding/binary"
	"fmt"
	"os"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// RaftGroup drives one raft.RawNode over the node's LogStore. It is not an
// actor: it belongs to the actor that owns the group (a shard or the
// oracle) and is only touched from that actor's Receive.
//
// The cycle: Drive takes a Ready and, when it holds entries or state that
// must be durable, hands them to the LogStore and returns; the LogStore's
// completion makes the owner call Persisted, which appends to the
// MemoryStorage, hands committed entries to the owner, and advances. A Ready
// with nothing to make durable is applied at once. So entries are applied
// only once durable, and at most one Ready is in flight.
type RaftGroup struct {
	id    uint64
	rn    *raft.RawNode
	ms    *raft.MemoryStorage
	ls    *LogStore
	lg    *zap.Logger
	onDur func(error) // tells the owning actor that the in-flight Ready is durable
	send  func([]*raftpb.Message)

	inflight *raft.Ready
	prevHS   *raftpb.HardState
	applied  uint64

	// readStates are answers to ReadIndex requests, taken by the owner.
	readStates []raft.ReadState

	// cs is the group's configuration as of the last applied entry;
	// ownerApplied the index up to which the owner already holds entries
	// (from before a restart); confWaiters the proposed conf changes
	// waiting to apply, by context; confApplied counts applied ones.
	// applied since the owner last asked.
	cs           *raftpb.ConfState
	ownerApplied uint64
	confWaiters  map[string]chan error
	confSeq      uint64
	confApplied  uint64
	// confs are the configurations since the log's first index, oldest
	// first, so that a snapshot below the applied index names its own.
	confs    []confAt
	restore  func(*raftpb.Snapshot) error
	restored func(*raftpb.Snapshot)

	// provides and requires tag the next write that carries entries (see
	// LogWrite): they belong to entries proposed since the last such write.
	provides []uint64
	requires []Dep
}

// GroupConfig configures OpenRaftGroup.
type GroupConfig struct {
	Group  uint64 // group id: range id for shards, 0 for the oracle
	NodeID uint64 // this replica's Raft id
	// Applied is the last index the state machine holds durably (0 if none).
	Applied uint64
	Store   *LogStore
	Logger  *zap.Logger
	// Durable is called from the log writer goroutine when a submitted Ready
	// is durable; the owner must then call Persisted from its own Receive.
	Durable func(error)
	// Peers are the voters of a group created here (nil: this node alone).
	// Every replica of a new group must be given the same set.
	Peers []uint64
	// Send delivers messages to other replicas (the node's transport). Nil
	// for a group with one voter, which sends nothing.
	Send func(msgs []*raftpb.Message)
	// Cluster: the group is replicated across nodes. A new one then starts
	// from conf-change entries naming Peers (so that a member added later
	// can be sent the whole log from index 1), or, with Join, empty: its
	// leader sends it the log once it is added to the group.
	Cluster bool
	Join    bool
	// SnapshotStart: a new cluster group starts, like a single node's, from
	// a snapshot at index 1 naming Peers (no log before it), so a replica
	// that starts empty (Join) is always sent a snapshot, never the log.
	SnapshotStart bool
	// HeartbeatTicks is how many ticks apart a leader's heartbeats are
	// (default 1); an election takes 10 ticks.
	HeartbeatTicks int
	// Snapshot makes a snapshot of the owner's state for a replica the log
	// no longer reaches (see SnapshotAt); nil: the group sends none.
	// Restore loads a received snapshot's data into the owner's state
	// before the log records it; Restored tells the owner the log did (the
	// owner then takes the snapshot's point as its applied state). All
	// three run in the owner's Receive.
	Snapshot func() (*raftpb.Snapshot, error)
	Restore  func(*raftpb.Snapshot) error
	Restored func(*raftpb.Snapshot)
}

// OpenRaftGroup loads the group's log, or creates a single-voter group with
// this node as its voter if the group has never been written.
func OpenRaftGroup(c GroupConfig) (*RaftGroup, error) {
	gl, err := c.Store.Load(c.Group)
	if err != nil {
		return nil, err
	}
	ms := raft.NewMemoryStorage()
	var storage raft.Storage = ms
	if c.Cluster {
		// A replica behind the log's first index is sent the owner's
		// snapshot, made when Raft asks for it.
		storage = ownerSnapshots{ms, c.Snapshot}
	}
	fresh := gl.Snap.GetIndex() == 0 && len(gl.Entries) == 0
	if fresh && (!c.Cluster || (c.SnapshotStart && !c.Join)) {
		// A new group starts from a snapshot at index 1 naming its voters,
		// so no bootstrap entries are needed and every replica starts equal.
		voters := c.Peers
		if len(voters) == 0 {
			voters = []uint64{c.NodeID}
		}
		gl.Snap = &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(1),
			Term:      proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: append([]uint64(nil), voters...)},
		}
		gl.State = &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(1)}
		done := make(chan error, 1)
		c.Store.Submit(&LogWrite{Group: c.Group, Snap: gl.Snap, State: gl.State, Done: func(err error) { done <- err }})
		if err := <-done; err != nil {
			return nil, fmt.Errorf("create raft group %d: %w", c.Group, err)
		}
	}
	if gl.Snap.GetIndex() > 0 {
		if err := ms.ApplySnapshot(&raftpb.Snapshot{Metadata: gl.Snap}); err != nil {
			return nil, err
		}
	}
	applied := max(c.Applied, gl.Snap.GetIndex())
	hs := &raftpb.HardState{}
	if gl.State != nil {
		hs = proto.Clone(gl.State).(*raftpb.HardState)
	}
	// Commit-only HardState changes are not persisted (they need no fsync);
	// anything applied was committed, so the commit index is at least that.
	if hs.GetCommit() < applied {
		hs.Commit = proto.Uint64(applied)
	}
	if err := ms.SetHardState(hs); err != nil {
		return nil, err
	}
	if err := ms.Append(gl.Entries); err != nil {
		return nil, err
	}
	if last, _ := ms.LastIndex(); applied > last {
		return nil, fmt.Errorf("raft group %d: state machine applied index %d is past the log's last index %d (log store lost writes?)", c.Group, applied, last)
	}
	// Raft hands again every committed entry after the snapshot, so that
	// the conf changes among them are applied again (the group's voters
	// are not saved elsewhere); the owner gets only those past Applied.
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              c.NodeID,
		ElectionTick:    10,
		HeartbeatTick:   max(c.HeartbeatTicks, 1),
		Storage:         storage,
		Applied:         gl.Snap.GetIndex(),
		MaxSizePerMsg:   1 << 20,
		MaxInflightMsgs: 256,
		CheckQuorum:     true,
		PreVote:         true,
		// A leader whose removal from the group applies steps down. Else it
		// stays leader of a group it is no longer in: it commits nothing
		// (it is not in the quorum), and its heartbeats keep the voters
		// from electing another: the group stalls for good. The lead can
		// come to the replica being removed between a move's handing the
		// lead on and its removal (TestPartitionDocker5 saw it: every
		// replica of a range stuck at one index, for minutes).
		StepDownOnRemoval: true,
		// A proposal enters the log only through the leader whose latches
		// admitted it: a follower drops it instead of forwarding it.
		DisableProposalForwarding: true,
		Logger:                    raftLogger{c.Logger.Sugar()},
	})
	if err != nil {
		return nil, err
	}
	g := &RaftGroup{id: c.Group, rn: rn, ms: ms, ls: c.Store, lg: c.Logger, onDur: c.Durable, send: c.Send, prevHS: hs,
		applied: applied, ownerApplied: applied, cs: proto.Clone(gl.Snap.GetConfState()).(*raftpb.ConfState),
		restore: c.Restore, restored: c.Restored}
	if g.cs == nil {
		g.cs = &raftpb.ConfState{}
	}
	g.confs = []confAt{{index: gl.Snap.GetIndex(), cs: g.cs}}
	if fresh && c.Cluster && !c.Join && !c.SnapshotStart {
		peers := make([]raft.Peer, len(c.Peers))
		for i, id := range c.Peers {
			peers[i] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return nil, fmt.Errorf("bootstrap raft group %d: %w", c.Group, err)
		}
	}
	return g, nil
}

// Campaign starts an election at once (a single-voter group elects itself).
func (g *RaftGroup) Campaign() error { return g.rn.Campaign() }

// Step hands the group a message from another replica.
func (g *RaftGroup) Step(m *raftpb.Message) error { return g.rn.Step(m) }

// Tick advances the group's logical clock by one heartbeat interval.
func (g *RaftGroup) Tick() { g.rn.Tick() }

// Lead is the current leader's id, 0 if none is known.
func (g *RaftGroup) Lead() uint64 { return g.rn.BasicStatus().Lead }

// LeadState is Lead and IsLeader in one look at Raft's status.
func (g *RaftGroup) LeadState() (lead uint64, leader bool) {
	st := g.rn.BasicStatus()
	return st.Lead, st.RaftState == raft.StateLeader
}

// ID is this replica's Raft id.
func (g *RaftGroup) ID() uint64 { return g.rn.BasicStatus().ID }

// TransferLeader asks the leader to hand leadership to replica to (from a
// follower, raft forwards the request to the leader).
func (g *RaftGroup) TransferLeader(to uint64) { g.rn.TransferLeader(to) }

// ReportSnapshot tells Raft how sending a snapshot to a replica went.
func (g *RaftGroup) ReportSnapshot(id uint64, ok bool) {
	st := raft.SnapshotFinish
	if !ok {
		st = raft.SnapshotFailure
	}
	g.rn.ReportSnapshot(id, st)
}

// ReadIndex asks for the commit index a linearizable read must wait for;
// the answer, tagged with rctx, comes back through TakeReadStates.
func (g *RaftGroup) ReadIndex(rctx []byte) { g.rn.ReadIndex(rctx) }

// TakeReadStates returns and forgets the ReadIndex answers received.
func (g *RaftGroup) TakeReadStates() []raft.ReadState {
	rs := g.readStates
	g.readStates = nil
	return rs
}

// MinMatch is, on the leader, the lowest log index every replica is known
// to hold (0 elsewhere).
func (g *RaftGroup) MinMatch() uint64 {
	st := g.rn.Status()
	if st.RaftState != raft.StateLeader {
		return 0
	}
	low := uint64(0)
	first := true
	for _, pr := range st.Progress {
		if first || pr.Match < low {
			low, first = pr.Match, false
		}
	}
	return low
}

// Voters are the group's voting replicas.
func (g *RaftGroup) Voters() []uint64 { return append([]uint64(nil), g.cs.GetVoters()...) }

// ReportUnreachable tells Raft that a message to a replica was dropped.
func (g *RaftGroup) ReportUnreachable(id uint64) { g.rn.ReportUnreachable(id) }

// Propose proposes data; it is appended to the log on the next Drive.
func (g *RaftGroup) Propose(data []byte) error { return g.rn.Propose(data) }

// Tag records transaction ids that the entries proposed since the last
// durable write provide or require (LogWrite.Provides, Requires).
func (g *RaftGroup) Tag(provides []uint64, requires []Dep) {
	g.provides = append(g.provides, provides...)
	g.requires = append(g.requires, requires...)
}

// IsLeader reports whether this replica leads the group.
func (g *RaftGroup) IsLeader() bool { return g.rn.BasicStatus().RaftState == raft.StateLeader }

// Term is the current Raft term.
func (g *RaftGroup) Term() uint64 { return g.rn.BasicStatus().GetTerm() }

// Commit is the highest log index known committed here.
func (g *RaftGroup) Commit() uint64 { return g.rn.BasicStatus().GetCommit() }

// Applied is the index of the last entry handed to the state machine.
func (g *RaftGroup) Applied() uint64 { return g.applied }

// Drive processes the next Ready, if any and if none is in flight. apply is
// called with committed entries, in order, once they are durable.
func (g *RaftGroup) Drive(apply func([]*raftpb.Entry)) {
	for g.inflight == nil && g.rn.HasReady() {
		rd := g.rn.Ready()
		hs := rd.HardState
		mustSync := hs != nil && raft.MustSync(hs, g.prevHS, len(rd.Entries))
		if len(rd.Entries) > 0 || mustSync || rd.Snapshot != nil {
			g.inflight = &rd
			w := &LogWrite{Group: g.id, Entries: rd.Entries, Done: g.onDur}
			if len(rd.Entries) > 0 {
				w.Provides, w.Requires = g.provides, g.requires
				g.provides, g.requires = nil, nil
			}
			if mustSync {
				w.State = hs
			}
			if rd.Snapshot != nil {
				w.Snap = rd.Snapshot.GetMetadata()
				if g.restore != nil {
					if err := g.restore(rd.Snapshot); err != nil {
						g.lg.Fatal("raft group: restoring a snapshot failed", zap.Uint64("group", g.id), zap.Error(err))
					}
				}
			}
			// A leader sends its appends while it writes them itself (the
			// Raft thesis, 10.2.1, as etcd does): its own entries count for
			// a commit only once durable, since committed entries are handed
			// out only after this write. A follower's replies wait for its
			// write: they promise what it holds.
			if g.send != nil && len(rd.Messages) > 0 && g.rn.BasicStatus().RaftState == raft.StateLeader {
				g.send(rd.Messages)
				rd.Messages = nil
			}
			g.ls.Submit(w)
			return
		}
		g.finish(&rd, apply)
	}
}

// Persisted completes the in-flight Ready once the LogStore made it durable.
func (g *RaftGroup) Persisted(apply func([]*raftpb.Entry)) error {
	rd := g.inflight
	if rd == nil {
		return fmt.Errorf("raft group %d: Persisted with no Ready in flight", g.id)
	}
	g.inflight = nil
	if rd.Snapshot != nil {
		if err := g.ms.ApplySnapshot(rd.Snapshot); err != nil {
			return err
		}
		md := rd.Snapshot.GetMetadata()
		g.cs = md.GetConfState()
		g.confApplied++ // a snapshot's configuration replaces the group's
		g.confs = []confAt{{index: md.GetIndex(), cs: g.cs}}
		g.applied = max(g.applied, md.GetIndex())
		g.ownerApplied = max(g.ownerApplied, md.GetIndex())
		if g.restored != nil {
			g.restored(rd.Snapshot)
		}
	}
	if err := g.ms.Append(rd.Entries); err != nil {
		return err
	}
	g.finish(rd, apply)
	g.Drive(apply)
	return nil
}

// finish completes a Ready whose writes are durable: messages go out only
// now, so no vote or acknowledgement is ever sent for state that a crash
// could still lose.
func (g *RaftGroup) finish(rd *raft.Ready, apply func([]*raftpb.Entry)) {
	if rd.HardState != nil {
		_ = g.ms.SetHardState(rd.HardState)
		g.prevHS = rd.HardState
	}
	if len(rd.Messages) > 0 && g.send != nil {
		g.send(rd.Messages)
	}
	g.readStates = append(g.readStates, rd.ReadStates...)
	if n := len(rd.CommittedEntries); n > 0 {
		ents := rd.CommittedEntries
		for _, e := range ents {
			g.applyConfChange(e)
		}
		for len(ents) > 0 && ents[0].GetIndex() <= g.ownerApplied {
			ents = ents[1:]
		}
		if len(ents) > 0 {
			apply(ents)
		}
		g.applied = max(g.applied, rd.CommittedEntries[n-1].GetIndex())
	}
	g.rn.Advance(*rd)
}

// applyConfChange applies a committed conf change entry to the group.
func (g *RaftGroup) applyConfChange(e *raftpb.Entry) {
	var cc raftpb.ConfChangeI
	var ctx []byte
	switch e.GetType() {
	case raftpb.EntryConfChange:
		c := &raftpb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), c); err != nil {
			g.lg.Fatal("raft group: undecodable conf change", zap.Uint64("group", g.id), zap.Error(err))
		}
		cc, ctx = c, c.GetContext()
	case raftpb.EntryConfChangeV2:
		c := &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), c); err != nil {
			g.lg.Fatal("raft group: undecodable conf change", zap.Uint64("group", g.id), zap.Error(err))
		}
		cc, ctx = c, c.GetContext()
	default:
		return
	}
	g.cs = g.rn.ApplyConfChange(cc)
	g.confs = append(g.confs, confAt{index: e.GetIndex(), cs: g.cs})
	g.confApplied++
	if ch, ok := g.confWaiters[string(ctx)]; ok && e.GetIndex() > g.ownerApplied {
		delete(g.confWaiters, string(ctx))
		ch <- nil
	}
}

// ChangeConf proposes a configuration change; done gets nil once it
// applies here, or the error that stopped it (see FailConfChanges).
func (g *RaftGroup) ChangeConf(cc *raftpb.ConfChangeV2, done chan error) {
	g.confSeq++
	cc.Context = binary.BigEndian.AppendUint64(nil, g.confSeq)
	if err := g.rn.ProposeConfChange(cc); err != nil {
		done <- err
		return
	}
	if g.confWaiters == nil {
		g.confWaiters = map[string]chan error{}
	}
	g.confWaiters[string(cc.Context)] = done
}

// ProposeConf proposes a configuration change no one waits for (Raft
// drops it if another is pending; the caller proposes it again later).
func (g *RaftGroup) ProposeConf(cc *raftpb.ConfChangeV2) error { return g.rn.ProposeConfChange(cc) }

// FailConfChanges answers err to every conf change still waiting (the
// replica lost the lead: they may never apply).
func (g *RaftGroup) FailConfChanges(err error) {
	for ctx, ch := range g.confWaiters {
		delete(g.confWaiters, ctx)
		ch <- err
	}
}

// ConfChanges counts the conf changes applied so far: it moves whenever
// the group's replicas change.
func (g *RaftGroup) ConfChanges() uint64 { return g.confApplied }

// Conf is the group's current configuration (shared: do not modify).
func (g *RaftGroup) Conf() *raftpb.ConfState { return g.cs }

// Progress is, on the leader, each replica's matched log index.
func (g *RaftGroup) Progress() map[uint64]uint64 {
	st := g.rn.Status()
	if st.RaftState != raft.StateLeader {
		return nil
	}
	out := make(map[uint64]uint64, len(st.Progress))
	for id, pr := range st.Progress {
		out[id] = pr.Match
	}
	return out
}

// FollowerState is how the leader sees one follower's log.
type FollowerState struct {
	Match uint64
	State string // Raft's progress, as its String method gives it
}

// Followers is, on the leader, how it sees each other replica's log (nil
// elsewhere).
func (g *RaftGroup) Followers() map[uint64]FollowerState {
	st := g.rn.Status()
	if st.RaftState != raft.StateLeader {
		return nil
	}
	out := make(map[uint64]FollowerState, len(st.Progress))
	for id, pr := range st.Progress {
		if id != st.ID {
			out[id] = FollowerState{Match: pr.Match, State: pr.String()}
		}
	}
	return out
}

// Compact drops log entries up to index from memory and from the LogStore,
// recording a snapshot at index. The caller guarantees the state machine is
// durable at or past index.
func (g *RaftGroup) Compact(index uint64) error {
	if first, _ := g.ms.FirstIndex(); index < first {
		return nil
	}
	snap, err := g.ms.CreateSnapshot(index, g.confAt(index), nil)
	if err != nil {
		return err
	}
	if err := g.ms.Compact(index); err != nil {
		return err
	}
	for len(g.confs) > 1 && g.confs[1].index <= index {
		g.confs = g.confs[1:]
	}
	done := make(chan error, 1)
	g.ls.Submit(&LogWrite{Group: g.id, Snap: snap.GetMetadata(), Done: func(err error) { done <- err }})
	if err := <-done; err != nil {
		return err
	}
	return g.ls.Truncate(g.id, index)
}

// raftLogger adapts zap to raft's Logger, keeping raft quiet below warnings
// unless raftInfoLogs.
type raftLogger struct{ s *zap.SugaredLogger }

// raftInfoLogs (MOSAIC_RAFT_INFO_LOGS=1 in the environment) passes Raft's
// info logs (elections, configuration changes) on, for debugging; they are
// too many for a node holding thousands of groups.
var raftInfoLogs = os.Getenv("MOSAIC_RAFT_INFO_LOGS") == "1"

func (l raftLogger) Debug(v ...any)                 {}
func (l raftLogger) Debugf(format string, v ...any) {}
func (l raftLogger) Info(v ...any) {
	if raftInfoLogs {
		l.s.Info(v...)
	}
}
func (l raftLogger) Infof(format string, v ...any) {
	if raftInfoLogs {
		l.s.Infof(format, v...)
	}
}

func (l raftLogger) Warning(v ...any)                 { l.s.Warn(v...) }
func (l raftLogger) Warningf(format string, v ...any) { l.s.Warnf(format, v...) }
func (l raftLogger) Error(v ...any)                   { l.s.Error(v...) }
func (l raftLogger) Errorf(format string, v ...any)   { l.s.Errorf(format, v...) }
func (l raftLogger) Fatal(v ...any)                   { l.s.Fatal(v...) }
func (l raftLogger) Fatalf(format string, v ...any)   { l.s.Fatalf(format, v...) }
func (l raftLogger) Panic(v ...any)                   { l.s.Panic(v...) }
func (l raftLogger) Panicf(format string, v ...any)   { l.s.Panicf(format, v...) }

// LastIndex is the index of the last entry in the log.
func (g *RaftGroup) LastIndex() uint64 {
	last, _ := g.ms.LastIndex()
	return last
}

// Busy reports whether a Ready is being made durable.
func (g *RaftGroup) Busy() bool { return g.inflight != nil }

// ownerSnapshots is a Storage whose snapshots the owner makes on demand.
type ownerSnapshots struct {
	*raft.MemoryStorage
	make func() (*raftpb.Snapshot, error)
}

func (s ownerSnapshots) Snapshot() (*raftpb.Snapshot, error) {
	if s.make == nil {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return s.make()
}

// confAt is the configuration from a log index on.
type confAt struct {
	index uint64
	cs    *raftpb.ConfState
}

// confAt is the configuration in force at log index.
func (g *RaftGroup) confAt(index uint64) *raftpb.ConfState {
	cs := g.confs[0].cs
	for _, c := range g.confs {
		if c.index <= index {
			cs = c.cs
		}
	}
	return cs
}

// SnapshotAt is a snapshot of the owner's data taken at log index (at most
// the applied index, at least the log's first index - 1): the term and the
// configuration are the log's at that index.
func (g *RaftGroup) SnapshotAt(index uint64, data []byte) (*raftpb.Snapshot, error) {
	term, err := g.ms.Term(index)
	if err != nil {
		return nil, err
	}
	cs := g.confAt(index)
	return &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: proto.Clone(cs).(*raftpb.ConfState)}}, nil
}

// Quiescing. A group with nothing to do stops ticking: its leader sends
// each follower one last heartbeat marked with quiesceContext and stops;
// a follower that takes it as coming from its leader, with nothing of the
// log missing, stops too. The owner keeps the clocks stopped and starts
// them again on any sign of work or of trouble (a message, a proposal, the
// leader's node falling silent). A quiesced follower cannot campaign, so
// the owner must wake it when the leader's node is gone.

// quiesceContext marks a quiesce heartbeat.
var quiesceContext = []byte("mosaic/quiesce")

// IsQuiesce reports whether m is a leader's quiesce heartbeat.
func IsQuiesce(m *raftpb.Message) bool {
	return m.GetType() == raftpb.MsgHeartbeat && string(m.GetContext()) == string(quiesceContext)
}

// Idle reports whether this replica leads the group and the group has
// nothing in flight: every entry durable, committed and applied here, held
// by every live replica (none probing or taking a snapshot), no leadership
// transfer and no conf change pending. live (nil: all are) tells which
// replicas' nodes are up.
func (g *RaftGroup) Idle(live func(id uint64) bool) bool {
	if g.inflight != nil || g.rn.HasReady() || len(g.confWaiters) > 0 {
		return false
	}
	st := g.rn.Status()
	last := g.LastIndex()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != 0 || st.GetCommit() != last || g.applied != last {
		return false
	}
	for id, pr := range st.Progress {
		if id != st.ID && live != nil && !live(id) {
			continue
		}
		if pr.Match != last || pr.State != tracker.StateReplicate {
			return false
		}
	}
	return true
}

// Quiesce sends, from the leader, each follower the heartbeat that tells it
// to stop its clock.
func (g *RaftGroup) Quiesce() {
	st := g.rn.Status()
	var msgs []*raftpb.Message
	for id, pr := range st.Progress {
		if id == st.ID {
			continue
		}
		msgs = append(msgs, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: proto.Uint64(id),
			From: proto.Uint64(st.ID), Term: proto.Uint64(st.GetTerm()), Commit: proto.Uint64(min(pr.Match, st.GetCommit())),
			Context: quiesceContext})
	}
	if len(msgs) > 0 && g.send != nil {
		g.send(msgs)
	}
}

// StepQuiesce steps a quiesce heartbeat as a plain one and reports whether
// this follower may stop its clock: the heartbeat came from its leader in
// its term, and its log ends where the leader's commit does.
func (g *RaftGroup) StepQuiesce(m *raftpb.Message) bool {
	hb := proto.Clone(m).(*raftpb.Message)
	hb.Context = nil
	if err := g.rn.Step(hb); err != nil {
		return false
	}
	st := g.rn.BasicStatus()
	return st.RaftState == raft.StateFollower && st.Lead == m.GetFrom() && st.GetTerm() == m.GetTerm() &&
		st.GetCommit() == m.GetCommit() && g.LastIndex() == m.GetCommit()
}

// HasReady reports whether Raft has something for the owner: entries or
// state to write, messages to send, entries to apply.
func (g *RaftGroup) HasReady() bool { return g.rn.HasReady() }
