// config.go turns an etcd v3.7 server command line and its ETCD_* environment into a Mosaic
// configuration.
//
// Invariants kept here:
//   - Every flag etcd v3.7 registers is accepted with etcd's type, default and env variable, so an
//     etcd manifest runs unchanged. Flags removed from etcd in 3.5/3.6 that manifests still carry
//     (kubeadm's --experimental-*) are accepted too: etcd 3.7 itself would reject them.
//   - A flag is either honoured (it sets a field of config) or reported: setting it yields a
//     warning, never a silent no-op.
//   - Precedence is etcd's: command line, then ETCD_<FLAG> environment variable, then default.
//
// etcd's own rules differ in one place: a variable shadowed by a flag is a fatal error in etcd
// and a warning here.

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// mosaicVersion is the version of this binary.
	mosaicVersion = "0.1.0-dev"
	// etcdCompatVersion is the etcd server version whose API and command line Mosaic implements.
	etcdCompatVersion = "3.7.3"

	defaultName        = "default"
	clusterStateNew    = "new"
	clusterStateExist  = "existing"
	maxElectionTimeout = 50 * time.Second // etcd's limit
)

// errVersionShown is returned by parseConfig after --version printed the version: exit 0.
var errVersionShown = errors.New("version shown")

// config is what a Mosaic node takes from its command line. Only the flags that Mosaic honours
// have a field; see parseConfig for the others.
type config struct {
	// Name is this node's member name (--name).
	Name string
	// DataDir holds the node's data (--data-dir); "<Name>.mosaic" when not set.
	DataDir string

	// ListenClientURLs are the etcd API listeners (--listen-client-urls). "localhost" binds
	// the loopback address, so the default is 127.0.0.1:2379.
	ListenClientURLs []url.URL
	// AdvertiseClientURLs are what Cluster.MemberList reports (--advertise-client-urls).
	AdvertiseClientURLs []url.URL
	// ListenPeerURLs are the inter-node listeners (--listen-peer-urls).
	ListenPeerURLs []url.URL
	// InitialAdvertisePeerURLs are this node's peer URLs as others reach them
	// (--initial-advertise-peer-urls).
	InitialAdvertisePeerURLs []url.URL
	// ListenMetricsURLs serve /metrics and the /health, /livez, /readyz probes
	// (--listen-metrics-urls); Kubernetes static pods probe them. Empty: not served.
	ListenMetricsURLs []url.URL

	// InitialCluster is the bootstrap membership, "name=peerURL,..." (--initial-cluster). When
	// not set it is Name=each of InitialAdvertisePeerURLs. See initialClusterMembers.
	InitialCluster string
	// InitialClusterState is "new" or "existing" (--initial-cluster-state).
	InitialClusterState string
	// InitialClusterToken keeps clusters that share peers apart (--initial-cluster-token).
	InitialClusterToken string
	// ReplicationFactor is how many members hold each range (--replication-factor, Mosaic's own).
	ReplicationFactor int
	// LocalReads: every member holds every range, as a learner where it is not one of the
	// range's replicas, so that serializable reads never leave the member (--local-reads,
	// Mosaic's own).
	LocalReads bool

	// MaxRequestBytes is the largest client request accepted (--max-request-bytes).
	MaxRequestBytes uint
	// MaxTxnOps is the largest number of operations in one Txn (--max-txn-ops).
	MaxTxnOps uint
	// MaxConcurrentStreams bounds the gRPC streams of one client connection
	// (--max-concurrent-streams).
	MaxConcurrentStreams uint32
	// GRPCKeepAliveMinTime is the shortest client ping interval tolerated
	// (--grpc-keepalive-min-time).
	GRPCKeepAliveMinTime time.Duration
	// GRPCKeepAliveInterval is how often the server pings an idle client, 0 to disable
	// (--grpc-keepalive-interval).
	GRPCKeepAliveInterval time.Duration
	// GRPCKeepAliveTimeout is how long a ping may stay unanswered (--grpc-keepalive-timeout).
	GRPCKeepAliveTimeout time.Duration
	// WatchProgressNotifyInterval is the period of watch progress notifications
	// (--watch-progress-notify-interval, formerly --experimental-watch-progress-notify-interval).
	WatchProgressNotifyInterval time.Duration

	// SnapshotCount is the number of applied entries between Raft snapshots (--snapshot-count).
	SnapshotCount uint64
	// LeaseCheckpoint: leases' remaining TTLs are recorded, so that a new
	// leader or a restart does not give them their full TTL again
	// (--feature-gates=LeaseCheckpoint=true; off by default, as in etcd).
	LeaseCheckpoint bool
	// HeartbeatInterval is the Raft tick (--heartbeat-interval, milliseconds).
	HeartbeatInterval time.Duration
	// ElectionTimeout is the Raft election timeout (--election-timeout, milliseconds).
	ElectionTimeout time.Duration
	// UnsafeNoFsync skips fsync: acknowledged writes may be lost (--unsafe-no-fsync).
	UnsafeNoFsync bool

	// LogLevel is one of debug, info, warn, error, panic, fatal (--log-level).
	LogLevel string
	// LogFormat is json or console (--log-format).
	LogFormat string
	// LogOutputs are "default" (stderr), "stderr", "stdout" or file paths (--log-outputs).
	LogOutputs []string
}

// initialClusterMembers parses InitialCluster into member name → peer URLs.
func (c *config) initialClusterMembers() (map[string][]url.URL, error) {
	members := make(map[string][]url.URL)
	for _, entry := range strings.Split(c.InitialCluster, ",") {
		if entry == "" {
			continue
		}
		name, raw, ok := strings.Cut(entry, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--initial-cluster: %q is not of the form name=URL", entry)
		}
		u, err := parseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("--initial-cluster: member %q: %w", name, err)
		}
		members[name] = append(members[name], u)
	}
	return members, nil
}

