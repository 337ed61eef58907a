package router

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/shard"
)

func openTestNode(t *testing.T, dir string) (*Node, *Router) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := OpenNode(ctx, NodeConfig{Name: "t", DataDir: dir, Logger: zap.NewNop(), CheckpointInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(n, Options{MaxRequestBytes: 1.5 * 1024 * 1024, MaxTxnOps: 128, Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return n, r
}

func put(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

// TestConcurrentWritesSplitsAndRestart drives concurrent single-range and
// cross-range writes while ranges split, then restarts the node: every
// acknowledged write has its own revision, revisions are dense from 2, and
// everything is still there, at the same revisions, after the restart.
func TestConcurrentWritesSplitsAndRestart(t *testing.T) {
	dir := t.TempDir()
	n, r := openTestNode(t, dir)
	ctx := context.Background()

	const workers, perWorker = 8, 60
	var mu sync.Mutex
	revs := map[int64]string{}
	record := func(rev int64, what string) {
		mu.Lock()
		defer mu.Unlock()
		if prev, dup := revs[rev]; dup {
			t.Errorf("revision %d given to both %s and %s", rev, prev, what)
		}
		revs[rev] = what
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				k := fmt.Sprintf("%c/w%d/%03d", 'a'+rune(i%8), w, i)
				if i%3 == 0 {
					// A txn writing two keys far apart: atomic across ranges.
					k2 := fmt.Sprintf("%c/w%d/%03d", 'h'-rune(i%8), w, i)
					resp, err := r.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{put(k, "t"), put(k2, "t")}})
					if err != nil {
						t.Errorf("txn: %v", err)
						return
					}
					record(resp.Header.Revision, k+"+"+k2)
					continue
				}
				resp, err := r.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte("v")})
				if err != nil {
					t.Errorf("put: %v", err)
					return
				}
				record(resp.Header.Revision, k)
			}
		}(w)
	}
	for _, key := range []string{"b", "d", "f", "c/w3"} {
		if _, err := n.Split(ctx, []byte(key)); err != nil {
			t.Fatalf("split at %q: %v", key, err)
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := len(revs)
	if want := workers * perWorker; total != want {
		t.Fatalf("acknowledged %d writes, want %d", total, want)
	}
	sorted := make([]int64, 0, total)
	for rev := range revs {
		sorted = append(sorted, rev)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for i, rev := range sorted {
		if rev != int64(i+2) {
			t.Fatalf("revisions not dense: position %d holds %d", i, rev)
		}
	}
	before, err := r.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := workers*perWorker + workers*perWorker/3
	if int(before.Count) != wantKeys || len(before.Kvs) != wantKeys {
		t.Fatalf("count %d, kvs %d, want %d", before.Count, len(before.Kvs), wantKeys)
	}
	time.Sleep(150 * time.Millisecond) // let a checkpoint truncate logs
	n.Close()

	n2, r2 := openTestNode(t, dir)
	defer n2.Close()
	if got := len(n2.oracle.View().Ranges); got != 5 {
		t.Fatalf("after restart: %d ranges, want 5", got)
	}
	after, err := r2.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Fatalf("revision %d after restart, %d before", after.Header.Revision, before.Header.Revision)
	}
	if len(after.Kvs) != len(before.Kvs) {
		t.Fatalf("%d keys after restart, %d before", len(after.Kvs), len(before.Kvs))
	}
	for i := range after.Kvs {
		a, b := after.Kvs[i], before.Kvs[i]
		if string(a.Key) != string(b.Key) || a.ModRevision != b.ModRevision || a.Version != b.Version {
			t.Fatalf("key %d differs after restart: %v vs %v", i, a, b)
		}
	}
	// And the store keeps counting from where it was.
	resp, err := r2.Put(ctx, &pb.PutRequest{Key: []byte("z"), Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != before.Header.Revision+1 {
		t.Fatalf("first write after restart got revision %d, want %d", resp.Header.Revision, before.Header.Revision+1)
	}
}

// TestLargeDeleteRange: one DeleteRange over more keys than one MVCC
// transaction can hold is applied at one revision (in chunks underneath)
// and reports every deleted key; the node stays up and consistent across a
// restart.
func TestLargeDeleteRange(t *testing.T) {
	dir := t.TempDir()
	n, r := openTestNode(t, dir)
	ctx := context.Background()
	const keys = 70000
	for i := 0; i < keys; i += 100 {
		var ops []*pb.RequestOp
		for j := i; j < i+100 && j < keys; j++ {
			ops = append(ops, put(fmt.Sprintf("big/%06d", j), "v"))
		}
		if _, err := r.Txn(ctx, &pb.TxnRequest{Success: ops}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := r.Range(ctx, &pb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if before.Count != keys {
		t.Fatalf("%d keys before the delete, want %d", before.Count, keys)
	}
	del, err := r.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	if del.Deleted != keys || len(del.PrevKvs) != keys {
		t.Fatalf("deleted %d (prev kvs %d), want %d", del.Deleted, len(del.PrevKvs), keys)
	}
	if del.Header.Revision != before.Header.Revision+1 {
		t.Fatalf("the delete took revision %d, want %d", del.Header.Revision, before.Header.Revision+1)
	}
	for i, kv := range del.PrevKvs {
		if want := fmt.Sprintf("big/%06d", i); string(kv.Key) != want {
			t.Fatalf("prev kv %d is %q, want %q (key order)", i, kv.Key, want)
		}
	}
	n.Close()
	_, r2 := openTestNode(t, dir)
	after, err := r2.Range(ctx, &pb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if after.Count != 0 || after.Header.Revision != del.Header.Revision {
		t.Fatalf("after restart: %d keys at revision %d, want 0 at %d", after.Count, after.Header.Revision, del.Header.Revision)
	}
	old, err := r2.Range(ctx, &pb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), CountOnly: true, Revision: before.Header.Revision})
	if err != nil {
		t.Fatal(err)
	}
	if old.Count != keys {
		t.Fatalf("history before the delete has %d keys, want %d", old.Count, keys)
	}
}

// TestRevokeLeaseWithManyKeys: revoking a lease that holds more keys than
// one MVCC transaction can delete takes one revision and deletes them all.
func TestRevokeLeaseWithManyKeys(t *testing.T) {
	_, r := openTestNode(t, t.TempDir())
	ctx := context.Background()
	l, err := r.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 3600})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 45000
	for i := 0; i < keys; i += 100 {
		var ops []*pb.RequestOp
		for j := i; j < i+100; j++ {
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
				Key: []byte(fmt.Sprintf("lease/%06d", j)), Value: []byte("v"), Lease: l.ID}}})
		}
		if _, err := r.Txn(ctx, &pb.TxnRequest{Success: ops}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := r.Range(ctx, &pb.RangeRequest{Key: []byte("lease/"), RangeEnd: []byte("lease0"), CountOnly: true})
	if err != nil || before.Count != keys {
		t.Fatalf("before revoke: %v keys, err %v", before.GetCount(), err)
	}
	rev, err := r.RevokeLease(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rev != before.Header.Revision+1 {
		t.Fatalf("revoke took revision %d, want %d", rev, before.Header.Revision+1)
	}
	after, err := r.Range(ctx, &pb.RangeRequest{Key: []byte("lease/"), RangeEnd: []byte("lease0"), CountOnly: true})
	if err != nil || after.Count != 0 {
		t.Fatalf("after revoke: %v keys, err %v", after.GetCount(), err)
	}
}

// A replica stopped (as collectReplicas stops one) answers those waiting for it to apply
// with shard.ErrStopped instead of leaving them waiting for good: a split's new range
// waits so for its left side, and would otherwise never start here.
func TestWaitAppliedOnStoppedReplica(t *testing.T) {
	n, _ := openTestNode(t, t.TempDir())
	t.Cleanup(n.Close)
	s := n.shard(firstRangeID)
	if s == nil {
		t.Fatal("no replica of the first range")
	}
	n.mu.Lock()
	delete(n.shards, s.ID())
	n.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.WaitApplied(context.Background(), 1<<40) }()
	s.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, shard.ErrStopped) {
			t.Fatalf("WaitApplied on a stopped replica: %v, want %v", err, shard.ErrStopped)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitApplied on a stopped replica still waits")
	}
}
