package router

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// A node of a cluster: every Raft group (the oracle's and every range's)
// has every initial member as a voter, and this node's Raft id in each is
// its etcd member id. The oracle's leader runs the writes: each range's
// replica on that node asks for the range's lead (shard.Config.PreferLeader),
// and the other nodes forward writes there (forward.go). Reads are served
// by any node once its replicas have applied the revision the oracle's
// leader confirms (Oracle.ReadRev).

// defaultTick is etcd's default --heartbeat-interval.
const defaultTick = 100 * time.Millisecond

// joinCluster sets the node up as one member of c.Members.
func (n *Node) joinCluster(c NodeConfig) error {
	n.cluster = true
	n.speculative = false // a local write no longer means committed
	n.nodeID = c.MemberID
	n.members = c.Members
	n.joining = c.Join
	self := false
	for _, m := range c.Members {
		n.peers = append(n.peers, m.ID)
		if m.ID == c.MemberID {
			self = true
		}
	}
	if !self {
		return fmt.Errorf("this member (id %x) is not in --initial-cluster", c.MemberID)
	}
	n.transport = actors.NewTransport(actors.TransportConfig{Self: c.MemberID, Cluster: c.Token, Logger: n.lg})
	n.transport.SetHandler(n.step)
	n.transport.SetUnreachable(func(group, to uint64) {
		if r := n.replicaOf(group); r != nil {
			r.Unreachable(to)
		}
	})
	for _, m := range c.Members {
		if m.ID == c.MemberID || len(m.PeerURLs) == 0 {
			continue
		}
		if err := n.transport.AddPeer(m.ID, m.PeerURLs[0]); err != nil {
			return err
		}
	}
	return nil
}

// step hands a message from another node to its group's replica here; a
// message for a range this node runs no replica of is dropped (Raft sends
// it again) and has one started: its group is adding this node.
func (n *Node) step(group uint64, m *raftpb.Message) {
	if r := n.replicaOf(group); r != nil {
		r.Step(m)
		return
	}
	if group != revision.GroupID {
		n.adopt(group)
	}
}

// groupReplica is what the transport delivers to: the oracle or a shard.
type groupReplica interface {
	Step(*raftpb.Message)
	Unreachable(to uint64)
}

// replicaOf is this node's replica of a Raft group, nil if it runs none.
func (n *Node) replicaOf(group uint64) groupReplica {
	if group == revision.GroupID {
		if o := n.oracle; o != nil {
			return o
		}
		return nil
	}
	if s := n.shard(group); s != nil {
		return s
	}
	return nil
}

// sender returns the function a group sends its messages with (nil on a
// single node, where groups have no one to talk to).
func (n *Node) sender(group uint64) func([]*raftpb.Message) {
	if n.transport == nil {
		return nil
	}
	return func(msgs []*raftpb.Message) { n.transport.Send(group, msgs) }
}

// RegisterPeer serves the Raft transport on the node's peer listener.
func (n *Node) RegisterPeer(s *grpc.Server) {
	if n.transport != nil {
		n.transport.Register(s)
		rangepb.RegisterRangesServer(s, &rangeServer{n: n})
	}
}

// PeerServerOptions are the options the peer gRPC server needs.
func PeerServerOptions() []grpc.ServerOption {
	return append(actors.TransportServerOptions(), grpc.NumStreamWorkers(streamWorkers))
}

// tickLoop ticks every group once per heartbeat interval.
func (n *Node) tickLoop() {
	defer close(n.tickDone)
	every := n.cfg.TickInterval
	if every <= 0 {
		every = defaultTick
	}
	t := time.NewTicker(every)
	defer t.Stop()
	ticks := 0
	wasLive := map[uint64]bool{} // by member: heard from within leaderSilent
	var oracleLead uint64        // the oracle's leader at the last tick
	for {
		select {
		case <-n.tickStop:
			return
		case <-t.C:
		}
		ticks++
		if n.cluster {
			n.oracle.Tick()
			if ticks%collectEvery == 0 {
				go n.collectReplicas()
			}
		}
		n.tickShards(ticks, wasLive, &oracleLead)
	}
}

