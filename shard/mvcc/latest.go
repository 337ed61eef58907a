package mvcc

import (
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
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
//
// While complete, every user key with a version in the committed store has
// an entry, so a key without one has no version at all and a Put of a new
// key needs no seek either. It holds from Open, which fills the memory from
// the store if the store fits (load), and is lost for good, until the next
// Open, when an entry is dropped for the budget, when a span operation
// writes records the memory did not see (ImportSpan, ReplaceSpan, a
// ClearSpan that failed part way), or when an Update committed without
// recording because a span operation ran meanwhile.
type latest struct {
	mu       sync.Mutex
	epoch    uint64
	entries  map[string]latestVersion
	bytes    int
	complete bool
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

// get returns key's newest version if it is remembered; absent is true if
// it is not and the memory is complete (the key has no version).
func (l *latest) get(key []byte) (v latestVersion, ok, absent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok = l.entries[string(key)]
	return v, ok, !ok && l.complete
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
		// What this Update wrote is not remembered.
		l.complete = false
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
		l.complete = false
	}
}

// forget drops the entries of the user key span [start, end) (end empty:
// to the end of the keyspace) and starts a new epoch. The memory stays
// complete only if cleared: the span's records are all gone.
func (l *latest) forget(start, end []byte, cleared bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch++
	l.complete = l.complete && cleared
	for k, v := range l.entries {
		if inRange([]byte(k), start, end) {
			delete(l.entries, k)
			l.bytes -= versionSize(k, v)
		}
	}
}

// incomplete records that the store may hold keys the memory does not know.
func (l *latest) incomplete() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.complete = false
}

// load fills the memory with the newest version of every key in the store,
// as Open finds it, and makes it complete if all of them fit in the budget
// (then it holds every key; if not, it keeps those it read). It must run
// before any Update.
func (l *latest) load(db *badger.DB) error {
	entries := map[string]latestVersion{}
	bytes := 0
	complete := true
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsData}})
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			item := it.Item()
			prefix, rev, err := splitDataKey(item.Key())
			if err != nil {
				return fmt.Errorf("mvcc: data key %q: %w", item.Key(), err)
			}
			uk, _, err := unescape(prefix[1:])
			if err != nil {
				return fmt.Errorf("mvcc: data key %q: %w", item.Key(), err)
			}
			key := string(uk)
			v := latestVersion{rev: rev}
			if item.UserMeta()&metaTombstone == 0 {
				v.kv = new(mvccpb.KeyValue)
				if err := fillKV(v.kv, prefix[1:], item, true); err != nil {
					return err
				}
			}
			if bytes+versionSize(key, v) > latestBudget {
				complete = false
				return nil
			}
			entries[key] = v
			bytes += versionSize(key, v)
			// Past the key's older versions (the revision suffix descends:
			// revision 0 would sort after all of them).
			it.Seek(dataKeyFromPrefix(prefix, 0))
		}
		return nil
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries, l.bytes, l.complete = entries, bytes, complete
	return nil
}
