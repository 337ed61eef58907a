package shard

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// ErrRangeMoved tells the router that the shard no longer owns (part of)
// the request's span; the router retries with a fresh range table.
var ErrRangeMoved = errors.New("shard: key span is no longer owned by this range")

// ErrNotLeader: this replica does not lead the range's group (or is still
// resolving what its predecessor left); the router retries elsewhere or
// later. Nothing of the request entered the log.
var ErrNotLeader = errors.New("shard: not the range's leader")

// ErrLeaderChanged: the replica lost the lead after the intent was
// proposed; it may or may not commit. The router aborts the transaction
// to learn its fate.
// ErrStopped: the replica was stopped while the caller waited on it.
var ErrStopped = errors.New("shard: the range's replica here was stopped")

var ErrLeaderChanged = errors.New("shard: leader changed while the intent was proposed")

// Resolver is what a shard asks about intents it finds after a restart or
// when it becomes leader: Resolve aborts an undecided transaction (on the
// oracle's leader), Fate only looks it up in this node's oracle replica.
type Resolver interface {
	Resolve(ctx context.Context, txn uint64) (int64, error)
	Fate(ctx context.Context, txn uint64) (int64, bool, error)
}

// Config configures a shard replica.
type Config struct {
	Desc     *raftcmdpb.RangeDesc
	NodeID   uint64
	Logs     *actors.LogStore
	Store    *mvcc.Store
	Oracle   Resolver
	Logger   *zap.Logger
	StartRev int64 // applied revision of a range that has no state yet (a split's right side)
	// OnApplied, if set, is called (from the actor) after every apply.
	OnApplied func()
	// Peers are the voters of a group created here (nil: this node alone);
	// Send carries messages to the other replicas.
	Peers []uint64
	Send  func(msgs []*raftpb.Message)
	// PreferLeader reports whether this node should lead the range (it
	// leads the oracle): the replica then asks for the lead.
	PreferLeader func() bool
	// Live reports whether the node of replica id has been heard from
	// lately (nil: every replica is). A quiescing leader does not wait for
	// a replica that is not live.
	Live func(id uint64) bool
	// Cluster: the group is replicated; Join: this replica starts empty and
	// gets the log from the leader (see actors.GroupConfig).
	Cluster, Join bool
	// SnapDir holds snapshots being installed (cluster).
	SnapDir string
	// CatchUpEntries: in a cluster, the log keeps this many entries below
	// the applied index when truncated.
	CatchUpEntries uint64
	// TableDesc, if set, returns the range as the node's range table has
	// it now (nil if unknown): a replica never applies writes outside it.
	TableDesc func() *raftcmdpb.RangeDesc
	// TableLastRev, if set, returns the highest revision the node's
	// oracle replica has assigned to the range: a replica that stays below
	// it says so in the log (see behind.go).
	TableLastRev func() int64
	// Learners, if set, lists the members that should hold a learner of
	// the range (nil: none is wanted): the leader adds them to the group
	// and takes out learners it no longer lists (see learners.go).
	Learners func() []uint64
}

// Shard is the handle to a shard actor, safe for concurrent use.
type Shard struct {
	id   uint64
	root *actor.RootContext
	pid  *actor.PID

	applied atomic.Int64 // applied revision
	mu      sync.Mutex
	advance chan struct{} // closed and replaced whenever applied moves
	ready   chan struct{}
	stopped chan struct{} // closed once Stop has stopped the actor
	stop    sync.Once
	desc    atomic.Pointer[raftcmdpb.RangeDesc]
	index   atomic.Uint64
	leading atomic.Bool
	lead    atomic.Uint64
	// quiesced: the replica's clock is stopped (see quiesce.go); the node
	// then ticks it only now and then, and wakes it if its leader's node
	// falls silent.
	quiesced atomic.Bool
	voters   atomic.Pointer[[]uint64]
	members  atomic.Pointer[[]uint64] // voters and learners

	clipMu    sync.Mutex
	clips     []span // spans whose writes may be missing here (clips.go)
	clipsLost bool   // more than maxClips: every span counts
}

// Start spawns the shard actor for c.Desc.
func Start(sys *actor.ActorSystem, c Config) (*Shard, error) {
	s := &Shard{id: c.Desc.Id, root: sys.Root, advance: make(chan struct{}), ready: make(chan struct{}), stopped: make(chan struct{})}
	s.desc.Store(c.Desc)
	props := actor.PropsFromProducer(func() actor.Actor { return &shardActor{cfg: c, handle: s} }, actor.WithDispatcher(actors.NewDispatcher()))
	pid, err := sys.Root.SpawnNamed(props, fmt.Sprintf("shard-%d", c.Desc.Id))
	if err != nil {
		return nil, err
	}
	s.pid = pid
	return s, nil
}

// ID is the range id.
func (s *Shard) ID() uint64 { return s.id }

// Desc is the range's current span.
func (s *Shard) Desc() *raftcmdpb.RangeDesc { return s.desc.Load() }

// Ready is closed once the shard has recovered.
func (s *Shard) Ready() <-chan struct{} { return s.ready }

// AppliedRev is the highest revision applied.
func (s *Shard) AppliedRev() int64 { return s.applied.Load() }

// AppliedIndex is the Raft index the state machine has applied.
func (s *Shard) AppliedIndex() uint64 { return s.index.Load() }

