package mvcc

import (
	"bytes"
	"slices"
	"sync"
	"unsafe"
)

// The feed keeps the changes of the store's most recent revisions in
// memory, as Updates commit them, so the watch service hands a new
// revision's events to its watchers without reading them back from badger
// (the read used to sit between a write's apply and its event).
//
// Invariant: for every revision r > since, the feed holds every change at r
// that any committed Update of this store wrote. Whatever could break it
// raises since: evicting a revision raises since to it, and writing records
// in bulk (snapshots: ImportSpan, ReplaceSpan, ClearSpan) raises since past
// every revision the feed has seen or the records hold. A caller asking for
// revisions at or below since is refused and reads the store instead.

// Bounds on what the feed holds; the oldest revisions go first.
const (
	feedMaxChanges = 1 << 16
	feedMaxBytes   = 32 << 20
)

type feed struct {
	maxChanges, maxBytes int

	mu      sync.Mutex
	since   int64
	maxSeen int64
	revs    map[int64][]Change // each sorted by (sub, key)
	order   []int64            // revisions in the order they were first added
	changes int
	bytes   int
}

func newFeed() *feed {
	return &feed{maxChanges: feedMaxChanges, maxBytes: feedMaxBytes, revs: map[int64][]Change{}}
}

// The methods below accept a nil feed (Options.NoChangeFeed): it keeps
// nothing and answers nothing.

// add records the changes of one committed Update.
func (f *feed) add(cs []Change) {
	if f == nil || len(cs) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		f.maxSeen = max(f.maxSeen, c.Rev)
		if c.Rev <= f.since {
			continue
		}
		have, known := f.revs[c.Rev]
		if !known {
			f.order = append(f.order, c.Rev)
		}
		i, dup := slices.BinarySearchFunc(have, c, compareChange)
		if dup {
			continue
		}
		f.revs[c.Rev] = slices.Insert(have, i, c)
		f.changes++
		f.bytes += changeSize(c)
	}
	for len(f.order) > 0 && (f.changes > f.maxChanges || f.bytes > f.maxBytes) {
		f.evict()
	}
}

// evict drops the revision added first, and every revision at or below it.
func (f *feed) evict() {
	rev := f.order[0]
	f.order = f.order[1:]
	f.drop(rev)
	f.since = max(f.since, rev)
}

func (f *feed) drop(rev int64) {
	for _, c := range f.revs[rev] {
		f.changes--
		f.bytes -= changeSize(c)
	}
	delete(f.revs, rev)
}

// reset forgets everything: the store's records changed in bulk, up to
// revision upTo or any revision seen so far.
func (f *feed) reset(upTo int64) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since = max(f.since, f.maxSeen, upTo)
	f.maxSeen = f.since
	clear(f.revs)
	f.order = f.order[:0]
	f.changes, f.bytes = 0, 0
}

// get returns what Reader.Changes would return for the span with
// fromRev <= rev <= toRev, or false if the feed cannot tell (fromRev is at
// or below since). The caller must know that every revision up to toRev is
// applied on every range of the span it holds.
func (f *feed) get(key, end []byte, fromRev, toRev int64, limit int) ([]Change, bool) {
	if f == nil {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fromRev <= f.since || toRev-fromRev > int64(f.maxChanges) {
		return nil, false
	}
	span := userSpan{key, end}
	var out []Change
	for rev := fromRev; rev <= toRev; rev++ {
		if limit > 0 && len(out) >= limit {
			break
		}
		for _, c := range f.revs[rev] {
			if span.contains(c.Event.Kv.Key) {
				out = append(out, c)
			}
		}
	}
	return out, true
}

func compareChange(a, b Change) int {
	if a.Sub != b.Sub {
		if a.Sub < b.Sub {
			return -1
		}
		return 1
	}
	return bytes.Compare(a.Event.Kv.Key, b.Event.Kv.Key)
}

// changeSize approximates the memory a change holds.
func changeSize(c Change) int {
	n := int(unsafe.Sizeof(c)) + 64
	if kv := c.Event.Kv; kv != nil {
		n += len(kv.Key) + len(kv.Value) + 64
	}
	if kv := c.Event.PrevKv; kv != nil {
		n += len(kv.Key) + len(kv.Value) + 64
	}
	return n
}

// userSpan is etcd's key/range_end convention on user keys: end empty is
// the one key, end "\x00" is every key >= key.
type userSpan struct{ key, end []byte }

func (s userSpan) contains(k []byte) bool {
	switch {
	case len(s.end) == 0:
		return bytes.Equal(k, s.key)
	case len(s.end) == 1 && s.end[0] == 0:
		return bytes.Compare(k, s.key) >= 0
	default:
		return bytes.Compare(k, s.key) >= 0 && bytes.Compare(k, s.end) < 0
	}
}
