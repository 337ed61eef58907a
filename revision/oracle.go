package revision

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// GroupID is the oracle's Raft group id in the node's LogStore.
const GroupID = 0

// View is an immutable snapshot of the oracle's state, published after
// every applied batch. A linearizable read on this node uses the latest
// View: every write acknowledged before the read began was decided, and so
// published, before it was acknowledged.
type View struct {
	Rev        int64
	CompactRev int64                  // -1 before the first compaction
	Ranges     []*raftcmdpb.RangeDesc // ascending by start
	LastRev    map[uint64]int64       // highest revision assigned per range id
	ClusterID  uint64
	MemberID   uint64
	Term       uint64
	Applied    uint64
	// Lead is the Raft id of the oracle group's leader (0: none known);
	// Leader says whether it is this node. In a cluster, the oracle's
	// leader is the node that runs writes (see router).
	Lead   uint64
	Leader bool
	// Members are the cluster's members (immutable; empty on a single
	// node); Voters the oracle group's voting replicas.
	Members []*raftcmdpb.Member
	// Leases is the granted leases (immutable, shared between views).
	Leases *LeaseSet

	// byID indexes Ranges by id, built on first use (a view is immutable
	// once published; RangeByID runs per applied op and per tick).
	byIDOnce sync.Once
	byID     map[uint64]*raftcmdpb.RangeDesc
}

// RangeFor returns the range holding key (Ranges are ascending by start
// and cover the keyspace: the last one starting at or before key).
func (v *View) RangeFor(key []byte) *raftcmdpb.RangeDesc {
	i := sort.Search(len(v.Ranges), func(i int) bool { return bytes.Compare(v.Ranges[i].Start, key) > 0 })
	if i == 0 || !Contains(v.Ranges[i-1], key) {
		return nil
	}
	return v.Ranges[i-1]
}

// RangeByID returns the range with that id, nil if there is none.
func (v *View) RangeByID(id uint64) *raftcmdpb.RangeDesc {
	v.byIDOnce.Do(func() {
		v.byID = make(map[uint64]*raftcmdpb.RangeDesc, len(v.Ranges))
		for _, r := range v.Ranges {
			v.byID[r.Id] = r
		}
	})
	return v.byID[id]
}

// Notify delivers decisions to the shard that owns a range; set by the node.
type Notify func(rangeID uint64, ds []Decided)

// ErrNotLeader: this replica of the oracle does not lead its group, or lost
// the lead while the request was pending (its outcome is then unknown).
var ErrNotLeader = errors.New("revision: not the oracle's leader")

// Config configures an Oracle.
type Config struct {
	NodeID uint64
	Logs   *actors.LogStore
	Meta   *Persister
	Logger *zap.Logger
	Notify Notify
	// NotifyAborted tells the node's shards which transactions were
	// aborted, so that every replica drops their intents.
	NotifyAborted func(txns []uint64)
	// Peers are the voters of the oracle's group when it is created (nil:
	// this node alone). Send carries messages to the other replicas.
	Peers []uint64
	Send  func(msgs []*raftpb.Message)
	// OnSplit is told of every split the replica applies (replaying its
	// log too), in log order.
	OnSplit func(*SplitResult)
	// OnMembers is told of every change of the member list.
	OnMembers func([]*raftcmdpb.Member)
	// OnReplicas is told of every change of the ranges' replicas (the
	// member list's first record fills them in, and set_replicas).
	OnReplicas func()
	// OnRestore is told that the replica installed a snapshot (the range
	// table may have changed by any number of splits).
	OnRestore func()
	// CatchUpEntries: in a cluster, the log keeps this many entries below
	// the applied index when truncated.
	CatchUpEntries uint64
	// Cluster: the group is replicated; Join: this replica joins an
	// existing cluster and starts empty (see actors.GroupConfig).
	Cluster, Join bool
	// ClusterID and MemberID are used only when bootstrapping a new store.
	ClusterID, MemberID uint64
}

// Oracle is the handle to the oracle actor, safe for concurrent use.
type Oracle struct {
	root  *actor.RootContext
	pid   *actor.PID
	view  atomic.Pointer[View]
	ready chan struct{}
}

// Start spawns the oracle actor. It recovers from storage before answering.
func Start(sys *actor.ActorSystem, c Config) (*Oracle, error) {
	o := &Oracle{root: sys.Root, ready: make(chan struct{})}
	props := actor.PropsFromProducer(func() actor.Actor { return &oracleActor{cfg: c, handle: o} }, actor.WithDispatcher(actors.NewDispatcher()))
	pid, err := sys.Root.SpawnNamed(props, "oracle")
	if err != nil {
		return nil, err
	}
	o.pid = pid
	return o, nil
}