// WaitApplied blocks until the shard has applied revision rev.
func (s *Shard) WaitApplied(ctx context.Context, rev int64) error {
	for {
		s.mu.Lock()
		ch := s.advance
		s.mu.Unlock()
		if s.applied.Load() >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-s.stopped:
			return ErrStopped
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Shard) setApplied(rev int64) {
	s.applied.Store(rev)
	s.mu.Lock()
	close(s.advance)
	s.advance = make(chan struct{})
	s.mu.Unlock()
}

// LatchRequest latches spans and evaluates what the request's outcome
// depends on. Every span and key is inside the shard's span.
type LatchRequest struct {
	Txn           uint64
	Reads, Writes []Span
	Compares      []*pb.Compare // clipped to the shard; evaluated in order
	Exists        [][]byte      // keys whose existence is asked
	Deletes       []Span        // spans asked whether they hold a live key
	// LeaseReads are the leases the request attaches keys to: latched so
	// that no revoke of them runs meanwhile.
	LeaseReads []int64
	// Revoke, if set, latches that lease and every key attached to it on
	// this shard; their keys come back in LatchResult.LeaseKeys.
	Revoke int64
}

// LatchResult answers a LatchRequest, index-aligned with it.
type LatchResult struct {
	Compares  []kvrules.ComparePart
	Exists    []bool
	Deletes   []bool
	LeaseKeys [][]byte // with Revoke: the lease's keys here, ascending
	// Rev is the range's applied revision when it evaluated the request:
	// what the compares saw is the state at Rev.
	Rev int64
}

// OpResult is one op's outcome on this shard.
type OpResult struct {
	Sub     int32
	Prev    *mvccpb.KeyValue   // put (when asked)
	Deleted []*mvccpb.KeyValue // delete: the deleted keys' previous values
	Range   kvrules.RangePart  // range
}

// Applied is the outcome of one intent.
type Applied struct {
	Rev     int64
	Results []OpResult
	Err     error
}

// Latch latches and evaluates; on error nothing is held.
func (s *Shard) Latch(ctx context.Context, req *LatchRequest) (*LatchResult, error) {
	reply := make(chan latchReply, 1)
	s.root.Send(s.pid, &latchMsg{req: req, reply: reply})
	select {
	case r := <-reply:
		return r.res, r.err
	case <-ctx.Done():
		// The latch may still be granted later: make sure it is dropped.
		s.Release(req.Txn)
		return nil, ctx.Err()
	}
}

// Propose makes the latched request's ops on this shard an intent. The
// returned channel yields once, when the intent is committed (nil) or
// failed; applied later yields the outcome once decided.
//
// A speculative intent is one the router asks the oracle to decide without
// waiting for it to commit: its log write then provides the transaction,
// so the decision's write (which requires it) is never durable first. Only
// for groups whose commit is their local write (a single voter).
func (s *Shard) Propose(txn uint64, ops []*raftcmdpb.Op, speculative bool) (committed <-chan error, applied <-chan Applied) {
	c := make(chan error, 1)
	a := make(chan Applied, 1)
	s.root.Send(s.pid, &proposeMsg{txn: txn, ops: ops, spec: speculative, committed: c, applied: a})
	return c, a
}

// Release drops txn's latches and intent (after an abort, or when the
// request needs nothing more from this shard).
func (s *Shard) Release(txn uint64) { s.root.Send(s.pid, &releaseMsg{txn: txn}) }

// LeaseKeys returns the keys of this shard attached to a lease, ascending.
func (s *Shard) LeaseKeys(ctx context.Context, id int64) ([][]byte, error) {
	reply := make(chan [][]byte, 1)
	s.root.Send(s.pid, &leaseKeysMsg{id: id, reply: reply})
	select {
	case keys := <-reply:
		return keys, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Deliver hands the oracle's decisions for this range to the shard.
func (s *Shard) Deliver(ds []revision.Decided) { s.root.Send(s.pid, &decidedMsg{ds: ds}) }

// Freeze stops granting latches and returns once nothing is latched or
// pending, so the range's span can change safely.
func (s *Shard) Freeze(ctx context.Context) error {
	reply := make(chan struct{})
	s.root.Send(s.pid, &freezeMsg{reply: reply})
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		s.Unfreeze(nil)
		return ctx.Err()
	}
}

// Unfreeze resumes with the given span (nil keeps the current one).
func (s *Shard) Unfreeze(desc *raftcmdpb.RangeDesc) {
	if desc != nil {
		s.desc.Store(desc)
	}
	s.root.Send(s.pid, &unfreezeMsg{desc: desc})
}

// CompactLog drops the shard's Raft log up to index, which the caller has
// made durable in the MVCC store.
func (s *Shard) CompactLog(index uint64) { s.root.Send(s.pid, &compactLogMsg{index: index}) }

// Stop stops the actor and waits until it has stopped; WaitApplied then
// answers ErrStopped.
func (s *Shard) Stop() {
	_ = s.root.StopFuture(s.pid).Wait()
	s.stop.Do(func() { close(s.stopped) })
}

// Step hands the range's group a message from another replica.
func (s *Shard) Step(m *raftpb.Message) { s.root.Send(s.pid, &stepMsg{m: m}) }

// Tick advances the group's clock by one heartbeat interval (on a quiesced
// replica it only runs the checks that do not need the clock).
func (s *Shard) Tick() { s.root.Send(s.pid, tickMsg{}) }

// Quiesced reports whether the replica's clock is stopped.
func (s *Shard) Quiesced() bool { return s.quiesced.Load() }

// Wake starts a quiesced replica's clock again.
func (s *Shard) Wake() { s.root.Send(s.pid, wakeMsg{}) }

// Unreachable tells the group that a message to replica to was dropped.
func (s *Shard) Unreachable(to uint64) { s.root.Send(s.pid, unreachableMsg{to: to}) }

// Aborted tells the shard that the oracle aborted these transactions: their
// intents are dropped, now or when they commit here.
func (s *Shard) Aborted(txns []uint64) { s.root.Send(s.pid, &abortedMsg{txns: txns}) }

// Leader reports whether this replica leads the range and serves latches.
func (s *Shard) Leader() bool { return s.leading.Load() }

// Lead is the Raft id (member id) of the range's leader, 0 if none known.
func (s *Shard) Lead() uint64 { return s.lead.Load() }

// TransferLeader asks the range's leader to hand the lead to replica to.
func (s *Shard) TransferLeader(to uint64) { s.root.Send(s.pid, transferMsg{to: to}) }

// ConfChange changes the range group's replicas and returns once the change
// is applied here (on the leader).
func (s *Shard) ConfChange(ctx context.Context, cc *raftpb.ConfChangeV2) error {
	reply := make(chan error, 1)
	s.root.Send(s.pid, &confChangeMsg{cc: cc, reply: reply})
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Progress is, on the leader, each replica's matched log index, and the
// leader's last index.
func (s *Shard) Progress(ctx context.Context) (map[uint64]uint64, uint64, error) {
	reply := make(chan progressReply, 1)
	s.root.Send(s.pid, &progressMsg{reply: reply})
	select {
	case r := <-reply:
		return r.match, r.last, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

// Voters are the group's voting replicas (as of the last message handled).
func (s *Shard) Voters() []uint64 {
	if v := s.voters.Load(); v != nil {
		return *v
	}
	return nil
}

// Learners are the group's learners (as of the last message handled).
func (s *Shard) Learners() []uint64 {
	m, v := s.members.Load(), s.voters.Load()
	if m == nil || v == nil {
		return nil
	}
	var out []uint64
	for _, id := range *m {
		if !slices.Contains(*v, id) {
			out = append(out, id)
		}
	}
	return out
}

// InGroup reports whether member id is a voter or a learner of the group
// (as of the last message handled).
func (s *Shard) InGroup(id uint64) bool {
	if m := s.members.Load(); m != nil {
		return slices.Contains(*m, id)
	}
	return false
}

type latchMsg struct {
	req   *LatchRequest
	reply chan latchReply
	set   *latchSet
	keys  map[string]bool // with Revoke: the lease keys latched
}

type leaseKeysMsg struct {
	id    int64
	reply chan [][]byte
}

type latchReply struct {
	res *LatchResult
	err error
}

type proposeMsg struct {
	txn       uint64
	ops       []*raftcmdpb.Op
	spec      bool
	committed chan error
	applied   chan Applied
}

type releaseMsg struct{ txn uint64 }
type compactLogMsg struct{ index uint64 }
type decidedMsg struct{ ds []revision.Decided }
type persistedMsg struct{ err error }
type freezeMsg struct{ reply chan struct{} }
type unfreezeMsg struct{ desc *raftcmdpb.RangeDesc }
type resolvedMsg struct {
	fates map[uint64]int64 // 0 = aborted; absent = unknown (left pending)
	err   error
	// epoch: the leadership this resolution was made for (0: restart).
	epoch uint64
}
type stepMsg struct{ m *raftpb.Message }
type tickMsg struct{}
type wakeMsg struct{}
type unreachableMsg struct{ to uint64 }
type abortedMsg struct{ txns []uint64 }
type leadRetryMsg struct{ epoch uint64 }
type transferMsg struct{ to uint64 }
type confChangeMsg struct {
	cc    *raftpb.ConfChangeV2
	reply chan error
}
type progressMsg struct{ reply chan progressReply }
type progressReply struct {
	match map[uint64]uint64
	last  uint64
}
type sweptMsg struct{}

// intent is an intent committed in the log, waiting for its decision.
type intent struct {
	txn     uint64
	ops     []*raftcmdpb.Op
	index   uint64 // Raft entry holding it
	applied chan Applied
	since   time.Time // when it committed here
}

// shardActor owns one replica's Raft group, latches and intents.
type shardActor struct {
	cfg    Config
	handle *Shard
	self   *actor.PID
	lg     *zap.Logger

	desc  *raftcmdpb.RangeDesc
	group *actors.RaftGroup

	latches  latches
	grantsTo map[uint64]*latchMsg // latch requests waiting for their grant

	// leaseIndex maps a lease to the keys of this shard attached to it, as
	// of the applied revision.
	leaseIndex map[int64]map[string]struct{}

	proposals []*proposeMsg          // not yet in a log entry
	waiting   map[uint64]*proposeMsg // proposed, not yet committed
	intents   map[uint64]*intent     // committed, not yet applied
	perEntry  map[uint64]int         // unresolved intents per Raft index

	// decided holds decisions not yet applied, in revision order; the head
	// waits while its intent is still on its way into the log.
	decided []revision.Decided

	appliedRev int64
	startLast  uint64
	recovering bool
	resolving  bool // recovery has asked the oracle
	frozen     []chan struct{}
	isFrozen   bool
	stash      []any

	// cluster: the group has several voters. leader: this replica leads
	// it; leading: and has resolved every intent its predecessors left, so
	// it grants latches. epoch counts leaderships, to ignore late answers.
	cluster       bool
	leader        bool
	leading       bool
	leadFrom      uint64 // first index of this leadership
	leadResolving bool
	epoch         uint64
	lastTransfer  time.Time
	// aborted remembers aborts whose intents have not committed here yet.
	aborted     map[uint64]time.Time
	sweeping    bool
	lastSwept   time.Time
	pendingLead bool      // leading once the resolved intents have applied
	frozenAt    time.Time // when the range began to drain for a split
	// unlogged: decisions (txn -> revision) and aborts (txn -> 0) this
	// replica logged as leader whose log entry has not applied here yet; a
	// later leadership of this replica logs them again (finishLeadResolve).
	unlogged map[uint64]int64

	votersAt uint64 // the group's ConfChanges when handle.voters was set
	// toLog holds decisions and aborts the leader puts in the next entry;
	// deferLog the decisions it applied before it leads, logged with those
	// it resolves.
	toLog    *raftcmdpb.ShardCommand
	deferLog []revision.Decided

	quiesced  bool // the clock is stopped (mirrored in handle.quiesced)
	idleTicks int  // consecutive ticks the leader found the range idle

	behind behindWatch
	// lastLearnerChange is when the leader last proposed a learner change;
	// unwanted, since when each learner has not been wanted (learners.go).
	lastLearnerChange time.Time
	unwanted          map[uint64]time.Time
}

func (a *shardActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.self = ctx.Self()
		if err := a.start(); err != nil {
			a.lg.Fatal("shard failed to start", zap.Error(err))
		}
	case *persistedMsg:
		if m.err != nil {
			a.lg.Fatal("shard: raft log write failed", zap.Error(m.err))
		}
		if err := a.group.Persisted(a.applyEntries); err != nil {
			a.lg.Fatal("shard", zap.Error(err))
		}
	case *resolvedMsg:
		if m.epoch != 0 {
			a.finishLeadResolve(m)
		} else {
			a.finishRecovery(m)
		}
	case *stepMsg:
		// A replica drained for a split keeps its lead until the split is
		// done: a successor could take writes into the span that leaves.
		if a.isFrozen && m.m.GetType() == raftpb.MsgTransferLeader {
			break
		}
		// Nor is the lead handed to a replica the table does not list: it
		// is most likely on its way out, its member's table behind.
		if m.m.GetType() == raftpb.MsgTransferLeader && !a.inElections(m.m.GetFrom()) {
			break
		}
		a.onStep(m.m)
	case tickMsg:
		a.onTick()
	case wakeMsg:
		a.wake()
	case transferMsg:
		if !a.isFrozen && a.inElections(m.to) {
			a.wake()
			a.group.TransferLeader(m.to)
		}
	case *progressMsg:
		m.reply <- progressReply{match: a.group.Progress(), last: a.group.LastIndex()}
	case *confChangeMsg:
		a.wake()
		a.group.ChangeConf(m.cc, m.reply)
	case unreachableMsg:
		a.group.ReportUnreachable(m.to)
	case *abortedMsg:
		for _, txn := range m.txns {
			a.onAbortedNotice(txn)
		}
	case *unfreezeMsg:
		// The span changes at once, even while recovering: every entry
		// applied from now on is clipped to it (a split's new range may
		// already hold the keys that left).
		if m.desc != nil {
			a.desc = m.desc
			a.pruneLeaseIndex()
		}
		resume := &unfreezeMsg{}
		if a.recovering {
			a.stash = append(a.stash, resume)
			break
		}
		a.handle1(resume)
	case *leadRetryMsg:
		if m.epoch == a.epoch && a.leader && !a.leading {
			a.leadResolving = false
		}
	case sweptMsg:
		a.sweeping = false
	case *compactLogMsg:
		upTo := min(m.index, a.lowWaterNow())
		if a.cluster {
			// Replicas a little behind catch up from the log, not a snapshot.
			upTo = min(upTo, a.group.Applied()-min(a.group.Applied(), a.cfg.CatchUpEntries))
		}
		if err := a.group.Compact(upTo); err != nil {
			a.lg.Error("shard: raft log compaction failed", zap.Error(err))
		}
	default:
		if a.recovering {
			a.stash = append(a.stash, m)
			return
		}
		a.handle1(m)
	}
	a.flushProposals()
	if a.quiesced && a.group.IsLeader() && a.group.HasReady() {
		a.wake() // the group has work: a proposal, a conf change, a transfer
	}
	a.group.Drive(a.applyEntries)
	lead, leader := a.group.LeadState()
	if a.cluster {
		a.watchLeader(leader)
	}
	a.handle.lead.Store(lead)
	if n := a.group.ConfChanges(); n != a.votersAt || a.handle.voters.Load() == nil {
		a.votersAt = n
		v := a.group.Voters()
		a.handle.voters.Store(&v)
		m := append(a.group.Voters(), a.group.Conf().GetLearners()...)
		a.handle.members.Store(&m)
	}
}

func (a *shardActor) handle1(msg any) {
	switch m := msg.(type) {
	case *latchMsg:
		a.onLatch(m)
	case *leaseKeysMsg:
		m.reply <- a.leaseKeys(m.id)
	case *proposeMsg:
		if a.cluster && !a.latches.holds(m.txn) {
			// Its latches went with a lost leadership: what they admitted
			// may no longer hold.
			m.committed <- ErrNotLeader
			return
		}
		a.proposals = append(a.proposals, m)
	case *releaseMsg:
		a.release(m.txn)
	case *decidedMsg:
		if a.cluster {
			if !a.leader {
				return // a follower applies decisions from its log
			}
			// The leader applies decisions as the oracle makes them, and
			// logs them for the followers in revision order: as they come
			// once it leads, and, until then, with those it resolves.
			if !a.leading {
				// Not applied yet either: the queue must first hold what
				// the predecessors left (finishLeadResolve).
				a.deferLog = append(a.deferLog, m.ds...)
				return
			}
			for _, d := range m.ds {
				if d.Rev > a.appliedRev {
					a.logDecided(d.TxnID, d.Rev)
				}
			}
		}
		a.onDecided(m.ds)
	case *freezeMsg:
		if !a.isFrozen {
			a.frozenAt = time.Now()
		}
		a.isFrozen = true
		a.frozen = append(a.frozen, m.reply)
		a.checkFrozen()
	case *unfreezeMsg:
		if m.desc != nil {
			a.desc = m.desc
			a.pruneLeaseIndex()
		}
		a.isFrozen = false
		stash := a.stash
		a.stash = nil
		for _, s := range stash {
			a.handle1(s)
		}
	}
}

var stateKeyPrefix = []byte("s/")

func stateKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), stateKeyPrefix...), id)
}

