package actors

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosaic-kv/mosaic/proto/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// LogStore is the node-level Raft log of every group on this node: entries,
// HardState and snapshot metadata, keyed by group id. It is separate from
// the state machine (see shard/mvcc) so that log churn does not disturb the
// MVCC data.
//
// It is a segmented write-ahead log (format in wal.go): one writer goroutine
// takes every LogWrite queued when it wakes, appends them as one record and
// makes it durable with one fdatasync (group commit), then calls their Done
// callbacks. Each group's current log (HardState, snapshot metadata, entries
// after the snapshot) is also kept in memory, rebuilt by replaying the
// segments at open, and is what Load returns; the entries are shared, not
// copied, with the caller's raft.MemoryStorage. Segments are rolled at
// walSegmentSize and an old segment is deleted once every group whose
// entries it holds has a snapshot at or past them; the snapshot metadata is
// what persists a truncation.
type LogStore struct {
	dir  string
	log  *zap.Logger
	lock *os.File

	reqs chan *LogWrite
	done chan struct{}

	noSync atomic.Bool  // --unsafe-no-fsync
	syncs  atomic.Int64 // fdatasyncs issued, for tests

	mu     sync.Mutex
	groups map[uint64]*walGroup
	err    error // sticky: a failed write or sync leaves the log unusable

	// Owned by the writer goroutine (and by OpenLogStore before it starts);
	// changed with mu held.
	f    *os.File // the last segment, open for appending
	size int64    // its size
	segs []*walSegment
	buf  []byte
}

// walGroup is one group's log as of the last applied write.
type walGroup struct {
	state *raftpb.HardState
	snap  *raftpb.SnapshotMetadata
	ents  []*raftpb.Entry // ents[i].Index == snap.Index+1+i
}

// walSegment is a live segment and, per group, the highest entry index it
// holds: it can go once every such group's snapshot has passed that index.
type walSegment struct {
	seq      uint64
	maxIndex map[uint64]uint64
}

// LogWrite is one group's Ready to persist.
type LogWrite struct {
	Group   uint64
	State   *raftpb.HardState // written when non-nil
	Entries []*raftpb.Entry
	Snap    *raftpb.SnapshotMetadata // written (and older entries dropped) when non-nil
	// Done is called from the writer goroutine once the write is durable.
	Done func(error)

	// Provides and Requires order writes of different groups: a write is
	// never made durable before every write that provides one of its
	// Requires, but it may share their record, and so their fdatasync. A
	// shard's write provides its transactions' intents (Dep{txn, its group});
	// the oracle's decision requires the intent in every range of the
	// transaction. See dependencies.go.
	Provides []uint64
	Requires []Dep

	del     bool   // DeleteGroup
	abandon uint64 // Abandon: a provider that will never come
}

// OpenLogStore opens (creating) the log store in dir, replaying its log.
func OpenLogStore(dir string, lg *zap.Logger) (*LogStore, error) {
	s, err := openLogStore(dir, lg)
	if err != nil {
		return nil, fmt.Errorf("open raft log store %s: %w", dir, err)
	}
	go s.writer()
	return s, nil
}

