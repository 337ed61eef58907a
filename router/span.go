package router

import (
	"bytes"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard"
)

// clip returns the part of the request span (key, rangeEnd in etcd's
// conventions) that lies in range d, in the same conventions, and whether
// there is one.
func clip(key, rangeEnd []byte, d *raftcmdpb.RangeDesc) (shard.Span, bool) {
	sp := kvrules.SpanOf(key, rangeEnd)
	if sp.Single {
		if inRange(d, key) {
			return shard.Span{Key: key}, true
		}
		return shard.Span{}, false
	}
	if sp.Empty() {
		return shard.Span{}, false
	}
	start := sp.Start
	if bytes.Compare(start, d.Start) < 0 {
		start = d.Start
	}
	// end == nil means unbounded
	end := sp.End
	if len(d.End) > 0 && (end == nil || bytes.Compare(d.End, end) < 0) {
		end = d.End
	}
	if end != nil && bytes.Compare(start, end) >= 0 {
		return shard.Span{}, false
	}
	if len(start) == 0 {
		// etcd has no empty key; the smallest key is "\x00".
		start = []byte{0}
		if end != nil && bytes.Compare(start, end) >= 0 {
			return shard.Span{}, false
		}
	}
	if end == nil {
		return shard.Span{Key: start, End: []byte{0}}, true
	}
	return shard.Span{Key: start, End: end}, true
}

func inRange(d *raftcmdpb.RangeDesc, key []byte) bool {
	return bytes.Compare(key, d.Start) >= 0 && (len(d.End) == 0 || bytes.Compare(key, d.End) < 0)
}

// stillSpans reports whether range id still spans sp, both in this node's
// range table and in its replica here (if one runs).
//
// A read checks it after it read what the replica had applied. Once a split
// of the range reaches this node, the replica drops the writes it applies
// late to the keys that left (the new range's replica holds them: see the
// shard's ownsKey). So a read through the old range of keys that left,
// which waited for an applied revision, may lack writes below it. Checked
// after the read, it is sound: the table narrows before the replica drops
// anything, so a table that still spans sp has dropped nothing of it.
func (n *Node) stillSpans(id uint64, rs *rangepb.Span) bool {
	d := n.oracle.View().RangeByID(id)
	if d == nil || !spanInside(d, rs) {
		return false
	}
	if s := n.shard(id); s != nil && !spanInside(s.Desc(), rs) {
		return false
	}
	return true
}
