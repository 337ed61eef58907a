package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Docker clusters: the members of a cluster run as containers of a FROM-scratch image (the
// image of deploy/Dockerfile), so that a test can cut a member off the network for real with
// `docker network disconnect`. Each member is on two networks:
//
//   - a client network, on which its client port is published on 127.0.0.1 (on a port that
//     Docker picks). The test's clients reach every member through it, isolated or not;
//   - the peer network, created with a subnet of its own (internal: no way out), on which
//     the member is known as <container>-peer at a fixed address. Every URL the members give
//     each other (--initial-cluster, --initial-advertise-peer-urls and
//     --advertise-client-urls) names that host, so all traffic between members goes through
//     the peer network. Isolate disconnects a member from it, Heal reconnects it at the
//     same address (peers that cached the address find it again, as after a cable is
//     plugged back in).
//
// The container names (and so the peer host names) are unique to the test, so tests can run
// in parallel with each other and with other users of the Docker daemon. Containers,
// networks and image are removed when the test ends, whatever its outcome; they carry the
// label DockerLabel, and resources so labelled that a killed test run left behind are
// removed by the next run after DockerStaleAfter.

// Environment variables of the Docker tests.
const (
	// SkipDockerEnv=1 skips the tests that need Docker even when Docker is usable.
	SkipDockerEnv = "MOSAIC_SKIP_DOCKER"
)

const (
	// DockerLabel labels every image, container and network the harness creates; its value
	// is the Unix time of creation.
	DockerLabel = "org.mosaic-kv.test.created"
	// DockerStaleAfter is the age after which a labelled resource is taken for the remains
	// of a killed test run and removed.
	DockerStaleAfter = time.Hour
	// dockerCmdTimeout bounds every docker command.
	dockerCmdTimeout = 2 * time.Minute
	// DockerClientPort and DockerPeerPort are the ports the members listen on inside
	// their containers.
	DockerClientPort = 2379
	DockerPeerPort   = 2380
)

// RequireDocker skips the test unless the Docker daemon answers `docker info`, or if
// MOSAIC_SKIP_DOCKER=1.
func RequireDocker(t testing.TB) {
	t.Helper()
	if os.Getenv(SkipDockerEnv) == "1" {
		t.Skipf("%s=1: skipping a test that runs members in Docker containers", SkipDockerEnv)
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" && !strings.HasPrefix(h, "unix://") {
		t.Skipf("skipping: DOCKER_HOST=%s is not a local daemon, and the test reaches the containers' published ports on 127.0.0.1", h)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skipf("skipping: this test runs members in Docker containers and there is no docker command (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "info")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Skipf("skipping: this test runs members in Docker containers and `docker info` fails (%v): %s",
			err, firstLine(stderr.String()))
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Docker runs a docker command and returns its standard output, trimmed. The error includes
// the standard error.
func Docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Docker(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dockerLabelArg() string {
	return DockerLabel + "=" + strconv.FormatInt(time.Now().Unix(), 10)
}

// DockerName returns a name for the test's Docker resources: prefix, then a suffix unique
// to this process and call. Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*.
func DockerName(prefix string) string {
	dockerNames.Lock()
	defer dockerNames.Unlock()
	dockerNames.n++
	return fmt.Sprintf("%s-%d-%s-%d", prefix, os.Getpid(), strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36), dockerNames.n)
}

var dockerNames struct {
	sync.Mutex
	n int
}

// removeStaleDocker removes the containers, networks and images labelled DockerLabel that
// are older than DockerStaleAfter: what test runs that were killed before their cleanup
// left behind. Failures are only logged.
func removeStaleDocker(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	cutoff := time.Now().Add(-DockerStaleAfter).Unix()
	stale := func(kind string, list []string, format string) []string {
		out, err := Docker(ctx, append(list, "--filter", "label="+DockerLabel, "--format", format)...)
		if err != nil {
			t.Logf("listing stale %ss: %v", kind, err)
			return nil
		}
		var ids []string
		for line := range strings.SplitSeq(out, "\n") {
			id, created, ok := strings.Cut(strings.TrimSpace(line), " ")
			if !ok {
				continue
			}
			if n, err := strconv.ParseInt(created, 10, 64); err == nil && n < cutoff {
				ids = append(ids, id)
			}
		}
		return ids
	}
	format := `{{.ID}} {{.Label "` + DockerLabel + `"}}`
	if ids := stale("container", []string{"ps", "-a"}, format); len(ids) > 0 {
		t.Logf("removing %d stale test containers: %v", len(ids), ids)
		Docker(ctx, append([]string{"rm", "-f", "-v"}, ids...)...)
	}
	if ids := stale("network", []string{"network", "ls"}, format); len(ids) > 0 {
		t.Logf("removing %d stale test networks: %v", len(ids), ids)
		Docker(ctx, append([]string{"network", "rm"}, ids...)...)
	}
	// docker images --format has no .Label; inspect the labelled images instead.
	if out, err := Docker(ctx, "images", "-q", "--no-trunc", "--filter", "label="+DockerLabel); err == nil && out != "" {
		ids := strings.Fields(out)
		created, err := Docker(ctx, append([]string{"image", "inspect", "-f", `{{.Id}} {{index .Config.Labels "` + DockerLabel + `"}}`}, ids...)...)
		if err == nil {
			var old []string
			for line := range strings.SplitSeq(created, "\n") {
				id, c, _ := strings.Cut(line, " ")
				if n, err := strconv.ParseInt(c, 10, 64); err == nil && n < cutoff {
					old = append(old, id)
				}
			}
			if len(old) > 0 {
				t.Logf("removing %d stale test images", len(old))
				Docker(ctx, append([]string{"rmi", "-f"}, old...)...)
			}
		}
	}
}

// BuildServerImage builds the server under test as a static binary (CGO_ENABLED=0): Mosaic
// from the repository, or with MOSAIC_TEST_SUBJECT=etcd etcd from the etcd server module the
// tests module requires. It then builds the FROM-scratch image of deploy/Dockerfile around
// it, tagged with a name unique to the test, and returns that tag. The image is removed when
// the test ends.
func BuildServerImage(t testing.TB) string {
	t.Helper()
	removeStaleDocker(t)
	buildCtx := t.TempDir()
	for _, d := range []string{"rootfs/tmp", "rootfs/data"} {
		if err := os.MkdirAll(filepath.Join(buildCtx, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(buildCtx, "rootfs/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	// The Dockerfile copies the server from "mosaic" in the build context.
	bin := filepath.Join(buildCtx, "mosaic")
	dir, pkg := RepoRoot(), "./cmd/mosaic"
	if SubjectIsEtcd() {
		dir, pkg = TestsModuleDir(), "go.etcd.io/etcd/server/v3"
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build %s (in %s): %v\n%s", pkg, dir, err, out)
	}
	built := time.Since(start)

	tag := strings.ToLower(DockerName("mosaic-test")) + ":latest"
	start = time.Now()
	t.Cleanup(func() {
		if _, err := Docker(context.Background(), "image", "inspect", tag); err != nil {
			return // never built
		}
		if _, err := Docker(context.Background(), "rmi", "-f", tag); err != nil {
			t.Errorf("removing the test image: %v", err)
		}
	})
	if _, err := Docker(context.Background(), "build", "-q", "--label", dockerLabelArg(), "-t", tag,
		"-f", filepath.Join(RepoRoot(), "deploy", "Dockerfile"), buildCtx); err != nil {
		t.Fatalf("building the image: %v", err)
	}
	t.Logf("static %s built in %s, image %s in %s", pkg, built.Round(time.Millisecond), tag, time.Since(start).Round(time.Millisecond))
	return tag
}

// DockerMember is one member of a DockerCluster.
type DockerMember struct {
	Name      string // the member name, m1, m2, ...
	Container string // the container's name
	PeerHost  string // its host name on the peer network
	PeerIP    string // its address on the peer network, the same after Heal
	Endpoint  string // its client URL on the host: http://127.0.0.1:<published port>

	c      *DockerCluster
	mu     sync.Mutex
	client *clientv3.Client
}

// DockerCluster is a cluster of the server under test (see BuildServerImage) whose members
// run in containers, bootstrapped with etcd's static flags.
type DockerCluster struct {
	t          testing.TB
	Prefix     string // the container names are <Prefix>-m1, ...
	PeerNet    string // the peer network's name
	ClientNet  string // the client network's name
	PeerSubnet *net.IPNet
	members    []*DockerMember
}

// StartDockerCluster starts an n-member cluster of image (from BuildServerImage) in
// containers, with networks of its own, and waits until every member logs ReadyLine. It
// removes the containers and networks when the test ends; if the test failed, it first
// prints the tail of every member's log and saves the full logs under os.TempDir().
// Every member gets the extra flags args.
func StartDockerCluster(t testing.TB, n int, image string, args ...string) *DockerCluster {
	t.Helper()
	prefix := DockerName("mosaic-test")
	c := &DockerCluster{t: t, Prefix: prefix, PeerNet: prefix + "-peers", ClientNet: prefix + "-clients"}
	t.Cleanup(c.cleanup)
	c.createPeerNetwork()
	mustDocker(t, "network", "create", "--label", dockerLabelArg(), c.ClientNet)

	initial := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		m := &DockerMember{Name: name, Container: prefix + "-" + name, PeerHost: prefix + "-" + name + "-peer", c: c}
		ip := append(net.IP(nil), c.PeerSubnet.IP.To4()...)
		ip[3] += byte(10 + i)
		if !c.PeerSubnet.Contains(ip) {
			t.Fatalf("peer subnet %s is too small for %d members", c.PeerSubnet, n)
		}
		m.PeerIP = ip.String()
		c.members = append(c.members, m)
		initial[i] = fmt.Sprintf("%s=http://%s:%d", name, m.PeerHost, DockerPeerPort)
	}
	extra := args
	for _, m := range c.members {
		args := []string{"create", "--name", m.Container, "--label", dockerLabelArg(),
			"--network", c.ClientNet, "-p", fmt.Sprintf("127.0.0.1::%d", DockerClientPort)}
		if v := os.Getenv("MOSAIC_RAFT_INFO_LOGS"); v != "" {
			args = append(args, "-e", "MOSAIC_RAFT_INFO_LOGS="+v) // Raft's elections in the logs
		}
		args = append(args, image,
			"--name="+m.Name,
			"--data-dir=/data",
			fmt.Sprintf("--listen-client-urls=http://0.0.0.0:%d", DockerClientPort),
			fmt.Sprintf("--advertise-client-urls=http://%s:%d", m.PeerHost, DockerClientPort),
			fmt.Sprintf("--listen-peer-urls=http://0.0.0.0:%d", DockerPeerPort),
			fmt.Sprintf("--initial-advertise-peer-urls=http://%s:%d", m.PeerHost, DockerPeerPort),
			"--initial-cluster="+strings.Join(initial, ","),
			"--initial-cluster-state=new",
			"--initial-cluster-token="+prefix,
		)
		args = append(args, extra...)
		mustDocker(t, args...)
		m.connect()
	}
	start := time.Now()
	names := make([]string, n)
	for i, m := range c.members {
		names[i] = m.Container
	}
	mustDocker(t, append([]string{"start"}, names...)...)
	for _, m := range c.members {
		out := mustDocker(t, "port", m.Container, fmt.Sprintf("%d/tcp", DockerClientPort))
		hostPort := firstLine(out)
		if _, _, err := net.SplitHostPort(hostPort); err != nil {
			t.Fatalf("docker port %s: %q: %v", m.Container, out, err)
		}
		m.Endpoint = "http://" + hostPort
	}
	deadline := start.Add(60 * time.Second)
	for _, m := range c.members {
		for {
			logs := m.Logs()
			if strings.Contains(logs, ReadyLine) {
				break
			}
			if running, _ := Docker(context.Background(), "inspect", "-f", "{{.State.Running}}", m.Container); running != "true" {
				t.Fatalf("%s (%s) stopped before logging %q:\n%s", m.Name, m.Container, ReadyLine, tail(logs, 100))
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s) did not log %q within 60s:\n%s", m.Name, m.Container, ReadyLine, tail(logs, 100))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("%d members started in containers %s-m1.. in %s; clients at %s", n, prefix, time.Since(start).Round(time.Millisecond), strings.Join(c.Endpoints(), " "))
	return c
}

// createPeerNetwork creates the internal peer network with a subnet of its own, so that
// members can be reconnected at fixed addresses (Docker accepts --ip only on a network whose
// subnet was given). The subnet is one Docker picks as free: a probe network is created
// without one and removed, and its subnet reused; another creator could take it in between,
// so this is retried.
func (c *DockerCluster) createPeerNetwork() {
	c.t.Helper()
	var lastErr error
	for range 5 {
		probe := c.PeerNet + "-probe"
		if _, err := Docker(context.Background(), "network", "create", "--internal", "--label", dockerLabelArg(), probe); err != nil {
			c.t.Fatal(err)
		}
		subnets, err := Docker(context.Background(), "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", probe)
		Docker(context.Background(), "network", "rm", probe)
		if err != nil {
			c.t.Fatal(err)
		}
		var subnet *net.IPNet
		for _, s := range strings.Fields(subnets) {
			if _, n, err := net.ParseCIDR(s); err == nil && n.IP.To4() != nil {
				subnet = n
				break
			}
		}
		if subnet == nil {
			c.t.Fatalf("docker network %s has no IPv4 subnet: %q", probe, subnets)
		}
		if _, err := Docker(context.Background(), "network", "create", "--internal", "--label", dockerLabelArg(),
			"--subnet", subnet.String(), c.PeerNet); err != nil {
			lastErr = err
			continue
		}
		c.PeerSubnet = subnet
		return
	}
	c.t.Fatalf("creating the peer network: %v", lastErr)
}

// Members returns the members, m1 first.
func (c *DockerCluster) Members() []*DockerMember { return c.members }

// Endpoints returns the members' client URLs on the host, m1 first.
func (c *DockerCluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.Endpoint
	}
	return eps
}

// Isolate cuts member i off the peer network: it can no longer reach the other members nor
// they it, while clients still reach it. It returns when Docker has removed the member's
// interface.
func (c *DockerCluster) Isolate(i int) {
	c.t.Helper()
	mustDocker(c.t, "network", "disconnect", c.PeerNet, c.members[i].Container)
}

// Heal reconnects member i to the peer network, at its address and host name of before.
func (c *DockerCluster) Heal(i int) {
	c.t.Helper()
	c.members[i].connect()
}

func (m *DockerMember) connect() {
	m.c.t.Helper()
	mustDocker(m.c.t, "network", "connect", "--ip", m.PeerIP, "--alias", m.PeerHost, m.c.PeerNet, m.Container)
}

// Client returns a client of this member alone, closed when the test ends.
func (m *DockerMember) Client() *clientv3.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client == nil {
		m.client = NewClient(m.c.t, m.Endpoint)
	}
	return m.client
}

// Logs returns what the member's container has written to its standard output and error.
func (m *DockerMember) Logs() string {
	cmd := exec.Command("docker", "logs", m.Container)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("(docker logs %s: %v)\n%s", m.Container, err, buf.String())
	}
	return buf.String()
}

// WaitReady returns nil once a put through each member (of ReadyKeyPrefix+name) has
// succeeded, retrying until ctx ends.
func (c *DockerCluster) WaitReady(ctx context.Context) error {
	for _, m := range c.members {
		for {
			attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := m.Client().Put(attempt, ReadyKeyPrefix+m.Name, m.Name)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("put through %s (%s): %w", m.Name, m.Endpoint, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// MemberIDs returns each member's id as its Status response gives it (0 if it did not
// answer).
func (c *DockerCluster) MemberIDs(ctx context.Context) []uint64 {
	ids := make([]uint64, len(c.members))
	for i, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		if resp, err := m.Client().Status(sctx, m.Endpoint); err == nil {
			ids[i] = resp.Header.MemberId
		}
		cancel()
	}
	return ids
}

// LeaderAmong returns the index of the leader named by the Status responses of the members
// in among (all if nil), if every one of them that answers names the same member and at least
// one answers; otherwise -1. ids are the members' ids (MemberIDs).
func (c *DockerCluster) LeaderAmong(ctx context.Context, ids []uint64, among []int) int {
	if among == nil {
		for i := range c.members {
			among = append(among, i)
		}
	}
	var leader uint64
	for _, i := range among {
		m := c.members[i]
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := m.Client().Status(sctx, m.Endpoint)
		cancel()
		if err != nil {
			continue
		}
		if resp.Leader == 0 || (leader != 0 && resp.Leader != leader) {
			return -1
		}
		leader = resp.Leader
	}
	for i, id := range ids {
		if id != 0 && id == leader {
			return i
		}
	}
	return -1
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *DockerCluster) cleanup() {
	for _, m := range c.members {
		m.mu.Lock()
		if m.client != nil {
			m.client.Close()
			m.client = nil
		}
		m.mu.Unlock()
	}
	if c.t.Failed() && len(c.members) > 0 {
		if os.Getenv(KeepLogsEnv) == "1" {
			// For debugging: each member dumps its goroutines (Go's SIGQUIT) into its log.
			for _, m := range c.members {
				Docker(context.Background(), "kill", "--signal", "QUIT", m.Container)
			}
			time.Sleep(time.Second)
		}
		dir, err := os.MkdirTemp("", "mosaic-docker-logs-")
		for _, m := range c.members {
			logs := m.Logs()
			c.t.Logf("%s (%s) log, last 100 lines:\n%s", m.Name, m.Container, tail(logs, 100))
			if err == nil {
				os.WriteFile(filepath.Join(dir, m.Name+".log"), []byte(logs), 0o644)
			}
		}
		if err == nil {
			c.t.Logf("full member logs saved in %s", dir)
		}
	}
	var errs []error
	ctx := context.Background()
	var names []string
	for _, m := range c.members {
		names = append(names, m.Container)
	}
	if len(names) > 0 {
		if _, err := Docker(ctx, append([]string{"rm", "-f", "-v"}, names...)...); err != nil && !strings.Contains(err.Error(), "No such container") {
			errs = append(errs, err)
		}
	}
	for _, n := range []string{c.PeerNet, c.ClientNet} {
		if _, err := Docker(ctx, "network", "inspect", n); err != nil {
			continue // never created
		}
		if _, err := Docker(ctx, "network", "rm", n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.t.Errorf("removing the test's containers and networks: %v", err)
	}
}
