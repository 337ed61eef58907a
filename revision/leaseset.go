package revision

import (
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// LeaseSet is the granted leases of one View, by id. It is immutable and
// shares structure with the sets of earlier views: a large base map that is
// never modified, and a small delta of the ids changed since (a nil value
// is a removed lease). Publishing a view after a grant, revoke or
// checkpoint copies only the delta, and the base is rebuilt once the delta
// reaches about the square root of the set's size, so a view costs
// O(sqrt(n)) amortised per lease change instead of a copy of every lease
// (which made granting 100,000 leases quadratic).
//
// The lease messages it returns are shared and must not be modified.
type LeaseSet struct {
	base  map[int64]*raftcmdpb.Lease
	delta map[int64]*raftcmdpb.Lease
	n     int
}

// newLeaseSet copies a lease table (whose messages are then shared).
func newLeaseSet(all map[int64]*raftcmdpb.Lease) *LeaseSet {
	base := make(map[int64]*raftcmdpb.Lease, len(all))
	for id, l := range all {
		base[id] = l
	}
	return &LeaseSet{base: base, n: len(base)}
}

// Get returns a lease.
func (s *LeaseSet) Get(id int64) (*raftcmdpb.Lease, bool) {
	if s == nil {
		return nil, false
	}
	if l, ok := s.delta[id]; ok {
		return l, l != nil
	}
	l, ok := s.base[id]
	return l, ok
}

// Has reports whether a lease exists.
func (s *LeaseSet) Has(id int64) bool {
	_, ok := s.Get(id)
	return ok
}

// Len is the number of leases.
func (s *LeaseSet) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// All returns every lease, in no particular order.
func (s *LeaseSet) All() []*raftcmdpb.Lease {
	out := make([]*raftcmdpb.Lease, 0, s.Len())
	if s == nil {
		return out
	}
	for id, l := range s.base {
		if _, changed := s.delta[id]; !changed {
			out = append(out, l)
		}
	}
	for _, l := range s.delta {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// with returns the set after the leases changed (granted, revoked or
// checkpointed) to what the table now holds. The table's lease messages
// must be replaced, never modified, once shared.
func (s *LeaseSet) with(changed map[int64]struct{}, table map[int64]*raftcmdpb.Lease) *LeaseSet {
	if len(changed) == 0 {
		return s
	}
	if s == nil || len(s.delta)+len(changed) > max(64, isqrt(len(table))) {
		return newLeaseSet(table)
	}
	ns := &LeaseSet{base: s.base, delta: make(map[int64]*raftcmdpb.Lease, len(s.delta)+len(changed)), n: s.n}
	for id, l := range s.delta {
		ns.delta[id] = l
	}
	for id := range changed {
		was := s.Has(id)
		l, now := table[id]
		ns.delta[id] = l // nil when removed
		switch {
		case now && !was:
			ns.n++
		case was && !now:
			ns.n--
		}
	}
	return ns
}

func isqrt(n int) int {
	r := 0
	for (r+1)*(r+1) <= n {
		r++
	}
	return r
}
