//go:build unix

package actors

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockWALDir takes an exclusive lock on dir, so two processes cannot append
// to the same log. Closing the returned file releases it.
func lockWALDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, walLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("raft log %s is in use by another process: %w", dir, err)
	}
	return f, nil
}
