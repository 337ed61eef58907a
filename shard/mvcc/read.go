package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Reader reads one consistent snapshot. Inside an Update it also sees the Update's own writes.
// A Reader is not safe for concurrent use and is valid only inside the View/Update callback.
type Reader struct {
	txn       *badger.Txn
	compacted int64
}

// ReadOptions shapes a Range.
type ReadOptions struct {
	// Limit caps the number of KVs returned when > 0; Count still covers the whole span.
	Limit int64
	// KeysOnly returns KVs without values.
	KeysOnly bool
	// CountOnly returns no KVs, only Count.
	CountOnly bool
	// NoCount stops the scan once Limit KVs are found: Count is then the
	// number of KVs returned, not the span's total.
	NoCount bool
}

// RangeResult is the answer to a Range.
type RangeResult struct {
	KVs   []*mvccpb.KeyValue
	Count int64
}

// Change is one entry of the change index, as the watch event it stands for.
type Change struct {
	Rev   int64
	Sub   int32
	Event *mvccpb.Event
}

// nextStepsBeforeSeek is how many Next calls a scan tries before falling back to a Seek when it
// skips versions: a Seek costs a binary search on every level, a Next is cheap, and most keys
// have few versions.
const nextStepsBeforeSeek = 3

// CompactedRev is the compacted revision as of this snapshot (0 if never compacted).
func (r *Reader) CompactedRev() int64 { return r.compacted }

func (r *Reader) checkRev(rev int64) error {
	if rev > 0 && rev < r.compacted {
		return fmt.Errorf("%w: revision %d < compacted %d", ErrCompacted, rev, r.compacted)
	}
	return nil
}

// Range returns the live keys of the span at rev, ascending by key. rev <= 0 reads the latest
// state. Span rules are etcd's: end empty → just key; end == "\x00" → every key >= key;
// otherwise [key, end). rev below the compacted revision yields ErrCompacted.
func (r *Reader) Range(key, end []byte, rev int64, o ReadOptions) (RangeResult, error) {
	var res RangeResult
	if err := r.checkRev(rev); err != nil {
		return res, err
	}
	if rev <= 0 {
		rev = math.MaxInt64
	}
	lo, hi, ok := spanBounds(key, end)
	if !ok {
		return res, nil
	}
	var slab []mvccpb.KeyValue
	err := r.scan(lo, hi, rev, func(prefix []byte, item *badger.Item) (bool, error) {
		if o.NoCount && o.Limit > 0 && int64(len(res.KVs)) >= o.Limit {
			return true, nil
		}
		res.Count++
		if o.CountOnly || (o.Limit > 0 && int64(len(res.KVs)) >= o.Limit) {
			return false, nil
		}
		if len(slab) == 0 {
			n := 16
			if o.Limit > 0 && o.Limit-int64(len(res.KVs)) < int64(n) {
				n = int(o.Limit - int64(len(res.KVs)))
			}
			slab = make([]mvccpb.KeyValue, n)
		}
		kv := &slab[0]
		slab = slab[1:]
		if err := fillKV(kv, prefix[1:], item, !o.KeysOnly); err != nil {
			return false, err
		}
		res.KVs = append(res.KVs, kv)
		return false, nil
	})
	return res, err
}

// Get returns key's live version at rev (rev <= 0: latest), or nil if it is absent or deleted.
func (r *Reader) Get(key []byte, rev int64) (*mvccpb.KeyValue, error) {
	res, err := r.Range(key, nil, rev, ReadOptions{Limit: 1})
	if err != nil || len(res.KVs) == 0 {
		return nil, err
	}
	return res.KVs[0], nil
}

