package router

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// NodeConfig configures a single node.
type NodeConfig struct {
	Name    string
	DataDir string
	Logger  *zap.Logger
	// CheckpointInterval is how often Raft logs are truncated (default 10s).
	CheckpointInterval time.Duration
	// NoSpeculation makes every write wait for its intents to commit
	// before asking for its revision (two log writes instead of one).
	NoSpeculation bool
	// ClusterID and MemberID name a new store (see InitialCluster); random
	// if zero. A store keeps the ids it was created with.
	ClusterID, MemberID uint64
	// UnsafeNoFsync: the Raft log is not synced (etcd's --unsafe-no-fsync).
	UnsafeNoFsync bool
	// Members is the initial cluster (see InitialCluster). With more than
	// one, every Raft group has them all as voters, with MemberID as this
	// node's Raft id, and the node talks to them on their peer URLs.
	Members []Member
	// Token is the cluster token; peers with another are refused.
	Token string
	// TickInterval is one Raft heartbeat (etcd's --heartbeat-interval,
	// default 100ms); an election takes 10 ticks.
	TickInterval time.Duration
	// Join: this member was added to a running cluster (etcd's
	// --initial-cluster-state existing); its groups start empty and get
	// their logs from the leaders.
	Join bool
	// ReplicationFactor: in a cluster, how many members hold each range
	// (default 3; every voting member when there are fewer).
	ReplicationFactor int
	// NoLocalReads: in a cluster with more members than the replication
	// factor, a member holds only the ranges it is a replica of, and a
	// serializable read of another range asks a member that holds it.
	// Without it every member holds a learner of each range it is not a
	// replica of (see placement.go), so serializable reads never leave it.
	NoLocalReads bool
	// CatchUpEntries: in a cluster, a truncated range log keeps this many
	// entries below its applied index (default 1000), so that a replica a
	// little behind catches up without a snapshot.
	CatchUpEntries uint64
}

// Node is one Mosaic process: its stores, its actor system, the oracle and
// the shard replicas it hosts.
type Node struct {
	cfg    NodeConfig
	lg     *zap.Logger
	sys    *actor.ActorSystem
	logs   *actors.LogStore
	store  *mvcc.Store
	oracle *revision.Oracle
	nodeID uint64

	mu     sync.RWMutex
	shards map[uint64]*shard.Shard

	splitMu sync.Mutex // one split at a time

	// speculative: decisions are asked for as soon as intents are
	// proposed, and the log store writes each decision in the same record
	// as its intents or after them (one fdatasync per write instead of
	// two). Sound while every group has this node as its only voter, so
	// that durable means committed.
	speculative bool

	started atomic.Bool // every shard of the range table is running

	sigMu   sync.Mutex
	applied chan struct{} // closed and replaced whenever a shard applies
	onApply []func()      // called by the shard after each apply (WatchSource.OnAdvance)

	stop     chan struct{}
	stopped  chan struct{}
	lastCkpt *checkpoint
	// covered: each replica's applied revision at the last checkpoint
	// (durable), for other members (see clusterCovered).
	coveredMu sync.Mutex
	covered   map[uint64]int64

	// cluster: several members; every group has them all as voters.
	cluster   bool
	peers     []uint64
	transport *actors.Transport
	members   []Member
	tickStop  chan struct{}
	tickDone  chan struct{}

	// early holds decisions for ranges whose shard is not running yet
	// (while the node starts, or a split's new range starts); the shard
	// gets them when it starts.
	earlyMu sync.Mutex
	early   map[uint64][]revision.Decided

	// startMu serializes starting shards; created holds, for ranges made
	// by a split, the revision they start from, and splitMembers the
	// members then (cluster: see onSplit).
	startMu      sync.Mutex
	created      map[uint64]int64
	splitMembers map[uint64][]*raftcmdpb.Member
	// authoritative: the right ranges of splits this member made; splitting
	// the range it is splitting and its state as drained (see groupPeers).
	authoritative map[uint64]bool
	splitting     atomic.Pointer[drainedSplit]

	joining  bool
	changeMu sync.Mutex // one membership change (or replica move) at a time
	// conns reach other members' peer listeners; hints remember who leads
	// ranges led elsewhere (placement.go).
	conns forwarder
	hints leadHints
	// lag follows replicas here that are behind (lag.go).
	lag lagTracker
	// collecting: a collectReplicas round runs.
	collecting atomic.Bool
	// pendingSplit: ranges made by a split whose replica here waits for the
	// left side (onSplit); startTimes: when each replica here started.
	pendingSplit map[uint64]bool
	startTimes   map[uint64]time.Time
	// known: ranges whose making this member has followed (at start, in
	// onSplit, or from an oracle snapshot); only those are started by
	// syncReplicas and adopt, so that a split's new range starts the way
	// onSplit does.
	known     map[uint64]bool
	removed   chan struct{}
	removedMu sync.Once
}