// parseConfig reads an etcd-style command line (without the program name) and environment
// ("KEY=value" entries, as os.Environ returns them).
//
// Flags that Mosaic does not honour are accepted with etcd's type and produce a warning when set;
// the caller logs the warnings. --help and -h write the usage text to stderr and return
// flag.ErrHelp; --version writes the version and returns errVersionShown: in both cases the
// caller exits 0. Any other error is a bad command line: the caller prints it and exits non-zero.
func parseConfig(args []string, environ []string, stderr io.Writer) (*config, []string, error) {
	c := defaultConfig()
	b := newFlagBuilder()
	var printVersion bool
	c.register(b, &printVersion)
	fs := b.fs

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(stderr, b)
			return nil, nil, flag.ErrHelp
		}
		return nil, nil, fmt.Errorf("%w (see 'mosaic --help')", err)
	}
	if fs.NArg() != 0 {
		return nil, nil, fmt.Errorf("%q is not a valid flag (see 'mosaic --help')", fs.Arg(0))
	}
	if printVersion {
		writeVersion(stderr)
		return nil, nil, errVersionShown
	}

	setOnCmdLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { setOnCmdLine[f.Name] = true })
	warnings, fromEnv, err := applyEnv(fs, setOnCmdLine, environ)
	if err != nil {
		return nil, warnings, err
	}

	explicit := make(map[string]bool) // set by flag or by env
	fs.Visit(func(f *flag.Flag) {
		explicit[f.Name] = true
		if w := b.warning(f, fromEnv[f.Name]); w != "" {
			warnings = append(warnings, w)
		}
	})

	more, err := c.finish(b, explicit)
	warnings = append(warnings, more...)
	if err != nil {
		return nil, warnings, err
	}
	return c, warnings, nil
}

func defaultConfig() *config {
	return &config{
		Name:                        defaultName,
		ListenClientURLs:            mustParseURLs("http://localhost:2379"),
		AdvertiseClientURLs:         mustParseURLs("http://localhost:2379"),
		ListenPeerURLs:              mustParseURLs("http://localhost:2380"),
		InitialAdvertisePeerURLs:    mustParseURLs("http://localhost:2380"),
		InitialClusterState:         clusterStateNew,
		InitialClusterToken:         "etcd-cluster",
		ReplicationFactor:           3,
		LocalReads:                  true,
		MaxRequestBytes:             3 * 512 * 1024, // 1.5 MiB
		MaxTxnOps:                   128,
		MaxConcurrentStreams:        math.MaxUint32,
		GRPCKeepAliveMinTime:        5 * time.Second,
		GRPCKeepAliveInterval:       2 * time.Hour,
		GRPCKeepAliveTimeout:        20 * time.Second,
		WatchProgressNotifyInterval: 10 * time.Minute,
		SnapshotCount:               10000,
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             1000 * time.Millisecond,
		LogLevel:                    "info",
		LogFormat:                   "json",
		LogOutputs:                  []string{"default"},
	}
}

// scratch receives the values of flags that need more than a field assignment, or that Mosaic
// checks without honouring.
type scratch struct {
	heartbeatMs, electionMs  uint
	initialCluster           string
	autoCompactionMode       string
	discoveryFallback        string
	featureGates             string
	discoverySrv, discovery  string
	discoveryEndpoints       string
	listenClientHTTP, corsIn []url.URL
}