// shardState is what a shard persists with every apply: the applied
// revision and the Raft index below which no intent is unresolved.
func encodeState(rev int64, index uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(rev))
	return binary.BigEndian.AppendUint64(b, index)
}

func (a *shardActor) start() error {
	c := a.cfg
	a.lg = c.Logger.With(zap.Uint64("range", c.Desc.Id))
	a.desc = c.Desc
	a.grantsTo = map[uint64]*latchMsg{}
	a.waiting = map[uint64]*proposeMsg{}
	a.intents = map[uint64]*intent{}
	a.perEntry = map[uint64]int{}
	a.unlogged = map[uint64]int64{}
	var index uint64
	a.appliedRev = c.StartRev
	fresh := false
	if c.Cluster {
		if err := a.resumeImport(); err != nil {
			return err
		}
	}
	err := c.Store.View(func(r *mvcc.Reader) error {
		b, err := r.Meta(stateKey(c.Desc.Id))
		if err != nil {
			return err
		}
		if b == nil {
			fresh = true
			return nil
		}
		if len(b) != 16 {
			return fmt.Errorf("shard %d: corrupt state record", c.Desc.Id)
		}
		a.appliedRev = int64(binary.BigEndian.Uint64(b))
		index = binary.BigEndian.Uint64(b[8:])
		clips, err := r.Meta(clipKey(c.Desc.Id))
		if err != nil {
			return err
		}
		return a.handle.loadClips(clips)
	})
	if err != nil {
		return err
	}
	gc := actors.GroupConfig{
		Group: c.Desc.Id, NodeID: c.NodeID, Applied: index, Store: c.Logs, Logger: a.lg,
		Durable: func(err error) { a.handle.root.Send(a.self, &persistedMsg{err: err}) },
		Peers:   c.Peers,
		Send:    a.send,
		Cluster: c.Cluster,
		Join:    c.Join,
	}
	if c.Cluster {
		gc.Snapshot, gc.Restore, gc.Restored = a.makeSnapshot, a.restoreSnapshot, a.snapshotRestored
		gc.SnapshotStart = true
		// A range's heartbeats come every third tick: a node holds many
		// ranges, and every range's lead follows the oracle's anyway.
		gc.HeartbeatTicks = 3
	}
	a.group, err = actors.OpenRaftGroup(gc)
	if err != nil {
		return err
	}
	if fresh {
		// A new range (the store's first, or a split's right side) has
		// applied, through its parent, everything up to StartRev. Record it
		// now: once it serves, decisions above StartRev may be made for it,
		// and after a restart StartRev (read from the oracle) would no longer
		// be its applied revision.
		if err := c.Store.Update(func(w *mvcc.Writer) error {
			return w.SetMeta(stateKey(c.Desc.Id), encodeState(a.appliedRev, a.group.Applied()))
		}); err != nil {
			return err
		}
	}
	if err := a.buildLeaseIndex(); err != nil {
		return err
	}
	a.handle.index.Store(a.group.Applied())
	a.handle.setApplied(a.appliedRev)
	a.startLast = a.group.LastIndex()
	a.recovering = true
	a.aborted = map[uint64]time.Time{}
	a.cluster = c.Cluster
	if a.cluster {
		// Apply what is known committed, then look the intents found up in
		// this node's oracle replica; the group elects its leader by itself.
		a.group.Drive(a.applyEntries)
		a.resolving = true
		a.startRecovery()
		if fresh && c.PreferLeader != nil && c.PreferLeader() {
			// A range just split off on the node that runs the writes
			// leads at once rather than after an election timeout.
			return a.group.Campaign()
		}
		return nil
	}
	return a.group.Campaign()
}

