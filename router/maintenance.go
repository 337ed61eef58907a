package router

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
		Leader:           v.MemberID,
		RaftIndex:        v.Applied,
		RaftTerm:         v.Term,
		RaftAppliedIndex: v.Applied,
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

func (s *maintenanceServer) MoveLeader(ctx context.Context, _ *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return nil, status.Error(codes.Unimplemented, "mosaic: MoveLeader is not supported on a single node; use mosaicctl range transfer-leader")
}

// clusterServer is etcd's Cluster service for the single member.
type clusterServer struct {
	pb.UnimplementedClusterServer
	r *Router
}

func (s *clusterServer) MemberList(ctx context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	v := s.r.node.oracle.View()
	// etcd answers membership from the cluster store, not the KV store:
	// its header carries no revision.
	return &pb.MemberListResponse{
		Header: s.r.header(0),
		Members: []*pb.Member{{
			ID: v.MemberID, Name: s.r.name, PeerURLs: s.r.peerURLs, ClientURLs: s.r.clientURLs,
		}},
	}, nil
}
