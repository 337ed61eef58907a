package mvcc

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Whole spans, for Raft snapshots: a range replica that fell behind its
// log, or a new one, is sent every record of the range's span (each key's
// versions and the span's change-index entries) and replaces its own with
// them.

// SpanRecord is one stored record of a span, as stored.
type SpanRecord struct {
	Key, Value []byte
	Meta       byte
}

// inRange reports whether user key k is in [start, end) (end empty: no
// upper bound, as a range's span).
func inRange(k, start, end []byte) bool {
	return bytes.Compare(k, start) >= 0 && (len(end) == 0 || bytes.Compare(k, end) < 0)
}

// spanDataBounds are the data-key bounds of a range's span [start, end).
func spanDataBounds(start, end []byte) (lo, hi []byte) {
	lo = dataPrefix(start)
	if len(end) == 0 {
		return lo, []byte{nsData + 1}
	}
	return lo, dataPrefix(end)
}

// ExportSpan visits every record of the span [start, end) (end empty: to
// the end of the keyspace) as of the Reader's snapshot: data records in key
// order, then change-index records in revision order. The slices are the
// visitor's to keep.
func (r *Reader) ExportSpan(start, end []byte, visit func(SpanRecord) error) error {
	lo, hi := spanDataBounds(start, end)
	it := r.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true})
	defer it.Close()
	for it.Seek(lo); it.Valid() && bytes.Compare(it.Item().Key(), hi) < 0; it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return wrapBadger("export", err)
		}
		if err := visit(SpanRecord{Key: item.KeyCopy(nil), Value: v, Meta: item.UserMeta()}); err != nil {
			return err
		}
	}
	// The change index is ordered by revision: its records of the span are
	// found by looking at every record's key.
	prefix := []byte{nsChange}
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) < changeHdrLen {
			return errCorrupt
		}
		uk, _, err := unescape(k[changeHdrLen:])
		if err != nil {
			return fmt.Errorf("mvcc: change key %q: %w", k, err)
		}
		if !inRange(uk, start, end) {
			continue
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return wrapBadger("export", err)
		}
		if err := visit(SpanRecord{Key: item.KeyCopy(nil), Value: v, Meta: item.UserMeta()}); err != nil {
			return err
		}
	}
	return nil
}

// InSpan reports whether the record is of the span [start, end) (end
// empty: no upper bound): a data or change-index record of a key in it.
func (rec SpanRecord) InSpan(start, end []byte) bool { return spanRecordOK(rec, start, end) }

// spanRecordOK reports whether a record belongs to the span: a data or
// change-index record of a key in [start, end).
func spanRecordOK(rec SpanRecord, start, end []byte) bool {
	switch {
	case len(rec.Key) > 0 && rec.Key[0] == nsData:
		uk, _, err := unescape(rec.Key[1:])
		return err == nil && inRange(uk, start, end)
	case len(rec.Key) > changeHdrLen && rec.Key[0] == nsChange:
		uk, _, err := unescape(rec.Key[changeHdrLen:])
		return err == nil && inRange(uk, start, end)
	}
	return false
}

// ClearSpan deletes every record of the span [start, end), in batches (not
// atomically: a caller that may crash part way marks the span first).
func (s *Store) ClearSpan(start, end []byte) (err error) {
	s.latest.forget(start, end, true)
	defer func() {
		if err != nil {
			s.latest.incomplete() // some of the span's records may be left
		}
	}()
	var keys [][]byte
	err = s.View(func(r *Reader) error {
		return r.ExportSpan(start, end, func(rec SpanRecord) error {
			keys = append(keys, rec.Key)
			return nil
		})
	})
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return wrapBadger("clear span", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return wrapBadger("clear span", err)
	}
	s.feed.reset(0)
	return nil
}

// ImportSpan writes records of the span [start, end), in batches (not
// atomically, as ClearSpan). A record outside the span is refused.
func (s *Store) ImportSpan(start, end []byte, recs []SpanRecord) error {
	s.latest.forget(start, end, false)
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, rec := range recs {
		if !spanRecordOK(rec, start, end) {
			return fmt.Errorf("mvcc: import: record %q is not of the span [%q, %q)", rec.Key, start, end)
		}
		if err := wb.SetEntry(badger.NewEntry(rec.Key, rec.Value).WithMeta(rec.Meta)); err != nil {
			return wrapBadger("import span", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return wrapBadger("import span", err)
	}
	s.feed.reset(maxRecordRev(recs))
	return nil
}

// maxRecordRev is the highest revision of the records' versions and
// changes.
func maxRecordRev(recs []SpanRecord) int64 {
	var top int64
	for _, rec := range recs {
		switch {
		case len(rec.Key) > revLen && rec.Key[0] == nsData:
			top = max(top, dataRev(rec.Key))
		case len(rec.Key) > 0 && rec.Key[0] == nsChange:
			if rev, _, _, err := splitChangeKey(rec.Key); err == nil {
				top = max(top, rev)
			}
		}
	}
	return top
}

// ReplaceSpan makes the span's records exactly recs, never leaving a
// record of a committed revision missing meanwhile: recs are written first
// (a record the store already holds is the same committed version), and
// only then are the records recs lack deleted (versions the source
// compacted away, or none). Readers at a revision both sides hold see the
// same data throughout. Not atomic (batches), as ImportSpan.
func (s *Store) ReplaceSpan(start, end []byte, recs []SpanRecord) error {
	if err := s.ImportSpan(start, end, recs); err != nil {
		return err
	}
	keep := make(map[string]struct{}, len(recs))
	for _, rec := range recs {
		keep[string(rec.Key)] = struct{}{}
	}
	var stale [][]byte
	err := s.View(func(r *Reader) error {
		return r.ExportSpan(start, end, func(rec SpanRecord) error {
			if _, ok := keep[string(rec.Key)]; !ok {
				stale = append(stale, rec.Key)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range stale {
		if err := wb.Delete(k); err != nil {
			return wrapBadger("replace span", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return wrapBadger("replace span", err)
	}
	s.latest.forget(start, end, false) // whatever was recorded while the stale records were still there
	return nil
}
