package router

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/revision"
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
		if group == revision.GroupID {
			if o := n.oracle; o != nil {
				o.Unreachable(to)
			}
			return
		}
		if s := n.shard(group); s != nil {
			s.Unreachable(to)
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
// message for a group this node does not run (yet) is dropped, and Raft
// sends it again.
func (n *Node) step(group uint64, m *raftpb.Message) {
	if group == revision.GroupID {
		if o := n.oracle; o != nil {
			o.Step(m)
		}
		return
	}
	if s := n.shard(group); s != nil {
		s.Step(m)
	}
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
	}
}

// PeerServerOptions are the options the peer gRPC server needs.
func PeerServerOptions() []grpc.ServerOption { return actors.TransportServerOptions() }

// tickLoop ticks every group once per heartbeat interval.
func (n *Node) tickLoop() {
	defer close(n.tickDone)
	every := n.cfg.TickInterval
	if every <= 0 {
		every = defaultTick
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.tickStop:
			return
		case <-t.C:
		}
		if n.cluster {
			n.oracle.Tick()
		}
		for _, s := range n.allShards() {
			s.Tick()
		}
	}
}

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
func (n *Node) onSplit(res *revision.SplitResult) {
	n.startMu.Lock()
	n.created[res.Right.Id] = res.StartRev
	n.startMu.Unlock()
	if !n.cluster || !n.started.Load() {
		return // single node: Split does it; at start: OpenNode does it
	}
	left := n.shard(res.Left.Id)
	if left != nil {
		left.Unfreeze(res.Left)
	}
	go func() {
		if left != nil {
			if err := left.WaitApplied(context.Background(), res.StartRev); err != nil {
				return
			}
		}
		if _, err := n.startShard(res.Right); err != nil {
			n.lg.Error("starting a split's new range failed", zap.Uint64("range", res.Right.Id), zap.Error(err))
		}
	}()
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