// finishRecovery applies or drops the intents found in the log after a
// restart, by the oracle's word, then starts serving.
func (a *shardActor) finishRecovery(m *resolvedMsg) {
	if m.err != nil {
		a.lg.Fatal("shard: resolving intents after restart failed", zap.Error(m.err))
	}
	var ds []revision.Decided
	for txn, rev := range m.fates {
		if _, ok := a.intents[txn]; !ok {
			continue
		}
		switch {
		case rev == 0:
			a.dropIntent(txn)
		case rev <= a.appliedRev:
			a.dropIntent(txn) // applied before the restart
		default:
			ds = append(ds, revision.Decided{TxnID: txn, Rev: rev})
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].Rev < ds[j].Rev })
	a.onDecided(ds)
	a.persistIndex()
	a.recovering = false
	close(a.handle.ready)
	a.unstash()
}

// unstash handles the messages that waited for recovery.
func (a *shardActor) unstash() {
	stash := a.stash
	a.stash = nil
	for _, s := range stash {
		a.handle1(s)
	}
}

func (a *shardActor) owns(sp Span) bool {
	if !revision.Contains(a.desc, sp.Key) {
		return false
	}
	if len(a.desc.End) == 0 {
		return true
	}
	up := sp.upper()
	return string(up) <= string(a.desc.End)
}

func (a *shardActor) onLatch(m *latchMsg) {
	if a.cluster && !a.leader {
		m.reply <- latchReply{err: ErrNotLeader}
		return
	}
	if a.isFrozen || (a.cluster && !a.leading) {
		a.stash = append(a.stash, m)
		return
	}
	req := m.req
	for _, spans := range [][]Span{req.Reads, req.Writes, req.Deletes} {
		for _, sp := range spans {
			if !a.owns(sp) {
				m.reply <- latchReply{err: ErrRangeMoved}
				return
			}
		}
	}
	ls := &latchSet{txn: req.Txn, reads: req.Reads, writes: req.Writes, leaseReads: req.LeaseReads}
	if req.Revoke != 0 {
		m.keys = map[string]bool{}
		ls.leaseWrites = []int64{req.Revoke}
		for _, k := range a.leaseKeys(req.Revoke) {
			m.keys[string(k)] = true
			ls.reads = append(ls.reads, Span{Key: k})
			ls.writes = append(ls.writes, Span{Key: k})
		}
	}
	m.set = ls
	if !a.latches.acquire(ls) {
		a.grantsTo[req.Txn] = m
		return
	}
	a.evaluate(m)
}

// evaluate answers a granted latch request from the latest applied state.
func (a *shardActor) evaluate(m *latchMsg) {
	req := m.req
	res := &LatchResult{Rev: a.appliedRev}
	if req.Revoke != 0 {
		// Keys attached while this request waited (by writes that held the
		// lease before it queued) must be latched too.
		keys := a.leaseKeys(req.Revoke)
		var extra []Span
		for _, k := range keys {
			if !m.keys[string(k)] {
				extra = append(extra, Span{Key: k})
			}
		}
		if len(extra) > 0 && !a.latches.extend(m.set, extra, extra) {
			a.release(req.Txn)
			a.onLatch(&latchMsg{req: req, reply: m.reply}) // queue again with the new keys
			return
		}
		res.LeaseKeys = keys
	}
	if len(req.Compares) == 0 && len(req.Exists) == 0 && len(req.Deletes) == 0 {
		m.reply <- latchReply{res: res} // a blind write: nothing to read
		return
	}
	err := a.cfg.Store.View(func(r *mvcc.Reader) error {
		for _, c := range req.Compares {
			rr, err := r.Range(c.Key, c.RangeEnd, math.MaxInt64, mvcc.ReadOptions{})
			if err != nil {
				return err
			}
			res.Compares = append(res.Compares, kvrules.EvalCompare(c, rr.KVs))
		}
		for _, k := range req.Exists {
			kv, err := r.Get(k, math.MaxInt64)
			if err != nil {
				return err
			}
			res.Exists = append(res.Exists, kv != nil)
		}
		for _, sp := range req.Deletes {
			rr, err := r.Range(sp.Key, sp.End, math.MaxInt64, mvcc.ReadOptions{Limit: 1, CountOnly: true})
			if err != nil {
				return err
			}
			res.Deletes = append(res.Deletes, rr.Count > 0)
		}
		return nil
	})
	if err != nil {
		a.release(req.Txn)
		m.reply <- latchReply{err: err}
		return
	}
	m.reply <- latchReply{res: res}
}

// release drops a transaction's latches and its proposal not yet in the
// log, and evaluates the requests that were waiting for them. An intent in
// the log stays until its decision applies or the oracle says it aborted
// (onAborted): only the oracle knows whether it will be decided.
func (a *shardActor) release(txn uint64) {
	if m, ok := a.grantsTo[txn]; ok {
		delete(a.grantsTo, txn)
		m.reply <- latchReply{err: context.Canceled}
	}
	a.dropProposal(txn)
	for _, ls := range a.latches.release(txn) {
		if m, ok := a.grantsTo[ls.txn]; ok {
			delete(a.grantsTo, ls.txn)
			a.evaluate(m)
		}
	}
	a.checkFrozen()
}

// preemptLatches drops the held latches of transactions that have put
// nothing in this range's log, so that a range draining for a split is not
// held up by transactions stuck on other ranges (one whose leader was
// lost, say). A dropped transaction's proposal here fails as after a lost
// lead, and its router runs it again.
func (a *shardActor) preemptLatches() {
	var txns []uint64
	for _, ls := range a.latches.held {
		if _, ok := a.intents[ls.txn]; !ok && !a.inFlight(ls.txn) {
			txns = append(txns, ls.txn)
		}
	}
	for _, txn := range txns {
		a.release(txn)
	}
}

func (a *shardActor) dropIntent(txn uint64) {
	if in, ok := a.intents[txn]; ok {
		delete(a.intents, txn)
		a.resolved(in.index)
	}
	a.dropProposal(txn)
}

// dropProposal forgets a proposal not yet put into a log entry.
func (a *shardActor) dropProposal(txn uint64) {
	for i, p := range a.proposals {
		if p.txn == txn {
			a.proposals = append(a.proposals[:i], a.proposals[i+1:]...)
			break
		}
	}
}

func (a *shardActor) resolved(index uint64) {
	if a.perEntry[index]--; a.perEntry[index] <= 0 {
		delete(a.perEntry, index)
	}
}

func (a *shardActor) checkFrozen() {
	if !a.isFrozen || len(a.frozen) == 0 || !a.latches.idle() || len(a.intents) > 0 || len(a.waiting) > 0 || len(a.proposals) > 0 {
		return
	}
	for _, ch := range a.frozen {
		close(ch)
	}
	a.frozen = nil
}

