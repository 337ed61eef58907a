package mvcc

// Compaction keeps exactly what reads at revisions >= C and watch catch-up from C need:
//
//   - every version newer than C;
//   - for each key, its newest version <= C, unless that version is a tombstone;
//   - change-index entries at revisions >= C (a PUT at C still finds its version; events at C
//     are served without prev_kv, as etcd does).
//
// It works from the change index alone, never scanning data: a change at r2 <= C superseded the
// version named by its prevRev (drop it), and a DELETE change at r2 <= C is itself a tombstone
// (drop it). Processing a change is idempotent, so a crash mid-way is repaired by running the
// sweep again, and changes applied late below C (a lagging replica) are caught by the next sweep
// because every sweep starts from the beginning of the change index.

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// compactBatch bounds the changes processed per badger transaction (each produces up to three
// deletes), keeping every sweep transaction far below badger's batch limit.
const compactBatch = 4096

// Compact makes every revision below rev unreadable (ErrCompacted) and removes the history only
// those revisions could see. The new compacted revision is durable before Compact removes
// anything. Compacting to a revision <= the current one changes nothing, but finishes physical
// removal left unfinished by a crash or a cancelled ctx.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	cur := s.compacted.Load()
	if rev > cur {
		err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyCompacted, be64(rev)) })
		if err != nil {
			return wrapBadger("record compaction", err)
		}
		if err := s.Sync(); err != nil {
			return err
		}
		s.compacted.Store(rev)
		cur = rev
	}
	if s.compactDone >= cur {
		return nil
	}
	removed, err := s.sweep(ctx, cur)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyCompactDone, be64(cur)) }); err != nil {
		return wrapBadger("record compaction", err)
	}
	s.compactDone = cur
	s.logger.Debug("mvcc: compacted", zap.Int64("rev", cur), zap.Int("changes", removed))
	if !s.db.Opts().InMemory {
		// Values above badger's ValueThreshold live in the value log; reclaim what the sweep freed.
		// ErrNoRewrite just means nothing was worth rewriting.
		if err := s.db.RunValueLogGC(0.5); err != nil && !errors.Is(err, badger.ErrNoRewrite) {
			s.logger.Warn("mvcc: value log GC", zap.Error(err))
		}
	}
	return nil
}

// sweep applies the compaction to revision c in bounded transactions, returning the number of
// change entries processed.
func (s *Store) sweep(ctx context.Context, c int64) (int, error) {
	start := []byte{nsChange}
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("mvcc: compaction to %d interrupted: %w", c, err)
		}
		var next []byte
		n := 0
		err := s.db.Update(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsChange}})
			var dels [][]byte
			for it.Seek(start); it.Valid(); it.Next() {
				item := it.Item()
				rev, _, esc, err := splitChangeKey(item.Key())
				if err != nil {
					it.Close()
					return fmt.Errorf("mvcc: change key %q: %w", item.Key(), err)
				}
				if rev > c {
					break
				}
				if n == compactBatch {
					next = item.KeyCopy(nil)
					break
				}
				typ, prevRev, err := changeOf(item)
				if err != nil {
					it.Close()
					return fmt.Errorf("mvcc: change %q: %w", item.Key(), err)
				}
				if prevRev != 0 {
					dels = append(dels, dataKeyFromEsc(esc, prevRev))
				}
				if typ == changeDelete {
					dels = append(dels, dataKeyFromEsc(esc, rev))
				}
				if rev < c {
					dels = append(dels, item.KeyCopy(nil))
				}
				n++
			}
			it.Close()
			for _, k := range dels {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, wrapBadger("compaction sweep", err)
		}
		total += n
		if next == nil {
			return total, nil
		}
		start = next
	}
}
