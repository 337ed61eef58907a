package actors

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync makes the data appended to f durable, with the file size (all
// the metadata an appended log needs) but not the modification time.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
