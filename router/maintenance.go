package router

import (
	"context"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc/metadata"

	"github.com/mosaic-kv/mosaic/revision"
)

// maintenanceServer is the part of etcd's Maintenance service the tools use.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	r *Router
}

// Status reports an etcd-style version (Kubernetes decides from it which
// etcd features it may use) and this node's Raft position.
func (s *maintenanceServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	v := s.r.node.oracle.View()
	size := s.r.node.DiskSize()
	return &pb.StatusResponse{
		Header:           s.r.header(v.Rev),
		Version:          version.Version,
		DbSize:           size,
		DbSizeInUse:      size,
		Leader:           s.r.leaderID(v),
		RaftIndex:        v.Applied,
		RaftTerm:         v.Term,
		RaftAppliedIndex: v.Applied,
		IsLearner:        s.r.isLearner(),
		StorageVersion:   version.Cluster(version.Version) + ".0",
		DbSizeQuota:      defaultQuotaBytes,
		DowngradeInfo:    &pb.DowngradeInfo{},
	}, nil
}

// defaultQuotaBytes is etcd's default --quota-backend-bytes, reported so
// that tools computing usage percentages behave as with etcd. Mosaic
// enforces no quota yet.
const defaultQuotaBytes = 2 << 30

// Alarm: Mosaic raises no alarms yet; listing gives none, as on a healthy etcd.
func (s *maintenanceServer) Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return &pb.AlarmResponse{Header: s.r.header(s.r.node.oracle.View().Rev)}, nil
}

// Defragment is a no-op: badger reclaims space by itself.
func (s *maintenanceServer) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	return &pb.DefragmentResponse{Header: s.r.header(s.r.node.oracle.View().Rev)}, nil
}

// MoveLeader hands the cluster's lead (the oracle's, which every range's
// follows) to another member; as etcd, only the leader takes it.
func (s *maintenanceServer) MoveLeader(ctx context.Context, req *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	v := s.r.node.oracle.View()
	if !s.r.node.cluster {
		if req.TargetID != v.MemberID {
			return nil, rpctypes.ErrGRPCBadLeaderTransferee
		}
		return &pb.MoveLeaderResponse{Header: s.r.header(v.Rev)}, nil
	}
	if !v.Leader {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	if _, err := s.r.node.moveOracleLead(ctx, req.TargetID); err != nil {
		return nil, err
	}
	return &pb.MoveLeaderResponse{Header: s.r.header(s.r.node.oracle.View().Rev)}, nil
}

// clusterServer is etcd's Cluster service for the single member.
type clusterServer struct {
	pb.UnimplementedClusterServer
	r *Router
}

func (s *clusterServer) MemberList(ctx context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	v := s.r.node.oracle.View()
	self := &pb.Member{ID: v.MemberID, Name: s.r.name, PeerURLs: s.r.peerURLs, ClientURLs: s.r.clientURLs}
	// etcd answers membership from the cluster store, not the KV store:
	// its header carries no revision.
	resp := &pb.MemberListResponse{Header: s.r.header(0), Members: []*pb.Member{self}}
	if md, ok := metadata.FromIncomingContext(ctx); !s.r.node.cluster || (ok && len(md.Get(forwardedKey)) > 0) {
		return resp, nil // a member asks for this one's own entry
	}
	resp.Members = s.r.memberList(ctx, self)
	return resp, nil
}

// memberList lists the members in id order: the replicated list, or the
// initial cluster until the first leader has recorded it. Each member's
// name and client URLs are its own to tell: they are asked for over its
// peer listener and remembered, so a member that is down is still listed
// with them.
func (r *Router) memberList(ctx context.Context, self *pb.Member) []*pb.Member {
	var members []*pb.Member
	if v := r.node.oracle.View(); len(v.Members) > 0 {
		for _, m := range v.Members {
			members = append(members, &pb.Member{ID: m.Id, Name: m.Name, PeerURLs: m.PeerUrls, IsLearner: m.Learner})
		}
	} else {
		for _, m := range r.node.Members() {
			members = append(members, &pb.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs})
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
	var wg sync.WaitGroup
	for i, m := range members {
		if m.ID == self.ID {
			self.IsLearner = m.IsLearner
			members[i] = self
			continue
		}
		wg.Add(1)
		go func(m *pb.Member) {
			defer wg.Done()
			if info, ok := r.memberInfo(ctx, m.ID); ok {
				m.Name, m.ClientURLs = info.Name, info.ClientURLs
			}
		}(m)
	}
	wg.Wait()
	return members
}

// memberInfo asks a member for its own entry (name, client URLs), or
// returns the last one heard.
func (r *Router) memberInfo(ctx context.Context, id uint64) (*pb.Member, bool) {
	conn, err := r.node.peerConn(id)
	if err == nil {
		cctx, cancel := context.WithTimeout(outgoing(ctx), 500*time.Millisecond)
		resp, err := pb.NewClusterClient(conn).MemberList(cctx, &pb.MemberListRequest{})
		cancel()
		if err == nil && len(resp.Members) == 1 && resp.Members[0].ID == id {
			r.fwd.mu.Lock()
			if r.fwd.info == nil {
				r.fwd.info = map[uint64]*pb.Member{}
			}
			r.fwd.info[id] = resp.Members[0]
			r.fwd.mu.Unlock()
		}
	}
	r.fwd.mu.Lock()
	defer r.fwd.mu.Unlock()
	m, ok := r.fwd.info[id]
	return m, ok
}

// leaderID is the member etcd would report as leader: in a cluster the
// oracle's leader (which runs the writes), else this member.
func (r *Router) leaderID(v *revision.View) uint64 {
	if r.node.cluster {
		return v.Lead
	}
	return v.MemberID
}
