package mvcc

// This file is the whole on-disk format of the store. Every badger key starts with a one-byte
// namespace:
//
//	'k' esc(userKey) 0x00 0x01 BE64(^rev)   data: one version of a key       → valueHeader ++ value
//	'c' BE64(rev) BE32(sub) esc(userKey) 0x00 0x01
//	                                        change index: key changed at (rev, sub) → type ++ uvarint(prevRev)
//	'm' callerKey                           meta: caller's bytes, opaque to the store
//	'x' name                                store-level: format marker, compacted revision
//
// esc doubles 0x00 as 0x00 0xFF and the terminator is 0x00 0x01, so esc(a)+term < esc(b)+term
// exactly when a < b, and no encoded key is a prefix of another. Storing ^rev makes the newest
// version of a key sort first, so "newest version <= R" is one Seek.
//
// The data key's badger UserMeta carries the tombstone bit as well, so counting live keys never
// has to fetch a value.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/dgraph-io/badger/v4"
)

const (
	nsData   = 'k'
	nsChange = 'c'
	nsMeta   = 'm'
	nsStore  = 'x'

	revLen = 8
	subLen = 4
	// changeHdrLen is the length of a change key before the escaped user key.
	changeHdrLen = 1 + revLen + subLen
)

// Store-level keys.
var (
	keyFormat      = []byte{nsStore, 'f', 'o', 'r', 'm', 'a', 't'}
	keyCompacted   = []byte("xcompacted")
	keyCompactDone = []byte("xcompact-done")
	// formatMarker identifies a Mosaic MVCC store; a DB without it is not ours.
	formatMarker = []byte("mosaic-mvcc-v1")
)

// userMeta bits stored in badger's per-entry UserMeta byte of data keys.
const metaTombstone byte = 1

// Value header flags (first byte of a data value); mirrors UserMeta so a value alone is
// self-describing.
const flagTombstone byte = 1

// Change-index value types; equal to mvccpb.Event_EventType numbers.
const (
	changePut    byte = 0
	changeDelete byte = 1
)

var errCorrupt = errors.New("mvcc: corrupt record")

// escapedLen is the length of esc(key)+terminator.
func escapedLen(key []byte) int {
	n := len(key) + 2
	for _, b := range key {
		if b == 0 {
			n++
		}
	}
	return n
}

// appendEscaped appends esc(key) and the terminator.
func appendEscaped(dst, key []byte) []byte {
	for _, b := range key {
		if b == 0 {
			dst = append(dst, 0, 0xFF)
		} else {
			dst = append(dst, b)
		}
	}
	return append(dst, 0, 1)
}

// unescape decodes esc(key)+terminator at the start of src and returns the user key (freshly
// allocated) and the bytes after the terminator.
func unescape(src []byte) (key, rest []byte, err error) {
	n := 0
	end := -1
	for i := 0; i < len(src); i++ {
		if src[i] != 0 {
			n++
			continue
		}
		if i+1 >= len(src) {
			return nil, nil, errCorrupt
		}
		switch src[i+1] {
		case 0xFF:
			n++
			i++
		case 0x01:
			end = i
		default:
			return nil, nil, errCorrupt
		}
		if end >= 0 {
			break
		}
	}
	if end < 0 {
		return nil, nil, errCorrupt
	}
	key = make([]byte, 0, n)
	for i := 0; i < end; i++ {
		key = append(key, src[i])
		if src[i] == 0 {
			i++
		}
	}
	return key, src[end+2:], nil
}

// unescapedLen is the user-key length of esc(key) (without terminator).
func unescapedLen(esc []byte) int {
	n := len(esc)
	for i := 0; i+1 < len(esc); i++ {
		if esc[i] == 0 && esc[i+1] == 0xFF {
			n--
			i++
		}
	}
	return n
}

// dataPrefix returns 'k' esc(key) term: the common prefix of every version of key.
func dataPrefix(key []byte) []byte {
	b := make([]byte, 0, 1+escapedLen(key)+revLen)
	b = append(b, nsData)
	return appendEscaped(b, key)
}

// appendRev appends the descending-order revision suffix of a data key.
func appendRev(dst []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(dst, ^uint64(rev))
}

// dataKey encodes one version of key.
func dataKey(key []byte, rev int64) []byte {
	return appendRev(dataPrefix(key), rev)
}

// dataKeyFromPrefix encodes a version given its dataPrefix.
func dataKeyFromPrefix(prefix []byte, rev int64) []byte {
	b := make([]byte, 0, len(prefix)+revLen)
	b = append(b, prefix...)
	return appendRev(b, rev)
}

// dataKeyFromEsc encodes a version given esc(key)+term, as stored in change keys.
func dataKeyFromEsc(esc []byte, rev int64) []byte {
	b := make([]byte, 0, 1+len(esc)+revLen)
	b = append(b, nsData)
	b = append(b, esc...)
	return appendRev(b, rev)
}

// splitDataKey returns the dataPrefix part and the revision of an encoded data key.
func splitDataKey(k []byte) (prefix []byte, rev int64, err error) {
	if len(k) < 1+2+revLen || k[0] != nsData {
		return nil, 0, errCorrupt
	}
	p := len(k) - revLen
	return k[:p], int64(^binary.BigEndian.Uint64(k[p:])), nil
}

// dataRev decodes the revision of a data key known to be well formed.
func dataRev(k []byte) int64 {
	return int64(^binary.BigEndian.Uint64(k[len(k)-revLen:]))
}

