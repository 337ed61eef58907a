//go:build !unix

package actors

import (
	"os"
	"path/filepath"
)

// lockWALDir only creates the lock file: there is no advisory lock here.
func lockWALDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, walLockName), os.O_RDWR|os.O_CREATE, 0o600)
}
