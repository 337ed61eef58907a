// Command mosaic is the Mosaic server: a key-value store that speaks the
// etcd v3 API and spreads its keyspace over many ranges. It accepts etcd's
// server flags and ETCD_* variables, so an etcd command line runs unchanged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/mosaic-kv/mosaic/router"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ()))
}

func run(args, environ []string) int {
	cfg, warnings, err := parseConfig(args, environ, os.Stderr)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errVersionShown) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mosaic: %v\n", err)
		return 2
	}
	lg, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mosaic: %v\n", err)
		return 2
	}
	defer lg.Sync()
	for _, w := range warnings {
		lg.Warn(w)
	}
	if err := serve(cfg, lg); err != nil {
		lg.Error("mosaic stopped", zap.Error(err))
		return 1
	}
	return 0
}

func newLogger(cfg *config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil
	zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	if cfg.LogFormat == "console" {
		zc.Encoding = "console"
	}
	zc.OutputPaths = nil
	for _, o := range cfg.LogOutputs {
		switch o {
		case "default", "stderr":
			zc.OutputPaths = append(zc.OutputPaths, "stderr")
		default:
			zc.OutputPaths = append(zc.OutputPaths, o)
		}
	}
	if len(zc.OutputPaths) == 0 {
		zc.OutputPaths = []string{"stderr"}
	}
	zc.ErrorOutputPaths = []string{"stderr"}
	return zc.Build()
}

func serve(cfg *config, lg *zap.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	members, err := cfg.initialClusterMembers()
	if err != nil {
		cancel()
		return err
	}
	initial, clusterID, err := router.InitialCluster(members, cfg.InitialClusterToken)
	if err != nil {
		cancel()
		return err
	}
	var memberID uint64
	for _, m := range initial {
		if m.Name == cfg.Name {
			memberID = m.ID
		}
	}
	join := false
	if cfg.InitialClusterState == clusterStateExist && len(initial) > 1 {
		// A member added to a running cluster (etcdctl member add) learns
		// its id, the cluster's and the members from the others, as etcd's
		// joining member does.
		fresh := !router.IsDataDir(cfg.DataDir)
		m, cid, list, err := router.DiscoverSelf(ctx, initial, urlStrings(cfg.InitialAdvertisePeerURLs), fresh)
		switch {
		case err == nil:
			memberID, clusterID, initial = m, cid, list
			join = fresh
		case fresh:
			cancel()
			return fmt.Errorf("joining the cluster: %w", err)
		default:
			lg.Warn("could not reach the other members; starting from this member's own data", zap.Error(err))
		}
	}
	if cfg.UnsafeNoFsync {
		lg.Warn("--unsafe-no-fsync: the Raft log is not synced; a power loss can lose acknowledged writes")
	}
	// A start that takes long logs what every goroutine waits on.
	slow := time.AfterFunc(20*time.Second, func() {
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		lg.Warn("still opening the data dir after 20s", zap.String("goroutines", b.String()))
	})
	if addr := os.Getenv("MOSAIC_PPROF_ADDR"); addr != "" {
		// Profiling, for whoever measures: Go's /debug/pprof handlers.
		go func() { lg.Warn("pprof listener stopped", zap.Error(http.ListenAndServe(addr, nil))) }()
	}
	ckpt, catchUp, err := testKnobs()
	if err != nil {
		cancel()
		return err
	}
	node, err := router.OpenNode(ctx, router.NodeConfig{Name: cfg.Name, DataDir: cfg.DataDir, Logger: lg,
		ClusterID: clusterID, MemberID: memberID, UnsafeNoFsync: cfg.UnsafeNoFsync,
		Members: initial, Token: cfg.InitialClusterToken, TickInterval: cfg.HeartbeatInterval, Join: join,
		CheckpointInterval: ckpt, CatchUpEntries: catchUp, ReplicationFactor: cfg.ReplicationFactor,
		NoLocalReads: !cfg.LocalReads})
	cancel()
	slow.Stop()
	if err != nil {
		return err
	}
	defer node.Close()

	r, err := router.New(node, router.Options{
		MaxRequestBytes:   int(cfg.MaxRequestBytes),
		MaxTxnOps:         int(cfg.MaxTxnOps),
		Name:              cfg.Name,
		ClientURLs:        urlStrings(cfg.AdvertiseClientURLs),
		PeerURLs:          urlStrings(cfg.InitialAdvertisePeerURLs),
		HeartbeatInterval: cfg.HeartbeatInterval,
		ElectionTimeout:   cfg.ElectionTimeout,
		LeaseCheckpoints:  cfg.LeaseCheckpoint,

		WatchProgressNotifyInterval: cfg.WatchProgressNotifyInterval,
	})
	if err != nil {
		return err
	}
	defer r.Close()
	gs := r.NewGRPCServer(grpcOptions(cfg)...)

	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	for _, u := range cfg.ListenClientURLs {
		l, err := listen(u)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen on client URL %s: %w", u.String(), err)
		}
		lns = append(lns, l)
	}
	// Peer listeners carry the Raft transport and the requests other
	// members forward to this one when it runs the writes.
	peers := grpc.NewServer(router.PeerServerOptions()...)
	node.RegisterPeer(peers)
	r.RegisterForwarded(peers)
	var peerLns []net.Listener
	for _, u := range cfg.ListenPeerURLs {
		l, err := listen(u)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen on peer URL %s: %w", u.String(), err)
		}
		peerLns = append(peerLns, l)
	}
	errc := make(chan error, len(lns)+len(peerLns)+len(cfg.ListenMetricsURLs))
	for _, l := range lns {
		go func(l net.Listener) { errc <- gs.Serve(l) }(l)
	}
	for _, l := range peerLns {
		go func(l net.Listener) { errc <- peers.Serve(l) }(l)
	}
	var httpServers []*http.Server
	for _, u := range cfg.ListenMetricsURLs {
		l, err := listen(u)
		if err != nil {
			return fmt.Errorf("listen on metrics URL %s: %w", u.String(), err)
		}
		hs := &http.Server{Handler: healthHandler(), ReadHeaderTimeout: 10 * time.Second}
		httpServers = append(httpServers, hs)
		go func() { errc <- hs.Serve(l) }()
	}
	for _, l := range lns {
		lg.Info("ready to serve client requests", zap.String("address", l.Addr().String()), zap.String("data-dir", cfg.DataDir))
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigc:
		lg.Info("received signal, shutting down", zap.String("signal", sig.String()))
	case <-node.Removed():
		lg.Warn("this member was removed from the cluster; shutting down")
		// Requests it passed on, the removal itself among them, get their
		// answers first.
		time.Sleep(2 * time.Second)
	case err := <-errc:
		lg.Error("a listener failed, shutting down", zap.Error(err))
	}
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	peers.Stop()
	for _, hs := range httpServers {
		hs.Close()
	}
	return nil
}

