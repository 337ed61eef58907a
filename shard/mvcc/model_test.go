package mvcc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// model is the obvious in-memory MVCC: every version of every key, and the event list.
type model struct {
	vers      map[string][]mver // ascending by rev
	events    []mevent
	compacted int64
}

type mver struct {
	rev                    int64
	tomb                   bool
	create, version, lease int64
	value                  string
}

type mevent struct {
	rev      int64
	sub      int32
	key      string
	typ      mvccpb.Event_EventType
	kv, prev *mvccpb.KeyValue
}

func newModel() *model { return &model{vers: map[string][]mver{}} }

func (v mver) kv(key string, withValue bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{Key: []byte(key), CreateRevision: v.create, ModRevision: v.rev, Version: v.version, Lease: v.lease}
	if withValue {
		kv.Value = []byte(v.value)
	}
	return kv
}

// at returns key's newest version <= rev.
func (m *model) at(key string, rev int64) (mver, bool) {
	vs := m.vers[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].rev <= rev {
			return vs[i], true
		}
	}
	return mver{}, false
}

func (m *model) live(key string, rev int64) (mver, bool) {
	v, ok := m.at(key, rev)
	return v, ok && !v.tomb
}

func inSpan(k, key, end string) bool {
	switch {
	case end == "":
		return k == key
	case end == "\x00":
		return k >= key
	}
	return k >= key && k < end
}

