package watchactor

// This file is the synced watchers' index: which watchers does a key
// concern. Single-key watchers are found by a map lookup; range watchers
// are grouped by their exact span (watchers of one prefix share an entry,
// as Kubernetes' and the benchmark's do) and the distinct spans are kept
// sorted by start with a running maximum of their ends, so a lookup scans
// back from the last span starting at or before the key and stops as soon
// as no earlier span can reach the key.

import (
	"bytes"
	"sort"
)

// span is a watched key span in etcd's conventions after normalisation:
// end == nil is the single key, len(end) == 0 (non-nil) is every key >= key,
// otherwise [key, end).
type span struct {
	key, end []byte
}

func (s span) single() bool  { return s.end == nil }
func (s span) fromKey() bool { return s.end != nil && len(s.end) == 0 }

func (s span) contains(k []byte) bool {
	switch {
	case s.single():
		return bytes.Equal(k, s.key)
	case s.fromKey():
		return bytes.Compare(k, s.key) >= 0
	default:
		return bytes.Compare(k, s.key) >= 0 && bytes.Compare(k, s.end) < 0
	}
}

// bounds is a half-open key interval [lo, hi); inf means no upper bound.
type bounds struct {
	lo, hi []byte
	inf    bool
	empty  bool
}

func (s span) bounds() bounds {
	switch {
	case s.single():
		return bounds{lo: s.key, hi: append(append([]byte{}, s.key...), 0)}
	case s.fromKey():
		return bounds{lo: s.key, inf: true}
	default:
		return bounds{lo: s.key, hi: s.end}
	}
}

// union widens b to cover o.
func (b bounds) union(o bounds) bounds {
	if b.empty {
		return o
	}
	if o.empty {
		return b
	}
	if bytes.Compare(o.lo, b.lo) < 0 {
		b.lo = o.lo
	}
	if o.inf || b.inf {
		b.inf, b.hi = true, nil
	} else if bytes.Compare(o.hi, b.hi) > 0 {
		b.hi = o.hi
	}
	return b
}

// request returns b as a Source.Changes key and end.
func (b bounds) request() (key, end []byte) {
	if b.inf {
		return b.lo, []byte{0}
	}
	return b.lo, b.hi
}

// watcherSet is an unordered set of watchers with O(1) removal: each
// watcher remembers its slot (a watcher is in at most one set).
type watcherSet []*watcher

func (s *watcherSet) add(w *watcher) {
	w.slot = len(*s)
	*s = append(*s, w)
}

func (s *watcherSet) remove(w *watcher) {
	old := *s
	last := len(old) - 1
	old[w.slot] = old[last]
	old[w.slot].slot = w.slot
	old[last] = nil
	*s = old[:last]
	w.slot = -1
}

type rangeEntry struct {
	lo, hi []byte // hi nil: from-key
	ws     watcherSet
}

func (e *rangeEntry) contains(k []byte) bool {
	return bytes.Compare(k, e.lo) >= 0 && (e.hi == nil || bytes.Compare(k, e.hi) < 0)
}

// group indexes watchers by span.
type group struct {
	n      int
	keys   map[string]*watcherSet
	ranges map[string]*rangeEntry // by lo + "\x00\xff" + hi (hi "" for from-key)

	// sorted is the range entries by lo, rebuilt lazily; maxHi[i] is the
	// greatest hi of sorted[:i+1] (nil: unbounded).
	dirty  bool
	sorted []*rangeEntry
	maxHi  [][]byte
	maxInf []bool
}

func newGroup() *group {
	return &group{keys: map[string]*watcherSet{}, ranges: map[string]*rangeEntry{}}
}

func rangeID(s span) string {
	return string(s.key) + "\x00\xff" + string(s.end)
}

func (g *group) size() int { return g.n }

func (g *group) add(w *watcher) {
	g.n++
	if w.span.single() {
		set := g.keys[string(w.span.key)]
		if set == nil {
			set = &watcherSet{}
			g.keys[string(w.span.key)] = set
		}
		set.add(w)
		return
	}
	id := rangeID(w.span)
	e := g.ranges[id]
	if e == nil {
		e = &rangeEntry{lo: w.span.key}
		if !w.span.fromKey() {
			e.hi = w.span.end
		}
		g.ranges[id] = e
		g.dirty = true
	}
	e.ws.add(w)
}

func (g *group) remove(w *watcher) {
	g.n--
	if w.span.single() {
		set := g.keys[string(w.span.key)]
		set.remove(w)
		if len(*set) == 0 {
			delete(g.keys, string(w.span.key))
		}
		return
	}
	id := rangeID(w.span)
	e := g.ranges[id]
	e.ws.remove(w)
	if len(e.ws) == 0 {
		delete(g.ranges, id)
		g.dirty = true
	}
}

func (g *group) rebuild() {
	g.dirty = false
	g.sorted = g.sorted[:0]
	for _, e := range g.ranges {
		g.sorted = append(g.sorted, e)
	}
	sort.Slice(g.sorted, func(i, j int) bool { return bytes.Compare(g.sorted[i].lo, g.sorted[j].lo) < 0 })
	g.maxHi = g.maxHi[:0]
	g.maxInf = g.maxInf[:0]
	var hi []byte
	inf := false
	for _, e := range g.sorted {
		if e.hi == nil {
			inf = true
		} else if !inf && bytes.Compare(e.hi, hi) > 0 {
			hi = e.hi
		}
		g.maxHi = append(g.maxHi, hi)
		g.maxInf = append(g.maxInf, inf)
	}
}

// each calls f for every watcher whose span contains key.
func (g *group) each(key []byte, f func(*watcher)) {
	if set := g.keys[string(key)]; set != nil {
		for _, w := range *set {
			f(w)
		}
	}
	if len(g.ranges) == 0 {
		return
	}
	if g.dirty {
		g.rebuild()
	}
	// last entry with lo <= key
	i := sort.Search(len(g.sorted), func(i int) bool { return bytes.Compare(g.sorted[i].lo, key) > 0 }) - 1
	for ; i >= 0; i-- {
		if !g.maxInf[i] && bytes.Compare(g.maxHi[i], key) <= 0 {
			return
		}
		if e := g.sorted[i]; e.contains(key) {
			for _, w := range e.ws {
				f(w)
			}
		}
	}
}
