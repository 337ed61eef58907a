package kvrules

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

func TestSpanOf(t *testing.T) {
	// etcdserver/txn mkGteRange + mvcc index (end nil: one key; "\x00": no upper bound).
	cases := []struct {
		key, end string
		in       []string
		out      []string
		empty    bool
	}{
		{"b", "", []string{"b"}, []string{"a", "b\x00", "c"}, false},
		{"b", "\x00", []string{"b", "b\x00", "zzz"}, []string{"a", "a\xff"}, false},
		{"b", "d", []string{"b", "c", "c\xff"}, []string{"a", "d", "d\x00"}, false},
		{"d", "b", nil, []string{"b", "c", "d"}, true},
		{"b", "b", nil, []string{"b"}, true},
	}
	for _, c := range cases {
		var end []byte
		if c.end != "" {
			end = b(c.end)
		}
		sp := SpanOf(b(c.key), end)
		for _, k := range c.in {
			if !sp.Contains(b(k)) {
				t.Errorf("[%q,%q) should contain %q", c.key, c.end, k)
			}
		}
		for _, k := range c.out {
			if sp.Contains(b(k)) {
				t.Errorf("[%q,%q) should not contain %q", c.key, c.end, k)
			}
		}
		if sp.Empty() != c.empty {
			t.Errorf("[%q,%q) empty=%v", c.key, c.end, sp.Empty())
		}
	}
}

func kv(k string, create, mod, ver int64, val string, lease int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: b(k), CreateRevision: create, ModRevision: mod, Version: ver, Value: b(val), Lease: lease}
}

func TestCompare(t *testing.T) {
	modEq := func(r int64) *pb.Compare {
		return &pb.Compare{Key: b("a"), Target: pb.Compare_MOD, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_ModRevision{ModRevision: r}}
	}
	valCmp := func(res pb.Compare_CompareResult, v string) *pb.Compare {
		return &pb.Compare{Key: b("a"), Target: pb.Compare_VALUE, Result: res, TargetUnion: &pb.Compare_Value{Value: b(v)}}
	}
	verCmp := func(res pb.Compare_CompareResult, v int64) *pb.Compare {
		return &pb.Compare{Key: b("a"), Target: pb.Compare_VERSION, Result: res, TargetUnion: &pb.Compare_Version{Version: v}}
	}
	a := kv("a", 2, 5, 3, "x", 0)
	c := kv("c", 3, 4, 1, "y", 9)
	cases := []struct {
		name  string
		c     *pb.Compare
		parts [][]*mvccpb.KeyValue // kvs per shard
		want  bool
	}{
		// txn applyCompare / compareKV.
		{"k8s create: mod_revision = 0 on missing key", modEq(0), nil, true},
		{"k8s update: mod_revision equal", modEq(5), [][]*mvccpb.KeyValue{{a}}, true},
		{"k8s update: stale mod_revision", modEq(4), [][]*mvccpb.KeyValue{{a}}, false},
		{"create_revision = 0 on missing key", &pb.Compare{Key: b("a"), Target: pb.Compare_CREATE, TargetUnion: &pb.Compare_CreateRevision{}}, nil, true},
		{"version > 0 on missing key", verCmp(pb.Compare_GREATER, 0), nil, false},
		{"version < 1 on missing key", verCmp(pb.Compare_LESS, 1), nil, true},
		{"lease = 0 on missing key", &pb.Compare{Key: b("a"), Target: pb.Compare_LEASE, TargetUnion: &pb.Compare_Lease{}}, nil, true},
		// VALUE on a missing key is always false, even value != "x" or value = "".
		{"value = empty on missing key", valCmp(pb.Compare_EQUAL, ""), nil, false},
		{"value != x on missing key", valCmp(pb.Compare_NOT_EQUAL, "x"), nil, false},
		{"value = x", valCmp(pb.Compare_EQUAL, "x"), [][]*mvccpb.KeyValue{{a}}, true},
		{"value > w", valCmp(pb.Compare_GREATER, "w"), [][]*mvccpb.KeyValue{{a}}, true},
		{"value < x", valCmp(pb.Compare_LESS, "x"), [][]*mvccpb.KeyValue{{a}}, false},
		// a target union that does not match the target compares against zero.
		{"mismatched union compares to 0", &pb.Compare{Key: b("a"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_ModRevision{ModRevision: 100}}, [][]*mvccpb.KeyValue{{a}}, true},
		{"nil union on value target compares to empty", &pb.Compare{Key: b("a"), Target: pb.Compare_VALUE, Result: pb.Compare_GREATER}, [][]*mvccpb.KeyValue{{a}}, true},
		{"unknown result is true", &pb.Compare{Key: b("a"), Target: pb.Compare_MOD, Result: 9, TargetUnion: &pb.Compare_ModRevision{ModRevision: 1}}, [][]*mvccpb.KeyValue{{a}}, true},
		{"unknown target compares equal", &pb.Compare{Key: b("a"), Target: 9, Result: pb.Compare_EQUAL}, [][]*mvccpb.KeyValue{{a}}, true},
		// ranges: every existing key must match; parts combine across shards.
		{"range all match across shards", verCmp(pb.Compare_GREATER, 0), [][]*mvccpb.KeyValue{{a}, nil, {c}}, true},
		{"range one shard fails", verCmp(pb.Compare_GREATER, 1), [][]*mvccpb.KeyValue{{a}, {c}}, false},
		{"range empty shards count as nothing", valCmp(pb.Compare_EQUAL, "x"), [][]*mvccpb.KeyValue{nil, {a}, nil}, true},
		{"range with no key: value false", valCmp(pb.Compare_NOT_EQUAL, "x"), [][]*mvccpb.KeyValue{nil, nil}, false},
		{"range with no key: version = 0", verCmp(pb.Compare_EQUAL, 0), [][]*mvccpb.KeyValue{nil, nil}, true},
	}
	for _, cs := range cases {
		var parts []ComparePart
		for _, p := range cs.parts {
			parts = append(parts, EvalCompare(cs.c, p))
		}
		if got := CompareResult(cs.c, parts); got != cs.want {
			t.Errorf("%s: got %v want %v", cs.name, got, cs.want)
		}
	}
}
