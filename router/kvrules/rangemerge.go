package kvrules

import (
	"bytes"
	"math"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// IsDefaultOrdering is etcd's IsDefaultOrdering: the mvcc key order already
// is the answer's order (sort order NONE, or KEY ASCEND).
func IsDefaultOrdering(r *pb.RangeRequest) bool {
	return r.GetSortOrder() == pb.RangeRequest_NONE ||
		(r.GetSortTarget() == pb.RangeRequest_KEY && r.GetSortOrder() == pb.RangeRequest_ASCEND)
}

// HasRevisionFilters is etcd's HasRevisionFilters: any of the min/max
// mod/create revision filters is set.
func HasRevisionFilters(r *pb.RangeRequest) bool {
	return r.GetMinModRevision() != 0 || r.GetMaxModRevision() != 0 ||
		r.GetMinCreateRevision() != 0 || r.GetMaxCreateRevision() != 0
}

// ShardFetchLimit is how many keys each shard must return, counted from the
// start of its part of the span in key order; 0 means all of them. It is
// etcd's rangeLimit: limit+1 (so that More can be told) when the request
// has a positive limit, the default ordering and no revision filter;
// otherwise every key (a custom sort or a filter needs the whole span; a
// zero or negative limit means no limit).
//
// Whatever the limit, each shard must also report the total number of live
// keys of its part of the span (RangePart.Count). For count_only, shards
// return only that count.
func ShardFetchLimit(r *pb.RangeRequest) int64 {
	limit := r.GetLimit()
	if limit <= 0 || !IsDefaultOrdering(r) || HasRevisionFilters(r) {
		return 0
	}
	if limit < math.MaxInt64 {
		limit++
	}
	return limit
}

// ShardNeedsValues reports whether shards must return values and leases:
// etcd answers keys_only with a sort target other than VALUE from its
// in-memory index alone, so those answers carry neither value nor lease.
func ShardNeedsValues(r *pb.RangeRequest) bool {
	return !r.GetKeysOnly() || r.GetSortTarget() == pb.RangeRequest_VALUE
}

// RangePart is one shard's answer for its part of a Range's span.
type RangePart struct {
	// KVs are the live keys of the part in ascending key order, at most
	// ShardFetchLimit of them (the first ones). They may already be
	// filtered by the request's revision filters.
	KVs []*mvccpb.KeyValue
	// Count is the number of live keys of the part, before any filter or
	// limit.
	Count int64
}

// MergeRange builds etcd's RangeResponse from the shards' parts, given in
// ascending key-span order. It follows etcd's executeRange:
//
//   - Count is the number of keys in the span at the revision, before the
//     revision filters and the limit (the sum of the parts' counts).
//   - count_only: no kvs, More is false even with a limit.
//   - The kvs, in key order and cut to ShardFetchLimit, are filtered by
//     max/min mod revision and max/min create revision (a 0 bound is unset).
//   - Sort: order NONE with a target other than KEY sorts ASCEND; a
//     non-default ordering is sorted exactly as etcd sorts it (sort.Sort on
//     the key-ordered slice, so keys with equal targets come out in etcd's
//     order; DESCEND is sort.Reverse). KEY ASCEND and NONE by KEY stay in key
//     order.
//   - A positive limit cuts the sorted kvs; More is true iff something was
//     cut. A zero or negative limit is no limit.
//   - keys_only clears values; with a sort target other than VALUE it also
//     clears leases (etcd reads those from its index, which has no lease).
//
// Header is left nil for the caller. The input KeyValues are not modified;
// the response shares those it does not need to change.
func MergeRange(r *pb.RangeRequest, parts []RangePart) *pb.RangeResponse {
	resp := &pb.RangeResponse{}
	n := 0
	for _, p := range parts {
		resp.Count += p.Count
		n += len(p.KVs)
	}
	if r.GetCountOnly() {
		resp.Kvs = []*mvccpb.KeyValue{}
		return resp
	}

	kvs := make([]*mvccpb.KeyValue, 0, n)
	for _, p := range parts {
		kvs = append(kvs, p.KVs...)
	}
	if fl := ShardFetchLimit(r); fl > 0 && int64(len(kvs)) > fl {
		kvs = kvs[:fl]
	}

	// filterRangeResults
	if v := r.GetMaxModRevision(); v != 0 {
		kvs = prune(kvs, func(kv *mvccpb.KeyValue) bool { return kv.GetModRevision() > v })
	}
	if v := r.GetMinModRevision(); v != 0 {
		kvs = prune(kvs, func(kv *mvccpb.KeyValue) bool { return kv.GetModRevision() < v })
	}
	if v := r.GetMaxCreateRevision(); v != 0 {
		kvs = prune(kvs, func(kv *mvccpb.KeyValue) bool { return kv.GetCreateRevision() > v })
	}
	if v := r.GetMinCreateRevision(); v != 0 {
		kvs = prune(kvs, func(kv *mvccpb.KeyValue) bool { return kv.GetCreateRevision() < v })
	}

	sortKVs(r, kvs)

	if l := r.GetLimit(); l > 0 && int64(len(kvs)) > l {
		kvs = kvs[:l]
		resp.More = true
	}
	if r.GetKeysOnly() {
		keepLease := r.GetSortTarget() == pb.RangeRequest_VALUE
		for i, kv := range kvs {
			c := &mvccpb.KeyValue{
				Key:            kv.GetKey(),
				CreateRevision: kv.GetCreateRevision(),
				ModRevision:    kv.GetModRevision(),
				Version:        kv.GetVersion(),
			}
			if keepLease {
				c.Lease = kv.GetLease()
			}
			kvs[i] = c
		}
	}
	resp.Kvs = kvs
	return resp
}

// prune keeps the kvs for which drop is false, in order, in a new slice (the
// caller's parts are not modified).
func prune(kvs []*mvccpb.KeyValue, drop func(*mvccpb.KeyValue) bool) []*mvccpb.KeyValue {
	out := make([]*mvccpb.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		if !drop(kv) {
			out = append(out, kv)
		}
	}
	return out
}

// sortKVs is etcd's sortRangeResults. The sort must stay sort.Sort over a
// sort.Interface with these exact Less functions: ties are ordered by the
// algorithm, and only the same algorithm on the same input reproduces etcd's
// order. kvs is a fresh slice here (built by MergeRange).
func sortKVs(r *pb.RangeRequest, kvs []*mvccpb.KeyValue) {
	order := r.GetSortOrder()
	if r.GetSortTarget() != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if order == pb.RangeRequest_NONE || (r.GetSortTarget() == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND) {
		return
	}
	var s sort.Interface
	switch r.GetSortTarget() {
	case pb.RangeRequest_KEY:
		s = byKey{kvs}
	case pb.RangeRequest_VERSION:
		s = byVersion{kvs}
	case pb.RangeRequest_CREATE:
		s = byCreate{kvs}
	case pb.RangeRequest_MOD:
		s = byMod{kvs}
	case pb.RangeRequest_VALUE:
		s = byValue{kvs}
	default:
		return // rejected by CheckRange
	}
	switch order {
	case pb.RangeRequest_ASCEND:
		sort.Sort(s)
	case pb.RangeRequest_DESCEND:
		sort.Sort(sort.Reverse(s))
	}
}

type kvSlice []*mvccpb.KeyValue

func (s kvSlice) Len() int      { return len(s) }
func (s kvSlice) Swap(i, j int) { s[i], s[j] = s[j], s[i] }

// The integer comparisons subtract, as etcd's do.
type byKey struct{ kvSlice }

func (s byKey) Less(i, j int) bool {
	return bytes.Compare(s.kvSlice[i].GetKey(), s.kvSlice[j].GetKey()) < 0
}

type byVersion struct{ kvSlice }

func (s byVersion) Less(i, j int) bool {
	return s.kvSlice[i].GetVersion()-s.kvSlice[j].GetVersion() < 0
}

type byCreate struct{ kvSlice }

func (s byCreate) Less(i, j int) bool {
	return s.kvSlice[i].GetCreateRevision()-s.kvSlice[j].GetCreateRevision() < 0
}

type byMod struct{ kvSlice }

func (s byMod) Less(i, j int) bool {
	return s.kvSlice[i].GetModRevision()-s.kvSlice[j].GetModRevision() < 0
}

type byValue struct{ kvSlice }

func (s byValue) Less(i, j int) bool {
	return bytes.Compare(s.kvSlice[i].GetValue(), s.kvSlice[j].GetValue()) < 0
}
