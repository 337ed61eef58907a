//go:build !linux

package actors

import "os"

// fdatasync makes the data appended to f durable (a full fsync here).
func fdatasync(f *os.File) error { return f.Sync() }

// preallocate does nothing here: the file grows as it is written.
func preallocate(f *os.File, size int64) error { return nil }