// flushProposals puts every queued intent into one log entry, while no
// Ready is being made durable (so one fsync carries many intents).
func (a *shardActor) flushProposals() {
	if (len(a.proposals) == 0 && a.toLog == nil) || a.group.Busy() {
		return
	}
	cmd := &raftcmdpb.ShardCommand{}
	if a.toLog != nil {
		cmd.Decided, cmd.Aborted = a.toLog.Decided, a.toLog.Aborted
		a.toLog = nil
	}
	for _, p := range a.proposals {
		cmd.Intents = append(cmd.Intents, &raftcmdpb.Intent{TxnId: p.txn, Ops: p.ops})
	}
	data, err := proto.Marshal(cmd)
	if err == nil {
		err = a.group.Propose(data)
	}
	if err != nil && a.leader && (len(cmd.Decided) > 0 || len(cmd.Aborted) > 0) {
		// Raft drops proposals while the lead is being handed over. The
		// decisions go into the next entry, still before any later one: a
		// follower applies a range's decisions in the order of its log, so
		// one missing there while a later one is logged would be skipped
		// for good.
		back := &raftcmdpb.ShardCommand{Decided: cmd.Decided, Aborted: cmd.Aborted}
		if a.toLog != nil {
			back.Decided = append(back.Decided, a.toLog.Decided...)
			back.Aborted = append(back.Aborted, a.toLog.Aborted...)
		}
		a.toLog = back
	}
	var provides []uint64
	for _, p := range a.proposals {
		if err != nil {
			if p.spec {
				a.cfg.Logs.Abandon(p.txn)
			}
			p.committed <- err
			continue
		}
		if p.spec {
			provides = append(provides, p.txn)
		}
		a.waiting[p.txn] = p
	}
	if len(provides) > 0 {
		a.group.Tag(provides, nil)
	}
	a.proposals = a.proposals[:0]
}

// applyEntries makes committed intents pending; they wait for decisions.
func (a *shardActor) applyEntries(ents []*raftpb.Entry) {
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		cmd := &raftcmdpb.ShardCommand{}
		if err := proto.Unmarshal(e.GetData(), cmd); err != nil {
			a.lg.Fatal("shard: undecodable log entry", zap.Uint64("index", e.GetIndex()), zap.Error(err))
		}
		for _, in := range cmd.Intents {
			p := a.waiting[in.TxnId]
			delete(a.waiting, in.TxnId)
			if _, ok := a.aborted[in.TxnId]; ok {
				delete(a.aborted, in.TxnId)
				if a.cluster && a.leader {
					a.logAborted(in.TxnId) // the followers hold it: tell them
				}
				if p != nil && p.committed != nil {
					p.committed <- revision.ErrAborted
				}
				continue
			}
			it := &intent{txn: in.TxnId, ops: in.Ops, index: e.GetIndex(), since: time.Now()}
			if p != nil {
				it.applied = p.applied
			}
			a.intents[in.TxnId] = it
			a.perEntry[e.GetIndex()]++
			if p != nil && p.committed != nil {
				p.committed <- nil
			}
		}
		if a.cluster {
			for _, d := range cmd.Decided {
				delete(a.unlogged, d.TxnId)
				a.queueDecided(revision.Decided{TxnID: d.TxnId, Rev: d.Revision})
			}
			for _, txn := range cmd.Aborted {
				delete(a.unlogged, txn)
				a.dropAborted(txn)
			}
		}
	}
	if n := len(ents); n > 0 {
		last := ents[n-1].GetIndex()
		if a.recovering && !a.resolving && last > a.startLast {
			a.resolving = true
			a.startRecovery()
		}
	}
	if !a.recovering {
		a.applyReady()
	}
}

// startRecovery asks the oracle about every intent found in the log.
func (a *shardActor) startRecovery() {
	txns := make([]uint64, 0, len(a.intents))
	for t := range a.intents {
		txns = append(txns, t)
	}
	oracle, self, root := a.cfg.Oracle, a.self, a.handle.root
	if a.cluster {
		// The log holds the fate of every intent it holds, or will: the
		// leader puts decisions and aborts in it (and a new leader resolves
		// what its predecessor left). Nothing to ask.
		go root.Send(self, &resolvedMsg{fates: map[uint64]int64{}})
		return
	}
	go func() {
		fates := map[uint64]int64{}
		for _, t := range txns {
			rev, err := oracle.Resolve(context.Background(), t)
			if errors.Is(err, revision.ErrAborted) {
				rev, err = 0, nil
			}
			if err != nil {
				root.Send(self, &resolvedMsg{err: err})
				return
			}
			fates[t] = rev
		}
		root.Send(self, &resolvedMsg{fates: fates})
	}()
}

// onDecided queues decisions (they arrive in revision order) and applies
// what it can.
func (a *shardActor) onDecided(ds []revision.Decided) {
	for _, d := range ds {
		if d.Rev > a.appliedRev && !a.isQueued(d.TxnID) {
			a.decided = append(a.decided, d)
		}
	}
	if !slices.IsSortedFunc(a.decided, byRev) {
		slices.SortStableFunc(a.decided, byRev)
	}
	a.applyReady()
}

// isQueued reports whether a decision for txn is queued (a follower gets
// each decision from the oracle and from its range's log).
func (a *shardActor) isQueued(txn uint64) bool {
	for _, q := range a.decided {
		if q.TxnID == txn {
			return true
		}
	}
	return false
}

func byRev(x, y revision.Decided) int { return cmp.Compare(x.Rev, y.Rev) }

// applyReady applies the longest prefix of the queued decisions whose
// intents are committed here. A decision for a transaction this shard
// knows nothing of is dropped with an error: it cannot block the others.
//
// In a cluster a decision that says which revision the range had before it
// (revision.Decided.Prev, from the oracle) waits until the replica has
// applied that one: the earlier decision may not have reached it yet (the
// oracle here hands over only what it applies, and a replica behind it
// gets older decisions from its range's log), and applying past it would
// skip it for good.
func (a *shardActor) applyReady() {
	if batch := a.takeReady(); len(batch) > 0 {
		a.applyDecided(batch)
	}
	if a.pendingLead && len(a.intents) == 0 {
		a.startLeading()
	}
}

// takeReady takes off the queue, and returns in order, the decisions that
// may apply now (see applyReady).
func (a *shardActor) takeReady() []revision.Decided {
	var batch []revision.Decided
	applied := a.appliedRev
	for len(a.decided) > 0 {
		d := a.decided[0]
		if d.Rev <= applied {
			a.decided = a.decided[1:] // applied already (a snapshot may bring it)
			continue
		}
		if prev, ok := d.PrevFor(a.desc.Id); ok && a.cluster && prev > applied {
			break
		}
		if _, ok := a.intents[d.TxnID]; ok {
			batch = append(batch, d)
			a.decided = a.decided[1:]
			applied = max(applied, d.Rev)
			continue
		}
		if a.inFlight(d.TxnID) || a.cluster {
			// In a cluster, a decided intent is committed but may not have
			// reached this replica's log yet.
			break
		}
		a.lg.Error("shard: decision for an unknown intent", zap.Uint64("txn", d.TxnID), zap.Int64("rev", d.Rev))
		a.decided = a.decided[1:]
	}
	if len(a.decided) == 0 {
		a.decided = nil
	}
	return batch
}

// inFlight reports whether txn's intent is proposed but not yet committed.
func (a *shardActor) inFlight(txn uint64) bool {
	if _, ok := a.waiting[txn]; ok {
		return true
	}
	for _, p := range a.proposals {
		if p.txn == txn {
			return true
		}
	}
	return false
}

// applyDecided applies decided intents, in the given (revision) order, in
// one MVCC transaction together with the new applied state.
//
// One MVCC transaction holds a bounded amount of work (badger refuses
// bigger ones): decisions are grouped up to applyBatchBytes of ops, and a
// DeleteRange over more than bigDeleteKeys live keys first tombstones its
// keys in chunks of transactions of their own, at the intent's revision,
// before the transaction that finishes the intent and records the applied
// revision. A crash part way is harmless: the intent is applied again
// after the restart and a tombstoned key is no longer live, so the delete
// continues where it stopped.
func (a *shardActor) applyDecided(ds []revision.Decided) {
	for len(ds) > 0 {
		n, size := 0, 0
		for n < len(ds) {
			in := a.intents[ds[n].TxnID]
			s, big := opsSize(in.ops), a.hasBigDelete(in)
			if n > 0 && (size+s > applyBatchBytes || big) {
				break
			}
			size += s
			n++
			if big {
				break
			}
		}
		pre := map[int32][]*mvccpb.KeyValue{}
		if n == 1 {
			pre = a.preDelete(ds[0].Rev, a.intents[ds[0].TxnID])
		}
		a.applyBatch(ds[:n], pre)
		ds = ds[n:]
	}
}

