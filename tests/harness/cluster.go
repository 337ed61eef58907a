package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Token is --initial-cluster-token; DefaultClusterToken if empty.
	Token string
	// Args are extra flags given to every member.
	Args []string
	// Env are extra environment variables (KEY=value) given to every member.
	Env []string
	// ReadyTimeout bounds each member's wait for ReadyLine after a (re)start; 60s if zero.
	ReadyTimeout time.Duration
}

// DefaultClusterToken is the --initial-cluster-token of clusters started by StartCluster.
const DefaultClusterToken = "mosaic-test-cluster"

// Member is one server process of a Cluster. Its Name is the member name (m1, m2, ...),
// its Endpoint the client URL; both stay the same across restarts.
type Member struct {
	*Process
	PeerURL string // --listen-peer-urls and --initial-advertise-peer-urls
	DataDir string // --data-dir, kept across restarts
}

// Cluster is a multi-member cluster bootstrapped with etcd's static flags
// (--initial-cluster name=peerURL,...), every member a child process on 127.0.0.1.
type Cluster struct {
	t       testing.TB
	members []*Member

	mu     sync.Mutex
	client *clientv3.Client
}

// StartCluster starts an n-member cluster of the server under test (Mosaic built by
// BuildMosaic, or etcd with MOSAIC_TEST_SUBJECT=etcd) on free ports, named m1..mN with one
// data directory each under t.TempDir(), and waits until every member logs ReadyLine. The
// members are launched together, since a replicated member cannot be ready before a quorum
// runs. They are killed when the test ends; if the test failed, the tail of every member's
// log is printed and the full logs are written to a directory under os.TempDir().
func StartCluster(t testing.TB, n int, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Token == "" {
		opts.Token = DefaultClusterToken
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	bin, env := BuildMosaic(t).Mosaic, []string(nil)
	if SubjectIsEtcd() {
		self, err := os.Executable()
		if err != nil {
			t.Fatalf("os.Executable: %v", err)
		}
		bin, env = self, []string{etcdMainEnv + "=1"}
	}

	c := &Cluster{t: t}
	names := make([]string, n)
	clientURLs := make([]string, n)
	peerURLs := make([]string, n)
	initial := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i+1)
		clientURLs[i] = localURL(FreePort(t))
		peerURLs[i] = localURL(FreePort(t))
		initial[i] = names[i] + "=" + peerURLs[i]
	}
	for i := range n {
		dataDir := filepath.Join(t.TempDir(), names[i])
		// The same flags on every start: etcd (and Mosaic after it) ignores the bootstrap
		// flags when the data directory already holds the member's state.
		args := []string{
			"--name", names[i],
			"--data-dir", dataDir,
			"--listen-client-urls", clientURLs[i],
			"--advertise-client-urls", clientURLs[i],
			"--listen-peer-urls", peerURLs[i],
			"--initial-advertise-peer-urls", peerURLs[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", opts.Token,
		}
		args = append(args, opts.Args...)
		p := newProcess(t, names[i], bin, append(slices.Clone(env), opts.Env...), args, clientURLs[i], opts.ReadyTimeout)
		c.members = append(c.members, &Member{Process: p, PeerURL: peerURLs[i], DataDir: dataDir})
	}
	// Registered after the members' cleanups, so it runs before them, while they still run.
	t.Cleanup(c.cleanup)
	c.startAll()
	return c
}

// Members returns the members, m1 first.
func (c *Cluster) Members() []*Member { return c.members }

// Endpoints returns the members' client URLs, m1 first.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.Endpoint()
	}
	return eps
}

// Client returns a client balancing over every member's endpoint, closed when the test ends.
// Unlike Member.Client it survives member restarts.
func (c *Cluster) Client() *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		cl, err := clientv3.New(clientv3.Config{
			Endpoints:   c.Endpoints(),
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			c.t.Fatalf("clientv3.New(%v): %v", c.Endpoints(), err)
		}
		c.client = cl
	}
	return c.client
}

