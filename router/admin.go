package router

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/shard"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// adminServer is Mosaic's own Admin service, used by mosaicctl.
type adminServer struct {
	adminpb.UnimplementedAdminServer
	r *Router
}

func (s *adminServer) ListRanges(ctx context.Context, req *adminpb.ListRangesRequest) (*adminpb.ListRangesResponse, error) {
	infos, err := s.r.node.rangeInfos(ctx, req.Local, !req.NoStats)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &adminpb.ListRangesResponse{Ranges: infos}, nil
}

// rangeInfos describes every range of the table; unless local, a range
// without a replica here as the member most likely to lead it reports it.
// Key counts and sizes are filled only with stats.
func (n *Node) rangeInfos(ctx context.Context, local, stats bool) ([]*adminpb.RangeInfo, error) {
	v := n.oracle.View()
	var out []*adminpb.RangeInfo
	// Ranges without a replica here, by the member asked about them (their leader).
	remote := map[uint64][]*adminpb.RangeInfo{}
	for _, d := range v.Ranges {
		info, err := n.rangeInfo(d, stats)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
		if n.cluster && !local && n.shard(d.Id) == nil {
			if holder := n.rangeLead(d); holder != 0 && holder != n.nodeID {
				remote[holder] = append(remote[holder], info)
			}
		}
	}
	for holder, infos := range remote {
		n.fillRangeStats(ctx, holder, infos, stats)
	}
	return out, nil
}

// fillRangeStats completes infos of ranges this member does not hold with
// what member holder reports of them (key count, size, applied positions,
// and the leader its replica follows: this member's idea of the leader of
// a range it does not hold is only the last one it heard of). An
// unreachable holder leaves them as they are.
func (n *Node) fillRangeStats(ctx context.Context, holder uint64, infos []*adminpb.RangeInfo, stats bool) {
	conn, err := n.peerConn(holder)
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	theirs, err := adminpb.NewAdminClient(conn).ListRanges(cctx, &adminpb.ListRangesRequest{Local: true, NoStats: !stats})
	if err != nil {
		return
	}
	byID := map[uint64]*adminpb.RangeInfo{}
	for _, r := range theirs.Ranges {
		byID[r.Id] = r
	}
	for _, info := range infos {
		if r := byID[info.Id]; r != nil && r.AppliedIndex > 0 {
			info.Keys, info.SizeBytes = r.Keys, r.SizeBytes
			info.AppliedIndex, info.AppliedRevision = r.AppliedIndex, r.AppliedRevision
			info.Learners = r.Learners
			if r.Leader != 0 {
				info.Leader = r.Leader
			}
		}
	}
}

