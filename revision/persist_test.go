package revision

import (
	"testing"

	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// TestSaveManyFates: a checkpoint after a busy interval saves far more
// fates than one badger transaction holds, and loads them all back.
func TestSaveManyFates(t *testing.T) {
	store, err := mvcc.Open(t.TempDir(), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	p := &Persister{Store: store}
	st := Bootstrap(1, 2)
	fates := map[uint64]int64{}
	const n = 400000
	for i := uint64(1); i <= n; i++ {
		fates[i] = int64(i + 1)
	}
	st.Revision = n + 1
	st.AppliedIndex = 99
	if err := p.Save(st, fates, nil); err != nil {
		t.Fatal(err)
	}
	forget := make([]uint64, 0, n/2)
	for i := uint64(1); i <= n/2; i++ {
		forget = append(forget, i)
	}
	if err := p.Save(st, nil, forget); err != nil {
		t.Fatal(err)
	}
	got, txns, err := p.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.AppliedIndex != 99 || got.Revision != n+1 {
		t.Fatalf("state %v", got)
	}
	if len(txns) != n/2 {
		t.Fatalf("%d fates loaded, want %d", len(txns), n/2)
	}
	for id, rev := range txns {
		if id <= n/2 || rev != int64(id+1) {
			t.Fatalf("fate %d = %d", id, rev)
		}
	}
}
