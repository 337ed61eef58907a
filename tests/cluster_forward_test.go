package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClusterForwardedWrites: writes sent to a member that does not lead
// answer as the leader's own would, as in etcd (where the member forwards
// the proposal): results with prev_kv, the executed branch's reads, the
// deleted count, etcd's errors, the answering member's id in the header,
// and under concurrency one distinct revision per write. In Mosaic these
// writes go to the oracle's leader over a forward stream.
func TestClusterForwardedWrites(t *testing.T) {
	t.Parallel()
	c := startCluster3(t, "fw/m")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lead := c.Leader(ctx)
	if lead < 0 {
		t.Fatal("no leader")
	}
	f := c.Members()[(lead+1)%3]
	cli := f.Client()
	st, err := cli.Status(ctx, f.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	self := st.Header.MemberId

	if _, err := cli.Put(ctx, "fw/a", "1"); err != nil {
		t.Fatal(err)
	}
	pr, err := cli.Put(ctx, "fw/a", "2", clientv3.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if pr.PrevKv == nil || string(pr.PrevKv.Value) != "1" || pr.Header.MemberId != self {
		t.Fatalf("put: prev %v, header member %x (want value 1, member %x)", pr.PrevKv, pr.Header.MemberId, self)
	}

	// A transaction over both ranges, with a read in its branch.
	tr, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value("fw/a"), "=", "2")).
		Then(clientv3.OpPut("fw/z", "x"), clientv3.OpGet("fw/a")).
		Else(clientv3.OpPut("fw/else", "x")).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Succeeded || len(tr.Responses) != 2 {
		t.Fatalf("txn: succeeded %v, %d responses", tr.Succeeded, len(tr.Responses))
	}
	if kvs := tr.Responses[1].GetResponseRange().GetKvs(); len(kvs) != 1 || string(kvs[0].Value) != "2" {
		t.Fatalf("txn's read: %v", kvs)
	}
	if tr.Header.Revision != pr.Header.Revision+1 {
		t.Fatalf("txn at revision %d, the put before at %d", tr.Header.Revision, pr.Header.Revision)
	}

	dr, err := cli.Delete(ctx, "fw/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if dr.Deleted != 2 || len(dr.PrevKvs) != 2 {
		t.Fatalf("delete: %d deleted, %d prev kvs, want 2 and 2", dr.Deleted, len(dr.PrevKvs))
	}

	// etcd's errors, as the leader answers them.
	if _, err := cli.Put(ctx, "fw/l", "v", clientv3.WithLease(0x7a7a7a)); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("put with a missing lease: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("fw/d", "1"), clientv3.OpPut("fw/d", "2")).Commit(); !errors.Is(err, rpctypes.ErrDuplicateKey) {
		t.Fatalf("txn putting a key twice: %v, want %v", err, rpctypes.ErrDuplicateKey)
	}
	if _, err := cli.Put(ctx, "fw/i", "", clientv3.WithIgnoreValue()); !errors.Is(err, rpctypes.ErrKeyNotFound) {
		t.Fatalf("put ignoring the value of a missing key: %v, want %v", err, rpctypes.ErrKeyNotFound)
	}

	// Many at once: each gets its own revision.
	const n = 200
	revs := make([]int64, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := cli.Put(ctx, fmt.Sprintf("fw/c/%03d", i), "v")
			if err != nil {
				errs <- err
				return
			}
			revs[i] = r.Header.Revision
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for i, r := range revs {
		if seen[r] {
			t.Fatalf("put %d answered revision %d, as another did", i, r)
		}
		seen[r] = true
	}
	gr, err := cli.Get(ctx, "fw/c/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if gr.Count != n {
		t.Fatalf("%d keys written, want %d", gr.Count, n)
	}
}
