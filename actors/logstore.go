package actors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// LogStore is the node-level Raft log of every group on this node: entries,
// HardState and snapshot metadata, keyed by group id. It is separate from
// the state machine (see shard/mvcc) so that log churn does not disturb the
// MVCC data.
//
// Layout: 'e' group(8) index(8) → entry; 'h' group(8) → HardState;
// 's' group(8) → snapshot metadata (the log starts after it).
type LogStore struct {
	db  *badger.DB
	log *zap.Logger

	reqs chan *LogWrite
	done chan struct{}

	mu   sync.Mutex
	last map[uint64]uint64 // last persisted index per group, to drop overwritten suffixes
}

// LogWrite is one group's Ready to persist.
type LogWrite struct {
	Group   uint64
	State   *raftpb.HardState // written when non-nil
	Entries []*raftpb.Entry
	Snap    *raftpb.SnapshotMetadata // written (and older entries dropped) when non-nil
	// Done is called from the writer goroutine once the write is durable.
	Done func(error)
}

// OpenLogStore opens (creating) the log store in dir.
func OpenLogStore(dir string, lg *zap.Logger) (*LogStore, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(nil).
		WithNumVersionsToKeep(1).
		WithValueThreshold(1 << 10).
		WithMemTableSize(64 << 20)
	db, err := openBadger(opts)
	if err != nil {
		return nil, fmt.Errorf("open raft log store %s: %w", dir, err)
	}
	s := &LogStore{db: db, log: lg, reqs: make(chan *LogWrite, 4096), done: make(chan struct{}), last: map[uint64]uint64{}}
	go s.writer()
	return s, nil
}

// openBadger opens a badger DB and turns a panic inside badger (a damaged
// directory) into an error.
func openBadger(opts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	return badger.Open(opts)
}

// Close stops the writer and closes the DB. Pending writes are finished first.
func (s *LogStore) Close() error {
	close(s.reqs)
	<-s.done
	return s.db.Close()
}

// Submit queues a write; w.Done is called when it is durable.
func (s *LogStore) Submit(w *LogWrite) { s.reqs <- w }

// writer drains the queue: everything queued at once goes into one badger
// commit, i.e. one fsync.
func (s *LogStore) writer() {
	defer close(s.done)
	for w := range s.reqs {
		batch := []*LogWrite{w}
	drain:
		for len(batch) < 1024 {
			select {
			case w2, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, w2)
			default:
				break drain
			}
		}
		err := s.write(batch)
		for _, w := range batch {
			if w.Done != nil {
				w.Done(err)
			}
		}
	}
}

// write commits a batch atomically in one badger transaction (one fsync). A
// batch too big for one transaction is committed one group write at a time,
// each still atomic.
func (s *LogStore) write(batch []*LogWrite) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.db.Update(func(txn *badger.Txn) error { return s.stage(txn, batch) })
	if errors.Is(err, badger.ErrTxnTooBig) && len(batch) > 1 {
		for _, w := range batch {
			if err := s.write1(w); err != nil {
				return err
			}
		}
		return nil
	}
	if err == nil {
		s.noteLast(batch)
	}
	return err
}

func (s *LogStore) write1(w *LogWrite) error {
	err := s.db.Update(func(txn *badger.Txn) error { return s.stage(txn, []*LogWrite{w}) })
	if err == nil {
		s.noteLast([]*LogWrite{w})
	}
	return err
}

func (s *LogStore) noteLast(batch []*LogWrite) {
	for _, w := range batch {
		if n := len(w.Entries); n > 0 {
			s.last[w.Group] = w.Entries[n-1].GetIndex()
		}
	}
}

func (s *LogStore) stage(txn *badger.Txn, batch []*LogWrite) error {
	last := map[uint64]uint64{}
	for _, w := range batch {
		if w.Snap != nil {
			b, err := proto.Marshal(w.Snap)
			if err != nil {
				return err
			}
			if err := txn.Set(groupKey('s', w.Group), b); err != nil {
				return err
			}
		}
		if n := len(w.Entries); n > 0 {
			prevLast, ok := last[w.Group]
			if !ok {
				prevLast = s.last[w.Group]
			}
			// Raft may replace a suffix of the log: drop what lies beyond.
			end := w.Entries[n-1].GetIndex()
			for i := end + 1; i <= prevLast; i++ {
				if err := txn.Delete(entryKey(w.Group, i)); err != nil {
					return err
				}
			}
			for _, e := range w.Entries {
				b, err := proto.Marshal(e)
				if err != nil {
					return err
				}
				if err := txn.Set(entryKey(w.Group, e.GetIndex()), b); err != nil {
					return err
				}
			}
			last[w.Group] = end
		}
		if w.State != nil {
			b, err := proto.Marshal(w.State)
			if err != nil {
				return err
			}
			if err := txn.Set(groupKey('h', w.Group), b); err != nil {
				return err
			}
		}
	}
	return nil
}

// GroupLog is what a group finds in the log store at start.
type GroupLog struct {
	State   *raftpb.HardState
	Snap    *raftpb.SnapshotMetadata
	Entries []*raftpb.Entry
}

// Load reads a group's persisted log. A group never written returns an
// empty GroupLog (Snap.Index == 0).
func (s *LogStore) Load(group uint64) (*GroupLog, error) {
	gl := &GroupLog{State: &raftpb.HardState{}, Snap: &raftpb.SnapshotMetadata{}}
	err := s.db.View(func(txn *badger.Txn) error {
		if err := getProto(txn, groupKey('h', group), gl.State); err != nil {
			return err
		}
		if err := getProto(txn, groupKey('s', group), gl.Snap); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: groupKey('e', group)})
		defer it.Close()
		for it.Seek(entryKey(group, gl.Snap.GetIndex()+1)); it.Valid(); it.Next() {
			e := &raftpb.Entry{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, e) }); err != nil {
				return err
			}
			if n := len(gl.Entries); n > 0 && e.GetIndex() != gl.Entries[n-1].GetIndex()+1 {
				return fmt.Errorf("raft log of group %d has a hole before index %d", group, e.GetIndex())
			}
			gl.Entries = append(gl.Entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if n := len(gl.Entries); n > 0 {
		s.last[group] = gl.Entries[n-1].GetIndex()
	}
	s.mu.Unlock()
	return gl, nil
}

// Truncate drops the entries of a group up to and including index. The
// caller has made sure the state machine is durable past index and has
// recorded snapshot metadata at or above it.
func (s *LogStore) Truncate(group, index uint64) error {
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: groupKey('e', group)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			if binary.BigEndian.Uint64(k[9:]) > index {
				break
			}
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// DeleteGroup removes every trace of a group (after a merge or a move away).
func (s *LogStore) DeleteGroup(group uint64) error {
	for _, p := range []byte{'e', 'h', 's'} {
		if err := s.db.DropPrefix(groupKey(p, group)); err != nil {
			return err
		}
	}
	s.mu.Lock()
	delete(s.last, group)
	s.mu.Unlock()
	return nil
}

func getProto(txn *badger.Txn, key []byte, m proto.Message) error {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error { return proto.Unmarshal(b, m) })
}

func groupKey(prefix byte, group uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], group)
	return k
}

func entryKey(group, index uint64) []byte {
	k := make([]byte, 17)
	k[0] = 'e'
	binary.BigEndian.PutUint64(k[1:], group)
	binary.BigEndian.PutUint64(k[9:], index)
	return k
}