func (m *model) keys() []string {
	var ks []string
	for k := range m.vers {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (m *model) rangeAt(key, end string, rev int64, o ReadOptions) RangeResult {
	var res RangeResult
	for _, k := range m.keys() {
		if !inSpan(k, key, end) {
			continue
		}
		v, ok := m.live(k, rev)
		if !ok {
			continue
		}
		res.Count++
		if o.CountOnly || (o.Limit > 0 && int64(len(res.KVs)) >= o.Limit) {
			continue
		}
		res.KVs = append(res.KVs, v.kv(k, !o.KeysOnly))
	}
	return res
}

func (m *model) put(rev int64, sub int32, p Put) *mvccpb.KeyValue {
	k := string(p.Key)
	nv := mver{rev: rev, create: rev, version: 1, lease: p.Lease, value: string(p.Value)}
	var prevKV *mvccpb.KeyValue
	if prev, ok := m.live(k, rev); ok {
		prevKV = prev.kv(k, true)
		nv.create, nv.version = prev.create, prev.version+1
		if p.IgnoreValue {
			nv.value = prev.value
		}
		if p.IgnoreLease {
			nv.lease = prev.lease
		}
	}
	m.vers[k] = append(m.vers[k], nv)
	m.events = append(m.events, mevent{rev, sub, k, mvccpb.Event_PUT, nv.kv(k, true), prevKV})
	return prevKV
}

func (m *model) deleteRange(rev int64, sub int32, key, end string) []*mvccpb.KeyValue {
	var out []*mvccpb.KeyValue
	for _, k := range m.keys() {
		if !inSpan(k, key, end) {
			continue
		}
		prev, ok := m.live(k, rev)
		if !ok {
			continue
		}
		pkv := prev.kv(k, true)
		out = append(out, pkv)
		m.vers[k] = append(m.vers[k], mver{rev: rev, tomb: true})
		m.events = append(m.events, mevent{rev, sub, k, mvccpb.Event_DELETE,
			&mvccpb.KeyValue{Key: []byte(k), ModRevision: rev}, pkv})
	}
	return out
}

func (m *model) changes(key, end string, from, to int64) []Change {
	var evs []mevent
	for _, e := range m.events {
		if e.rev >= from && e.rev <= to && inSpan(e.key, key, end) {
			evs = append(evs, e)
		}
	}
	slices.SortFunc(evs, func(a, b mevent) int {
		if a.rev != b.rev {
			return int(a.rev - b.rev)
		}
		if a.sub != b.sub {
			return int(a.sub - b.sub)
		}
		return strings.Compare(a.key, b.key)
	})
	var out []Change
	for _, e := range evs {
		ev := &mvccpb.Event{Type: e.typ, Kv: e.kv, PrevKv: e.prev}
		if e.rev <= m.compacted {
			ev.PrevKv = nil // etcd reads prev_kv at rev-1, which is compacted
		}
		out = append(out, Change{Rev: e.rev, Sub: e.sub, Event: ev})
	}
	return out
}

// physical counts what compaction must keep: data versions and change entries.
func (m *model) physical() (versions, changes int) {
	c := m.compacted
	for _, vs := range m.vers {
		for i, v := range vs {
			switch {
			case v.rev > c:
				versions++
			case (i+1 == len(vs) || vs[i+1].rev > c) && !v.tomb:
				versions++ // newest version <= c, live
			}
		}
	}
	for _, e := range m.events {
		if e.rev >= c {
			changes++
		}
	}
	return versions, changes
}

// rawCounts counts the store's badger keys per namespace.
func rawCounts(t *testing.T, s *Store) (data, changes int) {
	t.Helper()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			switch it.Item().Key()[0] {
			case nsData:
				data++
			case nsChange:
				changes++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return data, changes
}

var modelKeys = []string{"\x00", "\x00\x00", "a", "a\x00", "a\x00\x01", "ab", "b", "b\xff", "c", "\xff"}

var modelSpans = [][2]string{
	{"a", ""}, {"a\x00", ""}, {"\x00", "\x00"}, {"a", "\x00"}, {"a", "b"}, {"a\x00", "ab"},
	{"\x00", "b"}, {"b", "\xff"}, {"zz", ""}, {"b", "a"},
}

func TestModelRandomized(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runModel(t, seed) })
	}
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	s := openMem(t)
	m := newModel()
	const revs = 120
	// Each Update applies 1-4 consecutive revisions, as a shard's batched apply does, and checks
	// Get and Range inside the Update (read-your-writes across revisions) against the model.
	for rev := int64(1); rev <= revs; {
		batch := 1 + rng.IntN(4)
		err := s.Update(func(w *Writer) error {
			for i := 0; i < batch && rev <= revs; i++ {
				if err := applyRandomRevision(t, rng, w, m, rev); err != nil {
					return err
				}
				for _, k := range modelKeys {
					for _, at := range []int64{0, rev, rev - 1} {
						if at > 0 && at < m.compacted {
							continue
						}
						got, err := w.Get([]byte(k), at)
						if err != nil {
							return err
						}
						mrev := at
						if at == 0 {
							mrev = rev // latest, which is rev inside this Update
						}
						want, ok := m.live(k, mrev)
						wantKV := "<nil>"
						if ok {
							wantKV = kvOne(want.kv(k, true))
						}
						if kvOne(got) != wantKV {
							t.Fatalf("Writer.Get(%q, %d) at rev %d = %s, want %s", k, at, rev, kvOne(got), wantKV)
						}
					}
				}
				got, err := w.Range([]byte{0}, []byte{0}, rev, ReadOptions{})
				if err != nil {
					return err
				}
				if want := m.rangeAt("\x00", "\x00", rev, ReadOptions{}); kvString(got.KVs) != kvString(want.KVs) {
					t.Fatalf("Writer.Range at %d:\n got %s\nwant %s", rev, kvString(got.KVs), kvString(want.KVs))
				}
				rev++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if rev > 30 && (rev-1)/30 != (rev-1-int64(batch))/30 {
			checkModel(t, s, m, rev-1)
			c := rev - 1 - int64(rng.IntN(20))
			if err := s.Compact(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			m.compacted = c
			checkPhysical(t, s, m)
			checkModel(t, s, m, rev-1)
		}
	}
	checkModel(t, s, m, revs)
	d, c := rawCounts(t, s)
	t.Logf("%d events, compacted %d, %d versions and %d change entries stored", len(m.events), m.compacted, d, c)
	// Compacting to the latest revision leaves the latest state only.
	if err := s.Compact(context.Background(), revs); err != nil {
		t.Fatal(err)
	}
	m.compacted = revs
	checkPhysical(t, s, m)
	checkModel(t, s, m, revs)
}

func checkPhysical(t *testing.T, s *Store, m *model) {
	t.Helper()
	gotData, gotChanges := rawCounts(t, s)
	wantData, wantChanges := m.physical()
	if gotData != wantData || gotChanges != wantChanges {
		t.Fatalf("after compaction to %d: %d versions, %d change entries; want %d, %d",
			m.compacted, gotData, gotChanges, wantData, wantChanges)
	}
}

func checkModel(t *testing.T, s *Store, m *model, revs int64) {
	t.Helper()
	opts := []ReadOptions{{}, {Limit: 1}, {Limit: 3}, {KeysOnly: true}, {CountOnly: true}}
	err := s.View(func(r *Reader) error {
		for rev := int64(1); rev <= revs+1; rev++ {
			for _, sp := range modelSpans {
				for _, o := range opts {
					got, err := r.Range([]byte(sp[0]), bytesOrNil(sp[1]), rev, o)
					if rev < m.compacted {
						if !errors.Is(err, ErrCompacted) {
							t.Fatalf("Range at %d < compacted %d: err %v", rev, m.compacted, err)
						}
						continue
					}
					if err != nil {
						return err
					}
					want := m.rangeAt(sp[0], sp[1], rev, o)
					if kvString(got.KVs) != kvString(want.KVs) || got.Count != want.Count {
						t.Fatalf("Range(%q, %q, %d, %+v):\n got %s (%d)\nwant %s (%d)", sp[0], sp[1], rev, o,
							kvString(got.KVs), got.Count, kvString(want.KVs), want.Count)
					}
				}
			}
			// Changes over windows starting here.
			for _, sp := range modelSpans {
				to := rev + int64(rev%7)
				got, err := r.Changes([]byte(sp[0]), bytesOrNil(sp[1]), rev, to, 0)
				if rev < m.compacted {
					if !errors.Is(err, ErrCompacted) {
						t.Fatalf("Changes from %d < compacted %d: err %v", rev, m.compacted, err)
					}
					continue
				}
				if err != nil {
					return err
				}
				if g, w := changesString(got), changesString(m.changes(sp[0], sp[1], rev, to)); g != w {
					t.Fatalf("Changes(%q, %q, %d, %d):\n got %s\nwant %s", sp[0], sp[1], rev, to, g, w)
				}
			}
		}
		// Paging through all changes with a limit yields the same list, whole revisions each.
		from := max(m.compacted, 1)
		var paged []Change
		for {
			page, err := r.Changes([]byte{0}, []byte{0}, from, 0, 2)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			from = page[len(page)-1].Rev + 1
		}
		if g, w := changesString(paged), changesString(m.changes("\x00", "\x00", max(m.compacted, 1), revs)); g != w {
			t.Fatalf("paged Changes:\n got %s\nwant %s", g, w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// applyRandomRevision writes 1-3 random ops at rev through w and into m, checking the values
// the writes return.
func applyRandomRevision(t *testing.T, rng *rand.Rand, w *Writer, m *model, rev int64) error {
	t.Helper()
	touched := map[string]bool{}
	ops := 1 + rng.IntN(3)
	var got, want []string
	for sub := int32(0); sub < int32(ops); sub++ {
		switch op := rng.IntN(10); {
		case op < 6: // put
			k := modelKeys[rng.IntN(len(modelKeys))]
			if touched[k] {
				continue
			}
			touched[k] = true
			p := Put{Key: []byte(k), Value: []byte(fmt.Sprintf("v%d.%d", rev, sub)), Lease: int64(rng.IntN(3))}
			if _, ok := m.live(k, rev); ok && rng.IntN(4) == 0 {
				p.IgnoreValue = rng.IntN(2) == 0
				p.IgnoreLease = !p.IgnoreValue || rng.IntN(2) == 0
			}
			want = append(want, kvOne(m.put(rev, sub, p)))
			prev, err := w.Put(rev, sub, p)
			if err != nil {
				return err
			}
			got = append(got, kvOne(prev))
		default: // delete a span, only as the revision's last op, over untouched keys
			sp := modelSpans[rng.IntN(len(modelSpans))]
			clash := false
			for k := range touched {
				clash = clash || inSpan(k, sp[0], sp[1])
			}
			if clash {
				continue
			}
			want = append(want, kvString(m.deleteRange(rev, sub, sp[0], sp[1])))
			deleted, err := w.DeleteRange(rev, sub, []byte(sp[0]), bytesOrNil(sp[1]))
			if err != nil {
				return err
			}
			got = append(got, kvString(deleted))
			sub = int32(ops)
		}
	}
	if g, w := strings.Join(got, " ; "), strings.Join(want, " ; "); g != w {
		t.Fatalf("rev %d write results:\n got %s\nwant %s", rev, g, w)
	}
	return nil
}