func openLogStore(dir string, lg *zap.Logger) (*LogStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	seqs, tmps, err := scanWALDir(dir)
	if err != nil {
		return nil, err
	}
	lock, err := lockWALDir(dir)
	if err != nil {
		return nil, err
	}
	for _, tmp := range tmps {
		lg.Warn("removing incomplete raft log segment", zap.String("file", tmp))
		if err := os.Remove(tmp); err != nil {
			lock.Close()
			return nil, err
		}
	}
	s := &LogStore{dir: dir, log: lg, lock: lock, reqs: make(chan *LogWrite, 4096), done: make(chan struct{}), groups: map[uint64]*walGroup{}}
	if err := s.replay(seqs); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// replay rebuilds the groups from the segments and opens the last one for
// appending, cutting off a torn final record.
func (s *LogStore) replay(seqs []uint64) error {
	if len(seqs) == 0 {
		f, size, err := createWALSegment(s.dir, 0, &walpb.Record{Header: true})
		if err != nil {
			return err
		}
		s.f, s.size = f, size
		s.segs = []*walSegment{{seq: 0, maxIndex: map[uint64]uint64{}}}
		return nil
	}
	var end int64
	var cut bool
	for i, seq := range seqs {
		s.segs = append(s.segs, &walSegment{seq: seq, maxIndex: map[uint64]uint64{}})
		last := i == len(seqs)-1
		path := filepath.Join(s.dir, walSegmentName(seq))
		e, torn, err := readWALSegment(path, seq, last, s.replayRecord)
		if err != nil {
			return err
		}
		if torn {
			s.log.Warn("raft log ends in a torn record (crash during a write); cutting it off",
				zap.String("segment", path), zap.Int64("offset", e))
		}
		end, cut = e, torn
	}
	if err := s.checkReplayed(); err != nil {
		return err
	}
	path := filepath.Join(s.dir, walSegmentName(seqs[len(seqs)-1]))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// Whatever follows the records must be zeros, preallocated (a segment
	// written before preallocation, or cut, is extended now).
	st, err := f.Stat()
	if err == nil && (cut || st.Size() < walSegmentSize) {
		if cut {
			err = f.Truncate(end)
		}
		if err == nil {
			err = preallocate(f, walSegmentSize)
		}
		if err == nil {
			err = f.Sync()
		}
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("prepare %s for appending: %w", path, err)
	}
	if _, err := f.Seek(end, 0); err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, end
	return nil
}

func (s *LogStore) replayRecord(rec *walpb.Record) error {
	for _, gw := range rec.GetWrites() {
		w := &LogWrite{Group: gw.GetGroup(), del: gw.GetDelete()}
		if gw.Snap != nil {
			w.Snap = &raftpb.SnapshotMetadata{}
			if err := proto.Unmarshal(gw.Snap, w.Snap); err != nil {
				return fmt.Errorf("group %d: snapshot metadata: %v", w.Group, err)
			}
		}
		if gw.State != nil {
			w.State = &raftpb.HardState{}
			if err := proto.Unmarshal(gw.State, w.State); err != nil {
				return fmt.Errorf("group %d: hard state: %v", w.Group, err)
			}
		}
		w.Entries = make([]*raftpb.Entry, len(gw.GetEntries()))
		for i, b := range gw.GetEntries() {
			w.Entries[i] = &raftpb.Entry{}
			if err := proto.Unmarshal(b, w.Entries[i]); err != nil {
				return fmt.Errorf("group %d: entry: %v", w.Group, err)
			}
		}
		if _, err := s.apply(w, true, gw.GetSnapReplacesLog()); err != nil {
			return err
		}
	}
	return nil
}

// apply applies a write to the in-memory groups, in the order delete, snap,
// entries, state. It checks everything before changing anything, so a write
// it refuses leaves no trace. It reports whether the snapshot replaced the
// whole log (the log did not hold the snapshot's index at its term) rather
// than compacting it.
//
// In replay, replaces says what the snapshot did when it was written, and
// entries may start past the end of the log: the ones in between were in
// segments deleted since, because a later snapshot covers them (see
// checkReplayed).
func (s *LogStore) apply(w *LogWrite, replay, replaced bool) (replaces bool, err error) {
	if w.del {
		delete(s.groups, w.Group)
		s.forgetEntries(w.Group)
		return false, nil
	}
	g := s.groups[w.Group]
	if g == nil {
		g = &walGroup{state: &raftpb.HardState{}, snap: &raftpb.SnapshotMetadata{}}
	}
	snapIdx := g.snap.GetIndex()
	start := snapIdx + 1 // index of g.ents[0]; past snapIdx+1 only in replay
	if len(g.ents) > 0 {
		start = g.ents[0].GetIndex()
	}
	drop, keep := 0, len(g.ents) // g.ents[drop:keep] survive the snapshot
	if w.Snap != nil {
		idx, term := w.Snap.GetIndex(), w.Snap.GetTerm()
		switch {
		case replay:
			replaces = replaced
		case idx < snapIdx:
			return false, fmt.Errorf("group %d: snapshot at index %d is older than the one held at %d", w.Group, idx, snapIdx)
		case idx == snapIdx && term == g.snap.GetTerm():
			// The same point again.
		case idx >= start && idx < start+uint64(len(g.ents)) && g.ents[idx-start].GetTerm() == term:
			// The log holds the snapshot's entry: a compaction.
		default:
			replaces = true
		}
		if replaces {
			drop, keep = 0, 0
		} else if idx >= start {
			drop = int(min(idx-start+1, uint64(keep)))
		}
		snapIdx = idx
	}
	kstart := snapIdx + 1 // index of g.ents[drop]
	if drop < keep {
		kstart = start + uint64(drop)
	}
	klast := kstart + uint64(keep-drop) - 1
	var first uint64
	gap := false
	if n := len(w.Entries); n > 0 {
		first = w.Entries[0].GetIndex()
		for i, e := range w.Entries {
			if e.GetIndex() != first+uint64(i) {
				return false, fmt.Errorf("group %d: entries not consecutive (index %d after %d)", w.Group, e.GetIndex(), first+uint64(i)-1)
			}
		}
		switch {
		case first <= snapIdx:
			return false, fmt.Errorf("group %d: entries from index %d are not past the snapshot at %d", w.Group, first, snapIdx)
		case first > klast+1 && !replay:
			return false, fmt.Errorf("group %d: entries from index %d do not follow the log (snapshot at %d, last index %d)", w.Group, first, snapIdx, klast)
		case first > klast+1 || first < kstart:
			gap = true // replay only: what the log held is not followed by (or wholly replaced by) them
		}
	}
	// Checked; now change.
	if w.Snap != nil {
		g.snap = proto.Clone(w.Snap).(*raftpb.SnapshotMetadata)
		clear(g.ents[keep:])
		clear(g.ents[:drop])
		g.ents = g.ents[drop:keep]
		if replaces {
			s.forgetEntries(w.Group)
		}
	}
	if n := len(w.Entries); n > 0 {
		if gap {
			clear(g.ents)
			g.ents = append(g.ents[:0], w.Entries...)
		} else {
			g.ents = append(g.ents[:first-kstart], w.Entries...)
		}
		last := w.Entries[n-1].GetIndex()
		seg := s.segs[len(s.segs)-1]
		seg.maxIndex[w.Group] = max(seg.maxIndex[w.Group], last)
	}
	if w.State != nil {
		g.state = proto.Clone(w.State).(*raftpb.HardState)
	}
	s.groups[w.Group] = g
	return replaces, nil
}

// forgetEntries notes that no entry of group written so far matters any
// more (the group was deleted, or its log replaced by a snapshot), so they
// no longer keep segments alive. A replay from a later segment header meets
// the deletion or the snapshot, which drops whatever came before.
func (s *LogStore) forgetEntries(group uint64) {
	for _, seg := range s.segs {
		delete(seg.maxIndex, group)
	}
}

// checkReplayed checks, after replay, that every group's entries follow its
// snapshot: entries missing in between were in a segment deleted without a
// snapshot covering them, i.e. a segment was lost.
func (s *LogStore) checkReplayed() error {
	for id, g := range s.groups {
		if len(g.ents) > 0 && g.ents[0].GetIndex() != g.snap.GetIndex()+1 {
			return fmt.Errorf("%w: group %d lacks entries %d to %d, between its snapshot and its first entry (a segment was lost?)",
				errWALCorrupt, id, g.snap.GetIndex()+1, g.ents[0].GetIndex()-1)
		}
	}
	return nil
}

// Close stops the writer and closes the log. Pending writes are finished first.
func (s *LogStore) Close() error {
	close(s.reqs)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.f.Close()
	if err2 := s.lock.Close(); err == nil {
		err = err2
	}
	return err
}

// Submit queues a write; w.Done is called when it is durable.
func (s *LogStore) Submit(w *LogWrite) { s.reqs <- w }

// Abandon says that no write will ever provide txn: writes that require it
// fail (their owner cannot go on safely).
func (s *LogStore) Abandon(txn uint64) { s.reqs <- &LogWrite{abandon: txn} }

// writer drains the queue: everything queued at once goes into one record,
// i.e. one fdatasync.
func (s *LogStore) writer() {
	defer close(s.done)
	var batch, queued []*LogWrite
	var errs []error
	deps := newDependencies()
	defer func() { deps.failWaiting(errLogStoreClosed) }()
	linger := time.NewTimer(time.Hour)
	defer linger.Stop()
	for open := true; open || deps.holding(); {
		queued = queued[:0]
		// Wait for a write, or for held writes to stop lingering.
		if wait, ok := deps.lingerLeft(time.Now()); ok && open {
			linger.Reset(wait)
			select {
			case w, more := <-s.reqs:
				if more {
					queued = append(queued, w)
				}
				open = more
			case <-linger.C:
			}
		} else if open {
			w, more := <-s.reqs
			if more {
				queued = append(queued, w)
			}
			open = more
		}
	drain:
		for open {
			select {
			case w2, ok := <-s.reqs:
				if !ok {
					open = false
					break drain
				}
				queued = append(queued, w2)
			default:
				break drain
			}
		}
		batch = deps.ready(queued, batch[:0], time.Now(), !open)
		if len(batch) == 0 {
			if !open && !deps.holding() {
				return
			}
			continue
		}
		errs = slices.Grow(errs[:0], len(batch))[:len(batch)]
		snapped := s.commit(batch, errs)
		deps.committed(batch, errs)
		for i, w := range batch {
			if w.Done != nil {
				w.Done(errs[i])
			}
		}
		clear(batch)
		s.maintain(snapped)
	}
}

// commit writes a batch as one record and syncs it. errs[i] receives the
// outcome of batch[i]. It reports whether a snapshot was written.
func (s *LogStore) commit(batch []*LogWrite, errs []error) (snapped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := &walpb.Record{}
	var applied []int
	for i, w := range batch {
		errs[i] = s.err
		if s.err != nil {
			continue
		}
		gw, err := encodeWrite(w, false)
		if err == nil {
			gw.SnapReplacesLog, err = s.apply(w, false, false)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		rec.Writes = append(rec.Writes, gw)
		applied = append(applied, i)
		snapped = snapped || w.Snap != nil
	}
	if len(rec.Writes) == 0 {
		return false
	}
	if err := s.appendRecord(rec); err != nil {
		// The file may now end in part of a record and the memory is ahead of
		// it: take no more writes (a restart replays what is durable).
		s.err = fmt.Errorf("raft log store %s failed: %w", s.dir, err)
		s.log.Error("raft log write failed; the log store takes no more writes", zap.Error(err))
		for _, i := range applied {
			errs[i] = s.err
		}
	}
	return snapped
}

func (s *LogStore) appendRecord(rec *walpb.Record) error {
	buf, err := appendWALRecord(s.buf, rec)
	if err != nil {
		return err
	}
	if cap(buf) <= 1<<20 {
		s.buf = buf
	}
	if _, err := s.f.Write(buf); err != nil {
		return err
	}
	s.size += int64(len(buf))
	if s.noSync.Load() {
		return nil
	}
	s.syncs.Add(1)
	return fdatasync(s.f)
}

// UnsafeNoSync stops syncing the log (etcd's --unsafe-no-fsync): writes are
// reported durable once in the OS, so a power loss can lose acknowledged
// writes (a killed process cannot). For tests and throwaway clusters.
func (s *LogStore) UnsafeNoSync() { s.noSync.Store(true) }

func encodeWrite(w *LogWrite, snapReplaces bool) (*walpb.GroupWrite, error) {
	gw := &walpb.GroupWrite{Group: w.Group, Delete: w.del, SnapReplacesLog: snapReplaces}
	var err error
	if w.Snap != nil {
		if gw.Snap, err = marshalPresent(w.Snap); err != nil {
			return nil, err
		}
	}
	if w.State != nil {
		if gw.State, err = marshalPresent(w.State); err != nil {
			return nil, err
		}
	}
	if len(w.Entries) > 0 {
		gw.Entries = make([][]byte, len(w.Entries))
		for i, e := range w.Entries {
			if gw.Entries[i], err = proto.Marshal(e); err != nil {
				return nil, err
			}
		}
	}
	return gw, nil
}

// marshalPresent encodes m as a non-nil slice: for the optional bytes fields
// of walpb, nil means absent, while an empty message encodes to nothing.
func marshalPresent(m proto.Message) ([]byte, error) {
	b, err := proto.Marshal(m)
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

// maintain rolls to a new segment when the current one is full and deletes
// the old segments no group needs any more.
func (s *LogStore) maintain(snapped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	rolled := false
	if s.size >= walSegmentSize {
		if err := s.roll(); err != nil {
			s.err = fmt.Errorf("raft log store %s failed: %w", s.dir, err)
			s.log.Error("raft log segment roll failed; the log store takes no more writes", zap.Error(err))
			return
		}
		rolled = true
	}
	if snapped || rolled {
		s.deleteOldSegments()
	}
}

// roll starts a new segment whose header record holds every live group's
// HardState and snapshot metadata.
func (s *LogStore) roll() error {
	hdr := &walpb.Record{Header: true}
	ids := make([]uint64, 0, len(s.groups))
	for id := range s.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		g := s.groups[id]
		gw, err := encodeWrite(&LogWrite{Group: id, State: g.state, Snap: g.snap}, false)
		if err != nil {
			return err
		}
		hdr.Writes = append(hdr.Writes, gw)
	}
	// The full segment ends with its last record from now on (only the last
	// segment is followed by preallocated zeros).
	if err := s.f.Truncate(s.size); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	seq := s.segs[len(s.segs)-1].seq + 1
	f, size, err := createWALSegment(s.dir, seq, hdr)
	if err != nil {
		return err
	}
	if err := s.f.Close(); err != nil {
		s.log.Warn("closing raft log segment", zap.Error(err))
	}
	s.f, s.size = f, size
	s.segs = append(s.segs, &walSegment{seq: seq, maxIndex: map[uint64]uint64{}})
	return nil
}

// deleteOldSegments deletes segments from the oldest on while no live group
// needs the entries they hold. Segments are only ever deleted oldest first,
// each removal made durable before the next, so the live ones stay
// consecutive.
func (s *LogStore) deleteOldSegments() {
	for len(s.segs) > 1 && s.segmentDead(s.segs[0]) {
		path := filepath.Join(s.dir, walSegmentName(s.segs[0].seq))
		err := os.Remove(path)
		if err == nil {
			err = syncDir(s.dir)
		}
		if err != nil {
			s.log.Warn("cannot delete old raft log segment", zap.String("segment", path), zap.Error(err))
			return
		}
		s.segs = s.segs[1:]
	}
}

func (s *LogStore) segmentDead(seg *walSegment) bool {
	for id, maxIndex := range seg.maxIndex {
		if g := s.groups[id]; g != nil && maxIndex > g.snap.GetIndex() {
			return false
		}
	}
	return true
}

// GroupLog is what a group finds in the log store at start.
type GroupLog struct {
	State   *raftpb.HardState
	Snap    *raftpb.SnapshotMetadata
	Entries []*raftpb.Entry
}

// Load returns a group's persisted log. A group never written returns an
// empty GroupLog (Snap.Index == 0). The entries are shared with the store
// and must not be modified.
func (s *LogStore) Load(group uint64) (*GroupLog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	g := s.groups[group]
	if g == nil {
		return &GroupLog{State: &raftpb.HardState{}, Snap: &raftpb.SnapshotMetadata{}}, nil
	}
	return &GroupLog{
		State:   proto.Clone(g.state).(*raftpb.HardState),
		Snap:    proto.Clone(g.snap).(*raftpb.SnapshotMetadata),
		Entries: slices.Clone(g.ents),
	}, nil
}

// Truncate drops the entries of a group up to and including index. The
// caller has made sure the state machine is durable past index and has
// recorded snapshot metadata at or above it. That snapshot metadata has
// already dropped the entries, in memory and on replay (it is what makes the
// truncation durable), so there is nothing left to do but check.
func (s *LogStore) Truncate(group, index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[group]; g != nil && index > g.snap.GetIndex() {
		return fmt.Errorf("raft group %d: truncate to index %d, past its snapshot at %d", group, index, g.snap.GetIndex())
	}
	return nil
}

// DeleteGroup removes every trace of a group (after a merge or a move away),
// durably.
func (s *LogStore) DeleteGroup(group uint64) error {
	done := make(chan error, 1)
	s.Submit(&LogWrite{Group: group, del: true, Done: func(err error) { done <- err }})
	return <-done
}
