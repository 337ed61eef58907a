package tests

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The live watchers of TestPartitionDocker (issue 5: a watch checker under leader kills and
// partitions), the fault test's watchers (cluster_fault_watch_test.go) on the Docker
// cluster.
//
// Before the workload, watchers start at a revision recorded then: one per member over the
// test's keys with prev_kv; a require-leader watch (clientv3.WithRequireLeader, as
// Kubernetes watches) of the test's keys on the leader, which is cut off first; and a
// require-leader watch of the whole keyspace from revision 1, with prev_kv, on a follower.
// A require-leader watch on a member cut off ends with "etcdserver: no leader" once its
// member has had no leader for a while (etcd: 3 election timeouts); a watch that is not
// require-leader may simply stall while its member is cut off and catch up after the
// reconnection. A watcher whose stream ends or errors resumes on another member that is not
// cut off, from the last revision it saw + 1. After the workload the watchers are drained
// (progress notifications until each has seen the current revision), and after the final
// convergence each one's stream, concatenated across resumes, is checked against the
// members' revision history with checkWatchStream.

// startPartWatches starts the watchers before the workload. isolated holds the member cut
// off at the moment (-1: none): watchers do not resume on it.
func startPartWatches(t *testing.T, cluster *harness.DockerCluster, ids []uint64, isolated *atomic.Int32, seed uint64) *faultWatches {
	t.Helper()
	members := cluster.Members()
	revision := func(ctx context.Context) (int64, error) {
		var err error
		for _, m := range members {
			var resp *clientv3.GetResponse
			if resp, err = m.Client().Get(ctx, faultKeyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
				return resp.Header.Revision, nil
			}
		}
		return 0, err
	}
	fw := newWatches(t, cluster.Endpoints(), func(i int) bool { return int32(i) != isolated.Load() }, revision)

	leader := -1
	for deadline := time.Now().Add(10 * time.Second); leader < 0; time.Sleep(50 * time.Millisecond) {
		if leader = cluster.LeaderAmong(context.Background(), ids, nil); leader < 0 && time.Now().After(deadline) {
			t.Fatalf("the members do not agree on a leader before the workload")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r0, err := revision(ctx)
	if err != nil {
		t.Fatalf("reading the revision before the workload: %v", err)
	}
	all := prefixSpan(faultKeyPrefix)
	rng := func(i int) *rand.Rand { return rand.New(rand.NewPCG(seed, uint64(1000+i))) }
	for i := range members {
		fw.add(&faultWatcher{span: all, prevKV: true, start: r0 + 1}, i, rng(i))
	}
	fw.add(&faultWatcher{span: all, start: r0, requireLeader: true}, leader, rng(len(members)))
	fw.add(&faultWatcher{span: watchSpan{key: "\x00", end: "\x00"}, prevKV: true, start: 1, requireLeader: true},
		(leader+1)%len(members), rng(len(members)+1))
	return fw
}
