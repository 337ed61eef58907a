package router

import (
	"math"
	"path/filepath"
	"syscall"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/watchactor"
)

// grpcOverheadBytes is the room etcd leaves above --max-request-bytes for
// gRPC framing; larger messages are refused by gRPC itself.
const grpcOverheadBytes = 512 * 1024

// NewGRPCServer returns a gRPC server with every service of the node.
func (r *Router) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(r.maxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
	}, opts...)
	s := grpc.NewServer(opts...)
	pb.RegisterKVServer(s, &kvServer{r: r})
	pb.RegisterMaintenanceServer(s, &maintenanceServer{r: r})
	pb.RegisterClusterServer(s, &clusterServer{r: r})
	pb.RegisterWatchServer(s, watchactor.NewServer(r.node.WatchSource(), watchactor.Options{
		ProgressNotifyInterval: r.watchProgressNotifyInterval,
		MaxRequestBytes:        r.maxRequestBytes + grpcOverheadBytes,
		Header:                 r.header,
		Logger:                 r.node.lg,
	}))
	pb.RegisterLeaseServer(s, &leaseServer{r: r})
	adminpb.RegisterAdminServer(s, &adminServer{r: r})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	return s
}

// RegisterForwarded serves, on the peer listener, the services other
// members forward requests of (see forward.go).
func (r *Router) RegisterForwarded(s *grpc.Server) {
	pb.RegisterKVServer(s, &kvServer{r: r})
	pb.RegisterLeaseServer(s, &leaseServer{r: r})
	pb.RegisterClusterServer(s, &clusterServer{r: r})
	adminpb.RegisterAdminServer(s, &adminServer{r: r})
}

// DiskSize is the bytes the node's stores take on disk.
func (n *Node) DiskSize() int64 {
	var total int64
	for _, dir := range []string{"state", "raft"} {
		matches, _ := filepath.Glob(filepath.Join(n.cfg.DataDir, dir, "*"))
		for _, m := range matches {
			// Blocks, not Size: badger preallocates sparse value-log files.
			var st syscall.Stat_t
			if syscall.Stat(m, &st) == nil {
				total += st.Blocks * 512
			}
		}
	}
	return total
}
