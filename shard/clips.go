package shard

import (
	"bytes"
)

// Clips: the spans for which this replica's data may lack writes its range
// made. A replica drops the writes it applies to keys outside its span or
// the range table's (a split took them to a new range), and a snapshot
// replaces only the part of the span the replica owns then; either way the
// store here keeps, for the keys left out, what it held before. A split's
// new range may be made from a replica of the left range's data only where
// nothing was left out (router.Node.onSplit, Clipped), since spans only ever
// shrink: the keys of a new range never belonged to any other range since.
//
// Kept in memory only: a replica restarted is never used to make a new
// range from its data (only the member that split records that duty).

// maxClips bounds the spans remembered; past it, every span counts as
// clipped.
const maxClips = 256

// span is [start, end) in range form: end empty means no upper bound.
type span struct{ start, end []byte }

// opSpan is an op's key and end (etcd's conventions: no end is the key
// alone, "\x00" every key from key on) as a span.
func opSpan(key, end []byte) span {
	switch {
	case len(end) == 0:
		return span{key, append(append([]byte(nil), key...), 0)}
	case len(end) == 1 && end[0] == 0:
		return span{key, nil}
	}
	return span{key, end}
}

func (a span) overlaps(b span) bool {
	return (len(b.end) == 0 || bytes.Compare(a.start, b.end) < 0) && (len(a.end) == 0 || bytes.Compare(b.start, a.end) < 0)
}

// clip records that writes to sp may be missing here.
func (s *Shard) clip(sp span) {
	s.clipMu.Lock()
	defer s.clipMu.Unlock()
	for _, c := range s.clips {
		if bytes.Equal(c.start, sp.start) && bytes.Equal(c.end, sp.end) {
			return
		}
	}
	if len(s.clips) >= maxClips {
		s.clipsLost = true
		return
	}
	s.clips = append(s.clips, span{bytes.Clone(sp.start), bytes.Clone(sp.end)})
}

// Clipped reports whether this replica may lack writes of its range to
// keys in [start, end) (range form: end empty means no upper bound), since
// it started.
func (s *Shard) Clipped(start, end []byte) bool {
	s.clipMu.Lock()
	defer s.clipMu.Unlock()
	if s.clipsLost {
		return true
	}
	want := span{start, end}
	for _, c := range s.clips {
		if c.overlaps(want) {
			return true
		}
	}
	return false
}

// clipOutsideOwn records the parts of sp outside the span the replica owns
// now (its span and the table's), which an op applied now leaves out.
func (a *shardActor) clipOutsideOwn(sp span) {
	start, end := a.ownSpan(nil, nil)
	if bytes.Compare(sp.start, start) < 0 {
		a.handle.clip(span{sp.start, start})
	}
	if len(end) > 0 && (len(sp.end) == 0 || bytes.Compare(end, sp.end) < 0) {
		a.handle.clip(span{end, sp.end})
	}
}

// clipOutside records that a snapshot restored only [start, end) (range
// form).
func (s *Shard) clipOutside(start, end []byte) {
	if len(start) > 0 {
		s.clip(span{nil, start})
	}
	if len(end) > 0 {
		s.clip(span{end, nil})
	}
}