// applyBatchBytes bounds the ops applied in one MVCC transaction.
const applyBatchBytes = 2 << 20

// bigDeleteKeys: a DeleteRange over more live keys than this is applied in
// chunks (each tombstone costs ~100 bytes of a transaction).
const bigDeleteKeys = 20000

func opsSize(ops []*raftcmdpb.Op) int {
	n := 0
	for _, op := range ops {
		n += proto.Size(op)
	}
	return n
}

// hasBigDelete reports whether an intent deletes more than bigDeleteKeys
// live keys in one op, or has more than bigDeleteKeys delete ops (a lease
// revoke deletes each key by its own op).
func (a *shardActor) hasBigDelete(in *intent) bool {
	if len(manyDeletes(in.ops)) > 0 {
		return true
	}
	for _, op := range in.ops {
		if d := op.GetDelete(); d != nil && a.liveCount(d.Key, d.End, bigDeleteKeys+1) > bigDeleteKeys {
			return true
		}
	}
	return false
}

// liveCount counts live keys of a span, up to limit.
func (a *shardActor) liveCount(key, end []byte, limit int64) int64 {
	var n int64
	_ = a.cfg.Store.View(func(r *mvcc.Reader) error {
		res, err := r.Range(key, end, math.MaxInt64, mvcc.ReadOptions{Limit: limit, KeysOnly: true})
		n = int64(len(res.KVs))
		return err
	})
	return n
}

// manyDeletes returns the delete ops of an intent that consists of more
// than bigDeleteKeys of them and no range (so applying some deletes early
// changes nothing another op could see), all but the last bigDeleteKeys.
func manyDeletes(ops []*raftcmdpb.Op) []*raftcmdpb.Op {
	var dels []*raftcmdpb.Op
	for _, op := range ops {
		switch {
		case op.GetDelete() != nil:
			dels = append(dels, op)
		case op.GetRange() != nil:
			return nil
		}
	}
	if len(dels) <= bigDeleteKeys {
		return nil
	}
	return dels[:len(dels)-bigDeleteKeys]
}

// preDelete tombstones, at rev, in transactions of bigDeleteKeys keys: all
// but the last bigDeleteKeys live keys of each big DeleteRange of the
// intent, and all but the last bigDeleteKeys of its many single deletes.
// It returns their previous values by op.
func (a *shardActor) preDelete(rev int64, in *intent) map[int32][]*mvccpb.KeyValue {
	pre := map[int32][]*mvccpb.KeyValue{}
	early := manyDeletes(in.ops)
	for len(early) > 0 {
		chunk := early[:min(len(early), bigDeleteKeys)]
		early = early[len(chunk):]
		var gone []*mvccpb.KeyValue
		err := a.cfg.Store.Update(func(w *mvcc.Writer) error {
			gone = gone[:0]
			for _, op := range chunk {
				key, end, ok := a.ownedSpan(op.GetDelete())
				if !ok {
					continue
				}
				deleted, err := w.DeleteRange(rev, op.Sub, key, end)
				if err != nil {
					return err
				}
				pre[op.Sub] = append(pre[op.Sub], deleted...)
				gone = append(gone, deleted...)
			}
			return nil
		})
		if err != nil {
			a.lg.Fatal("shard: applying a large delete failed", zap.Error(err))
		}
		for _, kv := range gone {
			a.detachLease(kv.Lease, kv.Key)
		}
	}
	for _, op := range in.ops {
		if op.GetDelete() == nil {
			continue
		}
		dk, de, ok := a.ownedSpan(op.GetDelete())
		if !ok {
			continue
		}
		for a.liveCount(dk, de, bigDeleteKeys+1) > bigDeleteKeys {
			var chunk []*mvccpb.KeyValue
			err := a.cfg.Store.View(func(r *mvcc.Reader) error {
				res, err := r.Range(dk, de, math.MaxInt64, mvcc.ReadOptions{Limit: bigDeleteKeys, KeysOnly: true})
				chunk = res.KVs
				return err
			})
			if err == nil {
				// One span per chunk: [first, last+"\x00") holds exactly the
				// chunk's live keys (one iterator, not one per key).
				last := append(append([]byte(nil), chunk[len(chunk)-1].Key...), 0)
				err = a.cfg.Store.Update(func(w *mvcc.Writer) error {
					deleted, err := w.DeleteRange(rev, op.Sub, chunk[0].Key, last)
					pre[op.Sub] = append(pre[op.Sub], deleted...)
					return err
				})
			}
			if err != nil {
				a.lg.Fatal("shard: applying a large delete failed", zap.Error(err))
			}
			for _, kv := range chunk {
				a.detachLease(kv.Lease, kv.Key)
			}
		}
	}
	return pre
}

// applyBatch applies decided intents, in revision order, in one MVCC
// transaction together with the new applied state. pre holds the keys a
// preDelete already removed for the first intent's ops, by sub.
func (a *shardActor) applyBatch(ds []revision.Decided, pre map[int32][]*mvccpb.KeyValue) {
	type done struct {
		in  *intent
		out Applied
	}
	var dones []done
	err := a.cfg.Store.Update(func(w *mvcc.Writer) error {
		dones = dones[:0]
		rev := a.appliedRev
		for _, d := range ds {
			in := a.intents[d.TxnID]
			if d.Rev <= rev {
				return fmt.Errorf("shard %d: decision rev %d not after applied rev %d", a.desc.Id, d.Rev, rev)
			}
			res, err := a.applyOps(w, d.Rev, in.ops)
			if err != nil {
				return err
			}
			for i := range res {
				if p := pre[res[i].Sub]; len(p) > 0 && len(dones) == 0 {
					res[i].Deleted = append(p, res[i].Deleted...)
				}
			}
			rev = d.Rev
			dones = append(dones, done{in: in, out: Applied{Rev: d.Rev, Results: res}})
		}
		if len(dones) == 0 {
			return nil
		}
		resolving := make([]*intent, len(dones))
		for i, d := range dones {
			resolving[i] = d.in
		}
		return w.SetMeta(stateKey(a.desc.Id), encodeState(rev, a.lowWaterAfter(resolving)))
	})
	if err != nil {
		a.lg.Fatal("shard: applying decided intents failed", zap.Error(err))
	}
	if len(dones) == 0 {
		return
	}
	for _, d := range dones {
		delete(a.intents, d.in.txn)
		a.resolved(d.in.index)
	}
	a.appliedRev = dones[len(dones)-1].out.Rev
	a.handle.index.Store(a.lowWaterNow())
	a.handle.setApplied(a.appliedRev)
	// Before the writers are answered, as etcd notifies its watchers in
	// the write's apply: the watch service may hand the events out here.
	if a.cfg.OnApplied != nil {
		a.cfg.OnApplied()
	}
	for _, d := range dones {
		if d.in.applied != nil {
			d.in.applied <- d.out
		}
		a.release(d.in.txn)
	}
}

// onAbortedNotice handles the oracle's word that txn aborted: the leader
// drops its intent and logs the abort for the followers, which act on
// their log alone (single node: the intent is dropped).
func (a *shardActor) onAbortedNotice(txn uint64) {
	if a.cluster && !a.leader {
		return
	}
	_, pending := a.intents[txn]
	_, proposed := a.waiting[txn]
	if a.cluster && (pending || proposed) {
		a.logAborted(txn)
	}
	a.onAborted(txn)
}

// logDecided and logAborted queue a decision or an abort for the log.
func (a *shardActor) logDecided(txn uint64, rev int64) {
	a.unlogged[txn] = rev
	if a.toLog == nil {
		a.toLog = &raftcmdpb.ShardCommand{}
	}
	a.toLog.Decided = append(a.toLog.Decided, &raftcmdpb.Decided{TxnId: txn, Revision: rev})
}

