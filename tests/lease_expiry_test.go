package tests

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// allKeysAt reads every key at rev on s.
func allKeysAt(t *testing.T, s harness.Server, rev int64) map[string]*mvccpb.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
	defer cancel()
	r, err := kvc(s.Client()).Range(ctx, &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: rev})
	if err != nil {
		t.Fatalf("%s: range at %d: %v", s.Name(), rev, err)
	}
	out := map[string]*mvccpb.KeyValue{}
	for _, kv := range r.Kvs {
		out[string(kv.Key)] = kv
	}
	return out
}

func revOf(t *testing.T, s harness.Server) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
	defer cancel()
	r, err := kvc(s.Client()).Range(ctx, &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), CountOnly: true})
	if err != nil {
		t.Fatalf("%s: range: %v", s.Name(), err)
	}
	return r.Header.Revision
}

// checkOneRevisionDeleted checks on s that revision before+1 is the last one and that it
// deleted exactly want (and changed nothing else).
func checkOneRevisionDeleted(t *testing.T, s harness.Server, before int64, want []string) {
	t.Helper()
	if rev := revOf(t, s); rev != before+1 {
		t.Errorf("%s: revision %d after the lease went, want %d (one revision)", s.Name(), rev, before+1)
		return
	}
	was, now := allKeysAt(t, s, before), allKeysAt(t, s, before+1)
	var gone []string
	for k, kv := range was {
		n, ok := now[k]
		switch {
		case !ok:
			gone = append(gone, k)
		case !cmp.Equal(kv, n, protocmp.Transform()):
			t.Errorf("%s: key %q changed at the lease's revision: %v -> %v", s.Name(), k, kv, n)
		}
	}
	for k := range now {
		if _, ok := was[k]; !ok {
			t.Errorf("%s: key %q appeared at the lease's revision", s.Name(), k)
		}
	}
	sort.Strings(gone)
	sort.Strings(want)
	if strings.Join(gone, ",") != strings.Join(want, ",") {
		t.Errorf("%s: revision %d deleted %v, want %v", s.Name(), before+1, gone, want)
	}
}

// waitLeaseGone polls until the lease is gone on s (TimeToLive answers TTL -1).
func waitLeaseGone(t *testing.T, s harness.Server, id int64, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), harness.OpTimeout)
		r, err := leaseClient(s.Client()).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
		cancel()
		if err != nil {
			t.Fatalf("%s: timetolive %d: %v", s.Name(), id, err)
		}
		if r.TTL == -1 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: lease %d still there (TTL %d) after %s", s.Name(), id, r.TTL, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchedRevision watches every key from rev on s and returns the responses that carry
// events of rev (all of them should be in one). ok is false if s does not serve Watch.
func watchedRevision(t *testing.T, s harness.Server, rev int64) (resps [][]*mvccpb.Event, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wc := s.Client().Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev), clientv3.WithPrevKV())
	for {
		select {
		case r, open := <-wc:
			if !open {
				t.Errorf("%s: watch from %d closed before its events", s.Name(), rev)
				return resps, true
			}
			if err := r.Err(); err != nil {
				if c, _ := harness.ErrorCode(err); c == codes.Unimplemented {
					return nil, false
				}
				t.Errorf("%s: watch from %d: %v", s.Name(), rev, err)
				return resps, true
			}
			var evs []*mvccpb.Event
			for _, e := range r.Events {
				if e.Kv.ModRevision == rev {
					evs = append(evs, (*mvccpb.Event)(e))
				}
			}
			if len(evs) > 0 {
				resps = append(resps, evs)
			}
			if len(r.Events) > 0 && r.Events[len(r.Events)-1].Kv.ModRevision > rev {
				return resps, true
			}
			if len(resps) > 0 {
				// Wait briefly for a stray second response carrying more of rev.
				select {
				case r2, open := <-wc:
					if open {
						for _, e := range r2.Events {
							if e.Kv.ModRevision == rev {
								resps = append(resps, []*mvccpb.Event{(*mvccpb.Event)(e)})
							}
						}
					}
				case <-time.After(300 * time.Millisecond):
				}
				return resps, true
			}
		case <-ctx.Done():
			t.Errorf("%s: no watch events of revision %d", s.Name(), rev)
			return resps, true
		}
	}
}

// checkWatchedDeletes checks that both servers send the deletes of rev in one watch
// response, with the same events (keys in order, prev_kv).
func checkWatchedDeletes(t *testing.T, d *harness.Diff, rev int64, n int) {
	t.Helper()
	var got [2][][]*mvccpb.Event
	for i, s := range []harness.Server{d.Ref, d.Subj} {
		r, ok := watchedRevision(t, s, rev)
		if !ok {
			t.Logf("%s serves no Watch: DELETE events of revision %d not checked", s.Name(), rev)
			return
		}
		if len(r) != 1 || len(r[0]) != n {
			t.Errorf("%s: revision %d came in %d watch responses (%v), want %d DELETE events in one", s.Name(), rev, len(r), r, n)
			continue
		}
		for _, e := range r[0] {
			if e.Type != mvccpb.DELETE {
				t.Errorf("%s: event %v at the lease's revision, want DELETE", s.Name(), e)
			}
		}
		got[i] = r
	}
	if diff := cmp.Diff(got[0], got[1], protocmp.Transform()); diff != "" {
		t.Errorf("watch events of revision %d differ (-%s +%s):\n%s", rev, d.Ref.Name(), d.Subj.Name(), diff)
	}
}

