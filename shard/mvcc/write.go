package mvcc

import (
	"errors"
	"fmt"
	"math"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Writer writes inside one Update. It offers every Reader method, and those see the Update's
// own pending writes (read-your-writes). Not safe for concurrent use.
type Writer struct {
	Reader
	maxValue int64
}

// maxBadgerKey is badger's limit on a key's length; a user key's encoded form adds a namespace
// byte, escapes, a terminator and the revision.
const maxBadgerKey = 65000

// Put is one key write.
type Put struct {
	Key, Value []byte
	Lease      int64
	// IgnoreValue keeps the previous value; IgnoreLease keeps the previous lease. Both require a
	// live previous version (ErrKeyNotFound otherwise).
	IgnoreValue, IgnoreLease bool
}

// latest returns the newest version of the key with data prefix p (live or not). ok is false
// when the key has no version at all.
func (w *Writer) latest(p []byte, withValue bool) (kv *mvccpb.KeyValue, rev int64, ok bool, err error) {
	it := w.txn.NewIterator(badger.IteratorOptions{Prefix: p})
	defer it.Close()
	it.Seek(p)
	if !it.Valid() {
		return nil, 0, false, nil
	}
	item := it.Item()
	rev = dataRev(item.Key())
	if item.UserMeta()&metaTombstone != 0 {
		return nil, rev, true, nil
	}
	kv = new(mvccpb.KeyValue)
	if err := fillKV(kv, p[1:], item, withValue); err != nil {
		return nil, 0, false, err
	}
	return kv, rev, true, nil
}

func checkWrite(rev int64, sub int32) error {
	if rev <= 0 || rev == math.MaxInt64 || sub < 0 {
		return fmt.Errorf("mvcc: invalid write position rev=%d sub=%d", rev, sub)
	}
	return nil
}

func (w *Writer) set(k, v []byte, userMeta byte) error {
	// Check badger's size limits here: its own errors embed a hex dump of the payload.
	if len(k) > maxBadgerKey {
		return fmt.Errorf("mvcc: encoded key of %d bytes exceeds the store's limit", len(k))
	}
	if int64(len(v)) > w.maxValue {
		return fmt.Errorf("mvcc: value of %d bytes exceeds the store's limit of %d", len(v), w.maxValue)
	}
	if err := w.txn.SetEntry(badger.NewEntry(k, v).WithMeta(userMeta)); err != nil {
		return wrapBadger("write", err)
	}
	return nil
}

// Put writes p.Key at (rev, sub) and returns the previous live version (nil if none).
// create_revision and version follow etcd: kept and incremented over a live version, restarted
// (rev, 1) after a delete or for a new key.
func (w *Writer) Put(rev int64, sub int32, p Put) (*mvccpb.KeyValue, error) {
	if err := checkWrite(rev, sub); err != nil {
		return nil, err
	}
	if len(p.Key) == 0 {
		return nil, errors.New("mvcc: put: empty key")
	}
	prefix := dataPrefix(p.Key)
	prev, latestRev, exists, err := w.latest(prefix, true)
	if err != nil {
		return nil, err
	}
	if exists && latestRev >= rev {
		return nil, fmt.Errorf("%w: put %q at %d, newest version is %d", ErrRevision, p.Key, rev, latestRev)
	}
	h := valueHeader{createRevision: rev, version: 1, lease: p.Lease}
	value := p.Value
	var prevRev int64
	if prev != nil {
		prevRev = prev.ModRevision
		h.createRevision = prev.CreateRevision
		h.version = prev.Version + 1
		if p.IgnoreValue {
			value = prev.Value
		}
		if p.IgnoreLease {
			h.lease = prev.Lease
		}
	} else if p.IgnoreValue || p.IgnoreLease {
		return nil, fmt.Errorf("%w: %q", ErrKeyNotFound, p.Key)
	}
	if err := w.set(dataKeyFromPrefix(prefix, rev), encodeValue(h, value), 0); err != nil {
		return nil, err
	}
	if err := w.set(changeKey(rev, sub, p.Key), changeValue(changePut, prevRev), 0); err != nil {
		return nil, err
	}
	return prev, nil
}

// DeleteRange tombstones, at (rev, sub), every live key of the span (etcd span rules) in the
// latest state, and returns their previous versions in key order.
func (w *Writer) DeleteRange(rev int64, sub int32, key, end []byte) ([]*mvccpb.KeyValue, error) {
	if err := checkWrite(rev, sub); err != nil {
		return nil, err
	}
	lo, hi, ok := spanBounds(key, end)
	if !ok {
		return nil, nil
	}
	var deleted []*mvccpb.KeyValue
	// Collect first, write after: the iterator must be closed before the txn grows.
	err := w.scan(lo, hi, math.MaxInt64, func(prefix []byte, item *badger.Item) (bool, error) {
		if r := dataRev(item.Key()); r >= rev {
			return true, fmt.Errorf("%w: delete at %d, newest version of %q is %d", ErrRevision, rev, item.Key(), r)
		}
		kv := new(mvccpb.KeyValue)
		if err := fillKV(kv, prefix[1:], item, true); err != nil {
			return true, err
		}
		deleted = append(deleted, kv)
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	tomb := encodeValue(valueHeader{flags: flagTombstone}, nil)
	for _, kv := range deleted {
		if err := w.set(dataKey(kv.Key, rev), tomb, metaTombstone); err != nil {
			return nil, err
		}
		if err := w.set(changeKey(rev, sub, kv.Key), changeValue(changeDelete, kv.ModRevision), 0); err != nil {
			return nil, err
		}
	}
	return deleted, nil
}

// SetMeta stores the caller's value under key, atomically with the Update's data.
func (w *Writer) SetMeta(key, value []byte) error {
	// Copy: badger holds the slice until commit and the caller may reuse it.
	return w.set(metaKey(key), append([]byte{}, value...), 0)
}

// DeleteMeta removes the caller's key.
func (w *Writer) DeleteMeta(key []byte) error {
	if err := w.txn.Delete(metaKey(key)); err != nil {
		return wrapBadger("write", err)
	}
	return nil
}
