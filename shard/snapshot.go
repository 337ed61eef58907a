package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// Snapshots of a range, for a replica its leader's log no longer reaches.
//
// A range replica's state is its MVCC data (every version of the span's
// keys and their change-index records) at its applied revision, plus the
// intents pending in its log. A snapshot carries the data at the applied
// revision and is taken at the log's low-water index (below which no
// intent is pending): the receiver gets the pending intents again from the
// entries after it. Those entries' decisions at or below the snapshot's
// revision are already in its data (the leader may apply a decision before
// its log holds it) and are skipped; the others apply as usual.
//
// Installing replaces the span's records, which takes several badger
// batches. So the received snapshot is first written to a file (synced),
// and a marker record says an install is under way: a replica that
// restarts with the marker installs the file again, and records the
// snapshot in its log if the crash came before that. Order: file, marker,
// records, log, state (and marker gone), file gone.

const snapMagic = "MSNP1"

func importKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("imp/"), id)
}

// makeSnapshot is the group's snapshot maker (actors.GroupConfig.Snapshot).
func (a *shardActor) makeSnapshot() (*raftpb.Snapshot, error) {
	index := min(a.group.Applied(), a.lowWaterNow())
	// The span goes with it: the receiver may not know the range's current
	// span yet (its oracle replica may be behind a split). Only what this
	// replica owns now (see ownSpan).
	start, end := a.ownSpan(a.desc.Start, a.desc.End)
	data := encodeSnapshotHeader(a.appliedRev, start, end)
	n := 0
	err := a.cfg.Store.View(func(r *mvcc.Reader) error {
		return r.ExportSpan(start, end, func(rec mvcc.SpanRecord) error {
			data = appendSnapshotRecord(data, rec)
			n++
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	a.lg.Info("sending a snapshot of the range", zap.Uint64("index", index), zap.Int64("revision", a.appliedRev), zap.Int("records", n), zap.Int("bytes", len(data)),
		zap.ByteString("start", start), zap.ByteString("end", end))
	return a.group.SnapshotAt(index, data)
}

// encodeSnapshotHeader begins a snapshot's data: the magic, the revision
// and the span [start, end); appendSnapshotRecord adds each record.
func encodeSnapshotHeader(rev int64, start, end []byte) []byte {
	data := append([]byte(snapMagic), make([]byte, 8)...)
	binary.BigEndian.PutUint64(data[len(snapMagic):], uint64(rev))
	data = binary.AppendUvarint(data, uint64(len(start)))
	data = append(data, start...)
	data = binary.AppendUvarint(data, uint64(len(end)))
	return append(data, end...)
}

func appendSnapshotRecord(data []byte, rec mvcc.SpanRecord) []byte {
	data = binary.AppendUvarint(data, uint64(len(rec.Key)))
	data = append(data, rec.Key...)
	data = binary.AppendUvarint(data, uint64(len(rec.Value)))
	data = append(data, rec.Value...)
	return append(data, rec.Meta)
}

// rangeSnapshot is a decoded snapshot: the span [start, end), its records
// and the revision they hold.
type rangeSnapshot struct {
	rev        int64
	start, end []byte
	recs       []mvcc.SpanRecord
}

// decodeSnapshot decodes a snapshot's data.
func decodeSnapshot(data []byte) (*rangeSnapshot, error) {
	if len(data) < len(snapMagic)+8 || string(data[:len(snapMagic)]) != snapMagic {
		return nil, errors.New("shard: not a range snapshot")
	}
	rs := &rangeSnapshot{rev: int64(binary.BigEndian.Uint64(data[len(snapMagic):]))}
	rest := data[len(snapMagic)+8:]
	field := func() ([]byte, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || uint64(len(rest)-k) < n {
			return nil, errors.New("shard: corrupt range snapshot")
		}
		b := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return b, nil
	}
	var err error
	if rs.start, err = field(); err != nil {
		return nil, err
	}
	if rs.end, err = field(); err != nil {
		return nil, err
	}
	for len(rest) > 0 {
		key, err := field()
		if err != nil {
			return nil, err
		}
		val, err := field()
		if err != nil {
			return nil, err
		}
		if len(rest) < 1 {
			return nil, errors.New("shard: corrupt range snapshot")
		}
		rs.recs = append(rs.recs, mvcc.SpanRecord{Key: key, Value: val, Meta: rest[0]})
		rest = rest[1:]
	}
	return rs, nil
}

// snapFile is where a snapshot being installed is kept.
func (a *shardActor) snapFile(id uint64) string {
	return filepath.Join(a.cfg.SnapDir, fmt.Sprintf("range-%d.snap", id))
}

// restoreSnapshot replaces the span's records with the snapshot's, under
// the install marker (actors.GroupConfig.Restore).
func (a *shardActor) restoreSnapshot(snap *raftpb.Snapshot) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return err
	}
	if err := writeFileSync(a.snapFile(a.desc.Id), b); err != nil {
		return err
	}
	if err := a.cfg.Store.Update(func(w *mvcc.Writer) error { return w.SetMeta(importKey(a.desc.Id), []byte{1}) }); err != nil {
		return err
	}
	return a.importSnapshot(snap)
}

// importSnapshot replaces the span's records with the snapshot's.
func (a *shardActor) importSnapshot(snap *raftpb.Snapshot) error {
	rs, err := decodeSnapshot(snap.GetData())
	if err != nil {
		return err
	}
	// Only the part of the span this replica owns now: a leader that had
	// not yet followed a split sends the other side's keys too, which
	// here belong to that range's replica (it may hold newer data) and
	// must not be replaced.
	start, end := a.ownSpan(rs.start, rs.end)
	if err := a.clipOutside(start, end); err != nil {
		return err
	}
	recs := make([]mvcc.SpanRecord, 0, len(rs.recs))
	for _, rec := range rs.recs {
		if rec.InSpan(start, end) {
			recs = append(recs, rec)
		}
	}
	// Replaced in place, so that a read on this member at a revision both
	// sides hold (another range's replica may serve the span until this
	// one's snapshot is recorded) never misses a record.
	if err := a.cfg.Store.ReplaceSpan(start, end, recs); err != nil {
		return err
	}
	a.lg.Info("installed a snapshot of the range", zap.Uint64("index", snap.GetMetadata().GetIndex()), zap.Int64("revision", rs.rev),
		zap.Int("records", len(recs)), zap.Int("records-sent", len(rs.recs)), zap.ByteString("start", start), zap.ByteString("end", end))
	return nil
}

// ownSpan clips [start, end) to the span this replica owns now: both its
// own span and the range table's (either may follow a split before the
// other does). End empty means no upper bound; an empty result has
// start >= end.
func (a *shardActor) ownSpan(start, end []byte) ([]byte, []byte) {
	clipTo := func(d *raftcmdpb.RangeDesc) {
		if d == nil {
			return
		}
		if bytes.Compare(d.Start, start) > 0 {
			start = d.Start
		}
		if len(d.End) > 0 && (len(end) == 0 || bytes.Compare(d.End, end) < 0) {
			end = d.End
		}
	}
	clipTo(a.desc)
	clipTo(a.tableDesc())
	return start, end
}

// snapshotRestored takes the snapshot's point as the replica's state, now
// that the log records it (actors.GroupConfig.Restored).
func (a *shardActor) snapshotRestored(snap *raftpb.Snapshot) {
	rs, err := decodeSnapshot(snap.GetData())
	if err != nil {
		a.lg.Fatal("shard: restored snapshot", zap.Error(err))
	}
	rev := rs.rev
	index := snap.GetMetadata().GetIndex()
	// Whatever the replica held pending came from the log it replaced.
	for txn, in := range a.intents {
		if in.applied != nil {
			in.applied <- Applied{Err: ErrLeaderChanged}
		}
		delete(a.intents, txn)
	}
	a.perEntry = map[uint64]int{}
	a.decided = nil
	a.appliedRev = rev
	if err := a.finishImport(index); err != nil {
		a.lg.Fatal("shard: recording a restored snapshot", zap.Error(err))
	}
	if err := a.buildLeaseIndex(); err != nil {
		a.lg.Fatal("shard: lease index after a snapshot", zap.Error(err))
	}
	a.handle.index.Store(index)
	a.handle.setApplied(a.appliedRev)
	if a.cfg.OnApplied != nil {
		a.cfg.OnApplied()
	}
}

// finishImport records the installed state and ends the install.
func (a *shardActor) finishImport(index uint64) error {
	err := a.cfg.Store.Update(func(w *mvcc.Writer) error {
		if err := w.SetMeta(stateKey(a.cfg.Desc.Id), encodeState(a.appliedRev, index)); err != nil {
			return err
		}
		return w.DeleteMeta(importKey(a.cfg.Desc.Id))
	})
	if err != nil {
		return err
	}
	if err := os.Remove(a.snapFile(a.cfg.Desc.Id)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// resumeImport finishes, at start, an install a crash cut short: the
// records again from the kept file, the log's record of the snapshot if it
// is missing, and the state.
func (a *shardActor) resumeImport() error {
	var marked bool
	err := a.cfg.Store.View(func(r *mvcc.Reader) error {
		b, err := r.Meta(importKey(a.cfg.Desc.Id))
		marked = len(b) > 0
		return err
	})
	if err != nil || !marked {
		return err
	}
	b, err := os.ReadFile(a.snapFile(a.cfg.Desc.Id))
	if err != nil {
		return fmt.Errorf("resuming a snapshot install: %w", err)
	}
	snap := &raftpb.Snapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		return fmt.Errorf("resuming a snapshot install: %w", err)
	}
	a.lg.Warn("resuming a snapshot install a restart cut short", zap.Uint64("index", snap.GetMetadata().GetIndex()))
	a.desc = a.cfg.Desc
	if err := a.importSnapshot(snap); err != nil {
		return err
	}
	gl, err := a.cfg.Logs.Load(a.cfg.Desc.Id)
	if err != nil {
		return err
	}
	if gl.Snap.GetIndex() < snap.GetMetadata().GetIndex() {
		done := make(chan error, 1)
		a.cfg.Logs.Submit(&actors.LogWrite{Group: a.cfg.Desc.Id, Snap: snap.GetMetadata(), Done: func(err error) { done <- err }})
		if err := <-done; err != nil {
			return err
		}
	}
	rs, err := decodeSnapshot(snap.GetData())
	if err != nil {
		return err
	}
	a.appliedRev = rs.rev
	return a.finishImport(snap.GetMetadata().GetIndex())
}

// writeFileSync writes a file and makes it durable.
func writeFileSync(name string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// clipToRange clips an op's span (etcd's key/range_end) to the range's
// span. In a cluster a replica applies only its range's keys: one behind a
// split (restarted with the new span) must not write the new range's keys,
// which the new range's own snapshot brings.
func clipToRange(d *raftcmdpb.RangeDesc, key, end []byte) (k, e []byte, ok bool) {
	sp := kvrules.SpanOf(key, end)
	if sp.Single {
		return key, end, revision.Contains(d, key)
	}
	if sp.Empty() {
		return nil, nil, false
	}
	start := sp.Start
	if bytes.Compare(start, d.Start) < 0 {
		start = d.Start
	}
	hi := sp.End // nil: unbounded
	if len(d.End) > 0 && (hi == nil || bytes.Compare(d.End, hi) < 0) {
		hi = d.End
	}
	if len(start) == 0 {
		start = []byte{0}
	}
	if hi == nil {
		return start, []byte{0}, true
	}
	return start, hi, bytes.Compare(start, hi) < 0
}