// register declares every flag, in etcd's sections. Honoured flags point at c; the others at
// throwaway variables.
func (c *config) register(b *flagBuilder, printVersion *bool) {
	s := &b.scratch
	s.heartbeatMs, s.electionMs = 100, 1000
	s.autoCompactionMode, s.discoveryFallback = "periodic", "exit"
	s.corsIn = []url.URL{{Path: "*"}}

	b.section("Member")
	addVar(b, &c.Name, "name", defaultName, "Human-readable name of this node, unique in the cluster.")
	addVar(b, &c.DataDir, "data-dir", "", "Directory of the node's data.").showDefault("${name}.mosaic")
	addVar(b, nil, "wal-dir", "", "Separate directory for etcd's write-ahead log.")
	addVar(b, &c.SnapshotCount, "snapshot-count", 10000, "Applied entries between two Raft snapshots. Mosaic truncates its Raft logs at periodic checkpoints instead.").noEffect()
	addVar(b, &s.heartbeatMs, "heartbeat-interval", 100, "Raft heartbeat interval, in milliseconds.")
	addVar(b, &s.electionMs, "election-timeout", 1000, "Raft election timeout, in milliseconds.")
	addVar(b, nil, "initial-election-tick-advance", true, "Fast-forward election ticks at start.")
	b.urls(&c.ListenPeerURLs, "listen-peer-urls", "URLs to listen on for traffic from other nodes.")
	b.urls(&c.ListenClientURLs, "listen-client-urls", "URLs to listen on for etcd API clients.")
	b.urls(&s.listenClientHTTP, "listen-client-http-urls", "URLs to listen on for HTTP-only client traffic.").noEffect()
	addVar(b, nil, "max-snapshots", uint(5), "Snapshot files to keep (deprecated in etcd 3.6).")
	addVar(b, nil, "max-wals", uint(5), "Write-ahead log files to keep.")
	addVar(b, nil, "memory-mlock", false, "Keep the backend's pages in RAM.")
	addVar(b, nil, "quota-backend-bytes", int64(0), "Backend size that raises the NOSPACE alarm.")
	addVar(b, nil, "backend-bbolt-freelist-type", "map", "bbolt freelist type: array or map.")
	addVar(b, nil, "backend-batch-interval", time.Duration(0), "Longest time before a backend commit.")
	addVar(b, nil, "backend-batch-limit", 0, "Most operations before a backend commit.")
	addVar(b, &c.MaxTxnOps, "max-txn-ops", 128, "Most operations in one transaction.")
	addVar(b, &c.MaxRequestBytes, "max-request-bytes", 3*512*1024, "Largest client request, in bytes.")
	b.add("max-concurrent-streams", &uint32Value{&c.MaxConcurrentStreams}, "Most concurrent gRPC streams per client connection.")
	addVar(b, &c.GRPCKeepAliveMinTime, "grpc-keepalive-min-time", 5*time.Second, "Shortest interval between client pings.")
	addVar(b, &c.GRPCKeepAliveInterval, "grpc-keepalive-interval", 2*time.Hour, "Interval of server pings to idle clients (0 disables).")
	addVar(b, &c.GRPCKeepAliveTimeout, "grpc-keepalive-timeout", 20*time.Second, "Wait for a ping answer before closing (0 disables).")
	addVar(b, nil, "socket-reuse-port", false, "Set SO_REUSEPORT on listeners.")
	addVar(b, nil, "socket-reuse-address", false, "Set SO_REUSEADDR on listeners.")
	addVar(b, nil, "enable-grpc-gateway", true, "Serve the JSON gateway of the gRPC API.")
	addVar(b, nil, "raft-read-timeout", 5*time.Second, "Read timeout of etcd's peer connections.")
	addVar(b, nil, "raft-write-timeout", 5*time.Second, "Write timeout of etcd's peer connections.")
	addVar(b, &s.featureGates, "feature-gates", "", "Comma-separated Feature=bool pairs of etcd "+etcdCompatVersion+" feature gates. Mosaic honours LeaseCheckpoint (record leases' remaining TTLs, off by default as in etcd); the others have no effect.")

	b.section("Clustering")
	b.urls(&c.InitialAdvertisePeerURLs, "initial-advertise-peer-urls", "This node's peer URLs, as the other nodes reach them.")
	addVar(b, &s.initialCluster, "initial-cluster", "default=http://localhost:2380", "Bootstrap membership: name=peerURL,...").showDefault("${name}=<initial-advertise-peer-urls>")
	b.add("initial-cluster-state", &choiceValue{&c.InitialClusterState, []string{clusterStateNew, clusterStateExist}},
		"'new' to bootstrap a cluster, 'existing' to join one. Ignored once the node has data.")
	addVar(b, &c.InitialClusterToken, "initial-cluster-token", "etcd-cluster", "Token that keeps clusters sharing peers apart.")
	addVar(b, &c.ReplicationFactor, "replication-factor", 3, "Mosaic: how many members hold each range (every voting member when there are fewer).")
	addVar(b, &c.LocalReads, "local-reads", true, "Mosaic: every member also holds a Raft learner of each range it is not a replica of, so serializable reads never leave the member (false: such reads ask a member that holds the range, and each write reaches only the range's replicas).")
	b.urls(&c.AdvertiseClientURLs, "advertise-client-urls", "This node's client URLs, as clients reach them.")
	addVar(b, &s.discoveryEndpoints, "discovery-endpoints", "", "Discovery service gRPC endpoints.").noEffect()
	addVar(b, nil, "discovery-token", "", "Discovery token of the cluster to bootstrap.")
	addVar(b, nil, "discovery-dial-timeout", 2*time.Second, "Discovery dial timeout.")
	addVar(b, nil, "discovery-request-timeout", 5*time.Second, "Discovery request timeout.")
	addVar(b, nil, "discovery-keepalive-time", 2*time.Second, "Discovery keepalive time.")
	addVar(b, nil, "discovery-keepalive-timeout", 6*time.Second, "Discovery keepalive timeout.")
	addVar(b, nil, "discovery-insecure-transport", true, "Discovery without TLS.")
	addVar(b, nil, "discovery-insecure-skip-tls-verify", false, "Discovery without server certificate checks.")
	addVar(b, nil, "discovery-cert", "", "Discovery client certificate file.")
	addVar(b, nil, "discovery-key", "", "Discovery client key file.")
	addVar(b, nil, "discovery-cacert", "", "Discovery CA bundle.")
	addVar(b, nil, "discovery-user", "", "Discovery username[:password].")
	addVar(b, nil, "discovery-password", "", "Discovery password.")
	b.add("discovery-fallback", &choiceValue{&s.discoveryFallback, []string{"exit", "proxy"}}, "What to do when discovery fails: 'exit'.").noEffect()
	addVar(b, &s.discoverySrv, "discovery-srv", "", "DNS SRV domain to bootstrap from.").noEffect()
	addVar(b, nil, "discovery-srv-name", "", "Suffix of the DNS SRV name.")
	addVar(b, nil, "strict-reconfig-check", true, "Reject membership changes that would lose quorum.")
	addVar(b, nil, "pre-vote", true, "Raft pre-vote.").fixed("true", "Mosaic always runs Raft with pre-vote")
	addVar(b, nil, "auto-compaction-retention", "0", "History to keep when compacting automatically (0 disables).")
	addVar(b, &s.autoCompactionMode, "auto-compaction-mode", "periodic", "How to read --auto-compaction-retention: periodic or revision.").noEffect()
	b.add("v2-deprecation", &choiceValue{new("write-only"), []string{"not-yet", "write-only", "write-only-skip-check", "write-only-drop-data", "gone"}},
		"v2 store deprecation stage (deprecated in etcd).").noEffect()

	b.section("Security")
	addVar(b, nil, "cert-file", "", "Certificate served to clients.")
	addVar(b, nil, "key-file", "", "Key of --cert-file.")
	addVar(b, nil, "client-cert-file", "", "Certificate this node presents as a client (default: --cert-file).")
	addVar(b, nil, "client-key-file", "", "Key of --client-cert-file.")
	addVar(b, nil, "client-cert-auth", false, "Require client certificates signed by --trusted-ca-file.")
	addVar(b, nil, "client-crl-file", "", "Revoked client certificates.")
	addVar(b, nil, "client-cert-allowed-hostname", "", "Allowed SAN hostnames of client certificates.")
	addVar(b, nil, "trusted-ca-file", "", "CA bundle that client certificates must chain to.")
	addVar(b, nil, "auto-tls", false, "Client TLS with generated certificates.")
	addVar(b, nil, "peer-cert-file", "", "Certificate served to other nodes.")
	addVar(b, nil, "peer-key-file", "", "Key of --peer-cert-file.")
	addVar(b, nil, "peer-client-cert-file", "", "Certificate this node presents to other nodes (default: --peer-cert-file).")
	addVar(b, nil, "peer-client-key-file", "", "Key of --peer-client-cert-file.")
	addVar(b, nil, "peer-trusted-ca-file", "", "CA bundle that peer certificates must chain to.")
	addVar(b, nil, "peer-client-cert-auth", false, "Require peer client certificates.")
	addVar(b, nil, "peer-auto-tls", false, "Peer TLS with generated certificates.")
	addVar(b, nil, "peer-crl-file", "", "Revoked peer certificates.")
	addVar(b, nil, "self-signed-cert-validity", uint(1), "Validity of generated certificates, in years.")
	addVar(b, nil, "peer-cert-allowed-cn", "", "Allowed CNs of peer certificates.")
	addVar(b, nil, "peer-cert-allowed-hostname", "", "Allowed SAN hostnames of peer certificates.")
	addVar(b, nil, "cipher-suites", "", "TLS cipher suites (empty: Go's).")
	addVar(b, nil, "peer-skip-client-san-verification", false, "Skip the SAN check of peer client certificates.")
	addVar(b, nil, "tls-min-version", "TLS1.2", "Lowest TLS version: TLS1.2 or TLS1.3.")
	addVar(b, nil, "tls-max-version", "", "Highest TLS version (empty: Go's).")
	b.add("cors", &urlsValue{p: &s.corsIn, wildcard: true}, "Allowed CORS origins ('*': all).").noEffect()
	addVar(b, nil, "host-whitelist", "*", "Allowed Host headers of insecure HTTP requests ('*': all).")

	b.section("Auth")
	addVar(b, nil, "auth-token", "simple", "Auth token type and options: simple or jwt,...")
	addVar(b, nil, "bcrypt-cost", uint(10), "bcrypt cost of password hashes.")
	addVar(b, nil, "auth-token-ttl", uint(300), "Lifetime of simple auth tokens, in seconds.")

	b.section("Profiling and monitoring")
	addVar(b, nil, "enable-pprof", false, "Serve /debug/pprof on the client URLs.")
	addVar(b, nil, "metrics", "basic", "Metrics detail: basic or extensive.")
	b.urls(&c.ListenMetricsURLs, "listen-metrics-urls", "URLs that serve /metrics and the health probes.")

	b.section("Logging")
	addVar(b, nil, "logger", "zap", "Logger implementation.").fixed("zap", "Mosaic always logs with zap")
	b.add("log-outputs", &stringsValue{&c.LogOutputs}, "'default', 'stderr', 'stdout' or file paths, comma-separated.")
	addVar(b, &c.LogLevel, "log-level", "info", "Least level logged: debug, info, warn, error, panic or fatal.")
	addVar(b, &c.LogFormat, "log-format", "json", "Log encoding: json or console.")
	addVar(b, nil, "enable-log-rotation", false, "Rotate a single file log output.")
	addVar(b, nil, "log-rotation-config-json", `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`, "Log rotation settings.")
	addVar(b, nil, "warning-unary-request-duration", 300*time.Millisecond, "Log requests slower than this.")
	addVar(b, nil, "warning-apply-duration", 100*time.Millisecond, "Log applies slower than this.")

	b.section("Distributed tracing")
	addVar(b, nil, "enable-distributed-tracing", false, "OpenTelemetry tracing.")
	addVar(b, nil, "distributed-tracing-address", "localhost:4317", "Tracing collector address.")
	addVar(b, nil, "distributed-tracing-service-name", "etcd", "Tracing service name.")
	addVar(b, nil, "distributed-tracing-instance-id", "", "Tracing instance ID, unique per node.")
	addVar(b, nil, "distributed-tracing-sampling-rate", 0, "Spans sampled per million.")

	b.section("Features")
	addVar(b, nil, "corrupt-check-time", time.Duration(0), "Interval of cluster corruption checks.")
	addVar(b, nil, "compact-hash-check-time", time.Minute, "Interval of compaction hash checks.")
	addVar(b, nil, "compaction-batch-limit", 0, "Revisions deleted per compaction batch.")
	addVar(b, nil, "compaction-sleep-interval", time.Duration(0), "Pause between compaction batches.")
	addVar(b, &c.WatchProgressNotifyInterval, "watch-progress-notify-interval", 10*time.Minute, "Interval of watch progress notifications.")
	addVar(b, nil, "downgrade-check-time", 5*time.Second, "Interval of downgrade status checks.")
	addVar(b, nil, "bootstrap-defrag-threshold-megabytes", uint(0), "Defragment at start if it frees this much.")
	addVar(b, nil, "max-learners", 1, "Most learner members.")
	addVar(b, nil, "snapshot-catchup-entries", uint64(5000), "Entries kept for slow followers after a snapshot.")

	b.section("Unsafe")
	addVar(b, &c.UnsafeNoFsync, "unsafe-no-fsync", false, "Do not fsync: acknowledged writes can be lost.")
	addVar(b, nil, "force-new-cluster", false, "Restart as a one-member cluster.")

	b.section("Other")
	addVar(b, nil, "config-file", "", "etcd configuration file. Not read by Mosaic: use flags or ETCD_* variables.")
	addVar(b, printVersion, "version", false, "Print the version and exit.")

	// Flags that etcd removed before 3.7 but that manifests written for 3.5/3.6 still carry.
	b.section("Removed from etcd before 3.7, accepted for older manifests")
	addVar(b, &c.WatchProgressNotifyInterval, "experimental-watch-progress-notify-interval", 10*time.Minute, "").renamed("watch-progress-notify-interval")
	addVar(b, &s.discovery, "discovery", "", "").removed("")
	addVar(b, nil, "discovery-proxy", "", "").removed("")
	addVar(b, nil, "enable-v2", false, "").removed("")
	addVar(b, nil, "experimental-enable-v2v3", "", "").removed("")
	addVar(b, nil, "proxy", "off", "").removed("")
	for _, n := range []string{"proxy-failure-wait", "proxy-refresh-interval", "proxy-dial-timeout", "proxy-write-timeout", "proxy-read-timeout"} {
		addVar(b, nil, n, uint(0), "").removed("")
	}
	for _, n := range []string{"memory-mlock", "peer-skip-client-san-verification", "enable-distributed-tracing"} {
		addVar(b, nil, "experimental-"+n, false, "").removed(n)
	}
	for _, n := range []string{"compact-hash-check-time", "corrupt-check-time", "compaction-sleep-interval", "downgrade-check-time", "warning-apply-duration", "warning-unary-request-duration"} {
		addVar(b, nil, "experimental-"+n, time.Duration(0), "").removed(n)
	}
	for _, n := range []string{"distributed-tracing-address", "distributed-tracing-service-name", "distributed-tracing-instance-id"} {
		addVar(b, nil, "experimental-"+n, "", "").removed(n)
	}
	addVar(b, nil, "experimental-compaction-batch-limit", 0, "").removed("compaction-batch-limit")
	addVar(b, nil, "experimental-distributed-tracing-sampling-rate", 0, "").removed("distributed-tracing-sampling-rate")
	addVar(b, nil, "experimental-bootstrap-defrag-threshold-megabytes", uint(0), "").removed("bootstrap-defrag-threshold-megabytes")
	addVar(b, nil, "experimental-snapshot-catchup-entries", uint64(0), "").removed("snapshot-catchup-entries")
	addVar(b, nil, "experimental-initial-corrupt-check", false, "").removed("feature-gates=InitialCorruptCheck=true")
	addVar(b, nil, "experimental-compact-hash-check-enabled", false, "").removed("feature-gates=CompactHashCheck=true")
	addVar(b, nil, "experimental-enable-lease-checkpoint", false, "").removed("feature-gates=LeaseCheckpoint=true")
	addVar(b, nil, "experimental-enable-lease-checkpoint-persist", false, "").removed("feature-gates=LeaseCheckpointPersist=true")
	addVar(b, nil, "experimental-txn-mode-write-with-shared-buffer", true, "").removed("feature-gates=TxnModeWriteWithSharedBuffer=true")
	addVar(b, nil, "experimental-stop-grpc-service-on-defrag", false, "").removed("feature-gates=StopGRPCServiceOnDefrag=true")

	// etcd's own list of long-gone flags, which it accepts and ignores.
	b.section("")
	for _, n := range []string{"cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
		"max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout", "retry-interval", "snapshot", "v", "vv"} {
		b.add(n, obsoleteValue{}, "").obsolete()
	}
}