// tickShards ticks every range replica; a quiesced one only every
// quiescedTickEvery ticks (for the checks that need no clock), and it is
// woken when its leader's node has not been heard from for leaderSilent.
//
// Every replica also wakes when a member not heard from is heard again:
// its leaders quiesced without that member's replicas, and a replica that
// holds nothing yet (one made while its node was down) cannot campaign to
// wake them.
//
// Every replica wakes when the oracle's lead moves: range leads follow it
// (placement.go), and a quiesced follower would ask for its lead only on
// its next slow tick.
func (n *Node) tickShards(ticks int, wasLive map[uint64]bool, oracleLead *uint64) {
	now := time.Now()
	wakeAll := false
	if lead := n.oracle.View().Lead; lead != *oracleLead {
		*oracleLead = lead
		wakeAll = true
	}
	if n.transport != nil {
		for _, m := range n.oracle.View().Members {
			if m.Id == n.nodeID {
				continue
			}
			live := n.heardSince(m.Id, now)
			if live && !wasLive[m.Id] {
				wakeAll = true // a member is back
			}
			wasLive[m.Id] = live
		}
	}
	for _, s := range n.shardsAnyOrder() {
		if !s.Quiesced() {
			s.Tick()
			continue
		}
		if ticks%quiescedTickEvery == 0 {
			s.Tick()
		}
		lead := s.Lead()
		if n.transport == nil || lead == 0 {
			continue
		}
		if wakeAll || (lead != n.nodeID && !wasLive[lead]) {
			s.Wake()
		}
	}
}

// heardSince reports whether member id was heard from within leaderSilent
// of now.
func (n *Node) heardSince(id uint64, now time.Time) bool {
	return now.Sub(n.transport.Heard(id)) <= leaderSilent
}

// peerLive reports whether member id is this node or was heard from
// lately (always true on a single node).
func (n *Node) peerLive(id uint64) bool {
	return n.transport == nil || id == n.nodeID || n.heardSince(id, time.Now())
}

const (
	// quiescedTickEvery: a quiesced replica is ticked once in this many
	// ticks.
	quiescedTickEvery = 10
	// leaderSilent: a quiesced follower whose leader's node has sent
	// nothing for this long is woken, so that it can elect another (the
	// transport pings every actors.PingInterval).
	leaderSilent = 600 * time.Millisecond
)

// collectEvery: replicas no longer held are looked for every this many ticks.
const collectEvery = 50

// Cluster reports whether the node is one member of several.
func (n *Node) Cluster() bool { return n.cluster }

// Members is the initial cluster (nil on a single node).
func (n *Node) Members() []Member { return n.members }

// MemberID is this node's member id.
func (n *Node) MemberID() uint64 { return n.oracle.View().MemberID }

// onSplit follows a split the oracle applied (on every member, and while
// replaying the oracle's log at start): the left range takes its new span,
// and the right range's replica starts once the left one has applied every
// revision up to the split, so that the new range's data is complete here
// before it serves a read. Decisions for the new range wait in n.early.
//
// The new range's group is made (started from its data, with the split's
// voters, rather than empty to be sent a snapshot) by the member that split
// it, and by every other voter of it whose replica of the left range holds
// the new range's data whole (mayMakeSplit): all of them start the group
// from the same state, so it does not matter how many do, and the range
// has a quorum to elect a leader even if the member that split is lost.
func (n *Node) onSplit(res *revision.SplitResult) {
	n.markKnown(res.Left, res.Right)
	n.startMu.Lock()
	n.created[res.Right.Id] = res.StartRev
	n.splitMembers[res.Right.Id] = res.Members
	// The member that split it holds the new range's data: its replica of
	// the left range led it and was drained (Node.Split).
	if ds := n.splitting.Load(); ds != nil && ds.left == res.Left.Id && proto.Equal(ds.guard, res.Guard) && n.splitting.CompareAndSwap(ds, nil) {
		n.authoritative[res.Right.Id] = true
		n.crashAfterSplitForTest()
	}
	started := n.started.Load()
	// Both sides live on the left side's replicas: a member the table does
	// not list for them starts nothing (a replica of the left side still
	// running here is on its way out, and may never apply the split).
	held := n.runs(res.Right)
	if n.cluster && started && held {
		n.pendingSplit[res.Right.Id] = true
	}
	n.startMu.Unlock()
	if !n.cluster || !started {
		return // single node: Split does it; at start: OpenNode does it
	}
	left := n.shard(res.Left.Id)
	if left != nil {
		left.Unfreeze(res.Left)
	}
	if !held {
		return
	}
	go func() {
		resync := false
		defer func() {
			n.startMu.Lock()
			delete(n.pendingSplit, res.Right.Id)
			n.startMu.Unlock()
			if resync {
				n.syncReplicas()
			}
		}()
		if left != nil {
			if err := left.WaitApplied(context.Background(), res.StartRev); err != nil {
				// The left replica here was stopped (collected) first: the
				// new range starts empty, once no longer pending, if the
				// table lists this member for it. Waiting on, this member
				// would never start it.
				resync = true
				return
			}
			if n.mayMakeSplit(res, left) {
				n.startMu.Lock()
				// Only for a replica not running yet: the flag would
				// otherwise outlive it, and a later replica of the range
				// here (its data since cleared) would start from nothing.
				if !n.authoritative[res.Right.Id] && n.shard(res.Right.Id) == nil {
					n.authoritative[res.Right.Id] = true
					n.lg.Info("making a split's new range from this member's data", zap.Uint64("range", res.Right.Id), zap.Int64("revision", res.StartRev))
				}
				n.startMu.Unlock()
			}
		}
		if _, err := n.startShard(res.Right); err != nil {
			n.lg.Error("starting a split's new range failed", zap.Uint64("range", res.Right.Id), zap.Error(err))
		}
	}()
}