const singleNodeID = 1 // single node: every group has this one voter

const defaultCatchUpEntries = 1000

const defaultReplicationFactor = 3

// errRangeLeadNotHere: a split asked of the primary before the range's lead
// reached it (just after a leader change); asking again shortly succeeds.
var errRangeLeadNotHere = errors.New("the range's lead has not reached this member yet; retry")

// errRangeLeadElsewhere: a split asked of a member whose replica knows
// that another leads the range: the split goes there.
var errRangeLeadElsewhere = errors.New("another member leads the range")

// OpenNode opens (or creates) the node's data dir and starts its actors.
func OpenNode(ctx context.Context, c NodeConfig) (*Node, error) {
	if c.CatchUpEntries == 0 {
		c.CatchUpEntries = defaultCatchUpEntries
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = defaultReplicationFactor
	}
	if err := checkDataDir(c.DataDir); err != nil {
		return nil, err
	}
	// A cluster's watch service reads new revisions from the store, not
	// from its memory of them (WatchSource.Recent).
	store, err := mvcc.Open(filepath.Join(c.DataDir, "state"), mvcc.Options{Logger: c.Logger, NoChangeFeed: len(c.Members) > 1})
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	logs, err := actors.OpenLogStore(filepath.Join(c.DataDir, "raft"), c.Logger)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	if c.UnsafeNoFsync {
		logs.UnsafeNoSync()
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(actors.CrashLogHandler{Logger: c.Logger})
	}))
	n := &Node{cfg: c, lg: c.Logger, sys: sys, logs: logs, store: store, nodeID: singleNodeID, shards: map[uint64]*shard.Shard{},
		applied: make(chan struct{}), speculative: !c.NoSpeculation, early: map[uint64][]revision.Decided{}, created: map[uint64]int64{},
		splitMembers: map[uint64][]*raftcmdpb.Member{}, authoritative: map[uint64]bool{}, removed: make(chan struct{}),
		pendingSplit: map[uint64]bool{}, startTimes: map[uint64]time.Time{}, known: map[uint64]bool{}}
	if len(c.Members) > 1 {
		// A member keeps the ids it was created with.
		st, _, err := (&revision.Persister{Store: store}).Load()
		if err != nil {
			n.Close()
			return nil, err
		}
		if st != nil && st.MemberId != 0 {
			c.MemberID, c.ClusterID = st.MemberId, st.ClusterId
		}
		// A member that joined a running cluster keeps creating empty the
		// groups that existed before it (see groupPeers).
		if err := rememberJoin(store, &c.Join); err != nil {
			n.Close()
			return nil, err
		}
		if err := n.joinCluster(c); err != nil {
			n.Close()
			return nil, err
		}
	}
	if n.cluster {
		if err := n.restoreDrainedSplit(); err != nil {
			n.Close()
			return nil, err
		}
	}
	n.oracle, err = revision.Start(n.sys, revision.Config{
		NodeID: n.nodeID, Logs: logs, Meta: &revision.Persister{Store: store}, Logger: c.Logger,
		Notify:         n.deliver,
		NotifyAborted:  n.aborted,
		Peers:          n.peers,
		Send:           n.sender(revision.GroupID),
		OnSplit:        n.onSplit,
		OnMembers:      n.onMembers,
		OnReplicas:     func() { go n.syncReplicas() },
		OnRestore:      func() { go n.reconcile() },
		CatchUpEntries: c.CatchUpEntries,
		Cluster:        n.cluster,
		Join:           n.joining,
		ClusterID:      orRandom(c.ClusterID), MemberID: orRandom(c.MemberID),
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	if err := wait(ctx, n.oracle.Ready()); err != nil {
		n.Close()
		return nil, fmt.Errorf("waiting for the revision oracle: %w", err)
	}
	if n.cluster {
		n.claimDrainedSplit(n.oracle.View())
	}
	n.markKnown(n.oracle.View().Ranges...)
	for _, d := range n.oracle.View().Ranges {
		if !n.runs(d) {
			continue
		}
		if _, err := n.startShard(d); err != nil {
			n.Close()
			return nil, err
		}
	}
	for _, s := range n.allShards() {
		if err := wait(ctx, s.Ready()); err != nil {
			n.Close()
			return nil, fmt.Errorf("waiting for range %d: %w", s.ID(), err)
		}
	}
	n.started.Store(true)
	if n.cluster {
		// The oracle may have applied splits (from its leader) while the
		// shards above started with the table as it was: onSplit left them
		// to OpenNode, which follows them now.
		n.reconcile()
	}
	if v := n.oracle.View(); n.cluster && len(v.Members) > 0 && findMember(v.Members, n.nodeID) == nil {
		n.removedMu.Do(func() { close(n.removed) })
	}
	n.tickStop, n.tickDone = make(chan struct{}), make(chan struct{})
	go n.tickLoop()
	if n.cluster && !n.joining {
		go n.recordMembers(n.tickStop)
	}
	if n.cluster {
		go n.rebalanceLoop(n.tickStop)
	}
	n.stop, n.stopped = make(chan struct{}), make(chan struct{})
	every := c.CheckpointInterval
	if every <= 0 {
		every = checkpointInterval
	}
	go n.checkpointLoop(every)
	return n, nil
}

// dataDirMarker names a Mosaic data dir, so that a foreign directory is
// refused instead of being written into.
const dataDirMarker = "MOSAIC"

func checkDataDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		return os.WriteFile(filepath.Join(dir, dataDirMarker), []byte("mosaic data dir v1\n"), 0o600)
	}
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if len(ents) == 0 {
		return os.WriteFile(filepath.Join(dir, dataDirMarker), []byte("mosaic data dir v1\n"), 0o600)
	}
	b, err := os.ReadFile(filepath.Join(dir, dataDirMarker))
	if err != nil || string(b) != "mosaic data dir v1\n" {
		if _, e := os.Stat(filepath.Join(dir, "member")); e == nil {
			return fmt.Errorf("data dir %s holds an etcd member, not Mosaic data (Mosaic cannot read etcd's data files; use a fresh --data-dir)", dir)
		}
		return fmt.Errorf("data dir %s is not empty and is not a Mosaic data dir (no valid %s file)", dir, dataDirMarker)
	}
	return nil
}

