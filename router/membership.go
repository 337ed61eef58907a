package router

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// Membership changes, run on the primary, one at a time. Every member holds
// a replica of the oracle's group; ranges are held by the members the range
// table lists (placement.go), which the rebalancer spreads over the voting
// members (move.go). So:
//
//   - add: the member is listed first (so every transport reaches it), then
//     added to the oracle's group, as a voter or a learner; it starts empty
//     and is sent the oracle's log; once a voter, the rebalancer gives it
//     ranges;
//   - promote: a learner that has caught up with the oracle becomes a voter
//     of its group, then in the list;
//   - remove: the member's range replicas move to other members (or just
//     go, where no other member can take them), then it leaves the
//     oracle's group and the list; a removed member stops (Node.Removed);
//   - update: the list gets the member's new peer URLs.
//
// A change that fails part way leaves the groups it reached changed; the
// same request (or a remove) can be made again.

// errSingleNode refuses membership changes on a single node, whose groups
// were not made to gain replicas.
var errSingleNode = errors.New("mosaic: this server was started as a single node; start every member with --initial-cluster to form a cluster")

// AddMember adds a member with the given peer URLs.
func (n *Node) AddMember(ctx context.Context, peerURLs []string, learner bool, token string) (*raftcmdpb.Member, error) {
	if !n.cluster {
		return nil, errSingleNode
	}
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	v := n.oracle.View()
	for _, m := range v.Members {
		for _, u := range m.PeerUrls {
			for _, nu := range peerURLs {
				if u == nu {
					return nil, rpctypes.ErrGRPCPeerURLExist
				}
			}
		}
	}
	if learner {
		for _, m := range v.Members {
			if m.Learner {
				return nil, rpctypes.ErrGRPCTooManyLearners // etcd allows one learner
			}
		}
	}
	m := &raftcmdpb.Member{Id: newMemberID(peerURLs, token, time.Now()), PeerUrls: peerURLs, Learner: learner}
	list := append(cloneMembers(v.Members), m)
	if err := n.oracle.SetMembers(ctx, &raftcmdpb.Membership{Members: list}); err != nil {
		return nil, toGRPC(err)
	}
	typ := raftpb.ConfChangeAddNode
	if learner {
		typ = raftpb.ConfChangeAddLearnerNode
	}
	if err := n.changeOracleGroup(ctx, typ, m.Id); err != nil {
		return nil, err
	}
	return m, nil
}

// RemoveMember removes a member from the list, then from every group: the
// member learns it was removed from the list's entry in the oracle's log
// (it still gets that log) and stops. The primary does not remove itself:
// it hands the lead on first (the caller forwards the request there). A
// removal that failed part way is finished by asking again.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	if !n.cluster {
		return errSingleNode
	}
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	v := n.oracle.View()
	listed := findMember(v.Members, id) != nil
	if !listed && !n.inSomeGroup(id) {
		return rpctypes.ErrGRPCMemberNotFound
	}
	if id == n.nodeID {
		return errRemoveSelf
	}
	if err := n.evacuate(ctx, id); err != nil {
		return fmt.Errorf("moving member %x's replicas away: %w", id, err)
	}
	if listed {
		var list []*raftcmdpb.Member
		for _, m := range cloneMembers(v.Members) {
			if m.Id != id {
				list = append(list, m)
			}
		}
		if err := n.oracle.SetMembers(ctx, &raftcmdpb.Membership{Members: list}); err != nil {
			return toGRPC(err)
		}
		n.awaitReplica(ctx, id, 3*time.Second)
	}
	return n.changeOracleGroup(ctx, raftpb.ConfChangeRemoveNode, id)
}

// inSomeGroup reports whether a member still holds a replica of a range
// (as the table says) or of the oracle's group (as its leader, this
// member, tracks it).
func (n *Node) inSomeGroup(id uint64) bool {
	for _, d := range n.oracle.View().Ranges {
		if slices.Contains(d.Replicas, id) {
			return true
		}
	}
	match, _, err := n.oracle.Progress(context.Background())
	_, tracked := match[id]
	return err == nil && tracked
}

