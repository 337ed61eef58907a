package harness

import (
	"path/filepath"
	"testing"
)

// StartJoining starts a member added to a running cluster (etcdctl member add): it is
// given the --initial-cluster that member add printed and --initial-cluster-state
// existing, on the peer URL it was added with, and waits until it logs ReadyLine. It
// uses the same binary and token as c's members and is killed when the test ends.
func (c *Cluster) StartJoining(t testing.TB, name, peerURL, initialCluster string) *Member {
	t.Helper()
	clientURL := localURL(FreePort(t))
	dataDir := filepath.Join(t.TempDir(), name)
	args := []string{
		"--name", name,
		"--data-dir", dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", "existing",
		"--initial-cluster-token", DefaultClusterToken,
	}
	p := newProcess(t, name, BuildMosaic(t).Mosaic, nil, args, clientURL, c.members[0].timeout)
	p.start()
	return &Member{Process: p, PeerURL: peerURL, DataDir: dataDir}
}

// FreePeerURL is a free http://127.0.0.1 URL for a new member's peer listener.
func FreePeerURL(t testing.TB) string { return localURL(FreePort(t)) }

// Exited reports whether the member's process has ended by itself (not killed by the
// harness), and how.
func (p *Process) Exited() (bool, error) {
	if cmd, _ := p.running(); cmd == nil {
		return true, p.exitErr()
	}
	return false, nil
}
