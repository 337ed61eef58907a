package mvcc

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// Errors returned by the store. Match them with errors.Is.
var (
	// ErrCompacted: the requested revision is below the compacted revision.
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	// ErrNotStore: Open was pointed at a directory that holds something other than a Mosaic store.
	ErrNotStore = errors.New("mvcc: directory is not a Mosaic MVCC store")
	// ErrTxnTooBig: one Update wrote more than badger can commit in one batch.
	ErrTxnTooBig = errors.New("mvcc: update too large for one transaction")
	// ErrKeyNotFound: Put with IgnoreValue or IgnoreLease on a key that has no live version.
	ErrKeyNotFound = errors.New("mvcc: key not found")
	// ErrRevision: a write does not move a key forward in revision order (a duplicate key at one
	// revision, or a replayed older revision); a caller bug, reported instead of corrupting history.
	ErrRevision = errors.New("mvcc: write at a revision not above the key's newest version")
)

// DefaultMemTableSize bounds one Update: badger commits at most 15% of a memtable in one
// transaction, so 64 MiB gives ~9.6 MiB per Update — far above etcd's 1.5 MiB request limit
// plus the change-index and tombstone overhead of one request.
const DefaultMemTableSize = 64 << 20

// Options configures a Store.
type Options struct {
	// Logger receives badger's and the store's logs; nil means no logging.
	Logger *zap.Logger
	// InMemory keeps everything in memory (tests); dir is ignored.
	InMemory bool
	// SyncWrites fsyncs every Update before it returns. Without it, call Sync to make committed
	// Updates durable (group commit).
	SyncWrites bool
	// MemTableSize overrides DefaultMemTableSize when > 0.
	MemTableSize int64
	// NoChangeFeed: keep no memory of the latest changes (RecentChanges
	// always answers false), for a store whose watch service never asks.
	NoChangeFeed bool
}

// Store is the node's MVCC state on one badger DB. It is safe for concurrent use; callers must
// not run concurrent Updates that write the same keys (the shard actor serializes its writes and
// shards own disjoint keys), because badger conflict detection is off for speed.
type Store struct {
	db     *badger.DB
	logger *zap.Logger

	// compacted mirrors keyCompacted; it is raised only after the record is durable and before
	// any physical removal, so a reader that loads it after opening its snapshot never sees
	// missing history without also seeing ErrCompacted.
	compacted atomic.Int64

	// maxValue is the largest encoded value badger accepts (in-memory mode has no value log).
	maxValue int64

	compactMu   sync.Mutex // serializes Compact
	compactDone int64      // highest revision physically compacted; guarded by compactMu

	feed   *feed   // the latest revisions' changes, for watch (feed.go)
	latest *latest // recently written keys' newest versions, for Put (latest.go)
}

// Open opens (or creates) the store in dir. A non-empty dir that is not a Mosaic store, or a
// damaged one, yields an error (ErrNotStore for foreign content).
func Open(dir string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	var bo badger.Options
	if opts.InMemory {
		bo = badger.DefaultOptions("").WithInMemory(true)
	} else {
		if dir == "" {
			return nil, errors.New("mvcc: empty directory")
		}
		if err := checkDir(dir); err != nil {
			return nil, err
		}
		bo = badger.DefaultOptions(dir)
	}
	mt := opts.MemTableSize
	if mt <= 0 {
		mt = DefaultMemTableSize
	}
	bo = bo.WithLogger(badgerLogger{logger.Sugar()}).
		WithSyncWrites(opts.SyncWrites).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithMemTableSize(mt).
		WithNumVersionsToKeep(1)
	// Badger refuses a value threshold above its per-transaction batch size (15% of a memtable).
	if maxBatch := mt * 15 / 100; bo.ValueThreshold > maxBatch {
		bo = bo.WithValueThreshold(maxBatch)
	}

	db, err := openBadger(bo)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, logger: logger, maxValue: math.MaxInt64, latest: newLatest()}
	if !opts.NoChangeFeed {
		s.feed = newFeed()
	}
	if opts.InMemory {
		// Without a value log, badger keeps values only up to the threshold.
		s.maxValue = bo.ValueThreshold
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mvcc: open %s: %w", dir, err)
	}
	if err := s.latest.load(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mvcc: open %s: %w", dir, err)
	}
	if s.feed != nil {
		// The feed holds nothing written before now.
		last, err := s.lastChangeRev()
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("mvcc: open %s: %w", dir, err)
		}
		s.feed.reset(last)
	}
	return s, nil
}