// listen binds a URL's host:port; "localhost" binds the loopback address.
func listen(u url.URL) (net.Listener, error) {
	host := u.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return net.Listen("tcp", net.JoinHostPort(host, u.Port()))
}

func urlStrings(us []url.URL) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.String()
	}
	return out
}

// healthHandler answers the probes etcd serves on --listen-metrics-urls.
func healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"health":"true","reason":""}`)
	})
	for _, p := range []string{"/livez", "/readyz"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	}
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, strings.Join([]string{"# Mosaic exports no metrics yet", ""}, "\n"))
	})
	return mux
}

// grpcOptions are etcd's client-server gRPC settings from the flags.
func grpcOptions(cfg *config) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.GRPCKeepAliveMinTime,
			PermitWithoutStream: false,
		}),
	}
	if cfg.GRPCKeepAliveInterval > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.GRPCKeepAliveInterval,
			Timeout: cfg.GRPCKeepAliveTimeout,
		}))
	}
	return opts
}

// testKnobs reads two settings tests use to make log truncation and
// snapshots happen within seconds: MOSAIC_CHECKPOINT_INTERVAL (a duration;
// default 10s) and MOSAIC_CATCHUP_ENTRIES (default 1000).
func testKnobs() (time.Duration, uint64, error) {
	var every time.Duration
	var catchUp uint64
	if v := os.Getenv("MOSAIC_CHECKPOINT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, 0, fmt.Errorf("MOSAIC_CHECKPOINT_INTERVAL=%q: want a positive duration", v)
		}
		every = d
	}
	if v := os.Getenv("MOSAIC_CATCHUP_ENTRIES"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return 0, 0, fmt.Errorf("MOSAIC_CATCHUP_ENTRIES=%q: want a positive number", v)
		}
		catchUp = n
	}
	return every, catchUp, nil
}