// scan visits, for every user key in [lo, hi), its newest version with revision <= rev when
// that version is live. visit gets the key's data prefix ('k'+esc+term, valid until visit
// returns) and the item; returning stop=true ends the scan.
func (r *Reader) scan(lo, hi []byte, rev int64, visit func(prefix []byte, item *badger.Item) (stop bool, err error)) error {
	it := r.txn.NewIterator(badger.IteratorOptions{Prefix: iterPrefix(lo, hi)})
	defer it.Close()
	cur := make([]byte, 0, 64)
	seek := make([]byte, 0, 64+revLen)
	same := func(k []byte) bool {
		return len(k) == len(cur)+revLen && bytes.Equal(k[:len(cur)], cur)
	}
	it.Seek(lo)
	for it.Valid() {
		k := it.Item().Key()
		if bytes.Compare(k, hi) >= 0 {
			return nil
		}
		p, krev, err := splitDataKey(k)
		if err != nil {
			return fmt.Errorf("mvcc: data key %q: %w", k, err)
		}
		cur = append(cur[:0], p...)
		if krev > rev {
			// Step to the newest version <= rev: a few Nexts, then one Seek.
			found := false
			for i := 0; ; i++ {
				if i == nextStepsBeforeSeek {
					seek = appendRev(append(seek[:0], cur...), rev)
					it.Seek(seek)
					found = it.Valid() && same(it.Item().Key())
					break
				}
				it.Next()
				if !it.Valid() || !same(it.Item().Key()) {
					break
				}
				if dataRev(it.Item().Key()) <= rev {
					found = true
					break
				}
			}
			if !found {
				continue // at the next user key (or done): no version <= rev
			}
		}
		item := it.Item()
		if item.UserMeta()&metaTombstone == 0 {
			stop, err := visit(cur, item)
			if err != nil || stop {
				return err
			}
		}
		// Skip the older versions of this key.
		for i := 0; ; i++ {
			if i == nextStepsBeforeSeek {
				// rev 0 is never written, so ^0 sorts after every version of cur.
				seek = appendRev(append(seek[:0], cur...), 0)
				it.Seek(seek)
				break
			}
			it.Next()
			if !it.Valid() || !same(it.Item().Key()) {
				break
			}
		}
	}
	return nil
}

// fillKV decodes a data item into kv. esc is esc(userKey)+term.
func fillKV(kv *mvccpb.KeyValue, esc []byte, item *badger.Item, withValue bool) error {
	rev := dataRev(item.Key())
	return item.Value(func(v []byte) error {
		h, val, err := decodeValue(v)
		if err != nil {
			return fmt.Errorf("mvcc: value of %q: %w", item.Key(), err)
		}
		if h.tombstone() {
			return fmt.Errorf("mvcc: %q: %w: tombstone read as live", item.Key(), errCorrupt)
		}
		ulen := unescapedLen(esc[:len(esc)-2])
		n := ulen
		if withValue {
			n += len(val)
		}
		buf := make([]byte, n)
		unescapeInto(buf[:ulen], esc)
		kv.Key = buf[:ulen:ulen]
		if withValue {
			copy(buf[ulen:], val)
			kv.Value = buf[ulen:]
		}
		kv.CreateRevision = h.createRevision
		kv.ModRevision = rev
		kv.Version = h.version
		kv.Lease = h.lease
		return nil
	})
}

// unescapeInto writes the user key of esc(key)+term into dst, which has the exact length.
func unescapeInto(dst, esc []byte) {
	j := 0
	for i := 0; j < len(dst); i++ {
		dst[j] = esc[i]
		if esc[i] == 0 {
			i++
		}
		j++
	}
}

// getVersion reads the version of a key (given as esc+term) at exactly rev. ok is false when
// that version is absent; a tombstone is returned as ok with nil kv.
func (r *Reader) getVersion(esc []byte, rev int64) (kv *mvccpb.KeyValue, ok bool, err error) {
	item, err := r.txn.Get(dataKeyFromEsc(esc, rev))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("mvcc: get: %w", err)
	}
	if item.UserMeta()&metaTombstone != 0 {
		return nil, true, nil
	}
	kv = new(mvccpb.KeyValue)
	if err := fillKV(kv, esc, item, true); err != nil {
		return nil, false, err
	}
	return kv, true, nil
}