func (a *shardActor) logAborted(txn uint64) {
	a.unlogged[txn] = 0
	if a.toLog == nil {
		a.toLog = &raftcmdpb.ShardCommand{}
	}
	a.toLog.Aborted = append(a.toLog.Aborted, txn)
}

// onAborted drops an aborted transaction's intent, or remembers the abort
// until the intent commits here.
func (a *shardActor) onAborted(txn uint64) {
	if _, ok := a.intents[txn]; ok {
		a.dropAborted(txn)
		return
	}
	if _, ok := a.waiting[txn]; ok || a.cluster {
		a.aborted[txn] = time.Now()
	}
}

// abortMemory is how long an abort is remembered for an intent that has
// not committed here.
const abortMemory = 5 * time.Minute

// staleIntent: an intent undecided for this long is resolved by the leader
// (its router most likely failed between intent and decision).
const staleIntent = 10 * time.Second

// drainingStaleIntent is staleIntent while the range drains for a split.
const drainingStaleIntent = time.Second

func (a *shardActor) onTick() {
	a.syncLearners(time.Now())
	a.checkBehind(time.Now())
	a.checkFollowers(time.Now())
	if a.quiesced && a.group.IsLeader() && !a.idle() {
		// A replica is behind and live (say it came back and its wake was
		// missed): catch it up.
		a.wake()
	}
	if !a.quiesced {
		a.idleTick()
	}
	if !a.quiesced {
		a.group.Tick()
	}
	now := time.Now()
	for txn, at := range a.aborted {
		if now.Sub(at) > abortMemory {
			delete(a.aborted, txn)
		}
	}
	if a.cluster && !a.leader && a.cfg.PreferLeader != nil && a.cfg.PreferLeader() &&
		a.group.Lead() != 0 && now.Sub(a.lastTransfer) > time.Second {
		// Writes run on the oracle's leader: bring the range's lead there.
		a.lastTransfer = now
		a.wake()
		a.group.TransferLeader(a.cfg.NodeID)
	}
	if (!a.cluster || a.leading) && !a.sweeping && now.Sub(a.lastSwept) > time.Second {
		a.sweep(now)
	}
	// (A single node's proposals do not check their latches, and nothing
	// there is stuck on another member.)
	if a.cluster && a.isFrozen && len(a.frozen) > 0 && now.Sub(a.frozenAt) > drainingStaleIntent {
		a.preemptLatches()
	}
}

// sweep asks the oracle to resolve intents left undecided too long: the
// oracle decides or aborts each, and the outcome reaches every replica.
func (a *shardActor) sweep(now time.Time) {
	a.lastSwept = now
	stale := staleIntent
	if a.isFrozen {
		// A split waits for the range to drain: an intent whose
		// coordinator died would hold it up for staleIntent.
		stale = drainingStaleIntent
	}
	var txns []uint64
	for txn, in := range a.intents {
		if now.Sub(in.since) > stale {
			txns = append(txns, txn)
		}
	}
	if len(txns) == 0 {
		return
	}
	a.sweeping = true
	oracle, self, root := a.cfg.Oracle, a.self, a.handle.root
	go func() {
		for _, t := range txns {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = oracle.Resolve(ctx, t)
			cancel()
		}
		root.Send(self, sweptMsg{})
	}()
}

// watchLeader follows the group's leadership. A new leader first applies
// everything its predecessors committed, then has the oracle resolve every
// intent still pending (aborting those undecided), and only then grants
// latches: a latch must never admit a request whose evaluation an intent
// of a former leader could still change. A replica that loses the lead
// drops its latches, so that nothing they admitted is proposed later.
func (a *shardActor) watchLeader(leader bool) {
	switch {
	case leader && !a.leader:
		a.leader, a.leading, a.pendingLead = true, false, false
		a.epoch++
		a.leadFrom = a.group.LastIndex()
		a.leadResolving = false
	case !leader && a.leader:
		a.leader, a.leading, a.pendingLead = false, false, false
		a.handle.leading.Store(false)
		a.epoch++
		a.stepDown()
	}
	if a.leader && !a.leading && !a.leadResolving && !a.recovering && a.group.Applied() >= a.leadFrom {
		a.leadResolving = true
		a.resolveForLead()
	}
}

// stepDown fails what only a leader can finish.
func (a *shardActor) stepDown() {
	for txn, m := range a.grantsTo {
		delete(a.grantsTo, txn)
		m.reply <- latchReply{err: ErrNotLeader}
	}
	a.latches = latches{}
	keep := a.stash[:0]
	for _, s := range a.stash {
		if m, ok := s.(*latchMsg); ok {
			m.reply <- latchReply{err: ErrNotLeader}
			continue
		}
		keep = append(keep, s)
	}
	a.stash = keep
	for _, p := range a.proposals {
		p.committed <- ErrNotLeader
	}
	a.proposals = a.proposals[:0]
	a.group.FailConfChanges(ErrNotLeader)
	a.toLog, a.deferLog = nil, nil
	for _, p := range a.waiting {
		if p.committed != nil {
			p.committed <- ErrLeaderChanged
			p.committed = nil
		}
	}
}

// resolveForLead asks the oracle for the fate of every pending intent.
func (a *shardActor) resolveForLead() {
	txns := make([]uint64, 0, len(a.intents))
	for t := range a.intents {
		txns = append(txns, t)
	}
	oracle, self, root, epoch := a.cfg.Oracle, a.self, a.handle.root, a.epoch
	go func() {
		fates := map[uint64]int64{}
		for _, t := range txns {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rev, err := oracle.Resolve(ctx, t)
			cancel()
			if errors.Is(err, revision.ErrAborted) {
				rev, err = 0, nil
			}
			if err != nil {
				root.Send(self, &resolvedMsg{err: err, epoch: epoch})
				return
			}
			fates[t] = rev
		}
		root.Send(self, &resolvedMsg{fates: fates, epoch: epoch})
	}()
}

// finishLeadResolve starts serving latches once every intent left by
// earlier leaders is decided or aborted.
func (a *shardActor) finishLeadResolve(m *resolvedMsg) {
	if m.epoch != a.epoch || !a.leader {
		return
	}
	if m.err != nil {
		// Most likely the oracle has no leader on this node yet: try again.
		epoch, self, root := a.epoch, a.self, a.handle.root
		time.AfterFunc(200*time.Millisecond, func() { root.Send(self, &leadRetryMsg{epoch: epoch}) })
		return
	}
	// toApply: decided, not applied here; toLog: also those applied here
	// (before a restart) that the log may lack. Keyed by txn: the oracle's
	// word may come both ways.
	toApply := map[uint64]int64{}
	toLog := map[uint64]int64{}
	for _, d := range a.deferLog {
		if d.Rev > a.appliedRev {
			toApply[d.TxnID], toLog[d.TxnID] = d.Rev, d.Rev
		}
	}
	a.deferLog = nil
	// Decisions and aborts this replica logged as an earlier leader whose
	// entry never applied here: the entry may have been lost with that lead.
	// The followers would then keep those intents: a decided one never
	// applied while they apply later revisions (and serve reads) past it,
	// an aborted one holding back their log's truncation.
	for txn, rev := range a.unlogged {
		if rev == 0 {
			a.logAborted(txn)
			continue
		}
		toLog[txn] = rev
	}
	for txn, rev := range m.fates {
		if _, ok := a.intents[txn]; !ok {
			continue
		}
		switch {
		case rev == 0:
			a.logAborted(txn)
			a.onAborted(txn)
		case rev <= a.appliedRev:
			toLog[txn] = rev
			a.dropIntent(txn)
		default:
			toApply[txn], toLog[txn] = rev, rev
		}
	}
	// Everything decided that this leadership has not logged yet goes in
	// one batch, in revision order: a follower applies decisions in the
	// order of its log and must never see a later one first.
	for _, d := range sortedDecided(toLog) {
		a.logDecided(d.TxnID, d.Rev)
	}
	a.mergeDecided(sortedDecided(toApply))
	if len(a.intents) > 0 {
		// Decided intents must apply before latches are granted.
		a.pendingLead = true
		return
	}
	a.startLeading()
}

// sortedDecided lists txn -> rev in revision order.
func sortedDecided(m map[uint64]int64) []revision.Decided {
	out := make([]revision.Decided, 0, len(m))
	for txn, rev := range m {
		out = append(out, revision.Decided{TxnID: txn, Rev: rev})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rev < out[j].Rev })
	return out
}