// etcdFeatureGates are the server feature gates of etcd 3.7.
var etcdFeatureGates = []string{"CompactHashCheck", "FastLeaseKeepAlive", "InitialCorruptCheck", "LeaseCheckpoint",
	"LeaseCheckpointPersist", "PriorityRequest", "SetMemberLocalAddr", "StopGRPCServiceOnDefrag", "TxnModeWriteWithSharedBuffer"}

// finish derives the fields that depend on several flags and validates the result the way etcd
// does, with etcd's wording where one exists.
func (c *config) finish(b *flagBuilder, explicit map[string]bool) (warnings []string, err error) {
	s := &b.scratch
	if explicit["experimental-watch-progress-notify-interval"] && explicit["watch-progress-notify-interval"] {
		return nil, errors.New("cannot set --experimental-watch-progress-notify-interval and --watch-progress-notify-interval at the same time, please use --watch-progress-notify-interval only")
	}
	if c.Name == "" {
		return nil, errors.New("--name must not be empty")
	}
	if c.DataDir == "" {
		c.DataDir = c.Name + ".mosaic"
	}

	if s.heartbeatMs == 0 {
		return nil, fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", s.heartbeatMs)
	}
	if s.electionMs == 0 {
		return nil, fmt.Errorf("--election-timeout must be >0 (set to %dms)", s.electionMs)
	}
	c.HeartbeatInterval = time.Duration(s.heartbeatMs) * time.Millisecond
	c.ElectionTimeout = time.Duration(s.electionMs) * time.Millisecond
	if 5*c.HeartbeatInterval > c.ElectionTimeout {
		return nil, fmt.Errorf("--election-timeout[%dms] should be at least as 5 times as --heartbeat-interval[%dms]", s.electionMs, s.heartbeatMs)
	}
	if c.ElectionTimeout > maxElectionTimeout {
		return nil, fmt.Errorf("--election-timeout[%dms] is too long, and should be set less than %dms", s.electionMs, maxElectionTimeout.Milliseconds())
	}

	for _, l := range []struct {
		name string
		urls []url.URL
	}{{"listen-peer-urls", c.ListenPeerURLs}, {"listen-client-urls", c.ListenClientURLs},
		{"listen-client-http-urls", s.listenClientHTTP}, {"listen-metrics-urls", c.ListenMetricsURLs}} {
		if err := checkBindURLs(l.urls); err != nil {
			return nil, fmt.Errorf("--%s: %w", l.name, err)
		}
	}
	for _, a := range []struct {
		name string
		urls []url.URL
	}{{"initial-advertise-peer-urls", c.InitialAdvertisePeerURLs}, {"advertise-client-urls", c.AdvertiseClientURLs}} {
		if err := checkHostURLs(a.urls); err != nil {
			return nil, fmt.Errorf("--%s: %w", a.name, err)
		}
	}
	if explicit["listen-client-urls"] && !explicit["advertise-client-urls"] {
		return nil, errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")
	}

	// Discovery would bootstrap by asking a service for the members; silently bootstrapping a
	// one-node cluster instead could split the cluster, so it is refused.
	discovery := s.discoverySrv != "" || s.discoveryEndpoints != "" || s.discovery != ""
	if discovery && explicit["initial-cluster"] {
		return nil, errors.New(`multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery-endpoints" or "discovery-srv"`)
	}
	if discovery {
		return nil, errors.New("bootstrapping by discovery (--discovery-srv, --discovery-endpoints, --discovery) is not supported by Mosaic yet: list the members with --initial-cluster")
	}
	if s.discoveryFallback == "proxy" {
		return nil, errors.New(`v2 proxy is deprecated, and --discovery-fallback can't be configured as "proxy"`)
	}

	if explicit["initial-cluster"] {
		c.InitialCluster = s.initialCluster
	} else {
		var parts []string
		for _, u := range c.InitialAdvertisePeerURLs {
			parts = append(parts, c.Name+"="+u.String())
		}
		c.InitialCluster = strings.Join(parts, ",")
	}
	members, err := c.initialClusterMembers()
	if err != nil {
		return nil, err
	}
	own, ok := members[c.Name]
	if !ok {
		return nil, fmt.Errorf("couldn't find local name %q in the initial cluster configuration (--initial-cluster=%q)", c.Name, c.InitialCluster)
	}
	seen := make(map[string]string)
	for name, urls := range members {
		for _, u := range urls {
			if other, dup := seen[u.String()]; dup && other != name {
				return nil, fmt.Errorf("--initial-cluster: URL %s belongs to both %q and %q", u.String(), other, name)
			}
			seen[u.String()] = name
		}
	}
	if !sameURLs(own, c.InitialAdvertisePeerURLs) {
		warnings = append(warnings, fmt.Sprintf("--initial-cluster has %s=%s but --initial-advertise-peer-urls is %s",
			c.Name, joinURLs(own), joinURLs(c.InitialAdvertisePeerURLs)))
	}

	switch c.LogLevel {
	case "debug", "info", "warn", "error", "panic", "fatal":
	default:
		return warnings, fmt.Errorf("--log-level %q is not supported: use debug, info, warn, error, panic or fatal", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return warnings, fmt.Errorf("--log-format %q is not supported: use json or console", c.LogFormat)
	}
	if len(c.LogOutputs) == 0 {
		return warnings, errors.New("--log-outputs must not be empty")
	}
	switch s.autoCompactionMode {
	case "periodic", "revision":
	default:
		return warnings, fmt.Errorf("unknown auto-compaction-mode %q", s.autoCompactionMode)
	}
	gates, err := checkFeatureGates(s.featureGates)
	if err != nil {
		return warnings, fmt.Errorf("--feature-gates: %w", err)
	}
	c.LeaseCheckpoint = gates["LeaseCheckpoint"]
	var ignored []string
	for k := range gates {
		if k != "LeaseCheckpoint" {
			ignored = append(ignored, k)
		}
	}
	if len(ignored) > 0 {
		slices.Sort(ignored)
		warnings = append(warnings, fmt.Sprintf("flag --feature-gates has no effect in Mosaic yet for %s (only LeaseCheckpoint is honoured)", strings.Join(ignored, ", ")))
	}
	return warnings, nil
}

func checkFeatureGates(v string) (map[string]bool, error) {
	gates := map[string]bool{}
	for _, pair := range strings.Split(v, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return nil, fmt.Errorf("missing bool value for %s", k)
		}
		on, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("invalid value of %s=%s, err: %w", k, val, err)
		}
		if !slices.Contains(etcdFeatureGates, k) {
			return nil, fmt.Errorf("unrecognized feature gate: %s", k)
		}
		gates[k] = on
	}
	return gates, nil
}

