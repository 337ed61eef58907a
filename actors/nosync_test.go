package actors

import (
	"testing"

	"go.uber.org/zap"
)

// TestUnsafeNoSync: with --unsafe-no-fsync the log issues no fdatasync,
// and what was written still reads back after a clean reopen.
func TestUnsafeNoSync(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		dir := t.TempDir()
		s, err := OpenLogStore(dir, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if noSync {
			s.UnsafeNoSync()
		}
		for i := uint64(1); i <= 5; i++ {
			done := make(chan error, 1)
			s.Submit(&LogWrite{Group: 3, Entries: entryAt(i), Done: func(err error) { done <- err }})
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		syncs := s.syncs.Load()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if noSync && syncs != 0 || !noSync && syncs < 5 {
			t.Fatalf("noSync=%v: %d fdatasyncs for 5 writes", noSync, syncs)
		}
		s, err = OpenLogStore(dir, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		gl, err := s.Load(3)
		s.Close()
		if err != nil || len(gl.Entries) != 5 {
			t.Fatalf("noSync=%v: reopened with %d entries, err %v", noSync, len(gl.Entries), err)
		}
	}
}
