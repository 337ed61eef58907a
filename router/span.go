package router

import (
	"bytes"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
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