func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func orRandom(id uint64) uint64 {
	if id != 0 {
		return id
	}
	return randomID()
}

func randomID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

func (n *Node) startShard(d *raftcmdpb.RangeDesc) (*shard.Shard, error) {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	if s := n.shard(d.Id); s != nil {
		return s, nil
	}
	startRev, ok := n.created[d.Id]
	if !ok {
		startRev = n.oracle.View().LastRev[d.Id]
	}
	peers, join := n.groupPeers(d)
	if join {
		startRev = 0 // it holds nothing until its snapshot
	}
	s, err := shard.Start(n.sys, shard.Config{
		Desc: d, NodeID: n.nodeID, Logs: n.logs, Store: n.store, Oracle: resolver{n}, Logger: n.lg,
		StartRev:       startRev,
		OnApplied:      n.signalApplied,
		Peers:          peers,
		Send:           n.sender(d.Id),
		PreferLeader:   func() bool { return n.preferLead(d.Id) },
		Live:           n.peerLive,
		TableDesc:      func() *raftcmdpb.RangeDesc { return n.oracle.View().RangeByID(d.Id) },
		TableLastRev:   func() int64 { return n.oracle.View().LastRev[d.Id] },
		Learners:       func() []uint64 { return n.readLearners(d.Id) },
		Cluster:        n.cluster,
		Join:           join,
		SnapDir:        filepath.Join(n.cfg.DataDir, "snap"),
		CatchUpEntries: n.cfg.CatchUpEntries,
	})
	if err != nil {
		return nil, err
	}
	// The group is made here now: should the replica go and come back, it
	// starts empty like any other, not from what the store holds then.
	delete(n.authoritative, d.Id)
	// Registered and handed its early decisions under one lock, so that no
	// decision falls between the two.
	n.earlyMu.Lock()
	n.mu.Lock()
	n.shards[d.Id] = s
	n.mu.Unlock()
	n.startTimes[d.Id] = time.Now()
	if ds := n.early[d.Id]; len(ds) > 0 {
		s.Deliver(ds)
	}
	delete(n.early, d.Id)
	n.earlyMu.Unlock()
	return s, nil
}