// Kill sends SIGKILL to member i (0-based) and waits for it to exit.
func (c *Cluster) Kill(i int) { c.t.Helper(); c.members[i].Kill() }

// Stop sends SIGTERM to member i and waits for it to exit (see Process.Stop).
func (c *Cluster) Stop(i int) { c.t.Helper(); c.members[i].Stop() }

// Restart starts the stopped or killed member i again with the same flags, ports and data
// directory, and waits for it to log ReadyLine.
func (c *Cluster) Restart(i int) { c.t.Helper(); c.members[i].Restart() }

// Running reports whether member i's process is running.
func (c *Cluster) Running(i int) bool {
	cmd, _ := c.members[i].running()
	return cmd != nil
}

// StopAll stops every running member with SIGTERM, one after the other, m1 first.
func (c *Cluster) StopAll() {
	c.t.Helper()
	for i := range c.members {
		if c.Running(i) {
			c.Stop(i)
		}
	}
}

// RestartAll starts every member that is not running, all together, and waits until each
// logs ReadyLine.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	c.startAll()
}

func (c *Cluster) startAll() {
	c.t.Helper()
	readies := make([]<-chan struct{}, len(c.members))
	for i, m := range c.members {
		if !c.Running(i) {
			readies[i] = m.launch()
		}
	}
	for i, m := range c.members {
		if readies[i] != nil {
			m.awaitReady(readies[i])
		}
	}
}

// ReadyKeyPrefix is the prefix of the keys WaitReady writes.
const ReadyKeyPrefix = "harness/ready/"

// WaitReady returns nil once a put through each member (of ReadyKeyPrefix+name, to the
// member's name) has succeeded, retrying until ctx ends; it returns the last error then.
// Every member must be running. The puts are real writes: they take revisions.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for _, m := range c.members {
		seen := map[string]int{} // each error seen, for the report
		for {
			attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := m.Client().Put(attempt, ReadyKeyPrefix+m.Name(), m.Name())
			cancel()
			if err == nil {
				break
			}
			seen[err.Error()]++
			select {
			case <-ctx.Done():
				return fmt.Errorf("put through %s (%s): %w (errors seen: %v)", m.Name(), m.Endpoint(), err, seen)
			case <-time.After(100 * time.Millisecond): // retry pace
			}
		}
	}
	return nil
}

// Leader returns the index of the member that a running member reports as leader in its
// Status response (Leader compared with each member's Header.MemberId), or -1 if no running
// member answers or the leader named is not a running member.
func (c *Cluster) Leader(ctx context.Context) int {
	var leader uint64
	ids := make([]uint64, len(c.members))
	for i, m := range c.members {
		if !c.Running(i) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := m.Client().Status(sctx, m.Endpoint())
		cancel()
		if err != nil {
			continue
		}
		ids[i] = resp.Header.MemberId
		if leader == 0 {
			leader = resp.Leader
		}
	}
	for i, id := range ids {
		if id != 0 && id == leader {
			return i
		}
	}
	return -1
}

func (c *Cluster) cleanup() {
	c.mu.Lock()
	if c.client != nil {
		c.client.Close()
		c.client = nil
	}
	c.mu.Unlock()
	if !c.t.Failed() && os.Getenv(KeepLogsEnv) != "1" {
		return
	}
	if c.t.Failed() && os.Getenv(KeepLogsEnv) == "1" {
		// For debugging: each running member dumps its goroutines (Go's SIGQUIT) into its log.
		for _, m := range c.members {
			m.quit()
		}
	}
	// Each member's cleanup prints the tail of its log (on failure); the full logs go to
	// files.
	dir, err := os.MkdirTemp("", "mosaic-cluster-logs-")
	if err != nil {
		c.t.Logf("cannot save the members' logs: %v", err)
		return
	}
	for _, m := range c.members {
		if err := os.WriteFile(filepath.Join(dir, m.Name()+".log"), []byte(m.Log()), 0o644); err != nil {
			c.t.Logf("cannot save %s's log: %v", m.Name(), err)
		}
	}
	c.t.Logf("full member logs saved in %s", dir)
}