// Checkpoint tells the oracle that its state is durable up to Raft index
// and that every shard has durably applied every revision up to rev: the
// log up to index is dropped, and decisions at or below rev are forgotten.
func (o *Oracle) Checkpoint(index uint64, rev int64) {
	o.root.Send(o.pid, &checkpointMsg{index: index, rev: rev})
}

// Persist writes the oracle's state to the MVCC store (not synced) and
// returns the Raft index it covers: once the store is synced, the log up
// to that index may go.
func (o *Oracle) Persist(ctx context.Context) (uint64, error) {
	reply := make(chan uint64, 1)
	o.root.Send(o.pid, &persistMsg{reply: reply})
	select {
	case idx := <-reply:
		return idx, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Stop stops the actor and waits until it has stopped.
func (o *Oracle) Stop() { _ = o.root.StopFuture(o.pid).Wait() }

// Step hands the oracle's group a message from another replica.
func (o *Oracle) Step(m *raftpb.Message) { o.root.Send(o.pid, &stepMsg{m: m}) }

// Tick advances the group's clock by one heartbeat interval.
func (o *Oracle) Tick() { o.root.Send(o.pid, tickMsg{}) }

// Unreachable tells the group that a message to replica to was dropped.
func (o *Oracle) Unreachable(to uint64) { o.root.Send(o.pid, unreachableMsg{to: to}) }

// TransferLeader asks the oracle's leader to hand the lead to replica to;
// View().Lead shows when it has.
func (o *Oracle) TransferLeader(to uint64) { o.root.Send(o.pid, transferMsg{to: to}) }

// SetMembers records the cluster's member list (and cluster id, if set).
func (o *Oracle) SetMembers(ctx context.Context, m *raftcmdpb.Membership) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &membersMsg{m: m, reply: reply})
	return awaitErr(ctx, reply)
}

// SetReplicas records the members that hold a range (its first replica is
// where its lead belongs), once the range's group holds them.
func (o *Oracle) SetReplicas(ctx context.Context, rangeID uint64, replicas []uint64, leadPinned bool) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &replicasMsg{r: &raftcmdpb.SetReplicas{RangeId: rangeID, Replicas: replicas, LeadPinned: leadPinned}, reply: reply})
	return awaitErr(ctx, reply)
}

// ConfChange changes the oracle group's replicas and returns once the
// change is applied here (on the leader).
func (o *Oracle) ConfChange(ctx context.Context, cc *raftpb.ConfChangeV2) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &confChangeMsg{cc: cc, reply: reply})
	return awaitErr(ctx, reply)
}

// Progress is, on the leader, each replica's matched log index, and the
// leader's last index.
func (o *Oracle) Progress(ctx context.Context) (map[uint64]uint64, uint64, error) {
	reply := make(chan progressReply, 1)
	o.root.Send(o.pid, &progressMsg{reply: reply})
	select {
	case r := <-reply:
		return r.match, r.last, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

// Fate looks a transaction up in this replica's state without proposing
// anything: (rev, true) decided, (0, true) aborted, (0, false) unknown.
func (o *Oracle) Fate(ctx context.Context, txn uint64) (int64, bool, error) {
	reply := make(chan fateLookup, 1)
	o.root.Send(o.pid, &fateMsg{txn: txn, reply: reply})
	select {
	case f := <-reply:
		return f.rev, f.known, nil
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
}

// ReadRev returns a revision a linearizable read may be served at on this
// node: the oracle's leader confirms its commit index (Raft's ReadIndex),
// this replica applies up to it, and its revision then covers every write
// acknowledged before ReadRev was called.
func (o *Oracle) ReadRev(ctx context.Context) (int64, error) {
	reply := make(chan fate, 1)
	o.root.Send(o.pid, &readMsg{reply: reply})
	return awaitFate(ctx, reply)
}

// Ready is closed once the oracle has recovered and serves requests.
func (o *Oracle) Ready() <-chan struct{} { return o.ready }

// View returns the latest published state.
func (o *Oracle) View() *View { return o.view.Load() }

// DecideRequest asks for a transaction's revision.
type DecideRequest struct {
	Txn    uint64
	Ranges []uint64 // every range holding one of its intents (durable)
	// RequireLeases must all exist when the decision applies, or the
	// transaction is aborted with ErrLeaseNotFound.
	RequireLeases []int64
	// RevokeLease, if set, is removed at the transaction's revision.
	RevokeLease int64
	// Generations are the generations of Ranges (same order) the
	// transaction latched under: if one changed (a split), the transaction
	// is aborted with ErrRangeChanged. Empty: not checked.
	Generations []uint64
	// Speculative: the intents are not yet known to be durable; the
	// decision's log write waits for (or shares) the intents' writes. Only
	// when every group involved commits by its local write.
	Speculative bool
}

// Decide assigns the next revision to a transaction whose intents are
// durable in every range listed.
func (o *Oracle) Decide(ctx context.Context, d DecideRequest) (int64, error) {
	reply := make(chan fate, 1)
	o.root.Send(o.pid, &decideMsg{req: d, reply: reply})
	return awaitFate(ctx, reply)
}

// Grant adds a lease; ErrLeaseExists if its id is taken.
func (o *Oracle) Grant(ctx context.Context, l *raftcmdpb.Lease) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &leaseMsg{grant: l, reply: reply})
	return awaitErr(ctx, reply)
}

// RevokeEmpty removes a lease that holds no key (it takes no revision);
// ErrLeaseNotFound if it is gone.
func (o *Oracle) RevokeEmpty(ctx context.Context, id int64) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &leaseMsg{revoke: id, reply: reply})
	return awaitErr(ctx, reply)
}