// signalApplied runs the OnAdvance callbacks on the caller's (the
// shard's) goroutine, then wakes whoever waits on appliedSignal (after, so
// that the watch hub's own goroutine does not wake first and take the work
// the callback would do at once).
func (n *Node) signalApplied() {
	n.sigMu.Lock()
	hooks := n.onApply
	n.sigMu.Unlock()
	for _, fn := range hooks {
		fn()
	}
	n.sigMu.Lock()
	close(n.applied)
	n.applied = make(chan struct{})
	n.sigMu.Unlock()
}

// appliedSignal is closed the next time any shard applies a revision.
func (n *Node) appliedSignal() <-chan struct{} {
	n.sigMu.Lock()
	defer n.sigMu.Unlock()
	return n.applied
}

// deliver routes the oracle's decisions to the shard of a range, or keeps
// them until it starts: every replica must apply every decision.
func (n *Node) deliver(rangeID uint64, ds []revision.Decided) {
	if s := n.shard(rangeID); s != nil {
		s.Deliver(ds)
		return
	}
	n.earlyMu.Lock()
	defer n.earlyMu.Unlock()
	if s := n.shard(rangeID); s != nil {
		s.Deliver(ds)
		return
	}
	n.early[rangeID] = append(n.early[rangeID], ds...)
}

// aborted tells every shard that transactions were aborted.
func (n *Node) aborted(txns []uint64) {
	for _, s := range n.allShards() {
		s.Aborted(txns)
	}
}

func (n *Node) shard(id uint64) *shard.Shard {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.shards[id]
}

// allShards returns this node's range replicas, by range id.
func (n *Node) allShards() []*shard.Shard {
	out := n.shardsAnyOrder()
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// shardsAnyOrder returns this node's range replicas in no particular order
// (the tick loop's, which runs ten times a second over every replica).
func (n *Node) shardsAnyOrder() []*shard.Shard {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*shard.Shard, 0, len(n.shards))
	for _, s := range n.shards {
		out = append(out, s)
	}
	return out
}

