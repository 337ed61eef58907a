package shard

import "bytes"

// Span is a key span [Key, End); End nil means the single key Key, and an
// End of "\x00" means every key from Key on (etcd's conventions, already
// clipped to the shard by the router).
type Span struct{ Key, End []byte }

// overlaps reports whether two spans share a key.
func (a Span) overlaps(b Span) bool {
	return bytes.Compare(a.Key, b.upper()) < 0 && bytes.Compare(b.Key, a.upper()) < 0 ||
		bytes.Equal(a.Key, b.Key)
}

// upper is the exclusive upper bound; nil means unbounded.
func (a Span) upper() []byte {
	switch {
	case len(a.End) == 0:
		return append(append([]byte(nil), a.Key...), 0)
	case len(a.End) == 1 && a.End[0] == 0:
		return maxKey
	default:
		return a.End
	}
}

// maxKey sorts after every key a client can send (keys are at most 1.5 MiB).
var maxKey = bytes.Repeat([]byte{0xff}, 2<<20)

// latchSet is the spans one request latches on one shard.
type latchSet struct {
	txn           uint64
	reads, writes []Span
	// Leases are latched like keys of their own namespace: a request that
	// attaches keys to a lease reads it, a revoke writes it.
	leaseReads, leaseWrites []int64
}

// conflicts: a read and a write on overlapping spans conflict; two reads do
// not, and neither do two writes — blind writes are ordered by their
// revisions at apply time, and any write whose outcome depends on state
// also holds read latches on what it depends on.
func (a *latchSet) conflicts(b *latchSet) bool {
	return anyOverlap(a.reads, b.writes) || anyOverlap(a.writes, b.reads) ||
		anyCommon(a.leaseReads, b.leaseWrites) || anyCommon(a.leaseWrites, b.leaseReads) ||
		anyCommon(a.leaseWrites, b.leaseWrites)
}

func anyCommon(xs, ys []int64) bool {
	for _, x := range xs {
		for _, y := range ys {
			if x == y {
				return true
			}
		}
	}
	return false
}

func anyOverlap(xs, ys []Span) bool {
	for _, x := range xs {
		for _, y := range ys {
			if x.overlaps(y) {
				return true
			}
		}
	}
	return false
}

// latches grants latch sets in FIFO order: a set is granted when it
// conflicts with no held set and with no set that waits ahead of it, so a
// stream of readers cannot starve a writer. Pure: the shard actor drives it.
type latches struct {
	held    []*latchSet
	waiting []*latchSet
}

// acquire grants ls now (true) or queues it (false).
func (l *latches) acquire(ls *latchSet) bool {
	if l.blocked(ls, len(l.waiting)) {
		l.waiting = append(l.waiting, ls)
		return false
	}
	l.held = append(l.held, ls)
	return true
}

func (l *latches) blocked(ls *latchSet, ahead int) bool {
	for _, h := range l.held {
		if h.conflicts(ls) {
			return true
		}
	}
	for _, w := range l.waiting[:ahead] {
		if w.conflicts(ls) {
			return true
		}
	}
	return false
}

// extend adds spans to a held set if they conflict with no other held set
// and no waiting one; it reports whether it did.
func (l *latches) extend(ls *latchSet, reads, writes []Span) bool {
	probe := &latchSet{txn: ls.txn, reads: reads, writes: writes}
	for _, h := range l.held {
		if h != ls && h.conflicts(probe) {
			return false
		}
	}
	for _, w := range l.waiting {
		if w.conflicts(probe) {
			return false
		}
	}
	ls.reads = append(ls.reads, reads...)
	ls.writes = append(ls.writes, writes...)
	return true
}

// release drops txn's latches (held or waiting) and returns the sets that
// became granted, in FIFO order.
func (l *latches) release(txn uint64) []*latchSet {
	l.held = dropTxn(l.held, txn)
	l.waiting = dropTxn(l.waiting, txn)
	var granted []*latchSet
	for i := 0; i < len(l.waiting); {
		if l.blocked(l.waiting[i], i) {
			i++
			continue
		}
		ls := l.waiting[i]
		l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
		l.held = append(l.held, ls)
		granted = append(granted, ls)
	}
	return granted
}

func dropTxn(xs []*latchSet, txn uint64) []*latchSet {
	out := xs[:0]
	for _, x := range xs {
		if x.txn != txn {
			out = append(out, x)
		}
	}
	for i := len(out); i < len(xs); i++ {
		xs[i] = nil
	}
	return out
}

// idle reports whether no latch is held or waited for.
func (l *latches) idle() bool { return len(l.held) == 0 && len(l.waiting) == 0 }

// holds reports whether txn holds granted latches.
func (l *latches) holds(txn uint64) bool {
	for _, h := range l.held {
		if h.txn == txn {
			return true
		}
	}
	return false
}