// CheckpointLeases records remaining TTLs.
func (o *Oracle) CheckpointLeases(ctx context.Context, cps []*raftcmdpb.LeaseCheckpoint) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &leaseMsg{checkpoints: cps, reply: reply})
	return awaitErr(ctx, reply)
}

func awaitErr(ctx context.Context, reply chan error) error {
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Abort records that txn will never be decided.
func (o *Oracle) Abort(ctx context.Context, txn uint64) error {
	reply := make(chan fate, 1)
	o.root.Send(o.pid, &resolveMsg{txn: txn, reply: reply})
	_, err := awaitFate(ctx, reply)
	if errors.Is(err, ErrAborted) {
		return nil
	}
	return err
}

// Resolve returns txn's fate, aborting it if it was never decided: its rev,
// or ErrAborted.
func (o *Oracle) Resolve(ctx context.Context, txn uint64) (int64, error) {
	reply := make(chan fate, 1)
	o.root.Send(o.pid, &resolveMsg{txn: txn, reply: reply})
	return awaitFate(ctx, reply)
}

// Compact records rev as the compaction revision.
func (o *Oracle) Compact(ctx context.Context, rev int64) error {
	reply := make(chan error, 1)
	o.root.Send(o.pid, &compactMsg{rev: rev, reply: reply})
	return awaitErr(ctx, reply)
}

// Split splits range id at key in the range table.
func (o *Oracle) Split(ctx context.Context, id uint64, key []byte, guard *raftcmdpb.SplitGuard) (*SplitResult, error) {
	reply := make(chan splitReply, 1)
	o.root.Send(o.pid, &splitMsg{id: id, key: key, guard: guard, reply: reply})
	select {
	case r := <-reply:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func awaitFate(ctx context.Context, reply chan fate) (int64, error) {
	select {
	case f := <-reply:
		return f.rev, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

type fate struct {
	rev int64
	err error
}

type decideMsg struct {
	req   DecideRequest
	reply chan fate
}

// leaseMsg carries one lease command: a grant, a revoke of a lease with no
// key, or checkpoints.
type leaseMsg struct {
	grant       *raftcmdpb.Lease
	revoke      int64
	checkpoints []*raftcmdpb.LeaseCheckpoint
	reply       chan error
}

// resolveMsg asks for a transaction's fate, aborting it if undecided.
type resolveMsg struct {
	txn   uint64
	reply chan fate
}

type compactMsg struct {
	rev   int64
	reply chan error
}

type splitMsg struct {
	id    uint64
	key   []byte
	guard *raftcmdpb.SplitGuard // nil: unguarded
	reply chan splitReply
}

type splitReply struct {
	res *SplitResult
	err error
}

type persistedMsg struct{ err error }

type checkpointMsg struct {
	index uint64
	rev   int64
}

type persistMsg struct{ reply chan uint64 }

type stepMsg struct{ m *raftpb.Message }
type tickMsg struct{}
type unreachableMsg struct{ to uint64 }
type transferMsg struct{ to uint64 }
type membersMsg struct {
	m     *raftcmdpb.Membership
	reply chan error
}
type replicasMsg struct {
	r     *raftcmdpb.SetReplicas
	reply chan error
}
type confChangeMsg struct {
	cc    *raftpb.ConfChangeV2
	reply chan error
}
type progressMsg struct{ reply chan progressReply }
type progressReply struct {
	match map[uint64]uint64
	last  uint64
}
type fateMsg struct {
	txn   uint64
	reply chan fateLookup
}
type fateLookup struct {
	rev   int64
	known bool
}
type readMsg struct{ reply chan fate }

// readIndexTimeout bounds the wait for a ReadIndex answer; an unanswered
// request is sent again after readIndexRetry.
const (
	readIndexTimeout = 5 * time.Second
	readIndexRetry   = 500 * time.Millisecond
)

// readWait is a batch of reads waiting for their ReadIndex answer (index
// 0) or, once answered, for the replica to apply up to index.
type readWait struct {
	first   time.Time // first asked
	asked   time.Time // last asked
	ctx     uint64
	index   uint64
	replies []chan fate
}

// oracleActor owns the oracle's RaftGroup and State. Decisions are batched:
// while one batch is being made durable, new requests queue, and the whole
// queue becomes the next entry.
type oracleActor struct {
	cfg    Config
	handle *Oracle
	self   *actor.PID
	ctx    actor.Context

	group *actors.RaftGroup
	state *State
	// startLast is the last log index at start; the oracle serves once it
	// has applied past it (everything a previous life decided is known).
	startLast uint64
	// logAtStart is the last log index at start, kept (SplitResult.Replayed).
	logAtStart uint64
	ready      bool
	stash      []any

	queue      []*decideMsg
	proposing  bool
	deciders   map[uint64][]chan fate
	resolvers  map[uint64][]chan fate
	compacters []*compactMsg
	splitters  []*splitMsg
	leasers    []*leaseMsg
	// leaseChanges are the leases changed since the last published view;
	// rebuildLeases: the next view builds its lease set anew.
	leaseChanges  map[int64]struct{}
	rebuildLeases bool

	// cluster: the group has several voters, so leadership can move.
	cluster bool
	// memberers wait for membership changes, replicasers for replica
	// changes.
	memberers   []chan error
	replicasers []chan error
	lead        uint64
	leader      bool
	// reads waiting for ReadIndex; readQueue not yet asked for.
	readQueue []chan fate
	reads     []*readWait
	readSeq   uint64

	// dirty holds the fates decided since the last save, gone the pruned
	// ones still stored; saved is the applied index of the last save.
	dirty map[uint64]int64
	gone  []uint64
	saved uint64
}

func (a *oracleActor) Receive(ctx actor.Context) {
	a.ctx = ctx
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.self = ctx.Self()
		if err := a.start(); err != nil {
			a.cfg.Logger.Fatal("revision oracle failed to start", zap.Error(err))
		}
		if a.cluster {
			a.group.Drive(a.apply) // applies what is known committed
			if !a.ready {
				a.setReady()
			}
		}
	case *persistedMsg:
		if m.err != nil {
			a.cfg.Logger.Fatal("revision oracle: raft log write failed", zap.Error(m.err))
		}
		if err := a.group.Persisted(a.apply); err != nil {
			a.cfg.Logger.Fatal("revision oracle", zap.Error(err))
		}
	case *checkpointMsg:
		a.checkpoint(m)
	case *persistMsg:
		m.reply <- a.persist()
	case *stepMsg:
		if err := a.group.Step(m.m); err != nil && a.cfg.Logger != nil {
			a.cfg.Logger.Debug("revision oracle: step", zap.Error(err))
		}
	case tickMsg:
		a.group.Tick()
	case unreachableMsg:
		a.group.ReportUnreachable(m.to)
	case transferMsg:
		a.group.TransferLeader(m.to)
	case *progressMsg:
		m.reply <- progressReply{match: a.group.Progress(), last: a.group.LastIndex()}
	case *confChangeMsg:
		a.group.ChangeConf(m.cc, m.reply)
	case *membersMsg:
		if err := a.propose(&raftcmdpb.OracleCommand{Membership: m.m}); err != nil {
			m.reply <- err
			break
		}
		a.memberers = append(a.memberers, m.reply)
	case *replicasMsg:
		if err := a.propose(&raftcmdpb.OracleCommand{Replicas: m.r}); err != nil {
			m.reply <- err
			break
		}
		a.replicasers = append(a.replicasers, m.reply)
	case *fateMsg:
		rev, known := a.state.Fate(m.txn)
		m.reply <- fateLookup{rev: rev, known: known}
	case *readMsg:
		a.readQueue = append(a.readQueue, m.reply)
	case *actor.Stopping:
		if a.state != nil {
			a.persist()
		}
		return
	case *decideMsg, *resolveMsg, *compactMsg, *splitMsg, *leaseMsg:
		if !a.ready {
			a.stash = append(a.stash, m)
			return
		}
		a.handle1(m)
	}
	a.askReads()
	a.group.Drive(a.apply)
	a.watchLeader()
	a.answerReads()
	if a.askReads() {
		a.group.Drive(a.apply)
	}
}

// watchLeader notices leadership changes. A replica that loses the lead
// fails every request it was waiting on: their proposals may be dropped,
// so their outcome is unknown to it (a decision that does commit is still
// applied, and an abort recorded, on every replica).
func (a *oracleActor) watchLeader() {
	lead := a.group.Lead()
	leader := lead == a.cfg.NodeID
	if lead == a.lead && leader == a.leader {
		return
	}
	wasLeader := a.leader
	a.lead, a.leader = lead, leader
	if wasLeader && !leader {
		for _, m := range a.queue {
			a.answer(a.deciders, m.req.Txn, fate{err: ErrNotLeader})
		}
		a.queue = nil
		for txn := range a.deciders {
			a.answer(a.deciders, txn, fate{err: ErrNotLeader})
		}
		for txn := range a.resolvers {
			a.answer(a.resolvers, txn, fate{err: ErrNotLeader})
		}
		for _, m := range a.leasers {
			m.reply <- ErrNotLeader
		}
		for _, m := range a.compacters {
			m.reply <- ErrNotLeader
		}
		for _, m := range a.splitters {
			m.reply <- splitReply{err: ErrNotLeader}
		}
		for _, ch := range a.memberers {
			ch <- ErrNotLeader
		}
		for _, ch := range a.replicasers {
			ch <- ErrNotLeader
		}
		a.group.FailConfChanges(ErrNotLeader)
		a.leasers, a.compacters, a.splitters, a.memberers, a.replicasers = nil, nil, nil, nil, nil
		a.proposing = false
	}
	a.publish()
}

// askReads sends one ReadIndex for every read queued since the last one,
// once the previous ReadIndex is answered (as etcd's read loop does): under
// load, reads share ReadIndex rounds instead of each costing the leader a
// heartbeat to every follower. It reports whether it asked.
func (a *oracleActor) askReads() bool {
	if len(a.readQueue) == 0 {
		return false
	}
	if n := len(a.reads); a.cluster && n > 0 && a.reads[n-1].index == 0 {
		return false
	}
	if !a.cluster {
		// A single voter is always current: its view covers every write
		// it acknowledged.
		for _, r := range a.readQueue {
			r <- fate{rev: a.state.pb.Revision}
		}
		a.readQueue = nil
		return false
	}
	a.readSeq++
	now := time.Now()
	a.reads = append(a.reads, &readWait{first: now, asked: now, ctx: a.readSeq, replies: a.readQueue})
	a.readQueue = nil
	a.group.ReadIndex(binary.BigEndian.AppendUint64(nil, a.readSeq))
	return true
}

// answerReads answers the reads whose index this replica has applied.
// ReadIndex answers come in the order asked; one lost (a leader change)
// is never answered, so its readers time out and retry.
func (a *oracleActor) answerReads() {
	for _, rs := range a.group.TakeReadStates() {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(rs.RequestCtx)
		for _, w := range a.reads {
			if w.ctx == seq {
				w.index = rs.Index
			}
		}
	}
	keep := a.reads[:0]
	now := time.Now()
	for _, w := range a.reads {
		var f *fate
		switch {
		case w.index != 0 && a.group.Applied() >= w.index:
			f = &fate{rev: a.state.pb.Revision}
		case w.index == 0 && now.Sub(w.first) > readIndexTimeout:
			f = &fate{err: ErrNotLeader}
		case w.index == 0 && now.Sub(w.asked) > readIndexRetry:
			// The request or its answer was lost (the leader it went to
			// died, say): ask again.
			a.readSeq++
			w.ctx, w.asked = a.readSeq, now
			a.group.ReadIndex(binary.BigEndian.AppendUint64(nil, w.ctx))
		}
		if f != nil {
			for _, r := range w.replies {
				r <- *f
			}
			continue
		}
		keep = append(keep, w)
	}
	a.reads = keep
}

// checkpoint drops the log up to the given index, never past the last
// saved state, and forgets decisions every shard has durably applied.
func (a *oracleActor) checkpoint(m *checkpointMsg) {
	upTo := min(m.index, a.saved, a.group.Applied())
	if a.cluster {
		// Replicas a little behind catch up from the log, not a snapshot.
		upTo = min(upTo, a.group.Applied()-min(a.group.Applied(), a.cfg.CatchUpEntries))
	}
	if err := a.group.Compact(upTo); err != nil {
		a.cfg.Logger.Error("revision oracle: raft log compaction failed", zap.Error(err))
	}
	if !a.ready {
		return
	}
	// Aborted transactions are forgotten too: their intents were dropped
	// by the shards, and a shard that replays one after a restart is told
	// "aborted" again (an unknown transaction is aborted on Resolve).
	for _, txn := range a.state.Prune(func(txn uint64, rev int64) bool { return rev > m.rev }) {
		if _, ok := a.dirty[txn]; ok {
			delete(a.dirty, txn)
			continue
		}
		a.gone = append(a.gone, txn)
	}
}

// persist saves the state and the fates changed since the last save, and
// returns the applied index the saved state covers.
//
// In a cluster too: replicas of a range apply decisions from their own log
// (the range's leader puts them there), so nothing depends on the oracle
// telling them again after a restart. A fate is forgotten (Prune) once
// every range replica here applied it from its log, where any future
// leader of the range finds it.
func (a *oracleActor) persist() uint64 {
	if err := a.cfg.Meta.Save(a.state.pb, a.dirty, a.gone); err != nil {
		a.cfg.Logger.Fatal("revision oracle: persisting state failed", zap.Error(err))
	}
	a.dirty = map[uint64]int64{}
	a.gone = nil
	a.saved = a.state.pb.AppliedIndex
	return a.saved
}

func (a *oracleActor) handle1(m any) {
	switch m := m.(type) {
	case *decideMsg:
		if rev, ok := a.state.Fate(m.req.Txn); ok {
			m.reply <- fateOf(rev)
			return
		}
		a.queue = append(a.queue, m)
		a.deciders[m.req.Txn] = append(a.deciders[m.req.Txn], m.reply)
		a.flush()
	case *leaseMsg:
		cmd := &raftcmdpb.OracleCommand{Grant: m.grant, Checkpoints: m.checkpoints}
		if m.revoke != 0 {
			cmd.RevokeLeases = []int64{m.revoke}
		}
		if err := a.propose(cmd); err != nil {
			m.reply <- err
			return
		}
		a.leasers = append(a.leasers, m)
	case *resolveMsg:
		if rev, ok := a.state.Fate(m.txn); ok {
			m.reply <- fateOf(rev)
			return
		}
		a.resolvers[m.txn] = append(a.resolvers[m.txn], m.reply)
		if err := a.propose(&raftcmdpb.OracleCommand{Aborts: []uint64{m.txn}}); err != nil {
			a.answer(a.resolvers, m.txn, fate{err: err})
		}
	case *compactMsg:
		if err := a.propose(&raftcmdpb.OracleCommand{Compact: &raftcmdpb.Compact{Revision: m.rev}}); err != nil {
			m.reply <- err
			return
		}
		a.compacters = append(a.compacters, m)
	case *splitMsg:
		if err := a.propose(&raftcmdpb.OracleCommand{Split: &raftcmdpb.Split{RangeId: m.id, Key: m.key, Guard: m.guard}}); err != nil {
			m.reply <- splitReply{err: err}
			return
		}
		a.splitters = append(a.splitters, m)
	}
}

func fateOf(rev int64) fate {
	if rev == 0 {
		return fate{err: ErrAborted}
	}
	return fate{rev: rev}
}

func (a *oracleActor) start() error {
	c := a.cfg
	st, txns, err := c.Meta.Load()
	if err != nil {
		return err
	}
	if st == nil {
		st = Bootstrap(c.ClusterID, c.MemberID)
		if err := c.Meta.Save(st, nil, nil); err != nil {
			return err
		}
	}
	if c.Cluster {
		if err := a.recordSavedSnapshot(st); err != nil {
			return err
		}
	}
	a.state = NewState(st, txns)
	a.deciders = map[uint64][]chan fate{}
	a.resolvers = map[uint64][]chan fate{}
	a.dirty = map[uint64]int64{}
	a.saved = st.AppliedIndex
	gc := actors.GroupConfig{
		Group: GroupID, NodeID: c.NodeID, Applied: st.AppliedIndex, Store: c.Logs, Logger: c.Logger,
		Durable: func(err error) { a.handle.root.Send(a.self, &persistedMsg{err: err}) },
		Peers:   c.Peers,
		Send:    c.Send,
		Cluster: c.Cluster,
		Join:    c.Join,
	}
	if c.Cluster {
		gc.Snapshot, gc.Restore, gc.Restored = a.makeSnapshot, a.restoreSnapshot, a.snapshotRestored
	}
	a.group, err = actors.OpenRaftGroup(gc)
	if err != nil {
		return err
	}
	a.cluster = c.Cluster
	a.startLast = a.group.LastIndex()
	a.logAtStart = a.startLast
	a.publish()
	if a.cluster {
		// Replicas elect a leader when their election timers fire. What is
		// known committed is applied by the first Drive, right after this;
		// the replica serves from then on (requests that need the leader
		// fail fast elsewhere).
		a.startLast = 0
		return nil
	}
	return a.group.Campaign()
}

func (a *oracleActor) flush() {
	if a.proposing || len(a.queue) == 0 {
		return
	}
	cmd := &raftcmdpb.OracleCommand{}
	for _, m := range a.queue {
		d := m.req
		cmd.Decisions = append(cmd.Decisions, &raftcmdpb.Decision{TxnId: d.Txn, Ranges: d.Ranges, RequireLeases: d.RequireLeases, RevokeLease: d.RevokeLease, Generations: d.Generations})
	}
	batch := a.queue
	a.queue = nil
	if err := a.propose(cmd); err != nil {
		for _, m := range batch {
			a.answer(a.deciders, m.req.Txn, fate{err: err})
		}
		return
	}
	var requires []actors.Dep
	for _, m := range batch {
		if m.req.Speculative {
			for _, r := range m.req.Ranges {
				requires = append(requires, actors.Dep{Txn: m.req.Txn, Group: r})
			}
		}
	}
	a.group.Tag(nil, requires)
	a.proposing = true
}

func (a *oracleActor) propose(cmd *raftcmdpb.OracleCommand) error {
	data, err := proto.Marshal(cmd)
	if err == nil {
		err = a.group.Propose(data)
	}
	if err != nil {
		a.cfg.Logger.Error("revision oracle: proposal failed", zap.Error(err))
	}
	return err
}

// apply applies committed entries, persists the state once for the whole
// batch, then tells shards and waiters.
func (a *oracleActor) apply(ents []*raftpb.Entry) {
	var all []Effects
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		cmd := &raftcmdpb.OracleCommand{}
		if err := proto.Unmarshal(e.GetData(), cmd); err != nil {
			a.cfg.Logger.Fatal("revision oracle: undecodable log entry", zap.Uint64("index", e.GetIndex()), zap.Error(err))
		}
		fx := a.state.Apply(e.GetIndex(), cmd)
		fx.checkpointed = len(cmd.Checkpoints) > 0
		if fx.Split != nil {
			fx.Split.Replayed = e.GetIndex() <= a.logAtStart
		}
		for _, id := range fx.LeaseIDs {
			if a.leaseChanges == nil {
				a.leaseChanges = map[int64]struct{}{}
			}
			a.leaseChanges[id] = struct{}{}
		}
		if len(cmd.Decisions) > 0 {
			a.proposing = false
		}
		all = append(all, fx)
	}
	if n := len(ents); n > 0 {
		a.state.pb.AppliedIndex = ents[n-1].GetIndex()
	}
	// The state is not written here: the log replays it exactly from the
	// last saved index, and Persist saves it at checkpoints. Fates changed
	// since are remembered for that save.
	for _, fx := range all {
		for _, d := range fx.Decided {
			a.dirty[d.TxnID] = d.Rev
		}
		for _, t := range fx.Aborted {
			a.dirty[t] = 0
		}
	}
	a.publish()
	for _, fx := range all {
		a.deliver(fx)
	}
	if n := len(ents); !a.ready && n > 0 && ents[n-1].GetIndex() > a.startLast {
		a.setReady()
	}
	a.flush()
}

// setReady starts serving requests.
func (a *oracleActor) setReady() {
	a.ready = true
	close(a.handle.ready)
	stash := a.stash
	a.stash = nil
	for _, m := range stash {
		a.handle1(m)
	}
}

func (a *oracleActor) deliver(fx Effects) {
	byRange := map[uint64][]Decided{}
	var order []uint64
	for _, d := range fx.Decided {
		for _, r := range d.Ranges {
			if _, ok := byRange[r]; !ok {
				order = append(order, r)
			}
			byRange[r] = append(byRange[r], d)
		}
		a.answer(a.deciders, d.TxnID, fate{rev: d.Rev})
		a.answer(a.resolvers, d.TxnID, fate{rev: d.Rev})
	}
	for _, r := range order {
		if a.cfg.Notify != nil {
			a.cfg.Notify(r, byRange[r])
		}
	}
	if len(fx.Aborted) > 0 && a.cfg.NotifyAborted != nil {
		a.cfg.NotifyAborted(fx.Aborted)
	}
	for _, t := range fx.Aborted {
		err := fx.AbortErr[t]
		if err == nil {
			err = ErrAborted
		}
		a.answer(a.deciders, t, fate{err: err})
		a.answer(a.resolvers, t, fate{err: ErrAborted})
	}
	if fx.Granted != nil || fx.GrantErr != nil || len(fx.RevokeErrs) > 0 {
		if len(a.leasers) > 0 {
			m := a.leasers[0]
			a.leasers = a.leasers[1:]
			err := fx.GrantErr
			for _, e := range fx.RevokeErrs {
				if e != nil {
					err = e
				}
			}
			m.reply <- err
		}
	} else if fx.checkpointed && len(a.leasers) > 0 {
		m := a.leasers[0]
		a.leasers = a.leasers[1:]
		m.reply <- nil
	}
	if fx.DidCompact || fx.CompactErr != nil {
		if len(a.compacters) > 0 {
			m := a.compacters[0]
			a.compacters = a.compacters[1:]
			m.reply <- fx.CompactErr
		}
	}
	if fx.replicasDone && len(a.replicasers) > 0 {
		a.replicasers[0] <- fx.ReplicasErr
		a.replicasers = a.replicasers[1:]
	}
	if (fx.Replicas || fx.Membership) && a.cfg.OnReplicas != nil {
		a.cfg.OnReplicas()
	}
	if fx.Membership {
		if a.cfg.OnMembers != nil {
			a.cfg.OnMembers(a.state.pb.Members)
		}
		if len(a.memberers) > 0 {
			a.memberers[0] <- nil
			a.memberers = a.memberers[1:]
		}
	}
	if fx.Split != nil && a.cfg.OnSplit != nil {
		a.cfg.OnSplit(fx.Split)
	}
	if fx.Split != nil || fx.SplitErr != nil {
		if len(a.splitters) > 0 {
			m := a.splitters[0]
			a.splitters = a.splitters[1:]
			m.reply <- splitReply{res: fx.Split, err: fx.SplitErr}
		}
	}
}

func (a *oracleActor) answer(w map[uint64][]chan fate, txn uint64, f fate) {
	for _, ch := range w[txn] {
		ch <- f
	}
	delete(w, txn)
}

func (a *oracleActor) publish() {
	pb := a.state.pb
	v := &View{
		Rev:        pb.Revision,
		CompactRev: a.state.CompactRev(),
		Ranges:     make([]*raftcmdpb.RangeDesc, len(pb.Ranges)),
		LastRev:    make(map[uint64]int64, len(pb.LastRev)),
		ClusterID:  pb.ClusterId,
		MemberID:   pb.MemberId,
		Term:       a.group.Term(),
		Applied:    pb.AppliedIndex,
		Lead:       a.lead,
		Leader:     a.leader,
		Members:    pb.Members,
	}
	copy(v.Ranges, pb.Ranges)
	if prev := a.handle.view.Load(); prev != nil && !a.rebuildLeases {
		v.Leases = prev.Leases.with(a.leaseChanges, pb.Leases)
	} else {
		v.Leases = newLeaseSet(pb.Leases)
	}
	a.rebuildLeases = false
	a.leaseChanges = nil
	for k, r := range pb.LastRev {
		v.LastRev[k] = r
	}
	a.handle.view.Store(v)
}

// String is for logs.
func (v *View) String() string {
	return fmt.Sprintf("rev=%d compact=%d ranges=%d", v.Rev, v.CompactRev, len(v.Ranges))
}