// changeKey encodes a change-index key.
func changeKey(rev int64, sub int32, key []byte) []byte {
	b := make([]byte, 0, changeHdrLen+escapedLen(key))
	b = append(b, nsChange)
	b = binary.BigEndian.AppendUint64(b, uint64(rev))
	b = binary.BigEndian.AppendUint32(b, uint32(sub))
	return appendEscaped(b, key)
}

// changeRevKey is the smallest change key at rev.
func changeRevKey(rev int64) []byte {
	b := make([]byte, 0, 1+revLen)
	b = append(b, nsChange)
	return binary.BigEndian.AppendUint64(b, uint64(rev))
}

// splitChangeKey decodes a change key; esc is esc(userKey)+terminator (aliases k).
func splitChangeKey(k []byte) (rev int64, sub int32, esc []byte, err error) {
	if len(k) < changeHdrLen+2 || k[0] != nsChange {
		return 0, 0, nil, errCorrupt
	}
	rev = int64(binary.BigEndian.Uint64(k[1:]))
	sub = int32(binary.BigEndian.Uint32(k[1+revLen:]))
	return rev, sub, k[changeHdrLen:], nil
}

// changeValue encodes the change-index value: event type and the revision of the version the
// change superseded when that version was live (0 otherwise). prevRev lets watch catch-up fetch
// prev_kv with a point lookup, and lets compaction find superseded versions without a scan.
func changeValue(typ byte, prevRev int64) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64)
	b = append(b, typ)
	return binary.AppendUvarint(b, uint64(prevRev))
}

// changeOf decodes a change-index item's value.
func changeOf(item *badger.Item) (typ byte, prevRev int64, err error) {
	err = item.Value(func(v []byte) error {
		var derr error
		typ, prevRev, derr = decodeChangeValue(v)
		return derr
	})
	return typ, prevRev, err
}

func decodeChangeValue(v []byte) (typ byte, prevRev int64, err error) {
	if len(v) < 1 || v[0] > changeDelete {
		return 0, 0, errCorrupt
	}
	p, n := binary.Uvarint(v[1:])
	if n <= 0 || 1+n != len(v) {
		return 0, 0, errCorrupt
	}
	return v[0], int64(p), nil
}

// metaKey encodes a caller meta key.
func metaKey(key []byte) []byte {
	b := make([]byte, 0, 1+len(key))
	b = append(b, nsMeta)
	return append(b, key...)
}

// valueHeader is the per-version metadata stored in front of the user value.
type valueHeader struct {
	flags          byte
	createRevision int64
	version        int64
	lease          int64
}

func (h valueHeader) tombstone() bool { return h.flags&flagTombstone != 0 }

// encodeValue returns header ++ value in one allocation.
func encodeValue(h valueHeader, value []byte) []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(value))
	b = append(b, h.flags)
	if h.tombstone() {
		return b
	}
	b = binary.AppendUvarint(b, uint64(h.createRevision))
	b = binary.AppendUvarint(b, uint64(h.version))
	b = binary.AppendUvarint(b, uint64(h.lease))
	return append(b, value...)
}

// decodeValue splits a stored value into its header and the user value (aliasing v).
func decodeValue(v []byte) (h valueHeader, value []byte, err error) {
	if len(v) < 1 {
		return h, nil, errCorrupt
	}
	h.flags = v[0]
	if h.tombstone() {
		return h, nil, nil
	}
	v = v[1:]
	var fields [3]uint64
	for i := range fields {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return h, nil, errCorrupt
		}
		fields[i] = x
		v = v[n:]
	}
	h.createRevision, h.version, h.lease = int64(fields[0]), int64(fields[1]), int64(fields[2])
	return h, v, nil
}

// spanBounds maps an etcd span to encoded data-key bounds [lo, hi). ok is false when the span is
// empty (end <= key).
//
// end empty → only key; end == "\x00" → every key >= key; otherwise [key, end).
func spanBounds(key, end []byte) (lo, hi []byte, ok bool) {
	lo = dataPrefix(key)
	switch {
	case len(end) == 0:
		hi = append([]byte(nil), lo...)
		hi[len(hi)-1]++ // terminator 0x00 0x01 → 0x00 0x02: above every version of key only
	case len(end) == 1 && end[0] == 0:
		hi = []byte{nsData + 1}
	default:
		hi = dataPrefix(end)
		if string(hi) <= string(lo) {
			return nil, nil, false
		}
	}
	return lo, hi, true
}

// iterPrefix is the longest prefix shared by every key in [lo, hi); badger uses it to skip
// tables and as an iteration bound.
func iterPrefix(lo, hi []byte) []byte {
	n := 0
	for n < len(lo) && n < len(hi) && lo[n] == hi[n] {
		n++
	}
	if n == 0 {
		return lo[:1] // hi is the namespace's upper bound
	}
	return lo[:n]
}

// escSpan holds a span in escaped form, for filtering change-index keys without decoding them.
type escSpan struct {
	lo, hi []byte // esc+term bounds; hi nil = unbounded
	single bool
}

func newEscSpan(key, end []byte) escSpan {
	s := escSpan{lo: appendEscaped(nil, key)}
	switch {
	case len(end) == 0:
		s.single = true
	case len(end) == 1 && end[0] == 0:
	default:
		s.hi = appendEscaped(nil, end)
	}
	return s
}

func (s escSpan) contains(esc []byte) bool {
	if s.single {
		return string(esc) == string(s.lo)
	}
	return string(esc) >= string(s.lo) && (s.hi == nil || string(esc) < string(s.hi))
}

func u64(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: bad revision record length %d", errCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func be64(x int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(x)) }