// Changes returns every change with fromRev <= rev <= toRev (toRev <= 0: no upper bound) to a
// key of the span, ordered by (rev, sub, key), as watch events: PUT carries the new KV, DELETE
// carries Kv{Key, ModRevision}; PrevKv is the version the change superseded if it was live.
//
// limit > 0 stops after the revision during which the limit is reached: a revision's changes
// are never split, so a caller resuming at the last returned Rev+1 loses nothing.
//
// fromRev below the compacted revision yields ErrCompacted. Events at exactly the compacted
// revision are served without PrevKv, as etcd does (prev_kv is read at rev-1, which is
// compacted).
func (r *Reader) Changes(key, end []byte, fromRev, toRev int64, limit int) ([]Change, error) {
	if fromRev < 1 {
		fromRev = 1
	}
	if err := r.checkRev(fromRev); err != nil {
		return nil, err
	}
	if toRev <= 0 {
		toRev = math.MaxInt64
	}
	if toRev < fromRev {
		return nil, nil
	}
	span := newEscSpan(key, end)
	if !span.single && span.hi != nil && string(span.hi) <= string(span.lo) {
		return nil, nil
	}
	it := r.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsChange}})
	defer it.Close()
	var out []Change
	for it.Seek(changeRevKey(fromRev)); it.Valid(); it.Next() {
		item := it.Item()
		rev, sub, esc, err := splitChangeKey(item.Key())
		if err != nil {
			return nil, fmt.Errorf("mvcc: change key %q: %w", item.Key(), err)
		}
		if rev > toRev {
			break
		}
		if limit > 0 && len(out) >= limit && rev != out[len(out)-1].Rev {
			break
		}
		if !span.contains(esc) {
			continue
		}
		typ, prevRev, err := changeOf(item)
		if err != nil {
			return nil, fmt.Errorf("mvcc: change %d/%d: %w", rev, sub, err)
		}
		ev := &mvccpb.Event{Type: mvccpb.Event_EventType(typ)}
		if typ == changePut {
			kv, ok, err := r.getVersion(esc, rev)
			if err != nil {
				return nil, err
			}
			if !ok || kv == nil {
				return nil, fmt.Errorf("mvcc: change %d/%d: %w: put without its version", rev, sub, errCorrupt)
			}
			ev.Kv = kv
		} else {
			ukey, _, err := unescape(esc)
			if err != nil {
				return nil, fmt.Errorf("mvcc: change %d/%d: %w", rev, sub, err)
			}
			ev.Kv = &mvccpb.KeyValue{Key: ukey, ModRevision: rev}
		}
		if prevRev != 0 && rev > r.compacted {
			prev, ok, err := r.getVersion(esc, prevRev)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("mvcc: change %d/%d: %w: previous version %d missing", rev, sub, errCorrupt, prevRev)
			}
			ev.PrevKv = prev
		}
		out = append(out, Change{Rev: rev, Sub: sub, Event: ev})
	}
	return out, nil
}

// Meta returns the caller's value under key, or nil if absent.
func (r *Reader) Meta(key []byte) ([]byte, error) {
	item, err := r.txn.Get(metaKey(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mvcc: meta: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("mvcc: meta: %w", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// MetaScan calls fn for every meta key with the prefix, in key order. key and value are valid
// only during the call. fn must not call other Reader methods.
func (r *Reader) MetaScan(prefix []byte, fn func(key, value []byte) error) error {
	it := r.txn.NewIterator(badger.IteratorOptions{Prefix: metaKey(prefix)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()[1:]
		if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
			return err
		}
	}
	return nil
}

// SpanStats counts the live keys of [start, end) at the latest state (end empty: unbounded) and
// their bytes: user key plus stored value (the value's few-byte header included).
func (r *Reader) SpanStats(start, end []byte) (keys int64, size int64, err error) {
	if len(end) == 0 {
		end = []byte{0}
	}
	lo, hi, ok := spanBounds(start, end)
	if !ok {
		return 0, 0, nil
	}
	err = r.scan(lo, hi, math.MaxInt64, func(prefix []byte, item *badger.Item) (bool, error) {
		keys++
		size += int64(unescapedLen(prefix[1:len(prefix)-2])) + item.ValueSize()
		return false, nil
	})
	return keys, size, err
}
