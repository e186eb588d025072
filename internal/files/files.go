// Package files writes and copies files the way every part of kiln needs them written: replaced atomically
// (a reader or a crash sees the old or the new content, never a part), and copied without allocating the
// holes and zero blocks of disk images.
package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/moby/sys/atomicwriter"
	"golang.org/x/sys/unix"
)

// Write replaces path with data at mode (umask does not apply), creating missing parent directories (0755).
// The data goes to a temporary file in the same directory, is synced and renamed over path
// (moby/sys/atomicwriter); then the directory is synced, so the rename survives a power cut too. A symlink
// at path is refused, not followed.
func Write(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := atomicwriter.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// chunk bounds how much Copy moves between two checks of ctx (a cancelled build stops within ~100 ms), and is
// the unit it checks for zeros.
const chunk = 1 << 20

// Copy copies src to a new file dst (it must not exist) with mode, and syncs it. Holes in src
// (SEEK_DATA/SEEK_HOLE) and all-zero 1 MiB blocks stay holes in dst, so a 4 GiB disk image with 600 MB of
// data takes 600 MB in its copy too. A failed copy removes dst.
func Copy(ctx context.Context, dst, src string, mode fs.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
			err = fmt.Errorf("copy %s to %s: %w", src, dst, err)
		}
	}()
	if err := out.Chmod(mode); err != nil { // OpenFile's mode went through the umask
		return err
	}
	if err := copyData(ctx, out, in, fi.Size()); err != nil {
		return err
	}
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	return out.Sync()
}

// copyData copies the data segments of in (all of it where the filesystem cannot tell holes) to the same
// offsets of out, skipping zero blocks.
func copyData(ctx context.Context, out, in *os.File, size int64) error {
	buf := make([]byte, chunk)
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, syscall.ENXIO):
			return nil // only a hole is left
		case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
			data = off
		case err != nil:
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		for pos := data; pos < hole; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := in.ReadAt(buf[:min(chunk, hole-pos)], pos)
			if n > 0 && !zero(buf[:n]) {
				if _, werr := out.WriteAt(buf[:n], pos); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			pos += int64(n)
		}
		off = hole
	}
	return nil
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
