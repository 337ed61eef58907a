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
//
// Range, Changes, DeleteRange and the meta reads go through badger's read-write transaction,
// whose iterators merge the pending writes (sorting them anew for every iterator). Put and Get,
// which an apply loop calls once per key, avoid that cost: they consult the Writer's own record
// of the versions it wrote (pending) and otherwise seek one iterator, reused for the whole
// Update, over a read-only snapshot of the committed state. Both views agree because the caller
// serializes Updates that touch the same keys.
type Writer struct {
	Reader
	db       *badger.DB
	maxValue int64

	pending map[string][]pendingVersion // versions written by this Update, ascending by rev
	feedOn  bool                        // the store keeps a feed: record written
	written []Change                    // this Update's changes as watch events, for the feed
	ro      *badger.Txn                 // committed state, created on first use
	roIt    *badger.Iterator
	latest  *latest // the committed newest versions of recently written keys
}

// pendingVersion is a version this Update wrote; kv is nil for a tombstone.
type pendingVersion struct {
	rev int64
	kv  *mvccpb.KeyValue
}

func (w *Writer) release() {
	if w.roIt != nil {
		w.roIt.Close()
	}
	if w.ro != nil {
		w.ro.Discard()
	}
}

func (w *Writer) committed() *badger.Iterator {
	if w.roIt == nil {
		w.ro = w.db.NewTransaction(false)
		w.roIt = w.ro.NewIterator(badger.IteratorOptions{Prefix: []byte{nsData}})
	}
	return w.roIt
}

func (w *Writer) record(key []byte, v pendingVersion) {
	if w.pending == nil {
		w.pending = make(map[string][]pendingVersion)
	}
	w.pending[string(key)] = append(w.pending[string(key)], v)
}

// shallowCopy keeps the Writer's record private from callers.
func shallowCopy(kv *mvccpb.KeyValue) *mvccpb.KeyValue {
	if kv == nil {
		return nil
	}
	return &mvccpb.KeyValue{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

// version returns key's newest version <= rev (live or tombstone). ok is false when there is
// none; kv is nil for a tombstone. prefix is dataPrefix(key).
func (w *Writer) version(key, prefix []byte, rev int64) (kv *mvccpb.KeyValue, vrev int64, ok bool, err error) {
	vs := w.pending[string(key)]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].rev <= rev {
			return shallowCopy(vs[i].kv), vs[i].rev, true, nil
		}
	}
	if len(vs) == 0 {
		v, ok, absent := w.latest.get(key)
		switch {
		case ok && v.rev <= rev:
			return shallowCopy(v.kv), v.rev, true, nil
		case absent:
			return nil, 0, false, nil
		}
	}
	it := w.committed()
	if rev == math.MaxInt64 {
		it.Seek(prefix)
	} else {
		it.Seek(dataKeyFromPrefix(prefix, rev))
	}
	if !it.Valid() {
		return nil, 0, false, nil
	}
	item := it.Item()
	k := item.Key()
	if len(k) != len(prefix)+revLen || string(k[:len(prefix)]) != string(prefix) {
		return nil, 0, false, nil
	}
	vrev = dataRev(k)
	if item.UserMeta()&metaTombstone != 0 {
		return nil, vrev, true, nil
	}
	kv = new(mvccpb.KeyValue)
	if err := fillKV(kv, prefix[1:], item, true); err != nil {
		return nil, 0, false, err
	}
	return kv, vrev, true, nil
}

// Get returns key's live version at rev (rev <= 0: latest), or nil if it is absent or deleted,
// including this Update's writes.
func (w *Writer) Get(key []byte, rev int64) (*mvccpb.KeyValue, error) {
	if err := w.checkRev(rev); err != nil {
		return nil, err
	}
	if rev <= 0 {
		rev = math.MaxInt64
	}
	kv, _, _, err := w.version(key, dataPrefix(key), rev)
	return kv, err
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
	prev, latestRev, exists, err := w.version(p.Key, prefix, math.MaxInt64)
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
	enc := encodeValue(h, value)
	if err := w.set(dataKeyFromPrefix(prefix, rev), enc, 0); err != nil {
		return nil, err
	}
	if err := w.set(changeKey(rev, sub, p.Key), changeValue(changePut, prevRev), 0); err != nil {
		return nil, err
	}
	// The record aliases the encoded value handed to badger; neither is ever modified.
	kv := &mvccpb.KeyValue{
		Key: append([]byte(nil), p.Key...), Value: enc[len(enc)-len(value):],
		CreateRevision: h.createRevision, ModRevision: rev, Version: h.version, Lease: h.lease,
	}
	w.record(p.Key, pendingVersion{rev: rev, kv: kv})
	if w.feedOn {
		w.written = append(w.written, Change{Rev: rev, Sub: sub, Event: &mvccpb.Event{Type: mvccpb.PUT, Kv: kv, PrevKv: prev}})
	}
	return prev, nil
}

// DeleteRange tombstones, at (rev, sub), every live key of the span (etcd span rules) in the
// latest state, and returns their previous versions in key order.
func (w *Writer) DeleteRange(rev int64, sub int32, key, end []byte) ([]*mvccpb.KeyValue, error) {
	if err := checkWrite(rev, sub); err != nil {
		return nil, err
	}
	var deleted []*mvccpb.KeyValue
	if len(end) == 0 {
		// One key: look it up like Put does, without an iterator over the
		// write transaction (whose pending writes badger sorts anew for
		// every iterator, which makes many single-key deletes quadratic).
		kv, err := w.Get(key, 0)
		if err != nil || kv == nil {
			return nil, err
		}
		if kv.ModRevision >= rev {
			return nil, fmt.Errorf("%w: delete at %d, newest version of %q is %d", ErrRevision, rev, key, kv.ModRevision)
		}
		deleted = append(deleted, kv)
		return deleted, w.tombstone(rev, sub, deleted)
	}
	lo, hi, ok := spanBounds(key, end)
	if !ok {
		return nil, nil
	}
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
	return deleted, w.tombstone(rev, sub, deleted)
}

// tombstone writes the deletion of each live key at (rev, sub).
func (w *Writer) tombstone(rev int64, sub int32, deleted []*mvccpb.KeyValue) error {
	tomb := encodeValue(valueHeader{flags: flagTombstone}, nil)
	for _, kv := range deleted {
		if err := w.set(dataKey(kv.Key, rev), tomb, metaTombstone); err != nil {
			return err
		}
		if err := w.set(changeKey(rev, sub, kv.Key), changeValue(changeDelete, kv.ModRevision), 0); err != nil {
			return err
		}
		w.record(kv.Key, pendingVersion{rev: rev})
		if w.feedOn {
			w.written = append(w.written, Change{Rev: rev, Sub: sub, Event: &mvccpb.Event{
				Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: kv.Key, ModRevision: rev}, PrevKv: kv}})
		}
	}
	return nil
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
