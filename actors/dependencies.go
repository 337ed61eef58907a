package actors

import "errors"

var (
	errLogStoreClosed = errors.New("raft log store closed before a write's dependencies were written")
	errAbandoned      = errors.New("raft log write depends on a transaction that will never be written")
)

// dependencies holds back writes whose required transactions are not yet
// written, so that a decision never becomes durable before the intents it
// decides — yet shares their record when they arrive together. Owned by the
// writer goroutine.
//
// Invariant: a write leaves ready only when each of its Requires was
// provided by a write committed earlier or by a write in the same batch
// (one record, atomic on replay).
type dependencies struct {
	provided  map[uint64]bool // provided and not yet required
	abandoned map[uint64]bool
	waiting   []*LogWrite
}

func newDependencies() *dependencies {
	return &dependencies{provided: map[uint64]bool{}, abandoned: map[uint64]bool{}}
}

// ready returns, appended to out, the writes among waiting and queued that
// may be committed now, in order, and keeps the others waiting. Abandon
// markers are consumed here; writes that require an abandoned transaction
// fail at once.
func (d *dependencies) ready(queued, out []*LogWrite) []*LogWrite {
	all := append(d.waiting, queued...)
	d.waiting = nil
	avail := func(txn uint64) bool { return d.provided[txn] }
	inBatch := map[uint64]bool{}
	for _, w := range all {
		if w.abandon != 0 {
			d.abandoned[w.abandon] = true
			continue
		}
		for _, t := range w.Provides {
			inBatch[t] = true
		}
	}
	for _, w := range all {
		if w.abandon != 0 {
			continue
		}
		ok, dead := true, false
		for _, t := range w.Requires {
			if avail(t) || inBatch[t] {
				continue
			}
			ok = false
			dead = dead || d.abandoned[t]
		}
		switch {
		case dead:
			if w.Done != nil {
				w.Done(errAbandoned)
			}
		case ok:
			out = append(out, w)
		default:
			d.waiting = append(d.waiting, w)
		}
	}
	return out
}

// committed records what a committed batch provided and consumed.
func (d *dependencies) committed(batch []*LogWrite, errs []error) {
	for i, w := range batch {
		if errs[i] != nil {
			continue
		}
		for _, t := range w.Provides {
			d.provided[t] = true
		}
	}
	for i, w := range batch {
		if errs[i] != nil {
			continue
		}
		for _, t := range w.Requires {
			delete(d.provided, t)
			delete(d.abandoned, t)
		}
	}
}

// failWaiting fails the writes still held back.
func (d *dependencies) failWaiting(err error) {
	for _, w := range d.waiting {
		if w.Done != nil {
			w.Done(err)
		}
	}
	d.waiting = nil
}
