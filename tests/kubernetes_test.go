package tests

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestKubernetesStorageFlow sends both servers the requests kube-apiserver's
// etcd3 storage makes, in its order, and compares every answer: create
// (mod_revision == 0), guarded update and delete (mod_revision == read
// revision, with a Get on failure), paginated list at a fixed revision with
// count, and the compactor's guarded compaction (a Txn on compact_rev_key
// version, then Compact), after which reads and lists at compacted
// revisions get ErrCompacted (the apiserver's 410 Gone).
func TestKubernetesStorageFlow(t *testing.T) {
	t.Parallel()
	d, subj := harness.StartPair(t)
	for _, k := range []string{"/registry/pods/default/p3", "/registry/services/"} {
		harness.SplitRange(t, subj, k)
	}
	key := func(i int) string { return fmt.Sprintf("/registry/pods/default/p%d", i) }
	create := func(k, v string) clientv3.Op {
		return clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k, v)}, []clientv3.Op{clientv3.OpGet(k)})
	}
	txn := func(name string, op clientv3.Op) harness.Outcome {
		return d.Check(name, func(ctx context.Context, c *clientv3.Client) (any, error) {
			resp, err := c.Do(ctx, op)
			if err != nil {
				return nil, err
			}
			return resp.Txn(), nil
		})
	}
	// Create six pods, one of them twice (the second create fails and reads).
	for i := range 6 {
		txn("create "+key(i), create(key(i), "spec-v1")).WantOK(t)
	}
	o := txn("create existing", create(key(2), "other"))
	o.WantOK(t)
	if o.Resp.(*pb.TxnResponse).Succeeded {
		t.Fatal("creating an existing key succeeded")
	}
	txn("create service", create("/registry/services/specs/default/svc", "svc")).WantOK(t)

	// GuaranteedUpdate: read, then update guarded by the read mod_revision;
	// a stale guard fails and returns the current object.
	o = d.Check("get p1", rangeOp(&pb.RangeRequest{Key: []byte(key(1))}))
	o.WantOK(t)
	rev := o.Resp.(*pb.RangeResponse).Kvs[0].ModRevision
	update := func(k, v string, at int64) clientv3.Op {
		return clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", at)},
			[]clientv3.Op{clientv3.OpPut(k, v)}, []clientv3.Op{clientv3.OpGet(k)})
	}
	txn("update p1", update(key(1), "spec-v2", rev)).WantOK(t)
	txn("stale update p1", update(key(1), "spec-v3", rev)).WantOK(t)
	// Guarded delete with the deleted object back.
	o = d.Check("get p4", rangeOp(&pb.RangeRequest{Key: []byte(key(4))}))
	o.WantOK(t)
	rev4 := o.Resp.(*pb.RangeResponse).Kvs[0].ModRevision
	txn("delete p4", clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key(4)), "=", rev4)},
		[]clientv3.Op{clientv3.OpDelete(key(4), clientv3.WithPrevKV())}, []clientv3.Op{clientv3.OpGet(key(4))})).WantOK(t)

	// Paginated list at the revision of the first page, with count.
	prefix, end := "/registry/pods/", "/registry/pods0"
	first := d.Check("list page 1", rangeOp(&pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(end), Limit: 2}))
	first.WantOK(t)
	listRev := first.Resp.(*pb.RangeResponse).Header.Revision
	next := first.Resp.(*pb.RangeResponse).Kvs[1].Key
	txn("create during the list", create(key(9), "late")).WantOK(t)
	for page := 2; ; page++ {
		o := d.Check(fmt.Sprintf("list page %d", page), rangeOp(&pb.RangeRequest{
			Key: append(append([]byte(nil), next...), 0), RangeEnd: []byte(end), Limit: 2, Revision: listRev}))
		o.WantOK(t)
		r := o.Resp.(*pb.RangeResponse)
		if !r.More {
			break
		}
		next = r.Kvs[len(r.Kvs)-1].Key
	}

	// The compactor: claim the compaction with a Txn on compact_rev_key's
	// version, then compact to the revision it recorded last time.
	const compactKey = "compact_rev_key"
	compactTxn := func(name string, version int64, rev int64) harness.Outcome {
		return txn(name, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Version(compactKey), "=", version)},
			[]clientv3.Op{clientv3.OpPut(compactKey, fmt.Sprint(rev))}, []clientv3.Op{clientv3.OpGet(compactKey)}))
	}
	compactTxn("compactor claims", 0, listRev).WantOK(t)
	compactTxn("a second compactor loses", 0, listRev).WantOK(t)
	d.Check("compact", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Compact(ctx, listRev)
	}).WantOK(t)
	d.Check("list below the compaction", rangeOp(&pb.RangeRequest{
		Key: []byte(prefix), RangeEnd: []byte(end), Limit: 2, Revision: listRev - 1})).WantErr(t, rpctypes.ErrGRPCCompacted)
	d.Check("list at the compaction", rangeOp(&pb.RangeRequest{
		Key: []byte(prefix), RangeEnd: []byte(end), Limit: 2, Revision: listRev})).WantOK(t)
	d.Check("count the pods", rangeOp(&pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(end), CountOnly: true})).WantOK(t)
	compactTxn("next compaction round", 1, listRev+3).WantOK(t)
}