func (s *adminServer) SplitRange(ctx context.Context, req *adminpb.SplitRangeRequest) (*adminpb.SplitRangeResponse, error) {
	if len(req.Key) == 0 {
		return nil, status.Error(codes.InvalidArgument, "split key must not be empty")
	}
	// In a cluster the left range's leader splits (its replica drains the
	// range): the request goes there, once. A leader that cannot be reached
	// (down, most likely) is passed over for the next replica, which knows
	// the range's new leader, for up to leaderWait.
	deadline := time.Now().Add(leaderWait)
	var res *revision.SplitResult
	var err error
	for {
		var conn *grpc.ClientConn
		var lead uint64
		conn, lead, err = s.r.node.splitter(ctx, req.Key)
		if err != nil {
			return nil, err
		}
		if conn == nil {
			res, err = s.r.node.Split(ctx, req.Key)
			if !errors.Is(err, errRangeLeadElsewhere) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
			continue // where the lead belongs may be known by now
		}
		resp, err := adminpb.NewAdminClient(conn).SplitRange(outgoing(ctx), req)
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil || time.Now().After(deadline) {
			return resp, err
		}
		s.r.node.unreachableLead(s.r.node.oracle.View().RangeFor(req.Key), lead)
		time.Sleep(50 * time.Millisecond)
	}
	if errors.Is(err, errRangeLeadNotHere) || errors.Is(err, errRangeLeadElsewhere) {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	left, err := s.r.node.rangeInfo(res.Left, true)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	right, err := s.r.node.rangeInfo(res.Right, true)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &adminpb.SplitRangeResponse{Left: left, Right: right}, nil
}

// TransferLeader hands a range's lead to another member's replica. Range 0
// is the oracle: its leader runs the writes, and the ranges it holds follow
// it. Another range's lead is pinned on the member it is given to (see
// placement.go), on the primary.
func (s *adminServer) TransferLeader(ctx context.Context, req *adminpb.TransferLeaderRequest) (*adminpb.TransferLeaderResponse, error) {
	if !s.r.node.cluster {
		if req.To != s.r.node.oracle.View().MemberID {
			return nil, status.Errorf(codes.InvalidArgument, "member %x is not in the cluster", req.To)
		}
		return &adminpb.TransferLeaderResponse{Leader: req.To}, nil
	}
	if req.RangeId != 0 {
		if conn, err := s.r.primary(ctx); err != nil || conn != nil {
			if err != nil {
				return nil, err
			}
			return adminpb.NewAdminClient(conn).TransferLeader(outgoing(ctx), req)
		}
		lead, err := s.r.node.PinRangeLead(ctx, req.RangeId, req.To)
		if err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return &adminpb.TransferLeaderResponse{Leader: lead}, nil
	}
	lead, err := s.r.node.moveOracleLead(ctx, req.To)
	if err != nil {
		return nil, err
	}
	return &adminpb.TransferLeaderResponse{Leader: lead}, nil
}

// MoveReplica moves one replica of a range, on the primary.
func (s *adminServer) MoveReplica(ctx context.Context, req *adminpb.MoveReplicaRequest) (*adminpb.MoveReplicaResponse, error) {
	if !s.r.node.cluster {
		return nil, status.Error(codes.FailedPrecondition, errSingleNode.Error())
	}
	if conn, err := s.r.primary(ctx); err != nil || conn != nil {
		if err != nil {
			return nil, err
		}
		return adminpb.NewAdminClient(conn).MoveReplica(outgoing(ctx), req)
	}
	d, err := s.r.node.MoveReplica(ctx, req.RangeId, req.From, req.To)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	info, err := s.r.node.rangeInfo(d, true)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &adminpb.MoveReplicaResponse{Range: info}, nil
}

// ListNodes lists the members with the ranges they hold and lead.
func (s *adminServer) ListNodes(ctx context.Context, _ *adminpb.ListNodesRequest) (*adminpb.ListNodesResponse, error) {
	v := s.r.node.oracle.View()
	self := &pb.Member{ID: v.MemberID, Name: s.r.name, PeerURLs: s.r.peerURLs, ClientURLs: s.r.clientURLs}
	members := []*pb.Member{self}
	if s.r.node.cluster {
		members = s.r.memberList(ctx, self)
	}
	infos, err := s.r.node.rangeInfos(ctx, false, false)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaders, held := map[uint64]uint32{}, map[uint64]uint32{}
	for _, info := range infos {
		leaders[info.Leader]++
		for _, id := range info.Replicas {
			held[id]++
		}
	}
	resp := &adminpb.ListNodesResponse{}
	for _, m := range members {
		resp.Nodes = append(resp.Nodes, &adminpb.NodeInfo{
			Id: m.ID, Name: m.Name, PeerUrls: m.PeerURLs, ClientUrls: m.ClientURLs,
			Ranges:       held[m.ID],
			Leaders:      leaders[m.ID],
			OracleLeader: s.r.leaderID(v) == m.ID,
		})
	}
	return resp, nil
}

// leaderOf is the member id leading a range's group.
func (n *Node) leaderOf(s *shard.Shard) uint64 {
	if !n.cluster {
		return n.oracle.View().MemberID
	}
	return s.Lead()
}

// replicasOf are the member ids holding a range.
func (n *Node) replicasOf(d *raftcmdpb.RangeDesc) []uint64 {
	switch {
	case !n.cluster:
		return []uint64{n.oracle.View().MemberID}
	case len(d.Replicas) > 0:
		return d.Replicas
	}
	return n.peers
}

// moveOracleLead hands the oracle's lead (and so every range's) to member
// to and waits until it has it.
func (n *Node) moveOracleLead(ctx context.Context, to uint64) (uint64, error) {
	known := false
	for _, m := range n.oracle.View().Members {
		known = known || (m.Id == to && !m.Learner)
	}
	if len(n.oracle.View().Members) == 0 {
		for _, id := range n.peers {
			known = known || id == to
		}
	}
	if !known {
		return 0, rpctypes.ErrGRPCBadLeaderTransferee
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		v := n.oracle.View()
		if v.Lead == to {
			return to, nil
		}
		n.oracle.TransferLeader(to)
		select {
		case <-ctx.Done():
			return v.Lead, rpctypes.ErrGRPCTimeoutDueToLeaderFail
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rangeInfo describes one range as this node sees it; with stats, with its
// key count and size here.
func (n *Node) rangeInfo(d *raftcmdpb.RangeDesc, stats bool) (*adminpb.RangeInfo, error) {
	info := &adminpb.RangeInfo{Id: d.Id, Start: d.Start, End: d.End, Replicas: n.replicasOf(d)}
	if s := n.shard(d.Id); s != nil {
		info.AppliedIndex = s.AppliedIndex()
		info.AppliedRevision = s.AppliedRev()
		info.Leader = n.leaderOf(s)
		info.Quiescent = s.Quiesced()
		info.Learners = s.Learners()
	} else {
		info.Leader = n.rangeLead(d)
	}
	if !stats {
		return info, nil
	}
	err := n.store.View(func(r *mvcc.Reader) error {
		var err error
		info.Keys, info.SizeBytes, err = r.SpanStats(d.Start, d.End)
		return err
	})
	return info, err
}