// errRemoveSelf: the primary must hand over before it is removed.
var errRemoveSelf = errors.New("mosaic: the leader cannot remove itself")

// PromoteMember makes a learner a voter once it has caught up everywhere.
func (n *Node) PromoteMember(ctx context.Context, id uint64) error {
	if !n.cluster {
		return errSingleNode
	}
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	v := n.oracle.View()
	m := findMember(v.Members, id)
	switch {
	case m == nil:
		return rpctypes.ErrGRPCMemberNotFound
	case !m.Learner:
		return rpctypes.ErrGRPCMemberNotLearner
	}
	if err := n.learnerCaughtUp(ctx, id); err != nil {
		return err
	}
	if err := n.changeOracleGroup(ctx, raftpb.ConfChangeAddNode, id); err != nil {
		return err
	}
	list := cloneMembers(v.Members)
	findMember(list, id).Learner = false
	return toGRPC(n.oracle.SetMembers(ctx, &raftcmdpb.Membership{Members: list}))
}

// UpdateMember gives a member new peer URLs.
func (n *Node) UpdateMember(ctx context.Context, id uint64, peerURLs []string) error {
	if !n.cluster {
		return errSingleNode
	}
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	v := n.oracle.View()
	list := cloneMembers(v.Members)
	m := findMember(list, id)
	if m == nil {
		return rpctypes.ErrGRPCMemberNotFound
	}
	for _, o := range list {
		if o.Id == id {
			continue
		}
		for _, u := range o.PeerUrls {
			for _, nu := range peerURLs {
				if u == nu {
					return rpctypes.ErrGRPCPeerURLExist
				}
			}
		}
	}
	m.PeerUrls = peerURLs
	return toGRPC(n.oracle.SetMembers(ctx, &raftcmdpb.Membership{Members: list}))
}

// learnerCaughtUp checks, as etcd does before a promotion, that the
// learner holds at least 90% of the oracle's log (it holds no range yet).
func (n *Node) learnerCaughtUp(ctx context.Context, id uint64) error {
	match, last, err := n.oracle.Progress(ctx)
	if err != nil {
		return err
	}
	if float64(match[id]) < 0.9*float64(last) {
		return rpctypes.ErrGRPCLearnerNotReady
	}
	return nil
}

// changeOracleGroup makes one conf change in the oracle's group, waiting
// for it to apply here (on its leader).
func (n *Node) changeOracleGroup(ctx context.Context, typ raftpb.ConfChangeType, id uint64) error {
	cc := &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(id)}}}
	if err := n.oracle.ConfChange(ctx, cc); err != nil {
		return fmt.Errorf("changing the oracle's replicas: %w", toGRPC(err))
	}
	return nil
}

func findMember(ms []*raftcmdpb.Member, id uint64) *raftcmdpb.Member {
	for _, m := range ms {
		if m.Id == id {
			return m
		}
	}
	return nil
}

func cloneMembers(ms []*raftcmdpb.Member) []*raftcmdpb.Member {
	out := make([]*raftcmdpb.Member, len(ms))
	for i, m := range ms {
		out[i] = proto.Clone(m).(*raftcmdpb.Member)
	}
	return out
}

// newMemberID derives an added member's id as etcd does: from its sorted
// peer URLs, the cluster token and the time it was added.
func newMemberID(peerURLs []string, token string, now time.Time) uint64 {
	urls := append([]string(nil), peerURLs...)
	sort.Strings(urls)
	b := []byte(strings.Join(urls, "") + token)
	b = binary.BigEndian.AppendUint64(b, uint64(now.Unix()))
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// checkPeerURLs validates peer URLs as etcd does (absolute http(s) URLs).
func checkPeerURLs(urls []string) error {
	if len(urls) == 0 {
		return rpctypes.ErrGRPCMemberBadURLs
	}
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return rpctypes.ErrGRPCMemberBadURLs
		}
	}
	return nil
}

