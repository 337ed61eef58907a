package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// etcd37Flags are the flags etcd v3.7.3 registers (server/embed/config.go AddFlags and
// server/etcdmain/config.go newConfig).
var etcd37Flags = strings.Fields(`advertise-client-urls auth-token auth-token-ttl auto-compaction-mode
auto-compaction-retention auto-tls backend-batch-interval backend-batch-limit backend-bbolt-freelist-type
bcrypt-cost bootstrap-defrag-threshold-megabytes cert-file cipher-suites client-cert-allowed-hostname
client-cert-auth client-cert-file client-crl-file client-key-file compact-hash-check-time
compaction-batch-limit compaction-sleep-interval config-file corrupt-check-time cors data-dir
discovery-cacert discovery-cert discovery-dial-timeout discovery-endpoints discovery-fallback
discovery-insecure-skip-tls-verify discovery-insecure-transport discovery-keepalive-time
discovery-keepalive-timeout discovery-key discovery-password discovery-request-timeout discovery-srv
discovery-srv-name discovery-token discovery-user distributed-tracing-address
distributed-tracing-instance-id distributed-tracing-sampling-rate distributed-tracing-service-name
downgrade-check-time election-timeout enable-distributed-tracing enable-grpc-gateway enable-log-rotation
enable-pprof feature-gates force-new-cluster grpc-keepalive-interval grpc-keepalive-min-time
grpc-keepalive-timeout heartbeat-interval host-whitelist initial-advertise-peer-urls initial-cluster
initial-cluster-state initial-cluster-token initial-election-tick-advance key-file listen-client-http-urls
listen-client-urls listen-metrics-urls listen-peer-urls log-format log-level log-outputs
log-rotation-config-json logger max-concurrent-streams max-learners max-request-bytes max-snapshots
max-txn-ops max-wals memory-mlock metrics name peer-auto-tls peer-cert-allowed-cn
peer-cert-allowed-hostname peer-cert-file peer-client-cert-auth peer-client-cert-file peer-client-key-file
peer-crl-file peer-key-file peer-skip-client-san-verification peer-trusted-ca-file pre-vote
quota-backend-bytes raft-read-timeout raft-write-timeout self-signed-cert-validity
snapshot-catchup-entries snapshot-count socket-reuse-address socket-reuse-port strict-reconfig-check
tls-max-version tls-min-version trusted-ca-file unsafe-no-fsync v2-deprecation version wal-dir
warning-apply-duration warning-unary-request-duration watch-progress-notify-interval`)

// honoured are the flags that set a config field.
var honoured = strings.Fields(`name data-dir heartbeat-interval election-timeout
listen-peer-urls listen-client-urls max-txn-ops max-request-bytes max-concurrent-streams
grpc-keepalive-min-time grpc-keepalive-interval grpc-keepalive-timeout initial-advertise-peer-urls
initial-cluster initial-cluster-state initial-cluster-token advertise-client-urls listen-metrics-urls
log-outputs log-level log-format watch-progress-notify-interval unsafe-no-fsync version feature-gates`)