// applyEnv sets each flag not given on the command line from its ETCD_<FLAG> variable. It
// returns, for each flag set that way, the variable's name.
func applyEnv(fs *flag.FlagSet, setOnCmdLine map[string]bool, environ []string) (warnings []string, fromEnv map[string]string, err error) {
	byKey := make(map[string]string) // ETCD_X → flag name
	fs.VisitAll(func(f *flag.Flag) { byKey[flagToEnv(f.Name)] = f.Name })
	fromEnv = make(map[string]string)
	for _, kv := range environ {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(key, "ETCD_") {
			continue
		}
		name, known := byKey[key]
		switch {
		case key == "ETCD_VERSION":
			warnings = append(warnings, fmt.Sprintf("cannot set special environment variable %s=%s: ignored", key, val))
		case key == "ETCD_UNSUPPORTED_ARCH":
			// Read by etcd's architecture check; Mosaic has no such check.
		case !known:
			warnings = append(warnings, fmt.Sprintf("unrecognized environment variable %s=%s", key, val))
		case setOnCmdLine[name]:
			warnings = append(warnings, fmt.Sprintf("environment variable %s is shadowed by flag --%s: the flag wins", key, name))
		case val == "":
			// etcd treats an empty variable as unset.
		default:
			if err := fs.Set(name, val); err != nil {
				return warnings, nil, fmt.Errorf("invalid value %q for %s: %w", val, key, err)
			}
			fromEnv[name] = key
		}
	}
	return warnings, fromEnv, nil
}