// MemberAdd is etcd's MemberAdd: on the primary, or forwarded to it.
func (s *clusterServer) MemberAdd(ctx context.Context, req *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if err := checkPeerURLs(req.PeerURLs); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.MemberAddResponse, error) {
		return pb.NewClusterClient(c).MemberAdd(ctx, req)
	}); ok {
		return resp, err
	}
	m, err := s.r.node.AddMember(ctx, req.PeerURLs, req.IsLearner, s.r.node.cfg.Token)
	if err != nil {
		return nil, membershipErr(err)
	}
	return &pb.MemberAddResponse{
		Header:  s.r.header(0),
		Member:  &pb.Member{ID: m.Id, PeerURLs: m.PeerUrls, IsLearner: m.Learner},
		Members: s.r.memberList(ctx, s.r.self()),
	}, nil
}

// MemberRemove is etcd's MemberRemove. The primary removing itself hands
// the lead to another voter first, and the request follows it there.
func (s *clusterServer) MemberRemove(ctx context.Context, req *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	for attempt := 0; ; attempt++ {
		if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.MemberRemoveResponse, error) {
			return pb.NewClusterClient(c).MemberRemove(ctx, req)
		}); ok {
			return resp, err
		}
		err := s.r.node.RemoveMember(ctx, req.ID)
		if errors.Is(err, errRemoveSelf) && attempt == 0 {
			if err := s.r.node.handOver(ctx); err != nil {
				return nil, err
			}
			// The request goes on to the new primary, even if it was
			// forwarded here.
			ctx = metadata.NewIncomingContext(ctx, metadata.MD{})
			continue
		}
		if err != nil {
			return nil, membershipErr(err)
		}
		return &pb.MemberRemoveResponse{Header: s.r.header(0), Members: s.r.memberList(ctx, s.r.self())}, nil
	}
}

// MemberUpdate is etcd's MemberUpdate.
func (s *clusterServer) MemberUpdate(ctx context.Context, req *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := checkPeerURLs(req.PeerURLs); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.MemberUpdateResponse, error) {
		return pb.NewClusterClient(c).MemberUpdate(ctx, req)
	}); ok {
		return resp, err
	}
	if err := s.r.node.UpdateMember(ctx, req.ID, req.PeerURLs); err != nil {
		return nil, membershipErr(err)
	}
	return &pb.MemberUpdateResponse{Header: s.r.header(0), Members: s.r.memberList(ctx, s.r.self())}, nil
}

// MemberPromote is etcd's MemberPromote.
func (s *clusterServer) MemberPromote(ctx context.Context, req *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.MemberPromoteResponse, error) {
		return pb.NewClusterClient(c).MemberPromote(ctx, req)
	}); ok {
		return resp, err
	}
	if err := s.r.node.PromoteMember(ctx, req.ID); err != nil {
		return nil, membershipErr(err)
	}
	return &pb.MemberPromoteResponse{Header: s.r.header(0), Members: s.r.memberList(ctx, s.r.self())}, nil
}

func membershipErr(err error) error {
	if errors.Is(err, errSingleNode) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return toGRPC(err)
}

// self is this member's own entry.
func (r *Router) self() *pb.Member {
	return &pb.Member{ID: r.node.oracle.View().MemberID, Name: r.name, PeerURLs: r.peerURLs, ClientURLs: r.clientURLs}
}

// handOver moves the cluster's lead to another voter.
func (n *Node) handOver(ctx context.Context) error {
	for _, m := range n.oracle.View().Members {
		if m.Id != n.nodeID && !m.Learner {
			_, err := n.moveOracleLead(ctx, m.Id)
			return err
		}
	}
	return rpctypes.ErrGRPCNotLeader
}

// awaitReplica waits, up to d, until member id holds the oracle's log as
// far as the leader's last index now: a member being removed learns it
// from the list's entry, which it must get before it leaves the group.
func (n *Node) awaitReplica(ctx context.Context, id uint64, d time.Duration) {
	_, last, err := n.oracle.Progress(ctx)
	if err != nil {
		return
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		match, _, err := n.oracle.Progress(ctx)
		if err != nil || match[id] >= last {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
