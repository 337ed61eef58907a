package actors

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mosaic-kv/mosaic/proto/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
)

// ---- helpers ----

func openStore(t testing.TB, dir string) *LogStore {
	t.Helper()
	s, err := OpenLogStore(dir, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func submitSync(s *LogStore, w *LogWrite) error {
	done := make(chan error, 1)
	w.Done = func(err error) { done <- err }
	s.Submit(w)
	return <-done
}

func mustSubmit(t testing.TB, s *LogStore, w *LogWrite) {
	t.Helper()
	if err := submitSync(s, w); err != nil {
		t.Fatalf("submit to group %d: %v", w.Group, err)
	}
}

func ent(group, term, index uint64) *raftpb.Entry {
	return &raftpb.Entry{Term: proto.Uint64(term), Index: proto.Uint64(index), Data: fmt.Appendf(nil, "g%d/t%d/i%d", group, term, index)}
}

func ents(group, term, from, to uint64) []*raftpb.Entry {
	var es []*raftpb.Entry
	for i := from; i <= to; i++ {
		es = append(es, ent(group, term, i))
	}
	return es
}

func hs(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(vote), Commit: proto.Uint64(commit)}
}

func snapAt(index, term uint64) *raftpb.SnapshotMetadata {
	return &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}
}

// want describes a group's expected log: entries as index → term, consecutive.
type want struct {
	state    *raftpb.HardState
	snap     *raftpb.SnapshotMetadata
	from, to uint64            // entry indexes, to < from for none
	terms    map[uint64]uint64 // term of index; default 1
}

