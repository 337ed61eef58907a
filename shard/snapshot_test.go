package shard

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// A leader that has not yet followed a split sends a snapshot of the range's old, wider
// span. Installed on a member that did follow it, the snapshot must replace only the
// receiver's own span: the other side's keys there belong to the new range's replica,
// which may hold newer versions (here: m was deleted at revision 4 and z written at 5,
// both after the sender's copy).
func TestSnapshotInstallKeepsToOwnSpan(t *testing.T) {
	sender := openStore(t)
	receiver := openStore(t)
	for _, s := range []*mvcc.Store{sender, receiver} {
		put(t, s, 1, "a", "a1")
		put(t, s, 2, "m", "m2")
		put(t, s, 3, "z", "z3")
	}
	put(t, sender, 6, "a", "a6") // the range's own key, newer on the sender
	update(t, receiver, func(w *mvcc.Writer) error {
		_, err := w.DeleteRange(4, 0, []byte("m"), nil)
		return err
	})
	put(t, receiver, 5, "z", "z5")

	// The sender's snapshot: the whole keyspace, as its range was before the split.
	data := encodeSnapshotHeader(6, nil, nil)
	err := sender.View(func(r *mvcc.Reader) error {
		return r.ExportSpan(nil, nil, func(rec mvcc.SpanRecord) error {
			data = appendSnapshotRecord(data, rec)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	// The receiver's range is ["", "m") after the split; its table says so too.
	left := &raftcmdpb.RangeDesc{Id: 1, End: []byte("m")}
	a := &shardActor{desc: left, lg: zap.NewNop(), handle: &Shard{}, cfg: Config{Store: receiver, TableDesc: func() *raftcmdpb.RangeDesc { return left }}}
	if err := a.importSnapshot(&raftpb.Snapshot{Data: data}); err != nil {
		t.Fatal(err)
	}
	// What the snapshot left out may lack writes here (the new range's keys are not made
	// from this replica's data); what it replaced may not.
	if !a.handle.Clipped([]byte("m"), nil) || a.handle.Clipped(nil, []byte("m")) {
		t.Errorf("after the snapshot: clipped [m, ∞) %v, [\"\", m) %v; want true, false",
			a.handle.Clipped([]byte("m"), nil), a.handle.Clipped(nil, []byte("m")))
	}

	for _, c := range []struct {
		key  string
		rev  int64
		want string // "" = absent
	}{
		{"a", 0, "a6"}, // replaced from the snapshot
		{"a", 1, "a1"},
		{"m", 0, ""}, // the receiver's delete stays
		{"m", 3, "m2"},
		{"z", 0, "z5"}, // the receiver's newer version stays
	} {
		if got := get(t, receiver, c.key, c.rev); got != c.want {
			t.Errorf("%s at revision %d: got %q, want %q", c.key, c.rev, got, c.want)
		}
	}
}

func TestOwnSpan(t *testing.T) {
	desc := &raftcmdpb.RangeDesc{Start: []byte("b"), End: []byte("y")}
	table := &raftcmdpb.RangeDesc{Start: []byte("b"), End: []byte("m")}
	for _, c := range []struct {
		name               string
		table              *raftcmdpb.RangeDesc
		start, end         string
		wantStart, wantEnd string
	}{
		{"wider span, table behind", nil, "", "", "b", "y"},
		{"wider span, table ahead", table, "", "", "b", "m"},
		{"narrower span", table, "c", "d", "c", "d"},
		{"disjoint", table, "n", "p", "n", "m"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &shardActor{desc: desc, cfg: Config{TableDesc: func() *raftcmdpb.RangeDesc { return c.table }}}
			start, end := a.ownSpan([]byte(c.start), []byte(c.end))
			if string(start) != c.wantStart || string(end) != c.wantEnd {
				t.Errorf("got [%q, %q), want [%q, %q)", start, end, c.wantStart, c.wantEnd)
			}
		})
	}
}

func openStore(t *testing.T) *mvcc.Store {
	t.Helper()
	s, err := mvcc.Open(t.TempDir(), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func update(t *testing.T, s *mvcc.Store, fn func(w *mvcc.Writer) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, s *mvcc.Store, rev int64, key, value string) {
	t.Helper()
	update(t, s, func(w *mvcc.Writer) error {
		_, err := w.Put(rev, 0, mvcc.Put{Key: []byte(key), Value: []byte(value)})
		return err
	})
}

func get(t *testing.T, s *mvcc.Store, key string, rev int64) string {
	t.Helper()
	var out string
	err := s.View(func(r *mvcc.Reader) error {
		kv, err := r.Get([]byte(key), rev)
		if kv != nil {
			out = string(kv.Value)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
