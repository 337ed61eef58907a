package actors

import (
	"errors"
	"time"
)

// lingerFor is how long a write that provides transactions waits for the
// writes that require them, so that both share one record (one fdatasync)
// instead of taking two in a row. It only delays a write whose requirer
// is not yet queued; under load requirers are usually already waiting.
const lingerFor = 500 * time.Microsecond

var (
	errLogStoreClosed = errors.New("raft log store closed before a write's dependencies were written")
	errAbandoned      = errors.New("raft log write depends on a transaction that will never be written")
)

// Dep names one transaction's intent in one group. A cross-range
// transaction has an intent in each of its ranges, and its decision
// requires every one of them.
type Dep struct{ Txn, Group uint64 }

// dependencies holds back writes whose required intents are not yet
// written, so that a decision never becomes durable before the intents it
// decides — yet shares their record when they arrive together. Owned by the
// writer goroutine.
//
// Invariant: a write leaves ready only when each of its Requires was
// provided by a write committed earlier or by a write leaving in the same
// batch (one record, atomic on replay). A write provides Dep{txn, its own
// group} for each of its Provides.
type dependencies struct {
	provided  map[Dep]bool    // provided and not yet required
	abandoned map[uint64]bool // transactions whose intents will never come
	waiting   []*LogWrite
	// lingering are providers held back for their requirers, until
	// lingerUntil at the latest.
	lingering   []*LogWrite
	lingerUntil time.Time
}

// holding reports whether writes are held back.
func (d *dependencies) holding() bool { return len(d.waiting) > 0 || len(d.lingering) > 0 }

// lingerLeft is how long lingering writes may still wait, if any linger.
func (d *dependencies) lingerLeft(now time.Time) (time.Duration, bool) {
	if len(d.lingering) == 0 {
		return 0, false
	}
	return max(d.lingerUntil.Sub(now), 0), true
}

func newDependencies() *dependencies {
	return &dependencies{provided: map[Dep]bool{}, abandoned: map[uint64]bool{}}
}

// provides lists what a write provides.
func provides(w *LogWrite) []Dep {
	out := make([]Dep, len(w.Provides))
	for i, t := range w.Provides {
		out[i] = Dep{Txn: t, Group: w.Group}
	}
	return out
}

// ready returns, appended to out, the writes among waiting and queued that
// may be committed now, in order, and keeps the others waiting. Abandon
// markers are consumed here; writes that require an abandoned transaction
// fail at once.
//
// A write that provides intents none of which a queued or waiting write
// requires yet lingers (until lingerFor after it first lingered, or
// flush), so that a requirer can join its record. A requirer leaves only
// with (or after) every provider of what it requires.
func (d *dependencies) ready(queued, out []*LogWrite, now time.Time, flush bool) []*LogWrite {
	if len(d.lingering) == 0 {
		d.lingerUntil = now.Add(lingerFor) // for writes that start lingering now
	}
	all := append(append(d.waiting, d.lingering...), queued...)
	d.waiting, d.lingering = nil, nil
	required := map[Dep]bool{}
	for _, w := range all {
		for _, r := range w.Requires {
			required[r] = true
		}
		if w.abandon != 0 {
			d.abandoned[w.abandon] = true
		}
	}
	expired := flush || !now.Before(d.lingerUntil)
	// A provider lingers only while no write at hand requires any of its
	// intents; only providers that leave now count for requirers.
	lingers := func(w *LogWrite) bool {
		if len(w.Provides) == 0 || len(w.Requires) > 0 || expired {
			return false
		}
		for _, p := range provides(w) {
			if required[p] {
				return false
			}
		}
		return true
	}
	leaving := map[Dep]bool{}
	for _, w := range all {
		if w.abandon == 0 && len(w.Requires) == 0 && !lingers(w) {
			for _, p := range provides(w) {
				leaving[p] = true
			}
		}
	}
	for _, w := range all {
		if w.abandon != 0 {
			continue
		}
		ok, dead := true, false
		for _, r := range w.Requires {
			if d.provided[r] || leaving[r] {
				continue
			}
			ok = false
			dead = dead || d.abandoned[r.Txn]
		}
		switch {
		case dead:
			if w.Done != nil {
				w.Done(errAbandoned)
			}
		case !ok:
			d.waiting = append(d.waiting, w)
		case lingers(w):
			d.lingering = append(d.lingering, w)
		default:
			out = append(out, w)
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
		for _, p := range provides(w) {
			d.provided[p] = true
		}
	}
	for i, w := range batch {
		if errs[i] != nil {
			continue
		}
		for _, r := range w.Requires {
			delete(d.provided, r)
			delete(d.abandoned, r.Txn)
		}
	}
}

// failWaiting fails the writes still held back.
func (d *dependencies) failWaiting(err error) {
	d.waiting = append(d.waiting, d.lingering...)
	d.lingering = nil
	for _, w := range d.waiting {
		if w.Done != nil {
			w.Done(err)
		}
	}
	d.waiting = nil
}
