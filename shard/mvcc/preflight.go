package mvcc

// Badger opens its tables in background goroutines during Open, and a damaged table makes one
// of them panic, which no recover in the caller can catch: the whole process dies. Before
// badger.Open we therefore read the manifest and open every table it lists ourselves, in this
// goroutine and under recover, so damage becomes an error.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// checkDir refuses a non-empty directory that does not look like a badger DB.
func checkDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mvcc: open %s: %w", dir, err)
	}
	if len(ents) == 0 {
		return nil
	}
	for _, e := range ents {
		if e.Name() == badger.ManifestFilename && e.Type().IsRegular() {
			return nil
		}
	}
	return fmt.Errorf("%w: %s holds %q and no badger manifest", ErrNotStore, dir, ents[0].Name())
}

// preflight opens the manifest and every table it lists, turning panics into errors.
func preflight(bo badger.Options) error {
	path := filepath.Join(bo.Dir, badger.ManifestFilename)
	fp, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new DB
	}
	if err != nil {
		return fmt.Errorf("mvcc: open %s: %w", bo.Dir, err)
	}
	var mf badger.Manifest
	err = guard("read manifest", func() error {
		var err error
		mf, _, err = badger.ReplayManifestFile(fp, bo.ExternalMagicVersion, bo)
		return err
	})
	_ = fp.Close()
	if err != nil {
		return fmt.Errorf("mvcc: open %s: damaged manifest: %w", bo.Dir, err)
	}
	for id, tm := range mf.Tables {
		if tm.KeyID != 0 {
			continue // encrypted; we never write these, and cannot check them without the key
		}
		name := table.NewFilename(id, bo.Dir)
		err := guard("open table", func() error {
			f, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
			if err != nil {
				return err
			}
			t, err := table.OpenTable(f, table.Options{
				ReadOnly:    true,
				BlockSize:   bo.BlockSize,
				Compression: tm.Compression,
				ChkMode:     bo.ChecksumVerificationMode,
			})
			if err != nil {
				return err
			}
			return t.MmapFile.Close(-1)
		})
		if err != nil {
			return fmt.Errorf("mvcc: open %s: damaged table %s: %w", bo.Dir, filepath.Base(name), err)
		}
	}
	return nil
}

// guard runs fn, converting a panic into an error.
func guard(what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: panic: %v", what, r)
		}
	}()
	return fn()
}