// Split splits the range holding key at key: the shard is frozen (drained
// of latches and intents), the oracle records the new table, the new
// range's shard starts, and the old one resumes with its smaller span.
// Requests that reached the old shard for the moved span are answered
// ErrRangeMoved and retried by the router.
//
// In a cluster the left range's leader splits (see groupPeers): the range
// table changes on the oracle's leader, wherever it is.
func (n *Node) Split(ctx context.Context, key []byte) (*revision.SplitResult, error) {
	n.splitMu.Lock()
	defer n.splitMu.Unlock()
	d := n.oracle.View().RangeFor(key)
	if d == nil {
		return nil, fmt.Errorf("no range holds key %q", key)
	}
	if string(d.Start) == string(key) {
		return nil, fmt.Errorf("key %q is already the start of range %d", key, d.Id)
	}
	s := n.shard(d.Id)
	if s == nil {
		return nil, fmt.Errorf("range %d has no replica on this node", d.Id)
	}
	if n.cluster {
		// The member that splits holds the new range's data from the
		// start, so it must be the left range's leader: a replica behind
		// may lack some of it; drained, it keeps its lead until the split
		// is done (shard: no transfer while frozen). Right after a leader
		// change the lead is on its way here.
		for deadline := time.Now().Add(leaderWait); !s.Leader(); time.Sleep(20 * time.Millisecond) {
			if l := s.Lead(); l != 0 && l != n.nodeID {
				return nil, errRangeLeadElsewhere
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, errRangeLeadNotHere
			}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Freeze(fctx); err != nil {
		return nil, fmt.Errorf("draining range %d: %w", d.Id, err)
	}
	if n.cluster {
		return n.splitCluster(ctx, s, d, key)
	}
	res, err := n.oracle.Split(context.Background(), d.Id, key, nil)
	if err != nil {
		s.Unfreeze(nil)
		return nil, err
	}
	right, err := n.startShard(res.Right)
	if err != nil {
		s.Unfreeze(res.Left)
		return nil, err
	}
	s.Unfreeze(res.Left)
	if err := wait(ctx, right.Ready()); err != nil {
		return nil, err
	}
	return res, nil
}

// splitRetryWait is how long a split whose outcome is unknown waits before
// it is asked for again.
const splitRetryWait = 200 * time.Millisecond

// splitCluster splits range id, whose replica s here leads and is drained,
// at key. The split is guarded, and asked for again until the oracle's
// leader answers: a guarded split applies at most once, and only while the
// range is as drained here, so an answer says for sure whether this member
// makes the new range (onSplit), and the range resumes only once a failure
// is certain. (Before guards, a split given up as unknown could still
// apply later, leaving its new range with no member to make it.)
//
// d is the range as the table had it before the drain. The table must not
// have moved on since: a replica drops the writes it applies to keys its
// table no longer gives the range, so only a drain under the same
// generation leaves the new range's data whole here.
func (n *Node) splitCluster(ctx context.Context, s *shard.Shard, d *raftcmdpb.RangeDesc, key []byte) (*revision.SplitResult, error) {
	id := d.Id
	if now := n.oracle.View().RangeByID(id); now == nil || now.Generation != d.Generation {
		s.Unfreeze(nil)
		return nil, fmt.Errorf("range %d changed while it drained for the split; try again", id)
	}
	ds := &drainedSplit{left: id, key: key, guard: &raftcmdpb.SplitGuard{Generation: d.Generation, LastRev: s.AppliedRev()}}
	if err := n.saveDrainedSplit(ds); err != nil {
		s.Unfreeze(nil)
		return nil, fmt.Errorf("recording the split: %w", err)
	}
	n.splitting.Store(ds)
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(context.Background(), leaderWait)
		err := n.splitOnPrimary(pctx, id, key, ds.guard)
		cancel()
		switch {
		case err == nil, errors.Is(err, revision.ErrAlreadySplit):
			// Applied: onSplit (as this member's oracle replica applies it)
			// starts the new range's replica here, as on every replica.
			err = nil
		case errors.Is(err, revision.ErrBadSplit), errors.Is(err, revision.ErrUnknownRange), errors.Is(err, revision.ErrSplitStale):
			// Certain not to apply from now on; unless an earlier attempt
			// did already (onSplit took the drained split), the range resumes.
			if n.splitting.CompareAndSwap(ds, nil) {
				n.clearDrainedSplit(ds)
				s.Unfreeze(nil)
				return nil, err
			}
			err = nil
		}
		if err == nil {
			actx, cancel := context.WithTimeout(context.Background(), time.Minute)
			res, aerr := n.awaitSplit(actx, id, key)
			cancel()
			n.splitting.CompareAndSwap(ds, nil) // (already taken by onSplit unless another member's split at key applied)
			if aerr != nil {
				return nil, fmt.Errorf("split applied, but this member's range table did not show it: %w", aerr)
			}
			if err := n.waitShard(ctx, res.Right.Id); err != nil {
				return nil, err // (the record goes at the next start: see claimDrainedSplit)
			}
			n.clearDrainedSplit(ds) // the new range's group is made here
			return res, nil
		}
		if attempt%25 == 0 {
			n.lg.Warn("the outcome of a split is not known yet; asking again", zap.Uint64("range", id), zap.Binary("key", key), zap.Int("attempt", attempt+1), zap.Error(err))
		}
		time.Sleep(splitRetryWait)
	}
}

// awaitSplit waits until this member's oracle replica has applied the split
// of range id at key, and returns its two sides.
func (n *Node) awaitSplit(ctx context.Context, id uint64, key []byte) (*revision.SplitResult, error) {
	for {
		v := n.oracle.View()
		if left, right := v.RangeByID(id), v.RangeFor(key); left != nil && right != nil && right.Id != id && string(right.Start) == string(key) {
			return &revision.SplitResult{Left: left, Right: right}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Close stops the actors and closes the stores.
func (n *Node) Close() {
	if n.stop != nil {
		close(n.stop)
		<-n.stopped
	}
	if n.tickStop != nil {
		close(n.tickStop)
		<-n.tickDone
	}
	if n.transport != nil {
		n.transport.Close()
	}
	n.conns.close()
	for _, s := range n.allShards() {
		s.Stop()
	}
	if n.oracle != nil {
		n.oracle.Stop()
	}
	n.sys.Shutdown()
	if n.logs != nil {
		n.logs.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}