// mayMakeSplit reports whether this member may make the new range of split
// res from its own data, its replica of the left range (left) having
// applied up to the split:
//   - the split is guarded (so no revision was given to the left range
//     after StartRev until the split applied, and none since to the new
//     range's keys), and this member is one of the new range's voters;
//   - the split applies live, not replayed at a restart (Replayed): the
//     new range's replica made here then gets every decision for the range
//     from the oracle here as it applies them. One made from a split
//     replayed much later would replay the range's whole log while the
//     oracle hands it only recent decisions, and a follower applying a
//     recent decision before an older one it has not yet seen skips the
//     older one for good (TestClusterFaultsLinearizable lost a delete so);
//   - the replica here holds every write of those revisions to the new
//     range's keys: none was left out because the replica had already
//     learnt of the split when applying it, nor by a snapshot that left
//     them out (shard.Shard.Clipped, kept across restarts).
func (n *Node) mayMakeSplit(res *revision.SplitResult, left *shard.Shard) bool {
	if res.Guard == nil || res.Replayed || !slices.Contains(n.splitVoters(res.Right, res.Members), n.nodeID) {
		return false
	}
	return left.AppliedRev() >= res.StartRev && !left.Clipped(res.Right.Start, res.Right.End)
}

// splitVoters are the voters a split's new range d starts with, the
// cluster's members being members at the split: the replicas the table
// lists, else every voting member, else the initial cluster.
func (n *Node) splitVoters(d *raftcmdpb.RangeDesc, members []*raftcmdpb.Member) []uint64 {
	if len(d.Replicas) > 0 {
		return d.Replicas
	}
	var peers []uint64
	for _, m := range members {
		if !m.Learner {
			peers = append(peers, m.Id)
		}
	}
	if len(peers) == 0 {
		peers = n.peers // split before the first leader recorded the members
	}
	return peers
}