func urls(t *testing.T, s string) []url.URL {
	t.Helper()
	u, err := parseURLs(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustParse(t *testing.T, args, env []string) (*config, []string) {
	t.Helper()
	c, warnings, err := parseConfig(args, env, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseConfig(%q, %q): %v", args, env, err)
	}
	return c, warnings
}

func TestDefaults(t *testing.T) {
	c, warnings := mustParse(t, nil, nil)
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	want := &config{
		Name:                        "default",
		DataDir:                     "default.mosaic",
		ListenClientURLs:            urls(t, "http://localhost:2379"),
		AdvertiseClientURLs:         urls(t, "http://localhost:2379"),
		ListenPeerURLs:              urls(t, "http://localhost:2380"),
		InitialAdvertisePeerURLs:    urls(t, "http://localhost:2380"),
		InitialCluster:              "default=http://localhost:2380",
		InitialClusterState:         "new",
		InitialClusterToken:         "etcd-cluster",
		ReplicationFactor:           3,
		LocalReads:                  true,
		MaxRequestBytes:             1572864,
		MaxTxnOps:                   128,
		MaxConcurrentStreams:        1<<32 - 1,
		GRPCKeepAliveMinTime:        5 * time.Second,
		GRPCKeepAliveInterval:       2 * time.Hour,
		GRPCKeepAliveTimeout:        20 * time.Second,
		WatchProgressNotifyInterval: 10 * time.Minute,
		SnapshotCount:               10000,
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             time.Second,
		LogLevel:                    "info",
		LogFormat:                   "json",
		LogOutputs:                  []string{"default"},
	}
	if got, wantS := dump(c), dump(want); got != wantS {
		t.Errorf("defaults:\n got %s\nwant %s", got, wantS)
	}
}

// dump prints a config with its URLs readable, for comparisons and failure messages.
func dump(c *config) string {
	d := *c
	d.ListenClientURLs, d.AdvertiseClientURLs, d.ListenPeerURLs, d.InitialAdvertisePeerURLs, d.ListenMetricsURLs = nil, nil, nil, nil, nil
	return fmt.Sprintf("%+v listen-client=%s advertise-client=%s listen-peer=%s advertise-peer=%s metrics=%s", d,
		joinURLs(c.ListenClientURLs), joinURLs(c.AdvertiseClientURLs), joinURLs(c.ListenPeerURLs),
		joinURLs(c.InitialAdvertisePeerURLs), joinURLs(c.ListenMetricsURLs))
}

func TestHonouredFlags(t *testing.T) {
	peer := "--initial-cluster=n1=http://10.0.0.1:2380"
	tests := []struct {
		args  []string
		check func(c *config) bool
	}{
		{[]string{"--name=n1"}, func(c *config) bool {
			return c.Name == "n1" && c.DataDir == "n1.mosaic" && c.InitialCluster == "n1=http://localhost:2380"
		}},
		{[]string{"--data-dir", "/var/lib/etcd"}, func(c *config) bool { return c.DataDir == "/var/lib/etcd" }},
		{[]string{"--listen-client-urls=http://127.0.0.1:2379,http://10.0.0.1:2379,http://127.0.0.1:2379", "--advertise-client-urls=http://10.0.0.1:2379"},
			func(c *config) bool {
				// deduplicated and sorted, as etcd does
				return joinURLs(c.ListenClientURLs) == "http://10.0.0.1:2379,http://127.0.0.1:2379" &&
					joinURLs(c.AdvertiseClientURLs) == "http://10.0.0.1:2379"
			}},
		{[]string{"--listen-peer-urls=http://0.0.0.0:2380"}, func(c *config) bool { return joinURLs(c.ListenPeerURLs) == "http://0.0.0.0:2380" }},
		{[]string{"--name=n1", "--initial-advertise-peer-urls=http://10.0.0.1:2380", peer}, func(c *config) bool {
			return joinURLs(c.InitialAdvertisePeerURLs) == "http://10.0.0.1:2380" && c.InitialCluster == "n1=http://10.0.0.1:2380"
		}},
		{[]string{"--listen-metrics-urls=http://127.0.0.1:2381"}, func(c *config) bool { return joinURLs(c.ListenMetricsURLs) == "http://127.0.0.1:2381" }},
		{[]string{"--initial-cluster-state=existing"}, func(c *config) bool { return c.InitialClusterState == "existing" }},
		{[]string{"--initial-cluster-token=tok"}, func(c *config) bool { return c.InitialClusterToken == "tok" }},
		{[]string{"--max-request-bytes=10485760"}, func(c *config) bool { return c.MaxRequestBytes == 10<<20 }},
		{[]string{"--max-txn-ops=1024"}, func(c *config) bool { return c.MaxTxnOps == 1024 }},
		{[]string{"--max-concurrent-streams=100"}, func(c *config) bool { return c.MaxConcurrentStreams == 100 }},
		{[]string{"--grpc-keepalive-min-time=1s", "--grpc-keepalive-interval=1m", "--grpc-keepalive-timeout=3s"}, func(c *config) bool {
			return c.GRPCKeepAliveMinTime == time.Second && c.GRPCKeepAliveInterval == time.Minute && c.GRPCKeepAliveTimeout == 3*time.Second
		}},
		{[]string{"--log-level=debug", "--log-format=console", "--log-outputs=stderr,/tmp/x.log,stderr"}, func(c *config) bool {
			return c.LogLevel == "debug" && c.LogFormat == "console" && slices.Equal(c.LogOutputs, []string{"stderr", "/tmp/x.log"})
		}},
		{[]string{"--watch-progress-notify-interval=5s"}, func(c *config) bool { return c.WatchProgressNotifyInterval == 5*time.Second }},
		{[]string{"--experimental-watch-progress-notify-interval=7s"}, func(c *config) bool { return c.WatchProgressNotifyInterval == 7*time.Second }},
		{[]string{"--heartbeat-interval=50", "--election-timeout=500"}, func(c *config) bool {
			return c.HeartbeatInterval == 50*time.Millisecond && c.ElectionTimeout == 500*time.Millisecond
		}},
		{[]string{"--unsafe-no-fsync"}, func(c *config) bool { return c.UnsafeNoFsync }},
		{[]string{"-name", "single-dash", "-data-dir=d"}, func(c *config) bool { return c.Name == "single-dash" && c.DataDir == "d" }},
		{[]string{"--name=n1", "--initial-advertise-peer-urls=http://10.0.0.1:2380",
			"--initial-cluster=n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380"}, func(c *config) bool {
			m, err := c.initialClusterMembers()
			return err == nil && len(m) == 3 && joinURLs(m["n2"]) == "http://10.0.0.2:2380"
		}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c, warnings := mustParse(t, tt.args, nil)
			if !tt.check(c) {
				t.Errorf("unexpected config: %s", dump(c))
			}
			for _, w := range warnings {
				if !strings.Contains(w, "experimental-watch-progress-notify-interval") {
					t.Errorf("unexpected warning %q", w)
				}
			}
		})
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name         string
		args, env    []string
		check        func(c *config) bool
		wantWarnings []string // substrings, one per warning, in order
	}{
		{
			name: "env sets flags",
			env:  []string{"PATH=/bin", "ETCD_NAME=e1", "ETCD_DATA_DIR=/data", "ETCD_SNAPSHOT_COUNT=42", "ETCD_UNSAFE_NO_FSYNC=true", "ETCD_INITIAL_CLUSTER_STATE=existing"},
			check: func(c *config) bool {
				return c.Name == "e1" && c.DataDir == "/data" && c.SnapshotCount == 42 && c.UnsafeNoFsync && c.InitialClusterState == "existing"
			},
			// Mosaic truncates Raft logs at checkpoints, not every snapshot-count entries.
			wantWarnings: []string{"flag --snapshot-count (from ETCD_SNAPSHOT_COUNT) has no effect in Mosaic yet"},
		},
		{
			name:         "flag beats env",
			args:         []string{"--name=flag"},
			env:          []string{"ETCD_NAME=env", "ETCD_DATA_DIR=/data"},
			check:        func(c *config) bool { return c.Name == "flag" && c.DataDir == "/data" },
			wantWarnings: []string{"ETCD_NAME is shadowed by flag --name"},
		},
		{
			name:         "unrecognized variable",
			env:          []string{"ETCD_NO_SUCH_FLAG=1", "ETCDCTL_API=3"},
			check:        func(c *config) bool { return c.Name == "default" },
			wantWarnings: []string{"unrecognized environment variable ETCD_NO_SUCH_FLAG=1"},
		},
		{
			name:         "ETCD_VERSION cannot be set",
			env:          []string{"ETCD_VERSION=true"},
			check:        func(c *config) bool { return c != nil },
			wantWarnings: []string{"cannot set special environment variable ETCD_VERSION"},
		},
		{
			name:  "empty variable is unset",
			env:   []string{"ETCD_NAME="},
			check: func(c *config) bool { return c.Name == "default" },
		},
		{
			name:         "no-effect flag from env",
			env:          []string{"ETCD_CERT_FILE=/pki/server.crt"},
			check:        func(c *config) bool { return c != nil },
			wantWarnings: []string{"flag --cert-file (from ETCD_CERT_FILE) has no effect in Mosaic yet"},
		},
		{
			name:  "url list from env",
			env:   []string{"ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379", "ETCD_ADVERTISE_CLIENT_URLS=http://10.1.1.1:2379"},
			check: func(c *config) bool { return joinURLs(c.ListenClientURLs) == "http://0.0.0.0:2379" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, warnings := mustParse(t, tt.args, tt.env)
			if !tt.check(c) {
				t.Errorf("unexpected config: %s", dump(c))
			}
			checkWarnings(t, warnings, tt.wantWarnings)
		})
	}
}

func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("warnings = %q, want %d matching %q", got, len(want), want)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("warning %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// TestEveryEtcdFlagAccepted sets each etcd 3.7 flag to its own default: each must parse, and each
// one Mosaic does not honour must say so.
func TestEveryEtcdFlagAccepted(t *testing.T) {
	b := newFlagBuilder()
	var v bool
	defaultConfig().register(b, &v)
	for _, name := range etcd37Flags {
		f := b.fs.Lookup(name)
		if f == nil {
			t.Errorf("etcd flag --%s is not accepted", name)
			continue
		}
		if name == "version" || name == "listen-client-urls" {
			continue // covered elsewhere; setting the latter needs --advertise-client-urls
		}
		t.Run(name, func(t *testing.T) {
			_, warnings, err := parseConfig([]string{"--" + name + "=" + f.DefValue}, nil, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case slices.Contains(honoured, name):
				checkWarnings(t, warnings, nil)
			case name == "pre-vote" || name == "logger":
				checkWarnings(t, warnings, nil) // the default is what Mosaic does
			default:
				checkWarnings(t, warnings, []string{"flag --" + name + " "})
			}
		})
	}
}

func TestNoEffectWarnings(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--pre-vote=false"}, []string{"flag --pre-vote=false has no effect in Mosaic: Mosaic always runs Raft with pre-vote"}},
		{[]string{"--logger=capnslog"}, []string{"flag --logger=capnslog has no effect"}},
		{[]string{"--config-file=/etc/etcd.yaml"}, []string{"flag --config-file has no effect in Mosaic yet: the file is not read"}},
		{[]string{"--experimental-initial-corrupt-check=true"}, []string{"flag --experimental-initial-corrupt-check was removed in etcd 3.7 (use --feature-gates=InitialCorruptCheck=true) and has no effect"}},
		{[]string{"--experimental-watch-progress-notify-interval=5s"}, []string{"flag --experimental-watch-progress-notify-interval was removed in etcd 3.7; use --watch-progress-notify-interval"}},
		{[]string{"--enable-v2", "--proxy=on"}, []string{"flag --enable-v2 was removed", "flag --proxy was removed"}},
		{[]string{"--v", "-vv", "--force"}, []string{"flag --force is no longer supported - ignoring", "flag --v is no longer", "flag --vv is no longer"}},
		{[]string{"--feature-gates=InitialCorruptCheck=true,CompactHashCheck=false"}, []string{"flag --feature-gates has no effect"}},
		{[]string{"--auto-compaction-mode=revision", "--auto-compaction-retention=1000"}, []string{"--auto-compaction-mode has no", "--auto-compaction-retention has no"}},
		{[]string{"--cors=*"}, []string{"flag --cors has no effect"}},
		{[]string{"--cors=http://a.example:80"}, []string{"flag --cors has no effect"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, warnings := mustParse(t, tt.args, nil)
			checkWarnings(t, warnings, tt.want)
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		args, env []string
		want      string
	}{
		{[]string{"--no-such-flag"}, nil, "flag provided but not defined: -no-such-flag"},
		{[]string{"--name", "n1", "extra"}, nil, `"extra" is not a valid flag`},
		{[]string{"--listen-peer-urls=localhost:2380"}, nil, "URL scheme must be http, https, unix, or unixs"},
		{[]string{"--listen-peer-urls=http://127.0.0.1"}, nil, `does not have the form "host:port"`},
		{[]string{"--listen-peer-urls=http://127.0.0.1:2380/path"}, nil, "must not contain a path"},
		{[]string{"--listen-peer-urls=http://example.com:2380"}, nil, "--listen-peer-urls: expected IP in URL for binding"},
		{[]string{"--advertise-client-urls=http://:2379"}, nil, "--advertise-client-urls: unexpected empty host"},
		{[]string{"--listen-client-urls=http://0.0.0.0:2379"}, nil, "--advertise-client-urls is required when --listen-client-urls is set explicitly"},
		{[]string{"--initial-cluster-state=bogus"}, nil, `invalid value "bogus" for flag -initial-cluster-state: must be one of ["new" "existing"]`},
		{[]string{"--name=n4", "--initial-cluster=n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380"}, nil, `couldn't find local name "n4" in the initial cluster configuration`},
		{[]string{"--initial-cluster=default"}, nil, `"default" is not of the form name=URL`},
		{[]string{"--initial-cluster=default=http://10.0.0.1:2380,b=http://10.0.0.1:2380"}, nil, "belongs to both"},
		{[]string{"--heartbeat-interval=0"}, nil, "--heartbeat-interval must be >0"},
		{[]string{"--heartbeat-interval=300"}, nil, "should be at least as 5 times as --heartbeat-interval"},
		{[]string{"--election-timeout=60000"}, nil, "is too long"},
		{[]string{"--log-level=trace"}, nil, `--log-level "trace" is not supported`},
		{[]string{"--log-format=text"}, nil, `--log-format "text" is not supported`},
		{[]string{"--snapshot-count=-1"}, nil, "invalid value"},
		{[]string{"--max-concurrent-streams=4294967296"}, nil, "invalid value"},
		{[]string{"--experimental-watch-progress-notify-interval=1s", "--watch-progress-notify-interval=1s"}, nil, "cannot set --experimental-watch-progress-notify-interval and --watch-progress-notify-interval at the same time"},
		{[]string{"--discovery-srv=example.com"}, nil, "not supported by Mosaic yet"},
		{[]string{"--discovery-srv=example.com", "--initial-cluster=default=http://localhost:2380"}, nil, "multiple discovery or bootstrap flags are set"},
		{[]string{"--discovery-fallback=proxy"}, nil, "v2 proxy is deprecated"},
		{[]string{"--auto-compaction-mode=daily"}, nil, `unknown auto-compaction-mode "daily"`},
		{[]string{"--feature-gates=NoSuchGate=true"}, nil, "unrecognized feature gate: NoSuchGate"},
		{[]string{"--feature-gates=InitialCorruptCheck"}, nil, "missing bool value for InitialCorruptCheck"},
		{nil, []string{"ETCD_SNAPSHOT_COUNT=many"}, `invalid value "many" for ETCD_SNAPSHOT_COUNT`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append(tt.args, tt.env...), " "), func(t *testing.T) {
			c, _, err := parseConfig(tt.args, tt.env, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("no error, config %s", dump(c))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestKubeadmManifest parses the etcd command of a kubeadm static pod (etcd 3.5/3.6 era).
func TestKubeadmManifest(t *testing.T) {
	args := []string{
		"--advertise-client-urls=https://172.18.0.2:2379",
		"--cert-file=/etc/kubernetes/pki/etcd/server.crt",
		"--client-cert-auth=true",
		"--data-dir=/var/lib/etcd",
		"--experimental-initial-corrupt-check=true",
		"--experimental-watch-progress-notify-interval=5s",
		"--initial-advertise-peer-urls=https://172.18.0.2:2380",
		"--initial-cluster=kind-control-plane=https://172.18.0.2:2380",
		"--key-file=/etc/kubernetes/pki/etcd/server.key",
		"--listen-client-urls=https://127.0.0.1:2379,https://172.18.0.2:2379",
		"--listen-metrics-urls=http://127.0.0.1:2381",
		"--listen-peer-urls=https://172.18.0.2:2380",
		"--name=kind-control-plane",
		"--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt",
		"--peer-client-cert-auth=true",
		"--peer-key-file=/etc/kubernetes/pki/etcd/peer.key",
		"--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
		"--snapshot-count=10000",
		"--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
	}
	c, warnings := mustParse(t, args, []string{"HOSTNAME=kind-control-plane"})
	if c.Name != "kind-control-plane" || c.DataDir != "/var/lib/etcd" ||
		joinURLs(c.ListenClientURLs) != "https://127.0.0.1:2379,https://172.18.0.2:2379" ||
		joinURLs(c.AdvertiseClientURLs) != "https://172.18.0.2:2379" ||
		joinURLs(c.ListenPeerURLs) != "https://172.18.0.2:2380" ||
		joinURLs(c.ListenMetricsURLs) != "http://127.0.0.1:2381" ||
		c.InitialCluster != "kind-control-plane=https://172.18.0.2:2380" ||
		c.WatchProgressNotifyInterval != 5*time.Second || c.SnapshotCount != 10000 {
		t.Errorf("unexpected config: %s", dump(c))
	}
	// Sorted by flag name, as flag.Visit goes.
	checkWarnings(t, warnings, []string{
		"--cert-file has no effect",
		"--client-cert-auth has no effect",
		"--experimental-initial-corrupt-check was removed",
		"--experimental-watch-progress-notify-interval was removed in etcd 3.7; use --watch-progress-notify-interval",
		"--key-file has no effect",
		"--peer-cert-file has no effect",
		"--peer-client-cert-auth has no effect",
		"--peer-key-file has no effect",
		"--peer-trusted-ca-file has no effect",
		"--snapshot-count has no effect",
		"--trusted-ca-file has no effect",
	})
}

func TestHelpAndVersion(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		var out bytes.Buffer
		_, _, err := parseConfig([]string{"--name=x", arg}, nil, &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: err = %v, want flag.ErrHelp", arg, err)
		}
		for _, want := range []string{"Usage:", "\nMember:\n", "\nClustering:\n", "\nSecurity:\n", "\nLogging:\n",
			"  --data-dir '${name}.mosaic'", "  --cert-file '' [no effect]", "  --listen-client-urls 'http://localhost:2379'\n"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: help lacks %q", arg, want)
			}
		}
	}
	var out bytes.Buffer
	_, _, err := parseConfig([]string{"--version"}, []string{"ETCD_SNAPSHOT_COUNT=bad"}, &out)
	if !errors.Is(err, errVersionShown) {
		t.Errorf("--version: err = %v, want errVersionShown", err)
	}
	if !strings.Contains(out.String(), "Mosaic Version: ") || !strings.Contains(out.String(), "etcd API Version: 3.7.") {
		t.Errorf("--version printed %q", out.String())
	}
}

// TestLeaseCheckpointGate: leases record remaining TTLs only with etcd's LeaseCheckpoint
// feature gate, off by default as in etcd; other gates are accepted with a warning.
func TestLeaseCheckpointGate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
		warn []string
	}{
		{nil, false, nil},
		{[]string{"--feature-gates=LeaseCheckpoint=true"}, true, nil},
		{[]string{"--feature-gates=LeaseCheckpoint=false"}, false, nil},
		{[]string{"--feature-gates=LeaseCheckpoint=true,InitialCorruptCheck=true"}, true, []string{"no effect in Mosaic yet for InitialCorruptCheck"}},
	} {
		c, warnings, err := parseConfig(tc.args, nil, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.LeaseCheckpoint != tc.want {
			t.Errorf("%v: LeaseCheckpoint = %v, want %v", tc.args, c.LeaseCheckpoint, tc.want)
		}
		checkWarnings(t, warnings, tc.warn)
	}
}