// queueDecided adds a decision from the log to the queue, unless applied
// or queued already. Decisions come in revision order from the log.
func (a *shardActor) queueDecided(d revision.Decided) {
	if d.Rev <= a.appliedRev {
		return
	}
	for _, q := range a.decided {
		if q.TxnID == d.TxnID {
			return
		}
	}
	a.decided = append(a.decided, d)
	sort.SliceStable(a.decided, func(i, j int) bool { return a.decided[i].Rev < a.decided[j].Rev })
}

// dropAborted drops an aborted transaction's intent, if held.
func (a *shardActor) dropAborted(txn uint64) {
	if in, ok := a.intents[txn]; ok {
		delete(a.intents, txn)
		a.resolved(in.index)
		if in.applied != nil {
			in.applied <- Applied{Err: revision.ErrAborted}
		}
		a.checkFrozen()
	}
}

// mergeDecided adds decisions to the queue unless already there, keeping
// it in revision order, and applies what it can.
func (a *shardActor) mergeDecided(ds []revision.Decided) {
	have := map[uint64]bool{}
	for _, d := range a.decided {
		have[d.TxnID] = true
	}
	for _, d := range ds {
		if !have[d.TxnID] && d.Rev > a.appliedRev {
			a.decided = append(a.decided, d)
		}
	}
	sort.SliceStable(a.decided, func(i, j int) bool { return a.decided[i].Rev < a.decided[j].Rev })
	a.applyReady()
}

func (a *shardActor) startLeading() {
	a.pendingLead = false
	a.leading = true
	a.handle.leading.Store(true)
	a.unstash()
}

// lowWaterAfter is the Raft index below which no intent stays unresolved
// once the given intents are resolved.
func (a *shardActor) lowWaterAfter(resolving []*intent) uint64 {
	skip := map[uint64]int{}
	for _, in := range resolving {
		skip[in.index]++
	}
	low := a.group.Applied()
	for idx, n := range a.perEntry {
		if n > skip[idx] && idx-1 < low {
			low = idx - 1
		}
	}
	return low
}

func (a *shardActor) lowWaterNow() uint64 { return a.lowWaterAfter(nil) }

// persistIndex records the applied state after recovery dropped intents.
func (a *shardActor) persistIndex() {
	err := a.cfg.Store.Update(func(w *mvcc.Writer) error {
		return w.SetMeta(stateKey(a.desc.Id), encodeState(a.appliedRev, a.lowWaterNow()))
	})
	if err != nil {
		a.lg.Fatal("shard: persisting state failed", zap.Error(err))
	}
	a.handle.index.Store(a.lowWaterNow())
}

// applyOps applies one intent's ops at rev, in op order, and keeps the
// lease index in step (a failed apply stops the process, so the index
// never runs ahead of the store).
func (a *shardActor) applyOps(w *mvcc.Writer, rev int64, ops []*raftcmdpb.Op) ([]OpResult, error) {
	out := make([]OpResult, 0, len(ops))
	for _, op := range ops {
		r := OpResult{Sub: op.Sub}
		switch o := op.Op.(type) {
		case *raftcmdpb.Op_Put:
			p := o.Put
			if a.cluster && !a.ownsKey(p.Key) {
				if err := a.recordClip(w, opSpan(p.Key, nil)); err != nil {
					return nil, err
				}
				break // the key moved to another range (see clipToRange)
			}
			prev, err := w.Put(rev, op.Sub, mvcc.Put{Key: p.Key, Value: p.Value, Lease: p.Lease, IgnoreValue: p.IgnoreValue, IgnoreLease: p.IgnoreLease})
			if err != nil {
				return nil, err
			}
			if p.PrevKv {
				r.Prev = prev
			}
			lease := p.Lease
			if prev != nil {
				a.detachLease(prev.Lease, p.Key)
				if p.IgnoreLease {
					lease = prev.Lease
				}
			}
			a.attachLease(lease, p.Key)
		case *raftcmdpb.Op_Delete:
			d := o.Delete
			key, end := d.Key, d.End
			if a.cluster {
				var ok bool
				if err := a.clipOutsideOwn(w, opSpan(d.Key, d.End)); err != nil {
					return nil, err
				}
				if key, end, ok = a.ownedSpan(d); !ok {
					break
				}
			}
			deleted, err := w.DeleteRange(rev, op.Sub, key, end)
			if err != nil {
				return nil, err
			}
			r.Deleted = deleted
			for _, kv := range deleted {
				a.detachLease(kv.Lease, kv.Key)
			}
		case *raftcmdpb.Op_Range:
			req := &pb.RangeRequest{}
			if err := proto.Unmarshal(o.Range, req); err != nil {
				return nil, err
			}
			at := rev
			if req.Revision > 0 {
				at = req.Revision
			}
			rr, err := w.Range(req.Key, req.RangeEnd, at, mvcc.ReadOptions{Limit: kvrules.ShardFetchLimit(req), KeysOnly: req.KeysOnly, CountOnly: req.CountOnly})
			if err != nil {
				return nil, err
			}
			r.Range = kvrules.RangePart{KVs: rr.KVs, Count: rr.Count}
		}
		out = append(out, r)
	}
	return out, nil
}

// buildLeaseIndex reads the lease of every live key of the span.
func (a *shardActor) buildLeaseIndex() error {
	a.leaseIndex = map[int64]map[string]struct{}{}
	start := a.desc.Start
	if len(start) == 0 {
		start = []byte{0}
	}
	end := a.desc.End
	if len(end) == 0 {
		end = []byte{0}
	}
	return a.cfg.Store.View(func(r *mvcc.Reader) error {
		res, err := r.Range(start, end, math.MaxInt64, mvcc.ReadOptions{KeysOnly: true})
		if err != nil {
			return err
		}
		for _, kv := range res.KVs {
			a.attachLease(kv.Lease, kv.Key)
		}
		return nil
	})
}

func (a *shardActor) attachLease(id int64, key []byte) {
	if id == 0 {
		return
	}
	keys := a.leaseIndex[id]
	if keys == nil {
		keys = map[string]struct{}{}
		a.leaseIndex[id] = keys
	}
	keys[string(key)] = struct{}{}
}

func (a *shardActor) detachLease(id int64, key []byte) {
	if keys := a.leaseIndex[id]; keys != nil {
		delete(keys, string(key))
		if len(keys) == 0 {
			delete(a.leaseIndex, id)
		}
	}
}

func (a *shardActor) leaseKeys(id int64) [][]byte {
	keys := make([][]byte, 0, len(a.leaseIndex[id]))
	for k := range a.leaseIndex[id] {
		keys = append(keys, []byte(k))
	}
	sort.Slice(keys, func(i, j int) bool { return string(keys[i]) < string(keys[j]) })
	return keys
}

// pruneLeaseIndex drops keys the shard no longer owns after a split.
func (a *shardActor) pruneLeaseIndex() {
	for id, keys := range a.leaseIndex {
		for k := range keys {
			if !revision.Contains(a.desc, []byte(k)) {
				delete(keys, k)
			}
		}
		if len(keys) == 0 {
			delete(a.leaseIndex, id)
		}
	}
}

// ownedSpan is a delete op's span as this replica applies it (see
// clipToRange): the whole span on a single node.
func (a *shardActor) ownedSpan(d *raftcmdpb.DeleteOp) ([]byte, []byte, bool) {
	if !a.cluster {
		return d.Key, d.End, true
	}
	key, end, ok := clipToRange(a.desc, d.Key, d.End)
	if t := a.tableDesc(); ok && t != nil {
		key, end, ok = clipToRange(t, key, end)
	}
	return key, end, ok
}

// ownsKey reports whether the replica applies writes to key: inside its
// span, and inside the range as the node's range table has it now (the
// table learns of a split before the replica's span follows it, and the
// split's new range may already hold the keys that left).
func (a *shardActor) ownsKey(key []byte) bool {
	if !revision.Contains(a.desc, key) {
		return false
	}
	t := a.tableDesc()
	return t == nil || revision.Contains(t, key)
}

// tableDesc is the range as the node's range table has it now (nil if
// the node does not say).
func (a *shardActor) tableDesc() *raftcmdpb.RangeDesc {
	if a.cfg.TableDesc == nil {
		return nil
	}
	return a.cfg.TableDesc()
}
