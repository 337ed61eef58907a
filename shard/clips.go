package shard

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/mosaic-kv/mosaic/shard/mvcc"
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
// Kept in the store (meta clipKey), written with what was left out: in the
// apply's own transaction for a dropped write, before the replacement for
// a snapshot; so a replica restarted still knows. Read at start.

// maxClips bounds the spans remembered; past it, every span counts as
// clipped.
const maxClips = 256

var clipKeyPrefix = []byte("c/")

func clipKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), clipKeyPrefix...), id)
}

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

// clip records, in memory, that writes to sp may be missing here.
func (s *Shard) clip(sp span) {
	s.clipMu.Lock()
	defer s.clipMu.Unlock()
	if s.clipsLost {
		return
	}
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
// keys in [start, end) (range form: end empty means no upper bound).
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

// encodeClips is the stored form: a lost flag, then each span's start and
// end, length-prefixed.
func (s *Shard) encodeClips() []byte {
	s.clipMu.Lock()
	defer s.clipMu.Unlock()
	b := []byte{0}
	if s.clipsLost {
		b[0] = 1
	}
	for _, c := range s.clips {
		b = binary.AppendUvarint(b, uint64(len(c.start)))
		b = append(b, c.start...)
		b = binary.AppendUvarint(b, uint64(len(c.end)))
		b = append(b, c.end...)
	}
	return b
}

var errCorruptClips = errors.New("shard: corrupt clip record")

// loadClips reads the stored clips into s (none stored: none).
func (s *Shard) loadClips(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	s.clipMu.Lock()
	defer s.clipMu.Unlock()
	s.clipsLost = b[0] == 1
	b = b[1:]
	next := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, false
		}
		v := bytes.Clone(b[k : k+int(n)])
		b = b[k+int(n):]
		return v, true
	}
	for len(b) > 0 {
		start, ok1 := next()
		end, ok2 := next()
		if !ok1 || !ok2 {
			return errCorruptClips
		}
		s.clips = append(s.clips, span{start, end})
	}
	return nil
}

// recordClip records sp as clipped, in memory and through w (the apply's
// transaction). The record is written even when memory already holds sp:
// a transaction run again must not lose it.
func (a *shardActor) recordClip(w *mvcc.Writer, sp span) error {
	a.handle.clip(sp)
	return w.SetMeta(clipKey(a.desc.Id), a.handle.encodeClips())
}

// clipOutsideOwn records the parts of sp outside the span the replica owns
// now (its span and the table's), which an op applied now leaves out.
func (a *shardActor) clipOutsideOwn(w *mvcc.Writer, sp span) error {
	start, end := a.ownSpan(nil, nil)
	if bytes.Compare(sp.start, start) < 0 {
		if err := a.recordClip(w, span{sp.start, start}); err != nil {
			return err
		}
	}
	if len(end) > 0 && (len(sp.end) == 0 || bytes.Compare(end, sp.end) < 0) {
		return a.recordClip(w, span{end, sp.end})
	}
	return nil
}

// clipOutside records, in its own transaction, that a snapshot restores
// only [start, end) (range form).
func (a *shardActor) clipOutside(start, end []byte) error {
	return a.cfg.Store.Update(func(w *mvcc.Writer) error {
		if len(start) > 0 {
			if err := a.recordClip(w, span{nil, start}); err != nil {
				return err
			}
		}
		if len(end) > 0 {
			return a.recordClip(w, span{end, nil})
		}
		return nil
	})
}