// flagToEnv is etcd's mapping: some-flag → ETCD_SOME_FLAG.
func flagToEnv(name string) string {
	return "ETCD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func checkBindURLs(urls []url.URL) error {
	for _, u := range urls {
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			continue
		}
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return err
		}
		if host != "localhost" && net.ParseIP(host) == nil {
			return fmt.Errorf("expected IP in URL for binding (%s)", u.String())
		}
	}
	return nil
}

func checkHostURLs(urls []url.URL) error {
	for _, u := range urls {
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			continue
		}
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return err
		}
		if host == "" {
			return fmt.Errorf("unexpected empty host (%s)", u.String())
		}
	}
	return nil
}

// parseURL accepts what etcd accepts: http(s)://host:port without a path, or unix(s) URLs.
func parseURL(s string) (url.URL, error) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil {
		return url.URL{}, err
	}
	switch u.Scheme {
	case "http", "https":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return url.URL{}, fmt.Errorf(`URL address does not have the form "host:port": %s`, s)
		}
		if u.Path != "" {
			return url.URL{}, fmt.Errorf("URL must not contain a path: %s", s)
		}
	case "unix", "unixs":
	default:
		return url.URL{}, fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", s)
	}
	return *u, nil
}

// parseURLs parses a comma-separated list; like etcd it drops duplicates and sorts.
func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	seen := make(map[string]bool)
	for _, part := range strings.Split(s, ",") {
		u, err := parseURL(part)
		if err != nil {
			return nil, err
		}
		if !seen[u.String()] {
			seen[u.String()] = true
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

func mustParseURLs(s string) []url.URL {
	u, err := parseURLs(s)
	if err != nil {
		panic(err) // only called on constants
	}
	return u
}

func joinURLs(urls []url.URL) string {
	s := make([]string, len(urls))
	for i := range urls {
		s[i] = urls[i].String()
	}
	return strings.Join(s, ",")
}

func sameURLs(a, b []url.URL) bool {
	as, bs := strings.Split(joinURLs(a), ","), strings.Split(joinURLs(b), ",")
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

func writeVersion(w io.Writer) {
	sha := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				sha = s.Value
			}
		}
	}
	fmt.Fprintf(w, "Mosaic Version: %s\n", mosaicVersion)
	fmt.Fprintf(w, "etcd API Version: %s\n", etcdCompatVersion)
	fmt.Fprintf(w, "Git SHA: %s\n", sha)
	fmt.Fprintf(w, "Go Version: %s\n", runtime.Version())
	fmt.Fprintf(w, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
}

func writeUsage(w io.Writer, b *flagBuilder) {
	fmt.Fprintf(w, `Usage:

  mosaic [flags]
    Start a Mosaic node.

  mosaic --version
    Print the Mosaic version and the etcd version whose API it serves.

  mosaic -h | --help
    Print this help.

Mosaic takes the command line of etcd %s: every etcd server flag is accepted, and so is its
ETCD_<FLAG> environment variable (ETCD_DATA_DIR for --data-dir), which a flag given on the
command line overrides. Flags marked [no effect] are accepted with a warning.
`, etcdCompatVersion)
	section := ""
	for _, name := range b.order {
		m := b.meta[name]
		if m.section == "" {
			continue
		}
		if m.section != section {
			section = m.section
			fmt.Fprintf(w, "\n%s:\n", section)
		}
		f := b.fs.Lookup(name)
		if m.kind == kindRenamed || m.kind == kindRemoved {
			fmt.Fprintf(w, "  --%s%s\n", name, m.note())
			continue
		}
		def := f.DefValue
		if m.helpDefault != "" {
			def = m.helpDefault
		}
		fmt.Fprintf(w, "  --%s '%s'%s\n    %s\n", name, def, m.note(), f.Usage)
	}
}

// flagKind says what setting a flag does.
type flagKind int

const (
	kindHonoured flagKind = iota // sets a config field
	kindNoEffect                 // accepted; warns
	kindRenamed                  // pre-3.7 name of a honoured flag; warns
	kindRemoved                  // removed from etcd before 3.7; warns
	kindObsolete                 // etcd's own ignored list; warns
)

type flagMeta struct {
	section     string
	kind        flagKind
	newName     string // kindRenamed, kindRemoved: what replaced it in etcd
	fixedValue  string // kindNoEffect: the value that matches what Mosaic always does
	fixedWhy    string
	helpDefault string
}

func (m *flagMeta) noEffect() *flagMeta { m.kind = kindNoEffect; return m }
func (m *flagMeta) obsolete() *flagMeta { m.kind = kindObsolete; return m }

func (m *flagMeta) showDefault(s string) *flagMeta { m.helpDefault = s; return m }

func (m *flagMeta) renamed(to string) *flagMeta {
	m.kind, m.newName = kindRenamed, to
	return m
}

func (m *flagMeta) removed(replacement string) *flagMeta {
	m.kind, m.newName = kindRemoved, replacement
	return m
}

func (m *flagMeta) fixed(value, why string) *flagMeta {
	m.fixedValue, m.fixedWhy = value, why
	return m
}

func (m *flagMeta) note() string {
	switch m.kind {
	case kindNoEffect:
		return " [no effect]"
	case kindRenamed:
		return " (now --" + m.newName + ")"
	case kindRemoved:
		if m.newName != "" {
			return " [no effect] (now --" + m.newName + ")"
		}
		return " [no effect]"
	}
	return ""
}

// flagBuilder registers flags on a FlagSet and remembers, for each, its help section and kind.
type flagBuilder struct {
	fs      *flag.FlagSet
	meta    map[string]*flagMeta
	order   []string
	current string
	scratch scratch
}

func newFlagBuilder() *flagBuilder {
	fs := flag.NewFlagSet("mosaic", flag.ContinueOnError)
	// parseConfig reports errors itself; the flag package would print them and the usage too.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagBuilder{fs: fs, meta: make(map[string]*flagMeta)}
}

func (b *flagBuilder) section(name string) { b.current = name }

func (b *flagBuilder) add(name string, v flag.Value, usage string) *flagMeta {
	b.fs.Var(v, name, usage)
	m := &flagMeta{section: b.current}
	b.meta[name] = m
	b.order = append(b.order, name)
	return m
}

func (b *flagBuilder) urls(p *[]url.URL, name, usage string) *flagMeta {
	return b.add(name, &urlsValue{p: p}, usage)
}

// flagType lists the types the flag package has typed definitions for.
type flagType interface {
	string | bool | uint | uint64 | int | int64 | time.Duration
}

// addVar registers a flag of a basic type at p, or at a throwaway variable, with a no-effect
// kind, when p is nil.
func addVar[T flagType](b *flagBuilder, p *T, name string, def T, usage string) *flagMeta {
	kind := kindHonoured
	if p == nil {
		p, kind = new(T), kindNoEffect
	}
	switch p := any(p).(type) {
	case *string:
		b.fs.StringVar(p, name, any(def).(string), usage)
	case *bool:
		b.fs.BoolVar(p, name, any(def).(bool), usage)
	case *uint:
		b.fs.UintVar(p, name, any(def).(uint), usage)
	case *uint64:
		b.fs.Uint64Var(p, name, any(def).(uint64), usage)
	case *int:
		b.fs.IntVar(p, name, any(def).(int), usage)
	case *int64:
		b.fs.Int64Var(p, name, any(def).(int64), usage)
	case *time.Duration:
		b.fs.DurationVar(p, name, any(def).(time.Duration), usage)
	default:
		panic(fmt.Sprintf("flag --%s: unsupported type %T", name, p))
	}
	m := &flagMeta{section: b.current, kind: kind}
	b.meta[name] = m
	b.order = append(b.order, name)
	return m
}

// warning is what parseConfig reports when flag f was set; env names the variable that set it,
// if one did.
func (b *flagBuilder) warning(f *flag.Flag, env string) string {
	m := b.meta[f.Name]
	src := ""
	if env != "" {
		src = " (from " + env + ")"
	}
	switch m.kind {
	case kindNoEffect:
		if m.fixedValue != "" {
			if f.Value.String() == m.fixedValue {
				return ""
			}
			return fmt.Sprintf("flag --%s=%s%s has no effect in Mosaic: %s", f.Name, f.Value.String(), src, m.fixedWhy)
		}
		if f.Name == "config-file" {
			return fmt.Sprintf("flag --config-file%s has no effect in Mosaic yet: the file is not read, only flags and ETCD_* variables are used", src)
		}
		return fmt.Sprintf("flag --%s%s has no effect in Mosaic yet", f.Name, src)
	case kindRenamed:
		return fmt.Sprintf("flag --%s%s was removed in etcd 3.7; use --%s", f.Name, src, m.newName)
	case kindRemoved:
		if m.newName != "" {
			return fmt.Sprintf("flag --%s%s was removed in etcd 3.7 (use --%s) and has no effect in Mosaic yet", f.Name, src, m.newName)
		}
		return fmt.Sprintf("flag --%s%s was removed from etcd and has no effect in Mosaic", f.Name, src)
	case kindObsolete:
		return fmt.Sprintf("flag --%s%s is no longer supported - ignoring", f.Name, src)
	}
	return ""
}

// urlsValue is a comma-separated URL list flag with etcd's checks. With wildcard, "*" is
// accepted too and kept as a URL whose path is "*" (--cors).
type urlsValue struct {
	p        *[]url.URL
	wildcard bool
}

func (v *urlsValue) String() string {
	if v.p == nil {
		return ""
	}
	return joinURLs(*v.p)
}

func (v *urlsValue) Set(s string) error {
	if s == "" {
		return nil // etcd accepts an empty value and keeps the current one
	}
	if v.wildcard && s == "*" {
		*v.p = []url.URL{{Path: "*"}}
		return nil
	}
	urls, err := parseURLs(s)
	if err != nil {
		return err
	}
	*v.p = urls
	return nil
}

// stringsValue is a comma-separated list flag; repeats are dropped, as etcd does.
type stringsValue struct{ p *[]string }

func (v *stringsValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v *stringsValue) Set(s string) error {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	*v.p = out
	return nil
}

// choiceValue is a string flag restricted to a set of values.
type choiceValue struct {
	p     *string
	valid []string
}

func (v *choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v *choiceValue) Set(s string) error {
	if !slices.Contains(v.valid, s) {
		return fmt.Errorf("must be one of %q", v.valid)
	}
	*v.p = s
	return nil
}

type uint32Value struct{ p *uint32 }

func (v *uint32Value) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatUint(uint64(*v.p), 10)
}

func (v *uint32Value) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return err
	}
	*v.p = uint32(n)
	return nil
}

// obsoleteValue is a flag etcd ignores: it takes an optional value and keeps nothing.
type obsoleteValue struct{}

func (obsoleteValue) String() string   { return "" }
func (obsoleteValue) Set(string) error { return nil }
func (obsoleteValue) IsBoolFlag() bool { return true }