// lastChangeRev is the highest revision of the change index (0 if empty).
func (s *Store) lastChangeRev() (int64, error) {
	var last int64
	err := s.View(func(r *Reader) error {
		it := r.txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte{nsChange}})
		defer it.Close()
		it.Seek([]byte{nsChange + 1})
		if !it.Valid() {
			return nil
		}
		rev, _, _, err := splitChangeKey(it.Item().Key())
		last = rev
		return err
	})
	return last, err
}

// openBadger opens badger, turning damage into errors: see preflight.go, and a panic inside
// badger.Open's own goroutine is recovered too.
func openBadger(bo badger.Options) (db *badger.DB, err error) {
	if !bo.InMemory {
		if err := preflight(bo); err != nil {
			return nil, err
		}
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("mvcc: open %s: badger panicked (damaged store?): %v", bo.Dir, r)
		}
	}()
	db, err = badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("mvcc: open %s: %w", bo.Dir, err)
	}
	return db, nil
}

// init checks the format marker (writing it into a brand-new DB) and loads the compaction state.
func (s *Store) init() error {
	var marker []byte
	var empty bool
	var compacted, done int64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyFormat)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			empty = !it.Valid()
			it.Close()
			return nil
		case err != nil:
			return err
		}
		if marker, err = item.ValueCopy(nil); err != nil {
			return err
		}
		if compacted, err = getInt(txn, keyCompacted); err != nil {
			return err
		}
		done, err = getInt(txn, keyCompactDone)
		return err
	})
	if err != nil {
		return err
	}
	if marker == nil {
		if !empty {
			return fmt.Errorf("%w: badger DB without the %s marker", ErrNotStore, formatMarker)
		}
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFormat, formatMarker) }); err != nil {
			return err
		}
		return s.db.Sync()
	}
	if string(marker) != string(formatMarker) {
		return fmt.Errorf("%w: unsupported format %q", ErrNotStore, marker)
	}
	s.compacted.Store(compacted)
	s.compactDone = done
	if done < compacted {
		s.logger.Info("mvcc: physical compaction unfinished; the next Compact call resumes it",
			zap.Int64("compacted", compacted), zap.Int64("done", done))
	}
	return nil
}

func getInt(txn *badger.Txn, key []byte) (int64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v int64
	err = item.Value(func(b []byte) error {
		var err error
		v, err = u64(b)
		return err
	})
	return v, err
}

// Close closes the DB. Pending Updates must have returned.
func (s *Store) Close() error { return s.db.Close() }

// Sync makes every committed Update durable.
func (s *Store) Sync() error {
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("mvcc: sync: %w", err)
	}
	return nil
}

// Update runs fn in one atomic badger transaction. If fn returns an error nothing is written and
// that error is returned. The Writer must not be used after fn returns.
func (s *Store) Update(fn func(w *Writer) error) error {
	epoch := s.latest.now()
	txn := s.db.NewTransaction(true)
	w := &Writer{Reader: Reader{txn: txn, compacted: s.compacted.Load()}, db: s.db, maxValue: s.maxValue, feedOn: s.feed != nil, latest: s.latest}
	defer func() {
		w.release()
		txn.Discard()
	}()
	if err := fn(w); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return wrapBadger("commit", err)
	}
	s.latest.record(epoch, w.pending)
	s.feed.add(w.written)
	return nil
}

// RecentChanges is Reader.Changes served from memory: the changes of the
// latest revisions, as Updates committed them. It answers false when the
// memory no longer holds (or never held) every change from fromRev on;
// then read the store. The caller must know that every revision up to
// toRev is applied on every range of the span this store holds. The
// returned events are shared: do not modify them.
func (s *Store) RecentChanges(key, end []byte, fromRev, toRev int64, limit int) ([]Change, bool) {
	return s.feed.get(key, end, fromRev, toRev, limit)
}

// View runs fn on a consistent snapshot. The Reader must not be used after fn returns.
func (s *Store) View(fn func(r *Reader) error) error {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	r := &Reader{txn: txn, compacted: s.compacted.Load()}
	return fn(r)
}

func wrapBadger(op string, err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%w: %s: %w", ErrTxnTooBig, op, err)
	}
	return fmt.Errorf("mvcc: %s: %w", op, err)
}

// badgerLogger routes badger's logs to zap. Badger is chatty at info level, so its info goes
// to debug.
type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, a ...any) { b.l.Errorf(trimNL(f), a...) }
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warnf(trimNL(f), a...)
}
func (b badgerLogger) Infof(f string, a ...any)  { b.l.Debugf(trimNL(f), a...) }
func (b badgerLogger) Debugf(f string, a ...any) { b.l.Debugf(trimNL(f), a...) }

func trimNL(s string) string { return strings.TrimRight(s, "\n") }
