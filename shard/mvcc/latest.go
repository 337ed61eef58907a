package mvcc

import (
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// latest remembers, for keys that Updates wrote lately, the key's newest
// version, so that a Put (which needs the previous version's create
// revision, version, lease and value) need not seek badger's iterators:
// under a write load that seek was a tenth of a member's CPU.
//
// Invariant: an entry is the key's newest version in the committed store
// (kv nil: a tombstone), written by the Update that last wrote the key. It
// holds because
//   - an Update records its keys' last versions only after it committed,
//     and Updates that write the same key are serialized by the caller (the
//     shard actor), so no later write of the key can commit in between;
//   - the span operations (ClearSpan, ImportSpan, ReplaceSpan), which write
//     badger directly, forget the entries of their span first, and raise
//     the epoch so that an Update that committed before they did, but
//     records after, records nothing;
//   - compaction removes no key's newest version, except tombstones, and a
//     remembered tombstone answers every caller as a missing key does (no
//     live version, nothing to read).
//
// The memory is bounded (latestBudget bytes of keys and values); past it,
// entries are dropped in no particular order.
type latest struct {
	mu      sync.Mutex
	epoch   uint64
	entries map[string]latestVersion
	bytes   int
}

type latestVersion struct {
	rev int64
	kv  *mvccpb.KeyValue // nil for a tombstone; shared, never modified
}

// latestBudget bounds the keys and values remembered.
const latestBudget = 64 << 20

// latestOverhead is what an entry costs besides its key and value.
const latestOverhead = 128

func newLatest() *latest { return &latest{entries: map[string]latestVersion{}} }

func versionSize(key string, v latestVersion) int {
	n := 2*len(key) + latestOverhead // the map's key and the KeyValue's
	if v.kv != nil {
		n += len(v.kv.Value)
	}
	return n
}

// get returns key's newest version if it is remembered.
func (l *latest) get(key []byte) (latestVersion, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.entries[string(key)]
	return v, ok
}

// now is the epoch an Update starts in.
func (l *latest) now() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

// record remembers the last version of each key an Update committed, if no
// span operation ran since the Update began (epoch).
func (l *latest) record(epoch uint64, pending map[string][]pendingVersion) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if epoch != l.epoch {
		return
	}
	for k, vs := range pending {
		v := latestVersion{rev: vs[len(vs)-1].rev, kv: vs[len(vs)-1].kv}
		if old, ok := l.entries[k]; ok {
			l.bytes -= versionSize(k, old)
		}
		l.entries[k] = v
		l.bytes += versionSize(k, v)
	}
	for k, v := range l.entries {
		if l.bytes <= latestBudget {
			break
		}
		delete(l.entries, k)
		l.bytes -= versionSize(k, v)
	}
}

// forget drops the entries of the user key span [start, end) (end empty:
// to the end of the keyspace) and starts a new epoch.
func (l *latest) forget(start, end []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch++
	for k, v := range l.entries {
		if inRange([]byte(k), start, end) {
			delete(l.entries, k)
			l.bytes -= versionSize(k, v)
		}
	}
}