// waitShard waits until range id's replica runs here and has recovered.
func (n *Node) waitShard(ctx context.Context, id uint64) error {
	for {
		if s := n.shard(id); s != nil {
			return wait(ctx, s.Ready())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// groupPeers says how a range's group starts here if it has no log yet
// (called under startMu). Only the replicas that make a range hold its data
// from the start: the first range at a new cluster's bootstrap (empty, on
// every initial member alike), and the right range of a split on the member
// that split it (the left range's leader, drained). They start its group
// with the voters of that moment. Every other replica starts empty (join)
// and is sent a snapshot by the range's leader.
func (n *Node) groupPeers(d *raftcmdpb.RangeDesc) (peers []uint64, join bool) {
	id := d.Id
	if !n.cluster {
		return nil, false
	}
	if n.authoritative[id] {
		return n.splitVoters(d, n.splitMembers[id]), false
	}
	if id == firstRangeID && !n.joining {
		return n.peers, false
	}
	return nil, true
}

// firstRangeID is the range a new store starts with (revision.Bootstrap).
const firstRangeID = 1

// onMembers follows the replicated member list: the transport reaches
// every member, and a member removed from the list stops (Removed).
func (n *Node) onMembers(members []*raftcmdpb.Member) {
	if n.transport == nil {
		return
	}
	self := false
	keep := map[uint64]bool{}
	for _, m := range members {
		keep[m.Id] = true
		if m.Id == n.nodeID {
			self = true
			continue
		}
		if len(m.PeerUrls) > 0 {
			if err := n.transport.AddPeer(m.Id, m.PeerUrls[0]); err != nil {
				n.lg.Error("adding a member to the transport failed", zap.Uint64("member", m.Id), zap.Error(err))
			}
		}
	}
	// A member leaving stays reachable: it must still get the log entries
	// that tell it so. Raft stops sending to it once it left every group.
	if !self && len(members) > 0 && n.started.Load() {
		n.removedMu.Do(func() { close(n.removed) })
	}
}

// Removed is closed when this member is removed from the cluster.
func (n *Node) Removed() <-chan struct{} { return n.removed }

// recordMembers has the first leader of a new cluster record the initial
// members in the oracle's state, from which every later change starts.
func (n *Node) recordMembers(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		v := n.oracle.View()
		if len(v.Members) > 0 {
			return
		}
		if !v.Leader {
			continue
		}
		m := &raftcmdpb.Membership{ClusterId: v.ClusterID}
		for _, c := range n.members {
			m.Members = append(m.Members, &raftcmdpb.Member{Id: c.ID, Name: c.Name, PeerUrls: c.PeerURLs})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.oracle.SetMembers(ctx, m); err != nil {
			n.lg.Warn("recording the initial members failed; retrying", zap.Error(err))
		}
		cancel()
	}
}

// peerURLs are a member's peer URLs: from the replicated member list, or
// the initial cluster.
func (n *Node) peerURLs(id uint64) []string {
	for _, m := range n.oracle.View().Members {
		if m.Id == id {
			return m.PeerUrls
		}
	}
	for _, m := range n.members {
		if m.ID == id {
			return m.PeerURLs
		}
	}
	return nil
}

// IsDataDir reports whether dir already holds a Mosaic data dir.
func IsDataDir(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, dataDirMarker))
	return err == nil && len(b) > 0
}

// DiscoverSelf asks the other members of the initial cluster, over their
// peer listeners, for the member list, and finds this member in it by its
// peer URLs: its id, the cluster id and every member. A fresh member waits
// for an answer (up to ctx); one with data gives up after a few seconds.
func DiscoverSelf(ctx context.Context, initial []Member, selfPeerURLs []string, wait bool) (uint64, uint64, []Member, error) {
	if !wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	mine := map[string]bool{}
	for _, u := range selfPeerURLs {
		mine[u] = true
	}
	var lastErr error
	for {
		for _, m := range initial {
			if len(m.PeerURLs) == 0 || mine[m.PeerURLs[0]] {
				continue
			}
			u, err := url.Parse(m.PeerURLs[0])
			if err != nil {
				continue
			}
			conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				lastErr = err
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := pb.NewClusterClient(conn).MemberList(cctx, &pb.MemberListRequest{})
			cancel()
			conn.Close()
			if err != nil {
				lastErr = err
				continue
			}
			var list []Member
			var self uint64
			for _, rm := range resp.Members {
				list = append(list, Member{ID: rm.ID, Name: rm.Name, PeerURLs: rm.PeerURLs})
				for _, pu := range rm.PeerURLs {
					if mine[pu] {
						self = rm.ID
					}
				}
			}
			if self == 0 {
				return 0, 0, nil, fmt.Errorf("member %s does not list this member's peer URLs %v: add it first (etcdctl member add)", m.Name, selfPeerURLs)
			}
			return self, resp.Header.GetClusterId(), list, nil
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return 0, 0, nil, lastErr
		case <-time.After(500 * time.Millisecond):
		}
	}
}

var joinedKey = []byte("n/joined")

// rememberJoin records that this member joined a running cluster, or reads
// that it did.
func rememberJoin(store *mvcc.Store, join *bool) error {
	if *join {
		return store.Update(func(w *mvcc.Writer) error { return w.SetMeta(joinedKey, []byte{1}) })
	}
	return store.View(func(r *mvcc.Reader) error {
		b, err := r.Meta(joinedKey)
		*join = len(b) > 0
		return err
	})
}

// reconcile brings the shards in line with the range table after the
// oracle installed a snapshot, or applied splits while the node started:
// ranges made by splits it skipped start here (empty, to be sent their
// snapshots), and running ones take their spans.
func (n *Node) reconcile() {
	n.markKnown(n.oracle.View().Ranges...)
	for _, d := range n.oracle.View().Ranges {
		if s := n.shard(d.Id); s != nil {
			if cur := s.Desc(); string(cur.Start) != string(d.Start) || string(cur.End) != string(d.End) {
				s.Unfreeze(d)
			}
			continue
		}
		if !n.runs(d) {
			continue
		}
		if _, err := n.startShard(d); err != nil {
			n.lg.Error("starting a range after an oracle snapshot failed", zap.Uint64("range", d.Id), zap.Error(err))
		}
	}
}
