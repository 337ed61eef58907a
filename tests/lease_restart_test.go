package tests

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

func remainingTTL(t *testing.T, s harness.Server, id int64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
	defer cancel()
	r, err := leaseClient(s.Client()).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
	if err != nil {
		t.Fatalf("%s: timetolive %d: %v", s.Name(), id, err)
	}
	return r.TTL
}

// TestLeaseRestart restarts an etcd process and Mosaic side by side, with SIGTERM and then
// SIGKILL, while they hold leases with keys: the leases and their keys survive, each lease
// starts again from its full TTL plus one election timeout (etcd's Promote; the leases here
// are shorter than the 5-minute checkpoint interval, so none was checkpointed), `lease list`
// shows them in the same order, and they still expire or revoke at one revision afterwards.
func TestLeaseRestart(t *testing.T) {
	t.Parallel()
	ref := harness.StartEtcdProcess(t, harness.Options{})
	subj := harness.StartSubject(t, harness.Options{})
	d := harness.NewDiff(t, ref, subj)
	t.Cleanup(func() { t.Logf("%d differential checks", d.Checks()) })

	put(t, d, "plain", "x")
	grant(t, d, 100, 30)
	grant(t, d, 200, 4)
	grant(t, d, 300, 600)
	putLease(t, d, "k100a", "v", 100)
	putLease(t, d, "k100b", "v", 100)
	putLease(t, d, "k200", "v", 200)
	putLease(t, d, "k300", "v", 300)
	time.Sleep(1500 * time.Millisecond) // so that a restart from the remaining TTL would show

	ref.Stop()
	subj.Stop()
	ref.Restart()
	subj.Restart()
	restarted := time.Now()
	d.Check("lease list after SIGTERM", leasesOp()).WantOK(t)
	for _, id := range []int64{100, 200, 300} {
		checkTTL(t, d, "timetolive after SIGTERM", timeToLiveOp(id, true))
	}
	for _, s := range []harness.Server{ref, subj} {
		// Full TTL plus the 1s election timeout, minus the time since the restart.
		if got := remainingTTL(t, s, 100); got < 29 || got > 31 {
			t.Errorf("%s: lease 100 (30s) has %ds left after a restart, want the full TTL again", s.Name(), got)
		}
	}

	// Lease 200 (4s) expires after the restart, on each server by its own clock.
	before := currentRev(t, d)
	for _, s := range []harness.Server{ref, subj} {
		at := waitLeaseGone(t, s, 200, 10*time.Second)
		if early := restarted.Add(4 * time.Second).Sub(at); early > 0 {
			t.Errorf("%s: lease 200 gone %s before 4s after the restart", s.Name(), early)
		}
		checkOneRevisionDeleted(t, s, before, []string{"k200"})
	}
	d.Check("lease list after expiry", leasesOp()).WantOK(t)

	ref.Kill()
	subj.Kill()
	ref.Restart()
	subj.Restart()
	d.Check("lease list after SIGKILL", leasesOp()).WantOK(t)
	for _, id := range []int64{100, 200, 300} {
		checkTTL(t, d, "timetolive after SIGKILL", timeToLiveOp(id, true))
	}
	d.Check("keepalive after SIGKILL", keepAliveOp(100, 200, 300)).WantOK(t)
	before = currentRev(t, d)
	revoke(t, d, 100)
	for _, s := range []harness.Server{ref, subj} {
		checkOneRevisionDeleted(t, s, before, []string{"k100a", "k100b"})
	}
	d.Check("put with a lease after restarts", putOp(&pb.PutRequest{Key: []byte("new"), Value: []byte("v"), Lease: 300})).WantOK(t)
	checkTTL(t, d, "timetolive 300 at the end", timeToLiveOp(300, true))
	readHistory(t, d, "after restarts")
}
