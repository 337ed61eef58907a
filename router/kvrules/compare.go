package kvrules

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Span is the set of keys a (key, range_end) pair names, as etcd reads it
// (etcdserver/txn mkGteRange and the mvcc index): an empty range_end is the
// single key; range_end "\x00" is every key >= key; otherwise [key,
// range_end), which is empty when range_end <= key.
type Span struct {
	Start []byte
	// End is exclusive. Nil with Single false means no upper bound.
	End    []byte
	Single bool
}

// SpanOf returns the span of a request's (key, range_end).
func SpanOf(key, rangeEnd []byte) Span {
	switch {
	case len(rangeEnd) == 0:
		return Span{Start: key, Single: true}
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return Span{Start: key}
	default:
		return Span{Start: key, End: rangeEnd}
	}
}

// Contains reports whether k is in the span.
func (s Span) Contains(k []byte) bool {
	if s.Single {
		return bytes.Equal(k, s.Start)
	}
	return bytes.Compare(k, s.Start) >= 0 && (s.End == nil || bytes.Compare(k, s.End) < 0)
}

// Empty reports whether the span holds no key at all (range_end <= key).
func (s Span) Empty() bool {
	return !s.Single && s.End != nil && bytes.Compare(s.End, s.Start) <= 0
}

// ComparePart is one shard's evaluation of a compare over its part of the
// compare's span.
type ComparePart struct {
	// Found is the number of live keys of the span in the shard.
	Found int
	// AllMatch is true when every one of them satisfies the compare (true
	// when Found is 0).
	AllMatch bool
}

// EvalCompare evaluates c over kvs, the live keys of c's span held by one
// shard at the state the compare must see (just before the Txn's revision).
func EvalCompare(c *pb.Compare, kvs []*mvccpb.KeyValue) ComparePart {
	p := ComparePart{Found: len(kvs), AllMatch: true}
	for _, kv := range kvs {
		if !CompareKV(c, kv) {
			p.AllMatch = false
			break
		}
	}
	return p
}

// CompareResult combines the shards' parts of one compare as etcd's
// applyCompare does over the whole span: if no key of the span exists, a
// VALUE compare is false and any other target compares a zero KeyValue
// (so "create_revision = 0", "version = 0", "mod_revision = 0" and
// "lease = 0" hold for a missing key, "version > 0" does not); otherwise
// the compare holds iff it holds for every existing key. A span that names
// no key (range_end <= key) behaves as a missing key. No parts means no key.
func CompareResult(c *pb.Compare, parts []ComparePart) bool {
	found := 0
	all := true
	for _, p := range parts {
		found += p.Found
		if p.Found > 0 && !p.AllMatch {
			all = false
		}
	}
	if found == 0 {
		if c.GetTarget() == pb.Compare_VALUE {
			return false
		}
		return CompareKV(c, &mvccpb.KeyValue{})
	}
	return all
}

// CompareKV is etcd's compareKV: compares one key's target field with the
// compare's operand. The operand is read from the target union only when it
// matches the target (a mismatched union compares against zero / empty);
// an unknown target compares as equal; an unknown result is true.
func CompareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var res int
	switch c.GetTarget() {
	case pb.Compare_VALUE:
		var v []byte
		if tv, _ := c.GetTargetUnion().(*pb.Compare_Value); tv != nil {
			v = tv.Value
		}
		res = bytes.Compare(kv.GetValue(), v)
	case pb.Compare_CREATE:
		var want int64
		if tv, _ := c.GetTargetUnion().(*pb.Compare_CreateRevision); tv != nil {
			want = tv.CreateRevision
		}
		res = cmpInt64(kv.GetCreateRevision(), want)
	case pb.Compare_MOD:
		var want int64
		if tv, _ := c.GetTargetUnion().(*pb.Compare_ModRevision); tv != nil {
			want = tv.ModRevision
		}
		res = cmpInt64(kv.GetModRevision(), want)
	case pb.Compare_VERSION:
		var want int64
		if tv, _ := c.GetTargetUnion().(*pb.Compare_Version); tv != nil {
			want = tv.Version
		}
		res = cmpInt64(kv.GetVersion(), want)
	case pb.Compare_LEASE:
		var want int64
		if tv, _ := c.GetTargetUnion().(*pb.Compare_Lease); tv != nil {
			want = tv.Lease
		}
		res = cmpInt64(kv.GetLease(), want)
	}
	switch c.GetResult() {
	case pb.Compare_EQUAL:
		return res == 0
	case pb.Compare_NOT_EQUAL:
		return res != 0
	case pb.Compare_GREATER:
		return res > 0
	case pb.Compare_LESS:
		return res < 0
	}
	return true
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
