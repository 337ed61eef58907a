package mvcc

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, 1, "a", "1")
	put(t, s, 2, "a", "2")
	put(t, s, 3, "b", "3")
	del(t, s, 4, "b", "")
	mustUpdate(t, s, func(w *Writer) error {
		if _, err := w.Put(5, 0, Put{Key: []byte("c"), Value: []byte("5"), Lease: 9}); err != nil {
			return err
		}
		return w.SetMeta([]byte("applied"), []byte{5})
	})
	if err := s.Compact(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir, Options{})
	err = s.View(func(r *Reader) error {
		if r.CompactedRev() != 2 {
			t.Errorf("CompactedRev after reopen = %d, want 2", r.CompactedRev())
		}
		if _, err := r.Range([]byte("a"), nil, 1, ReadOptions{}); !errors.Is(err, ErrCompacted) {
			t.Errorf("Range at 1 after reopen: err %v, want ErrCompacted", err)
		}
		for rev, want := range map[int64]string{
			2: `"a"="2"@2/1/2`,
			3: `"a"="2"@2/1/2 "b"="3"@3/3/1`,
			4: `"a"="2"@2/1/2`,
			5: `"a"="2"@2/1/2 "c"="5"@5/5/1/L9`,
		} {
			res, err := r.Range([]byte("\x00"), []byte("\x00"), rev, ReadOptions{})
			if err != nil {
				return err
			}
			if got := kvString(res.KVs); got != want {
				t.Errorf("Range at %d after reopen = %s, want %s", rev, got, want)
			}
		}
		cs, err := r.Changes([]byte("\x00"), []byte("\x00"), 3, 0, 0)
		if err != nil {
			return err
		}
		if got, want := changesString(cs), `3.0 PUT "b"="3"@3/3/1 | 4.0 DELETE "b"@4/0/0 prev "b"="3"@3/3/1 | 5.0 PUT "c"="5"@5/5/1/L9`; got != want {
			t.Errorf("Changes after reopen:\n got %s\nwant %s", got, want)
		}
		m, err := r.Meta([]byte("applied"))
		if err != nil || len(m) != 1 || m[0] != 5 {
			t.Errorf("meta after reopen = %v, %v", m, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Writes continue after reopen.
	put(t, s, 6, "a", "6")
	res, err := rangeAt(t, s, "a", "", 0, ReadOptions{})
	if err != nil || kvString(res.KVs) != `"a"="6"@6/1/3` {
		t.Errorf("write after reopen: %s, %v", kvString(res.KVs), err)
	}
}

func TestOpenRefusesForeignDirectories(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"foreign files", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "notes.txt"), []byte("hello"))
		}},
		{"etcd data dir", func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "member", "snap"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"badger DB without marker", func(t *testing.T, dir string) {
			db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("someone"), []byte("else")) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			s, err := Open(dir, Options{})
			if !errors.Is(err, ErrNotStore) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open: err %v, want ErrNotStore", err)
			}
		})
	}
}

func TestOpenAcceptsEmptyAndMissingDirs(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "new", "store")} {
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("Open(%s): %v", dir, err)
		}
		put(t, s, 1, "k", "v")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A badger DB with no keys at all (crash between creation and the marker) is adopted.
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open of an empty badger DB: %v", err)
	}
	s.Close()
}

func TestOpenDamagedStoreFailsCleanly(t *testing.T) {
	// Each case damages a freshly closed store's files; Open must return an error, not panic.
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"garbage manifest", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, badger.ManifestFilename), garbage(4096))
		}},
		{"truncated manifest", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, badger.ManifestFilename), []byte("Bdg"))
		}},
		{"garbage key registry", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "KEYREGISTRY"), garbage(64))
		}},
		{"garbage tables", func(t *testing.T, dir string) {
			damageGlob(t, dir, "*.sst")
		}},
		{"garbage value log", func(t *testing.T, dir string) {
			damageGlob(t, dir, "*.vlog")
		}},
		{"garbage tables and value log", func(t *testing.T, dir string) {
			damageGlob(t, dir, "*.sst")
			damageGlob(t, dir, "*.vlog")
		}},
		{"only garbage manifest", func(t *testing.T, dir string) {
			for _, f := range globs(t, dir, "*") {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, filepath.Join(dir, badger.ManifestFilename), garbage(100))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for rev := int64(1); rev <= 50; rev++ {
				put(t, s, rev, strings.Repeat("k", int(rev)), "value")
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tt.damage(t, dir)
			s, err = Open(dir, Options{})
			if err == nil {
				// Badger does not read table contents at open; the damage must surface on read.
				defer s.Close()
				_, err = rangeAt(t, s, "\x00", "\x00", 0, ReadOptions{})
				if err == nil {
					t.Fatal("damaged store opened and read without error")
				}
			}
			t.Logf("error: %v", err)
		})
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func garbage(n int) []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

func globs(t *testing.T, dir, pattern string) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func damageGlob(t *testing.T, dir, pattern string) {
	t.Helper()
	fs := globs(t, dir, pattern)
	if len(fs) == 0 {
		t.Skipf("no %s files to damage", pattern)
	}
	for _, f := range fs {
		// Overwrite the head (all of a small file): headers, footers of small tables, first records.
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		fh, err := os.OpenFile(f, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fh.WriteAt(garbage(int(min(st.Size(), 64<<10))), 0)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// copyDir copies a live store's files, as a kill -9 followed by a restart would find them.
// Badger preallocates large sparse files, so the copy keeps holes as holes.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	for _, f := range globs(t, from, "*") {
		if err := copySparse(f, filepath.Join(to, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
}

func copySparse(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := dst.Truncate(st.Size()); err != nil {
		return err
	}
	const seekData, seekHole = 3, 4 // Linux lseek whence values
	for off := int64(0); off < st.Size(); {
		data, err := src.Seek(off, seekData)
		if err != nil {
			if off == 0 {
				// No SEEK_DATA support, or no data at all: copy everything.
				_, err = io.Copy(io.NewOffsetWriter(dst, 0), io.NewSectionReader(src, 0, st.Size()))
				return err
			}
			return nil // no data after off
		}
		hole, err := src.Seek(data, seekHole)
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.NewOffsetWriter(dst, data), io.NewSectionReader(src, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

func TestCrashCopyRecovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for rev := int64(1); rev <= 20; rev++ {
		put(t, s, rev, "k", strings.Repeat("v", int(rev)))
	}
	mustUpdate(t, s, func(w *Writer) error { return w.SetMeta([]byte("applied"), []byte("20")) })
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}

	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	os.Remove(filepath.Join(crashed, "LOCK"))
	c, err := Open(crashed, Options{})
	if err != nil {
		t.Fatalf("open after simulated crash: %v", err)
	}
	res, err := rangeAt(t, c, "k", "", 0, ReadOptions{})
	if err != nil || len(res.KVs) != 1 || res.KVs[0].Version != 20 {
		t.Errorf("after crash: %s, %v", kvString(res.KVs), err)
	}
	c.Close()

	// A damaged write-ahead log must not crash the process either.
	damaged := t.TempDir()
	copyDir(t, dir, damaged)
	os.Remove(filepath.Join(damaged, "LOCK"))
	damageGlob(t, damaged, "*.mem")
	d, err := Open(damaged, Options{})
	if err == nil {
		_, err = rangeAt(t, d, "\x00", "\x00", 0, ReadOptions{})
		d.Close()
	}
	t.Logf("damaged WAL: %v", err)
}

// reopen closes s and opens the store in dir again, closed when the test
// ends.
func reopen(t *testing.T, s *Store, dir string, opts Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
