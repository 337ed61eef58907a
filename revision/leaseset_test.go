package revision

import (
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// TestLeaseSetSnapshots changes a lease table at random and checks that
// every published set equals the table at its time, and stays so later.
func TestLeaseSetSnapshots(t *testing.T) {
	table := map[int64]*raftcmdpb.Lease{}
	type snap struct {
		set  *LeaseSet
		want map[int64]int64 // id -> remaining
	}
	var snaps []snap
	var set *LeaseSet
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 3000 {
		changed := map[int64]struct{}{}
		for range 1 + rng.IntN(5) {
			id := int64(rng.IntN(400) + 1)
			switch rng.IntN(3) {
			case 0:
				delete(table, id)
			default:
				table[id] = &raftcmdpb.Lease{Id: id, Ttl: 10, Remaining: int64(step)}
			}
			changed[id] = struct{}{}
		}
		if set == nil {
			set = newLeaseSet(table)
		} else {
			set = set.with(changed, table)
		}
		want := map[int64]int64{}
		for id, l := range table {
			want[id] = l.Remaining
		}
		snaps = append(snaps, snap{set, want})
	}
	for i, s := range snaps {
		if s.set.Len() != len(s.want) {
			t.Fatalf("snapshot %d: Len %d, want %d", i, s.set.Len(), len(s.want))
		}
		all := s.set.All()
		if len(all) != len(s.want) {
			t.Fatalf("snapshot %d: All has %d, want %d", i, len(all), len(s.want))
		}
		sort.Slice(all, func(a, b int) bool { return all[a].Id < all[b].Id })
		for _, l := range all {
			if r, ok := s.want[l.Id]; !ok || r != l.Remaining {
				t.Fatalf("snapshot %d: lease %d remaining %d, want %d (present %v)", i, l.Id, l.Remaining, r, ok)
			}
		}
		for id := int64(1); id <= 400; id++ {
			l, ok := s.set.Get(id)
			r, want := s.want[id]
			if ok != want || (ok && l.Remaining != r) {
				t.Fatalf("snapshot %d: Get(%d) = %v, %v; want present %v", i, id, l, ok, want)
			}
		}
	}
	var empty *LeaseSet
	if empty.Len() != 0 || empty.Has(1) || len(empty.All()) != 0 {
		t.Error("nil set is not empty")
	}
}
