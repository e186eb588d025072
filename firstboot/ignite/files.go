package ignite

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_3/types"
	"github.com/vincent-petithory/dataurl"

	"github.com/kiln-project/kiln/internal/files"
)

// maxFileSize bounds a decompressed inline file: user.ign is baked into the image, so anything larger is a
// mistake (or a gzip bomb), and ignite runs before anything could notice a full /var.
const maxFileSize = 64 << 20

// node is one storage entry (file, directory or link), ordered by depth so parents come before children.
type node struct {
	at   string // field path for errors, e.g. storage.files[2]
	path string
	dir  *types.Directory
	file *types.File
	link *types.Link
}

func storageNodes(s types.Storage) []node {
	var ns []node
	for i := range s.Directories {
		ns = append(ns, node{at: fmt.Sprintf("storage.directories[%d]", i), path: s.Directories[i].Path, dir: &s.Directories[i]})
	}
	for i := range s.Files {
		ns = append(ns, node{at: fmt.Sprintf("storage.files[%d]", i), path: s.Files[i].Path, file: &s.Files[i]})
	}
	for i := range s.Links {
		ns = append(ns, node{at: fmt.Sprintf("storage.links[%d]", i), path: s.Links[i].Path, link: &s.Links[i]})
	}
	sort.SliceStable(ns, func(i, j int) bool { return depth(ns[i].path) < depth(ns[j].path) })
	return ns
}

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

// owner resolves a node's user and group (by id or name) against the accounts just written; -1 keeps the
// default (root, or what an existing node has).
func owner(a *accounts, n types.Node) (uid, gid int, err error) {
	uid, gid = -1, -1
	switch {
	case n.User.ID != nil:
		uid = *n.User.ID
	case n.User.Name != nil:
		u, ok := a.lookupUser(*n.User.Name)
		if !ok {
			return 0, 0, fmt.Errorf("user.name: no user %q", *n.User.Name)
		}
		uid = u
	}
	switch {
	case n.Group.ID != nil:
		gid = *n.Group.ID
	case n.Group.Name != nil:
		g, ok := a.lookupGroup(*n.Group.Name)
		if !ok {
			return 0, 0, fmt.Errorf("group.name: no group %q", *n.Group.Name)
		}
		gid = g
	}
	return uid, gid, nil
}