// leaseGoneBoth waits for the lease to go on both servers (by expiry, each on its own
// clock) and checks the revision it took on each.
func leaseGoneBoth(t *testing.T, d *harness.Diff, id int64, granted time.Time, ttl time.Duration, before int64, deleted []string) {
	t.Helper()
	for _, s := range []harness.Server{d.Ref, d.Subj} {
		at := waitLeaseGone(t, s, id, ttl+5*time.Second)
		// etcd's lessor looks every 500ms and revokes through Raft; its clients see the
		// lease go up to about a second late. Neither server may revoke it early.
		if early := granted.Add(ttl).Sub(at); early > 0 {
			t.Errorf("%s: lease %d gone %s before its TTL", s.Name(), id, early)
		}
		if late := at.Sub(granted.Add(ttl)); late > 2*time.Second {
			t.Errorf("%s: lease %d gone %s after its TTL", s.Name(), id, late)
		}
		checkOneRevisionDeleted(t, s, before, deleted)
	}
	readHistory(t, d, "after lease "+fmt.Sprint(id))
	checkWatchedDeletes(t, d, before+1, len(deleted))
}

// readHistory compares every revision's full state on both servers.
func readHistory(t *testing.T, d *harness.Diff, label string) {
	t.Helper()
	rev := currentRev(t, d)
	for at := int64(1); at <= rev; at++ {
		d.Check(fmt.Sprintf("%s: all keys at %d", label, at), rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: at})).WantOK(t)
	}
}

// TestLeaseExpiryAcrossRanges gives leases keys in several ranges of the subject and
// lets them expire or revokes them: each takes exactly one revision that deletes exactly
// its keys (a key re-put without the lease, or moved to another lease, stays), nothing
// else changes, watchers get the deletes as one revision, and it is all as etcd does.
// Leases also survive a split of a range holding their keys, made while they live.
func TestLeaseExpiryAcrossRanges(t *testing.T) {
	t.Parallel()
	d, subj := harness.StartPair(t)
	for _, k := range []string{"b", "d", "f"} {
		harness.SplitRange(t, subj, k)
	}
	put(t, d, "a0", "no lease")
	put(t, d, "z0", "no lease")
	grant(t, d, 10, 2)   // expires
	grant(t, d, 20, 600) // revoked
	granted := time.Now()
	for _, k := range []string{"a1", "c1", "e1", "g1", "c1x"} {
		putLease(t, d, k, "ten", 10)
	}
	for _, k := range []string{"a2", "c2", "e2", "g2"} {
		putLease(t, d, k, "twenty", 20)
	}
	put(t, d, "c1x", "re-put without the lease") // detached: stays
	putLease(t, d, "g2", "moved", 10)            // now on lease 10
	d.Check("ignore_lease keeps lease 20", putOp(&pb.PutRequest{Key: []byte("e2"), Value: []byte("v2"), IgnoreLease: true})).WantOK(t)
	checkTTL(t, d, "keys of 10", timeToLiveOp(10, true))
	checkTTL(t, d, "keys of 20", timeToLiveOp(20, true))
	before := currentRev(t, d)
	leaseGoneBoth(t, d, 10, granted, 2*time.Second, before, []string{"a1", "c1", "e1", "g1", "g2"})

	before = currentRev(t, d)
	revoke(t, d, 20)
	for _, s := range []harness.Server{d.Ref, d.Subj} {
		checkOneRevisionDeleted(t, s, before, []string{"a2", "c2", "e2"})
	}
	readHistory(t, d, "after revoking 20")
	checkWatchedDeletes(t, d, before+1, 3)

	// Splits while leases hold keys: one is then revoked, the other expires.
	grant(t, d, 30, 600)
	grant(t, d, 40, 5)
	granted = time.Now()
	for _, k := range []string{"h1", "i1", "j1", "k1"} {
		putLease(t, d, k, "thirty", 30)
	}
	for _, k := range []string{"h2", "i2", "j2", "k2"} {
		putLease(t, d, k, "forty", 40)
	}
	for _, k := range []string{"i", "j", "k"} {
		harness.SplitRange(t, subj, k)
	}
	checkTTL(t, d, "keys of 30 after splits", timeToLiveOp(30, true))
	checkTTL(t, d, "keys of 40 after splits", timeToLiveOp(40, true))
	before = currentRev(t, d)
	revoke(t, d, 30)
	for _, s := range []harness.Server{d.Ref, d.Subj} {
		checkOneRevisionDeleted(t, s, before, []string{"h1", "i1", "j1", "k1"})
	}
	checkWatchedDeletes(t, d, before+1, 4)
	before = currentRev(t, d)
	leaseGoneBoth(t, d, 40, granted, 5*time.Second, before, []string{"h2", "i2", "j2", "k2"})
	d.Check("lease list at the end", leasesOp()).WantOK(t)
	d.Check("final keys", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
	if !harness.SubjectIsEtcd() {
		t.Logf("ranges:\n%s", harness.RangeList(t, subj))
	}
}
