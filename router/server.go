package router

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/watchactor"
)

// grpcOverheadBytes is the room etcd leaves above --max-request-bytes for
// gRPC framing; larger messages are refused by gRPC itself.
const grpcOverheadBytes = 512 * 1024

// streamWorkers is how many goroutines each gRPC server keeps to run calls on. A call that finds
// them all busy runs on a goroutine of its own, as without workers. Reusing goroutines saves
// growing a fresh goroutine's stack for every call, which was 6% of a member's CPU under
// linearizable reads and 2% under puts.
const streamWorkers = 256

// NewGRPCServer returns a gRPC server with every service of the node.
func (r *Router) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(r.maxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ChainUnaryInterceptor(r.requireLeaderUnary),
		grpc.ChainStreamInterceptor(r.requireLeaderStream),
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
	rangepb.RegisterForwarderServer(s, &forwardServer{kv: &kvServer{r: r}})
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

// requiresLeader reports whether the client asked, as etcd's
// clientv3.WithRequireLeader does, to be refused when there is no leader.
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	ks := md[rpctypes.MetadataRequireLeaderKey]
	return len(ks) > 0 && ks[0] == rpctypes.MetadataHasLeader
}

// noLeader reports whether this member knows of no leader of the cluster.
func (r *Router) noLeader() bool { return r.node.cluster && r.node.oracle.View().Lead == 0 }

// requireLeaderUnary refuses a require-leader request when this member
// knows no leader, as etcd does.
func (r *Router) requireLeaderUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if requiresLeader(ctx) && r.noLeader() {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return handler(ctx, req)
}

// maxNoLeaderCount is etcd's: a require-leader stream is ended once the
// member has known no leader for this many election timeouts.
const maxNoLeaderCount = 3

// requireLeaderStream refuses a require-leader stream (a Kubernetes watch,
// say) when this member knows no leader, and ends one that is open once it
// has known none for three election timeouts, with etcd's "no leader".
func (r *Router) requireLeaderStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !r.node.cluster || !requiresLeader(ss.Context()) {
		return handler(srv, ss)
	}
	if r.noLeader() {
		return rpctypes.ErrGRPCNoLeader
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	go func() {
		misses := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.electionTimeout):
			}
			if r.noLeader() {
				misses++
			} else {
				misses = 0
			}
			if misses >= maxNoLeaderCount {
				cancel(rpctypes.ErrGRPCNoLeader)
				return
			}
		}
	}()
	err := handler(srv, streamWithCtx{ServerStream: ss, ctx: ctx})
	if errors.Is(context.Cause(ctx), rpctypes.ErrGRPCNoLeader) {
		return rpctypes.ErrGRPCNoLeader
	}
	return err
}

type streamWithCtx struct {
	grpc.ServerStream
	ctx context.Context
}

func (s streamWithCtx) Context() context.Context { return s.ctx }
