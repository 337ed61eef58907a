package actors

import (
	"errors"
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

// preallocate extends f to size bytes of zeros (allocated, so appends there
// change no file size), if it is smaller. A file system that cannot is left
// to grow the file as it is written.
func preallocate(f *os.File, size int64) error {
	st, err := f.Stat()
	if err != nil || st.Size() >= size {
		return err
	}
	for {
		err = unix.Fallocate(int(f.Fd()), 0, 0, size)
		if err != unix.EINTR {
			break
		}
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}
