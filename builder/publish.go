package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/internal/files"
)

// Names the output directory reserves for itself.
const (
	ManifestFile = "manifest.json"
	SumsFile     = "SHA256SUMS"
	// tmpPrefix marks a publication in progress; one left by a killed build is removed by the next.
	tmpPrefix = ".kiln-tmp-"
	lockFile  = ".kiln.lock"
)

// publish writes pubs (name → content source) into out so that each path holds either its previous
// content or its new one, never a partial file: everything is first written to a temp dir inside out
// (same filesystem), synced, and only then renamed into place, in order. Cancelling ctx before the renames
// leaves out as it was. A lock on out/.kiln.lock keeps two builds from publishing at once.
//
// A name may have directories ("pxe/vmlinuz"). A top-level directory a build publishes into is that build's:
// once its files are in place, whatever else is in it (a layer of another build) is removed, so the
// directory is one build's files, never a mix. Directories it does not publish into are left alone.
func publish(ctx context.Context, out string, pubs []pubFile) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("builder: output: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(out, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("builder: output: %w", err)
	}
	defer lf.Close()
	if err := waitFlock(ctx, lf); err != nil {
		return fmt.Errorf("builder: output %s: %w", out, err)
	}
	// Under the lock, any temp dir is from a build that died.
	stale, _ := filepath.Glob(filepath.Join(out, tmpPrefix+"*"))
	for _, s := range stale {
		os.RemoveAll(s)
	}
	tmp, err := os.MkdirTemp(out, tmpPrefix)
	if err != nil {
		return fmt.Errorf("builder: output: %w", err)
	}
	defer os.RemoveAll(tmp)

	written := map[string]bool{}
	dirs := map[string]bool{} // every directory above a published file, "." excluded
	for _, f := range pubs {
		written[f.name] = true
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, f := range pubs {
		dst := filepath.Join(tmp, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("builder: output %s: %w", f.name, err)
		}
		var err error
		switch {
		case f.src != "":
			err = files.Copy(ctx, dst, f.src, 0o644)
		case f.render != nil:
			var data []byte
			if data, err = f.render(); err == nil {
				err = writeSynced(dst, data)
			}
		default:
			err = writeSynced(dst, f.data)
		}
		if err != nil {
			return fmt.Errorf("builder: output %s: %w", f.name, err)
		}
		if f.written != nil {
			if err := f.written(dst); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("builder: output: %w", err)
	}
	// Directories before any rename: a failure here leaves every file of out as it was.
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := os.MkdirAll(filepath.Join(out, filepath.FromSlash(d)), 0o755); err != nil {
			return fmt.Errorf("builder: output: %w", err)
		}
	}
	// The renames take microseconds and are not interrupted by ctx: stopping halfway would mix builds.
	for _, f := range pubs {
		if err := os.Rename(filepath.Join(tmp, filepath.FromSlash(f.name)), filepath.Join(out, filepath.FromSlash(f.name))); err != nil {
			return fmt.Errorf("builder: output %s: %w", f.name, err)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if strings.Contains(d, "/") {
			continue // inside a top-level directory, which the walk below covers
		}
		if err := removeUnwritten(out, d, written, dirs); err != nil {
			return err
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := syncDir(filepath.Join(out, filepath.FromSlash(d))); err != nil {
			return err
		}
	}
	return syncDir(out)
}

// removeUnwritten deletes what is under out/top but neither a published file nor a directory leading to one.
func removeUnwritten(out, top string, written, dirs map[string]bool) error {
	root := filepath.Join(out, filepath.FromSlash(top))
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("builder: output: %w", err)
		}
		rel, err := filepath.Rel(out, p)
		if err != nil {
			return fmt.Errorf("builder: output: %w", err)
		}
		name := filepath.ToSlash(rel)
		if (d.IsDir() && dirs[name]) || (!d.IsDir() && written[name]) {
			return nil
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("builder: output: remove %s, not from this build: %w", name, err)
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// pubFile is one file to publish: copied from src, or data, or rendered when its turn comes.
type pubFile struct {
	name   string
	src    string
	data   []byte
	render func() ([]byte, error)
	// written, if set, is called with the temp path once the file is complete (to measure it).
	written func(path string) error
}

func waitFlock(ctx context.Context, f *os.File) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("builder: output: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("builder: output: sync %s: %w", dir, err)
	}
	return nil
}

// allocated is the bytes a file occupies on disk (st_blocks are 512-byte units whatever the fs block size).
func allocated(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