// fileMode converts an Ignition mode (Unix permission bits incl. setuid/setgid/sticky) to a FileMode.
func fileMode(m *int, def int) fs.FileMode {
	v := def
	if m != nil {
		v = *m
	}
	mode := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// contents decodes a file's data: URL and compression.
func contents(r types.Resource) ([]byte, error) {
	if r.Source == nil {
		return nil, nil // Ignition: no source means an empty file
	}
	if !strings.HasPrefix(*r.Source, "data:") {
		return nil, fmt.Errorf("contents.source: %w", errUnsupportedSource)
	}
	u, err := dataurl.DecodeString(*r.Source)
	if err != nil {
		return nil, fmt.Errorf("contents.source: %w", err)
	}
	comp := ""
	if r.Compression != nil {
		comp = *r.Compression
	}
	switch comp {
	case "":
		return u.Data, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(u.Data))
		if err != nil {
			return nil, fmt.Errorf("contents: gunzip: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(zr, maxFileSize+1))
		if err != nil {
			return nil, fmt.Errorf("contents: gunzip: %w", err)
		}
		if len(data) > maxFileSize {
			return nil, fmt.Errorf("contents: more than %d bytes decompressed", maxFileSize)
		}
		return data, nil
	default:
		return nil, fmt.Errorf("contents.compression: %q is not supported (gzip is)", comp)
	}
}

func boolOf(b *bool) bool { return b != nil && *b }

// applyNode creates or updates one storage node. It reports whether it changed anything.
func applyNode(root string, a *accounts, n node) (bool, error) {
	target, err := resolveIn(root, n.path)
	if err != nil {
		return false, err
	}
	switch {
	case n.file != nil:
		return applyFile(target, a, n.file)
	case n.dir != nil:
		return applyDir(target, a, n.dir)
	default:
		return applyLink(root, target, a, n.link)
	}
}

func applyFile(target string, a *accounts, f *types.File) (bool, error) {
	uid, gid, err := owner(a, f.Node)
	if err != nil {
		return false, err
	}
	data, err := contents(f.Contents)
	if err != nil {
		return false, err
	}
	mode := fileMode(f.Mode, 0o644)
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, err
	case fi.IsDir():
		return false, fmt.Errorf("%s is a directory; ignite never deletes directories", target)
	case fi.Mode().IsRegular():
		old, err := os.ReadFile(target)
		if err != nil {
			return false, err
		}
		if bytes.Equal(old, data) || (f.Contents.Source == nil && !boolOf(f.Overwrite)) {
			// Same content (the usual case on every boot after the first for files under /var), or no
			// content given: only metadata.
			return fixMeta(target, fi, mode, uid, gid)
		}
		if !boolOf(f.Overwrite) {
			return false, fmt.Errorf("%s exists with other content and overwrite is false (kept as is)", target)
		}
	default:
		if !boolOf(f.Overwrite) {
			return false, fmt.Errorf("%s exists and is not a regular file, and overwrite is false", target)
		}
	}
	if uid < 0 {
		uid = 0
	}
	if gid < 0 {
		gid = 0
	}
	if err := writeFileAtomic(target, data, mode, uid, gid); err != nil {
		return false, err
	}
	return true, nil
}

func applyDir(target string, a *accounts, d *types.Directory) (bool, error) {
	uid, gid, err := owner(a, d.Node)
	if err != nil {
		return false, err
	}
	mode := fileMode(d.Mode, 0o755)
	fi, err := os.Lstat(target)
	if err == nil && !fi.IsDir() {
		if !boolOf(d.Overwrite) {
			return false, fmt.Errorf("%s exists and is not a directory, and overwrite is false", target)
		}
		if err := os.Remove(target); err != nil {
			return false, err
		}
		err = fs.ErrNotExist
	}
	if err == nil {
		return fixMeta(target, fi, mode, uid, gid)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return false, err
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		return false, err
	}
	fi, err = os.Lstat(target)
	if err != nil {
		return false, err
	}
	_, err = fixMeta(target, fi, mode, max(uid, 0), max(gid, 0))
	return true, err
}

func applyLink(root, target string, a *accounts, l *types.Link) (bool, error) {
	uid, gid, err := owner(a, l.Node)
	if err != nil {
		return false, err
	}
	if l.Target == nil {
		return false, errors.New("target: required")
	}
	hard := boolOf(l.Hard)
	var hardTarget string
	if hard {
		if hardTarget, err = resolveIn(root, *l.Target); err != nil {
			return false, err
		}
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, err
	case !hard && fi.Mode()&fs.ModeSymlink != 0:
		if cur, err := os.Readlink(target); err == nil && cur == *l.Target {
			return false, lchown(target, fi, uid, gid)
		}
		fallthrough
	default:
		if hard {
			if tfi, err := os.Stat(hardTarget); err == nil && os.SameFile(fi, tfi) {
				return false, nil
			}
		}
		if !boolOf(l.Overwrite) {
			return false, fmt.Errorf("%s exists and is not the wanted link, and overwrite is false", target)
		}
		if fi.IsDir() {
			return false, fmt.Errorf("%s is a directory; ignite never deletes directories", target)
		}
		if err := os.Remove(target); err != nil {
			return false, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return false, err
	}
	if hard {
		return true, os.Link(hardTarget, target)
	}
	if err := os.Symlink(*l.Target, target); err != nil {
		return false, err
	}
	fi, err = os.Lstat(target)
	if err != nil {
		return true, err
	}
	return true, lchown(target, fi, uid, gid)
}

// fixMeta sets mode and owner (uid/gid -1: leave) when they differ. Chown first: it clears setuid bits.
func fixMeta(target string, fi fs.FileInfo, mode fs.FileMode, uid, gid int) (bool, error) {
	changed := false
	if cu, cg := ids(fi); (uid >= 0 && uid != cu) || (gid >= 0 && gid != cg) {
		if err := os.Lchown(target, uid, gid); err != nil {
			return false, err
		}
		changed = true
	}
	if changed || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != mode {
		if err := os.Chmod(target, mode); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

func lchown(target string, fi fs.FileInfo, uid, gid int) error {
	if cu, cg := ids(fi); (uid >= 0 && uid != cu) || (gid >= 0 && gid != cg) {
		return os.Lchown(target, uid, gid)
	}
	return nil
}

// writeFileAtomic replaces path with data (files.Write: a crash leaves the old or the new file), then sets
// its owner. A symlink at path is replaced by the file, as Ignition's overwrite does.
func writeFileAtomic(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	if err := files.Write(path, data, mode); err != nil {
		return err
	}
	if uid != 0 || gid != 0 {
		return os.Lchown(path, uid, gid)
	}
	return nil
}