func checkGroup(t testing.TB, s *LogStore, group uint64, w want) {
	t.Helper()
	gl, err := s.Load(group)
	if err != nil {
		t.Fatalf("load group %d: %v", group, err)
	}
	if gl.State == nil || gl.Snap == nil {
		t.Fatalf("group %d: nil State or Snap", group)
	}
	ws, wsnap := w.state, w.snap
	if ws == nil {
		ws = &raftpb.HardState{}
	}
	if wsnap == nil {
		wsnap = &raftpb.SnapshotMetadata{}
	}
	if !proto.Equal(gl.State, ws) {
		t.Errorf("group %d: state %v, want %v", group, gl.State, ws)
	}
	if !proto.Equal(gl.Snap, wsnap) {
		t.Errorf("group %d: snap %v, want %v", group, gl.Snap, wsnap)
	}
	var got, exp []string
	for _, e := range gl.Entries {
		got = append(got, fmt.Sprintf("%d@%d:%s", e.GetIndex(), e.GetTerm(), e.GetData()))
	}
	for i := w.from; i <= w.to && w.to > 0; i++ {
		term := uint64(1)
		if tm, ok := w.terms[i]; ok {
			term = tm
		}
		e := ent(group, term, i)
		exp = append(exp, fmt.Sprintf("%d@%d:%s", e.GetIndex(), e.GetTerm(), e.GetData()))
	}
	if !slices.Equal(got, exp) {
		t.Errorf("group %d: entries\n got %v\nwant %v", group, got, exp)
	}
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func setSegmentSize(t testing.TB, n int64) {
	old := walSegmentSize
	walSegmentSize = n
	t.Cleanup(func() { walSegmentSize = old })
}

// ---- tests ----

func TestLogStoreRoundTrip(t *testing.T) {
	type step struct {
		w       *LogWrite
		del     bool   // DeleteGroup(w.Group)
		wantErr string // the write must fail with this
	}
	tests := []struct {
		name  string
		steps []step
		want  map[uint64]want
	}{{
		name: "never written",
		want: map[uint64]want{7: {}},
	}, {
		name: "several groups",
		steps: []step{
			{w: &LogWrite{Group: 0, Snap: snapAt(1, 1), State: hs(1, 0, 1)}},
			{w: &LogWrite{Group: 5, Snap: snapAt(1, 1), State: hs(1, 0, 1)}},
			{w: &LogWrite{Group: 0, Entries: ents(0, 1, 2, 10), State: hs(1, 1, 10)}},
			{w: &LogWrite{Group: 5, Entries: ents(5, 1, 2, 3)}},
			{w: &LogWrite{Group: 9, Entries: ents(9, 1, 1, 4), State: hs(2, 9, 0)}},
			{w: &LogWrite{Group: 5, Entries: ents(5, 1, 4, 5)}},
		},
		want: map[uint64]want{
			0: {state: hs(1, 1, 10), snap: snapAt(1, 1), from: 2, to: 10},
			5: {state: hs(1, 0, 1), snap: snapAt(1, 1), from: 2, to: 5},
			9: {state: hs(2, 9, 0), from: 1, to: 4},
			3: {},
		},
	}, {
		name: "suffix overwrite",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 10)}},
			{w: &LogWrite{Group: 1, Entries: ents(1, 2, 6, 7)}},
		},
		want: map[uint64]want{1: {snap: snapAt(1, 1), from: 2, to: 7, terms: map[uint64]uint64{6: 2, 7: 2}}},
	}, {
		name: "overwrite then extend",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 10)}},
			{w: &LogWrite{Group: 1, Entries: ents(1, 2, 9, 9)}},
			{w: &LogWrite{Group: 1, Entries: ents(1, 3, 3, 3)}},
			{w: &LogWrite{Group: 1, Entries: ents(1, 3, 4, 5)}},
		},
		want: map[uint64]want{1: {snap: snapAt(1, 1), from: 2, to: 5, terms: map[uint64]uint64{3: 3, 4: 3, 5: 3}}},
	}, {
		name: "hard state replaced only when given",
		steps: []step{
			{w: &LogWrite{Group: 1, State: hs(1, 1, 1)}},
			{w: &LogWrite{Group: 1, State: hs(3, 2, 5)}},
			{w: &LogWrite{Group: 1, Entries: ents(1, 3, 1, 2)}},
		},
		want: map[uint64]want{1: {state: hs(3, 2, 5), from: 1, to: 2, terms: map[uint64]uint64{1: 3, 2: 3}}},
	}, {
		name: "empty hard state is a value",
		steps: []step{
			{w: &LogWrite{Group: 1, State: hs(1, 1, 1)}},
			{w: &LogWrite{Group: 1, State: &raftpb.HardState{}}},
		},
		want: map[uint64]want{1: {state: &raftpb.HardState{}}},
	}, {
		name: "snapshot compacts and keeps the tail",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 10)}},
			{w: &LogWrite{Group: 1, Snap: snapAt(6, 1)}},
			{w: &LogWrite{Group: 1, Snap: snapAt(6, 1)}}, // the same point again
		},
		want: map[uint64]want{1: {snap: snapAt(6, 1), from: 7, to: 10}},
	}, {
		name: "snapshot not in the log replaces it",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 10)}},
			{w: &LogWrite{Group: 1, Snap: snapAt(8, 3), Entries: ents(1, 3, 9, 10), State: hs(3, 0, 8)}},
		},
		want: map[uint64]want{1: {state: hs(3, 0, 8), snap: snapAt(8, 3), from: 9, to: 10, terms: map[uint64]uint64{9: 3, 10: 3}}},
	}, {
		name: "snapshot past the log",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 4)}},
			{w: &LogWrite{Group: 1, Snap: snapAt(20, 2)}},
		},
		want: map[uint64]want{1: {snap: snapAt(20, 2)}},
	}, {
		name: "truncate",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 10)}},
			{w: &LogWrite{Group: 1, Snap: snapAt(4, 1)}},
		},
		want: map[uint64]want{1: {snap: snapAt(4, 1), from: 5, to: 10}},
	}, {
		name: "delete group",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 10), State: hs(1, 1, 3)}},
			{w: &LogWrite{Group: 2, Snap: snapAt(1, 1), Entries: ents(2, 1, 2, 3)}},
			{w: &LogWrite{Group: 1}, del: true},
			{w: &LogWrite{Group: 2}, del: true},
			{w: &LogWrite{Group: 2, Snap: snapAt(1, 1), Entries: ents(2, 1, 2, 2)}}, // recreated
		},
		want: map[uint64]want{1: {}, 2: {snap: snapAt(1, 1), from: 2, to: 2}},
	}, {
		name: "refused writes leave no trace",
		steps: []step{
			{w: &LogWrite{Group: 1, Snap: snapAt(5, 1), Entries: ents(1, 1, 6, 8), State: hs(1, 1, 6)}},
			{w: &LogWrite{Group: 1, Entries: ents(1, 1, 10, 11), State: hs(9, 9, 9)}, wantErr: "do not follow"},
			{w: &LogWrite{Group: 1, Entries: ents(1, 1, 5, 6)}, wantErr: "not past the snapshot"},
			{w: &LogWrite{Group: 1, Entries: []*raftpb.Entry{ent(1, 1, 9), ent(1, 1, 11)}}, wantErr: "not consecutive"},
			{w: &LogWrite{Group: 1, Snap: snapAt(3, 1), State: hs(9, 9, 9)}, wantErr: "older"},
		},
		want: map[uint64]want{1: {state: hs(1, 1, 6), snap: snapAt(5, 1), from: 6, to: 8}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			for i, st := range tc.steps {
				var err error
				if st.del {
					err = s.DeleteGroup(st.w.Group)
				} else {
					err = submitSync(s, st.w)
				}
				if st.wantErr == "" && err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
					t.Fatalf("step %d: error %v, want one containing %q", i, err, st.wantErr)
				}
			}
			for g, w := range tc.want {
				checkGroup(t, s, g, w)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for round := 0; round < 2; round++ { // reopen twice: replay must be stable
				s = openStore(t, dir)
				for g, w := range tc.want {
					checkGroup(t, s, g, w)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestLogStoreLoadIsACopy: what Load returns does not change with later writes.
func TestLogStoreLoadIsACopy(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	mustSubmit(t, s, &LogWrite{Group: 1, Snap: snapAt(1, 1), Entries: ents(1, 1, 2, 5), State: hs(1, 1, 2)})
	gl, err := s.Load(1)
	if err != nil {
		t.Fatal(err)
	}
	mustSubmit(t, s, &LogWrite{Group: 1, Entries: ents(1, 2, 3, 3), State: hs(2, 1, 2)})
	mustSubmit(t, s, &LogWrite{Group: 1, Snap: snapAt(3, 2)})
	gl.State.Term = proto.Uint64(99)
	if len(gl.Entries) != 4 || gl.Entries[1].GetTerm() != 1 || gl.Snap.GetIndex() != 1 {
		t.Fatalf("loaded log changed: %v", gl)
	}
	checkGroup(t, s, 1, want{state: hs(2, 1, 2), snap: snapAt(3, 2)})
}

// TestLogStoreSegments: rollover, header records, deletion of segments whose
// entries every group has compacted, and a reopen afterwards.
func TestLogStoreSegments(t *testing.T) {
	setSegmentSize(t, 8<<10)
	dir := t.TempDir()
	s := openStore(t, dir)
	const groups = 3
	last := map[uint64]uint64{}
	for g := uint64(1); g <= groups; g++ {
		mustSubmit(t, s, &LogWrite{Group: g, Snap: snapAt(1, 1), State: hs(1, 1, 1)})
		last[g] = 1
	}
	// Group 3 never compacts for the first half: it pins the old segments.
	write := func(n int, compact func(g uint64) bool) {
		for i := 0; i < n; i++ {
			for g := uint64(1); g <= groups; g++ {
				l := last[g]
				mustSubmit(t, s, &LogWrite{Group: g, Entries: ents(g, 1, l+1, l+10), State: hs(1, 1, l+10)})
				last[g] = l + 10
				if compact(g) && i%5 == 4 {
					idx := last[g] - 5
					mustSubmit(t, s, &LogWrite{Group: g, Snap: snapAt(idx, 1)})
					if err := s.Truncate(g, idx); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	write(100, func(g uint64) bool { return g != 3 })
	pinned := segmentFiles(t, dir)
	if len(pinned) < 5 {
		t.Fatalf("only %d segments after %d bytes of entries; no rollover?", len(pinned), 100*groups*10*30)
	}
	if filepath.Base(pinned[0]) != walSegmentName(0) {
		t.Fatalf("segment 0 deleted while group 3 still needs it: %v", pinned)
	}
	// Losing segment 0 now (it holds entries of group 3 that no snapshot
	// covers) is detected at open.
	lost := copyDir(t, dir)
	os.Remove(filepath.Join(lost, walSegmentName(0)))
	if _, err := OpenLogStore(lost, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "group 3 lacks entries") {
		t.Fatalf("open without segment 0: %v", err)
	}
	write(100, func(uint64) bool { return true })
	segs := segmentFiles(t, dir)
	if len(segs) > 3 || filepath.Base(segs[0]) == walSegmentName(0) {
		t.Fatalf("old segments not deleted: %v", segs)
	}
	check := func(s *LogStore) {
		for g := uint64(1); g <= groups; g++ {
			checkGroup(t, s, g, want{state: hs(1, 1, last[g]), snap: snapAt(last[g]-5, 1), from: last[g] - 4, to: last[g]})
		}
	}
	check(s)
	// Deleting a group unpins segments too.
	mustSubmit(t, s, &LogWrite{Group: 4, Snap: snapAt(1, 1), Entries: ents(4, 1, 2, 50)})
	write(30, func(g uint64) bool { return true })
	if err := s.DeleteGroup(4); err != nil {
		t.Fatal(err)
	}
	write(30, func(g uint64) bool { return true })
	if segs := segmentFiles(t, dir); len(segs) > 3 {
		t.Fatalf("segments of a deleted group not deleted: %v", segs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	check(s)
	checkGroup(t, s, 4, want{})
	// And it goes on appending after the reopen.
	write(10, func(g uint64) bool { return true })
	check(s)
	s.Close()
	s = openStore(t, dir)
	check(s)
	s.Close()
}

// writeRecords writes n records of one write each to group 1 and returns the
// size of the last segment after each one (ends[i] is the end of write i).
func writeRecords(t *testing.T, dir string, n int) []int64 {
	t.Helper()
	s := openStore(t, dir)
	mustSubmit(t, s, &LogWrite{Group: 1, Snap: snapAt(1, 1), State: hs(1, 1, 1)})
	var ends []int64
	for i := uint64(2); i < uint64(2+n); i++ {
		var sizeAtDone int64
		done := make(chan error, 1)
		s.Submit(&LogWrite{Group: 1, Entries: ents(1, 1, i, i), State: hs(1, 1, i), Done: func(err error) {
			// Done is only called once the record is in the file (the
			// writer, which calls it, owns s.size).
			sizeAtDone = s.size
			done <- err
		}})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(ends) > 0 && sizeAtDone <= ends[len(ends)-1] {
			t.Fatalf("Done called before the record was written (size %d)", sizeAtDone)
		}
		ends = append(ends, sizeAtDone)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return ends
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	des, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(from, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, de.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// TestLogStoreTornTail: a crash mid-write leaves part of the last record;
// reopening drops exactly the records not wholly in the file, and appends
// after them.
func TestLogStoreTornTail(t *testing.T) {
	orig := t.TempDir()
	const n = 20
	ends := writeRecords(t, orig, n)
	seg := segmentFiles(t, orig)[0]
	full, _ := os.ReadFile(seg)
	if int64(len(full)) != walSegmentSize || !allZero(full[ends[n-1]:]) {
		t.Fatalf("segment is %d bytes, last record ends at %d: want zeros up to %d", len(full), ends[n-1], walSegmentSize)
	}
	// complete(size) = how many of the n records lie wholly in the first size bytes.
	complete := func(size int64) int {
		k := 0
		for k < n && ends[k] <= size {
			k++
		}
		return k
	}
	rng := rand.New(rand.NewSource(1))
	cuts := []int64{ends[0] - 1, ends[n-2], ends[n-2] + 1, ends[n-2] + 7, ends[n-2] + 8, ends[n-1] - 1}
	for i := 0; i < 20; i++ {
		cuts = append(cuts, ends[0]+rng.Int63n(ends[n-1]-ends[0]))
	}
	for _, cut := range cuts {
		t.Run(fmt.Sprintf("cut=%d", cut), func(t *testing.T) {
			dir := copyDir(t, orig)
			seg := segmentFiles(t, dir)[0]
			if err := os.Truncate(seg, cut); err != nil {
				t.Fatal(err)
			}
			k := complete(cut)
			s := openStore(t, dir)
			checkGroup(t, s, 1, want{state: hs(1, 1, uint64(k)+1), snap: snapAt(1, 1), from: 2, to: uint64(k) + 1})
			// The log goes on from there, and that survives another reopen.
			mustSubmit(t, s, &LogWrite{Group: 1, Entries: ents(1, 2, uint64(k)+2, uint64(k)+2)})
			s.Close()
			s = openStore(t, dir)
			defer s.Close()
			checkGroup(t, s, 1, want{state: hs(1, 1, uint64(k)+1), snap: snapAt(1, 1), from: 2, to: uint64(k) + 2, terms: map[uint64]uint64{uint64(k) + 2: 2}})
		})
	}
	// A flipped byte in the last record: that record is torn, the rest stays.
	for _, off := range []int64{0, 3, 4, 8, 9, 20} {
		t.Run(fmt.Sprintf("flip-last+%d", off), func(t *testing.T) {
			dir := copyDir(t, orig)
			seg := segmentFiles(t, dir)[0]
			flipByte(t, seg, ends[n-2]+off)
			s := openStore(t, dir)
			defer s.Close()
			checkGroup(t, s, 1, want{state: hs(1, 1, n), snap: snapAt(1, 1), from: 2, to: n})
		})
	}
	// A flipped byte in an earlier record of the last segment is not a torn
	// write: refuse rather than silently drop acknowledged records.
	t.Run("flip-middle", func(t *testing.T) {
		dir := copyDir(t, orig)
		flipByte(t, segmentFiles(t, dir)[0], ends[n/2]+12)
		if _, err := OpenLogStore(dir, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("open: %v, want a corruption error", err)
		}
	})
}

// cutToRecords cuts the preallocated zeros off the last segment at path, as
// a roll does before it creates the next segment.
func cutToRecords(t *testing.T, path string) {
	t.Helper()
	var seq uint64
	fmt.Sscanf(filepath.Base(path), "wal-%016x.log", &seq)
	end, _, err := readWALSegment(path, seq, true, func(*walpb.Record) error { return nil })
	if err == nil {
		err = os.Truncate(path, end)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLogStoreBadDirs: damage outside the torn tail, and foreign
// directories, are refused with a clear error.
func TestLogStoreBadDirs(t *testing.T) {
	setSegmentSize(t, 2<<10)
	orig := t.TempDir()
	s := openStore(t, orig)
	mustSubmit(t, s, &LogWrite{Group: 1, Snap: snapAt(1, 1)})
	for i := uint64(2); i < 400; i++ {
		mustSubmit(t, s, &LogWrite{Group: 1, Entries: ents(1, 1, i, i)})
	}
	s.Close()
	segs := segmentFiles(t, orig)
	if len(segs) < 4 {
		t.Fatalf("want several segments, have %d", len(segs))
	}
	base := func(i int) string { return filepath.Base(segs[i]) }
	tests := []struct {
		name    string
		damage  func(dir string)
		wantErr string
	}{
		{"flipped byte in first segment", func(dir string) { flipByte(t, filepath.Join(dir, base(0)), 200) }, "corrupt"},
		{"flipped byte in middle segment", func(dir string) { flipByte(t, filepath.Join(dir, base(1)), 1000) }, "checksum"},
		{"truncated middle segment", func(dir string) { os.Truncate(filepath.Join(dir, base(1)), 1000) }, "corrupt"},
		{"bad magic", func(dir string) { flipByte(t, filepath.Join(dir, base(2)), 1) }, "bad file header"},
		{"missing segment", func(dir string) { os.Remove(filepath.Join(dir, base(1))) }, "missing"},
		{"renamed segment", func(dir string) {
			os.Rename(filepath.Join(dir, base(len(segs)-1)), filepath.Join(dir, walSegmentName(1000)))
		}, "missing"},
		{"foreign file", func(dir string) { os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600) }, "not a raft log directory"},
		{"badger files", func(dir string) { os.WriteFile(filepath.Join(dir, "MANIFEST"), nil, 0o600) }, "badger"},
		{"last segment without header", func(dir string) {
			cutToRecords(t, filepath.Join(dir, base(len(segs)-1))) // as a roll does
			os.WriteFile(filepath.Join(dir, walSegmentName(uint64(len(segs)))), walMagic[:], 0o600)
		}, "bad file header"},
		{"last segment with a torn header record", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, base(len(segs)-1)))
			os.WriteFile(filepath.Join(dir, base(len(segs)-1)), b[:walFileHeaderSize+5], 0o600)
		}, "corrupt"},
		{"last segment with only a file header", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, base(len(segs)-1)))
			os.WriteFile(filepath.Join(dir, base(len(segs)-1)), b[:walFileHeaderSize], 0o600)
		}, "no header record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, orig)
			tc.damage(dir)
			s, err := OpenLogStore(dir, zap.NewNop())
			if err == nil {
				s.Close()
				t.Fatal("open succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
	t.Run("leftover temporary segment is removed", func(t *testing.T) {
		dir := copyDir(t, orig)
		tmp := filepath.Join(dir, walSegmentName(uint64(len(segs)))+".tmp")
		os.WriteFile(tmp, []byte("partial"), 0o600)
		s := openStore(t, dir)
		defer s.Close()
		checkGroup(t, s, 1, want{snap: snapAt(1, 1), from: 2, to: 399})
		if _, err := os.Stat(tmp); !os.IsNotExist(err) {
			t.Fatalf("temporary segment still there: %v", err)
		}
	})
	t.Run("locked", func(t *testing.T) {
		dir := copyDir(t, orig)
		s := openStore(t, dir)
		defer s.Close()
		if _, err := OpenLogStore(dir, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second open: %v", err)
		}
	})
}

// TestLogStoreConcurrentSubmit: many goroutines submitting without waiting;
// every Done is called exactly once, in submission order per group, and the
// logs are complete after a reopen.
func TestLogStoreConcurrentSubmit(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	const writers, perWriter = 64, 200
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(g uint64) {
			defer wg.Done()
			var mu sync.Mutex
			var order []uint64
			calls := map[uint64]int{}
			var all sync.WaitGroup
			mustSubmit(t, s, &LogWrite{Group: g, Snap: snapAt(1, 1)})
			for i := uint64(2); i < 2+perWriter; i++ {
				all.Add(1)
				s.Submit(&LogWrite{Group: g, Entries: ents(g, 1, i, i), State: hs(1, g, i), Done: func(err error) {
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					order = append(order, i)
					calls[i]++
					mu.Unlock()
					all.Done()
				}})
			}
			all.Wait()
			for i, idx := range order {
				if idx != uint64(i)+2 || calls[idx] != 1 {
					t.Errorf("group %d: Done order %v…", g, order[:i+1])
					return
				}
			}
		}(uint64(w + 1))
	}
	wg.Wait()
	// Group commit: far fewer records than writes.
	records := countRecords(t, dir)
	t.Logf("%d writes in %d records", writers*(perWriter+1), records)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	for g := uint64(1); g <= writers; g++ {
		checkGroup(t, s, g, want{state: hs(1, g, perWriter+1), snap: snapAt(1, 1), from: 2, to: perWriter + 1})
	}
}

func countRecords(t *testing.T, dir string) int {
	n := 0
	for _, seg := range segmentFiles(t, dir) {
		var seq uint64
		fmt.Sscanf(filepath.Base(seg), "wal-%016x.log", &seq)
		if _, _, err := readWALSegment(seg, seq, true, func(*walpb.Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestLogStoreGroupCommit: writes queued while the writer is busy go into
// one record, and all their Done callbacks follow it.
func TestLogStoreGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	before := countRecords(t, dir)
	s.mu.Lock() // the writer blocks on its first batch
	var wg sync.WaitGroup
	for g := uint64(1); g <= 100; g++ {
		wg.Add(1)
		s.Submit(&LogWrite{Group: g, Snap: snapAt(1, 1), Entries: ents(g, 1, 2, 3), Done: func(err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		}})
	}
	s.mu.Unlock()
	wg.Wait()
	if got := countRecords(t, dir) - before; got > 2 {
		t.Fatalf("100 queued writes took %d records", got)
	}
}

// TestLogStoreRaftGroup: a RaftGroup over the WAL, restarted on the same
// store and on a reopened one, keeps its log and compaction.
func TestLogStoreRaftGroup(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	durable := make(chan error, 1)
	open := func(s *LogStore) *RaftGroup {
		g, err := OpenRaftGroup(GroupConfig{Group: 42, NodeID: 1, Store: s, Logger: zap.NewNop(), Durable: func(err error) { durable <- err }})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	var applied []string
	apply := func(es []*raftpb.Entry) {
		for _, e := range es {
			if len(e.GetData()) > 0 {
				applied = append(applied, string(e.GetData()))
			}
		}
	}
	run := func(g *RaftGroup) {
		g.Drive(apply)
		for g.Busy() {
			if err := <-durable; err != nil {
				t.Fatal(err)
			}
			if err := g.Persisted(apply); err != nil {
				t.Fatal(err)
			}
		}
	}
	g := open(s)
	if err := g.Campaign(); err != nil {
		t.Fatal(err)
	}
	run(g)
	for i := 0; i < 50; i++ {
		if err := g.Propose(fmt.Appendf(nil, "p%d", i)); err != nil {
			t.Fatal(err)
		}
		run(g)
		if i == 30 {
			if err := g.Compact(g.Applied() - 3); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(applied) != 50 {
		t.Fatalf("applied %d proposals", len(applied))
	}
	lastIdx := g.LastIndex()
	for _, reopen := range []bool{false, true} {
		if reopen {
			s.Close()
			s = openStore(t, dir)
		}
		g = open(s)
		if g.LastIndex() != lastIdx {
			t.Fatalf("reopen=%v: last index %d, want %d", reopen, g.LastIndex(), lastIdx)
		}
		gl, _ := s.Load(42)
		if gl.Snap.GetIndex() == 0 || uint64(len(gl.Entries)) != lastIdx-gl.Snap.GetIndex() {
			t.Fatalf("reopen=%v: snapshot %d and %d entries up to %d", reopen, gl.Snap.GetIndex(), len(gl.Entries), lastIdx)
		}
	}
	s.Close()
}

// TestLogStoreModel runs random appends, overwrites, compactions, snapshots
// from a leader, hard states and deletions over a few groups, with tiny
// segments (so rolls and segment deletion happen all the time), reopening
// now and then, and compares every Load with a simple model.
func TestLogStoreModel(t *testing.T) {
	setSegmentSize(t, 2<<10)
	seeds, ops := int64(6), 2000
	if testing.Short() {
		seeds, ops = 2, 1000
	}
	type mgroup struct {
		snapIdx, snapTerm uint64
		terms             []uint64 // terms[i] is the term of index snapIdx+1+i
		state             *raftpb.HardState
		term              uint64
	}
	for seed := int64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			dir := t.TempDir()
			s := openStore(t, dir)
			defer func() { s.Close() }()
			model := map[uint64]*mgroup{}
			check := func(when string) {
				t.Helper()
				for g := uint64(0); g < 4; g++ {
					m := model[g]
					if m == nil {
						checkGroup(t, s, g, want{})
						continue
					}
					w := want{state: m.state, snap: snapAt(m.snapIdx, m.snapTerm), from: m.snapIdx + 1, to: m.snapIdx + uint64(len(m.terms)), terms: map[uint64]uint64{}}
					if m.snapIdx == 0 && m.snapTerm == 0 {
						w.snap = nil
					}
					for i, tm := range m.terms {
						w.terms[m.snapIdx+1+uint64(i)] = tm
					}
					checkGroup(t, s, g, w)
				}
				if t.Failed() {
					t.Fatalf("mismatch %s", when)
				}
			}
			for op := 0; op < ops; op++ {
				g := uint64(rng.Intn(4))
				m := model[g]
				if m == nil {
					m = &mgroup{snapIdx: 1, snapTerm: 1, term: 1, state: &raftpb.HardState{}}
					model[g] = m
					mustSubmit(t, s, &LogWrite{Group: g, Snap: snapAt(1, 1)})
				}
				last := m.snapIdx + uint64(len(m.terms))
				switch r := rng.Intn(100); {
				case r < 60: // append, sometimes overwriting a suffix
					first := last + 1
					if rng.Intn(5) == 0 && len(m.terms) > 0 {
						first = m.snapIdx + 1 + uint64(rng.Intn(len(m.terms)))
						m.term++
					}
					n := uint64(1 + rng.Intn(5))
					w := &LogWrite{Group: g, Entries: ents(g, m.term, first, first+n-1)}
					if rng.Intn(2) == 0 {
						m.state = hs(m.term, g, first)
						w.State = m.state
					}
					mustSubmit(t, s, w)
					m.terms = m.terms[:first-m.snapIdx-1]
					for i := uint64(0); i < n; i++ {
						m.terms = append(m.terms, m.term)
					}
				case r < 80: // compaction
					if len(m.terms) == 0 {
						continue
					}
					k := uint64(1 + rng.Intn(len(m.terms)))
					idx := m.snapIdx + k
					mustSubmit(t, s, &LogWrite{Group: g, Snap: snapAt(idx, m.terms[k-1])})
					if err := s.Truncate(g, idx); err != nil {
						t.Fatal(err)
					}
					m.snapIdx, m.snapTerm, m.terms = idx, m.terms[k-1], m.terms[k:]
				case r < 87: // snapshot from a leader, with entries after it
					m.term++
					idx := m.snapIdx + uint64(rng.Intn(len(m.terms)+4))
					n := uint64(rng.Intn(3))
					m.state = hs(m.term, 0, idx)
					mustSubmit(t, s, &LogWrite{Group: g, Snap: snapAt(idx, m.term), State: m.state, Entries: ents(g, m.term, idx+1, idx+n)})
					m.snapIdx, m.snapTerm, m.terms = idx, m.term, nil
					for i := uint64(0); i < n; i++ {
						m.terms = append(m.terms, m.term)
					}
				case r < 95:
					m.state = hs(m.term, uint64(rng.Intn(3)), last)
					mustSubmit(t, s, &LogWrite{Group: g, State: m.state})
				case r < 97:
					if err := s.DeleteGroup(g); err != nil {
						t.Fatal(err)
					}
					delete(model, g)
				default:
					check(fmt.Sprint("before reopen at op ", op))
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					s = openStore(t, dir)
					check(fmt.Sprint("after reopen at op ", op))
				}
			}
			check("at the end")
			s.Close()
			s = openStore(t, dir)
			check("after the last reopen")
			t.Logf("%d segments left", len(segmentFiles(t, dir)))
		})
	}
}

// TestLogStorePreallocated: the last segment is preallocated with zeros
// after its records, a torn record there is cut off and zeroed, a segment
// that was not preallocated (older, or cut) is extended at open, and a roll
// cuts the full segment to its records.
func TestLogStorePreallocated(t *testing.T) {
	orig := t.TempDir()
	const n = 10
	ends := writeRecords(t, orig, n)
	check := func(t *testing.T, dir string, wantTo uint64) {
		t.Helper()
		s := openStore(t, dir)
		checkGroup(t, s, 1, want{state: hs(1, 1, wantTo), snap: snapAt(1, 1), from: 2, to: wantTo})
		mustSubmit(t, s, &LogWrite{Group: 1, Entries: ents(1, 2, wantTo+1, wantTo+1)})
		s.Close()
		b, err := os.ReadFile(segmentFiles(t, dir)[0])
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != walSegmentSize {
			t.Fatalf("segment is %d bytes, want it preallocated to %d", len(b), walSegmentSize)
		}
		s = openStore(t, dir)
		defer s.Close()
		checkGroup(t, s, 1, want{state: hs(1, 1, wantTo), snap: snapAt(1, 1), from: 2, to: wantTo + 1, terms: map[uint64]uint64{wantTo + 1: 2}})
		if !allZero(b[s.size:]) {
			t.Fatalf("bytes after the records (from %d) are not all zero", s.size)
		}
	}
	t.Run("garbage after the records", func(t *testing.T) {
		dir := copyDir(t, orig)
		seg := segmentFiles(t, dir)[0]
		f, err := os.OpenFile(seg, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		// A torn record: a frame announcing 40 bytes, and 10 of them.
		frame := []byte{40, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}
		if _, err := f.WriteAt(frame, ends[n-1]); err != nil {
			t.Fatal(err)
		}
		f.Close()
		check(t, dir, n+1)
	})
	t.Run("not preallocated", func(t *testing.T) {
		dir := copyDir(t, orig)
		if err := os.Truncate(segmentFiles(t, dir)[0], ends[n-1]); err != nil {
			t.Fatal(err)
		}
		check(t, dir, n+1)
	})
	t.Run("roll", func(t *testing.T) {
		setSegmentSize(t, 2<<10)
		dir := t.TempDir()
		s := openStore(t, dir)
		mustSubmit(t, s, &LogWrite{Group: 1, Snap: snapAt(1, 1)})
		for i := uint64(2); i < 400; i++ {
			mustSubmit(t, s, &LogWrite{Group: 1, Entries: ents(1, 1, i, i)})
		}
		s.Close()
		segs := segmentFiles(t, dir)
		if len(segs) < 3 {
			t.Fatalf("want several segments, have %d", len(segs))
		}
		for i, seg := range segs {
			var seq uint64
			fmt.Sscanf(filepath.Base(seg), "wal-%016x.log", &seq)
			end, _, err := readWALSegment(seg, seq, true, func(*walpb.Record) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			if last := i == len(segs)-1; !last && st.Size() != end {
				t.Errorf("full segment %s is %d bytes, its records end at %d", seg, st.Size(), end)
			} else if last && st.Size() < walSegmentSize {
				t.Errorf("last segment %s is %d bytes, want it preallocated to %d", seg, st.Size(), walSegmentSize)
			}
		}
	})
}
