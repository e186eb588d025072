// Package pxedir opens a kiln pxe directory (what `kiln build --format pxe` writes to OUT/pxe) for serving:
// pxe.json names every file and its sha256, and only those files, verified against it, are ever served.
package pxedir

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// The files of the netboot contract (docs/netboot.md).
const (
	Manifest = "pxe.json"
	Kernel   = "vmlinuz"
	Initrd   = "initrd.img"
	Base     = "base.squashfs"
	Node     = "node.squashfs"
	Script   = "boot.ipxe"
	EFI      = "ipxe.efi"      // iPXE for UEFI firmware (option 93: 7, 9)
	BIOS     = "undionly.kpxe" // iPXE for legacy BIOS PXE ROMs (option 93: 0)
)

// Required are the files a pxe directory must hold besides pxe.json.
var Required = []string{Kernel, Initrd, Base, Node, Script, EFI, BIOS}

// Index is pxe.json: the spec's name and the sha256 of every other file of the directory, so a server can
// tell a complete directory of one build from a mix. The builder writes it, the server reads it.
type Index struct {
	Name  string            `json:"name"`
	Files map[string]string `json:"files"`
}

// File is one verified file, open for the life of the Dir: what is served is what was hashed, even if the
// directory is rebuilt (files replaced by rename) while serving.
type File struct {
	Name    string
	Size    int64
	SHA256  string
	ModTime time.Time
	f       *os.File
}

// Reader is a fresh reader over the whole file; many may read one File at once.
func (f *File) Reader() *io.SectionReader { return io.NewSectionReader(f.f, 0, f.Size) }

// Dir is an opened, verified pxe directory.
type Dir struct {
	Path  string
	Name  string // the image spec's name
	files map[string]*File
}

// Open reads dir/pxe.json, opens every file it lists and checks each file's sha256; files not listed are never
// served. Hashing reads every byte once (the layers are hundreds of MiB), two files at a time.
func Open(dir string) (*Dir, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("pxe: --dir %s: no such directory (kiln build --format pxe writes OUT/pxe)", dir)
	case err != nil:
		return nil, fmt.Errorf("pxe: --dir: %w", err)
	case !st.IsDir():
		return nil, fmt.Errorf("pxe: --dir %s is not a directory", dir)
	}
	raw, err := os.ReadFile(filepath.Join(dir, Manifest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pxe: %s is not a kiln pxe directory: it has no %s (kiln build --format pxe writes OUT/pxe)", dir, Manifest)
	}
	if err != nil {
		return nil, fmt.Errorf("pxe: %w", err)
	}
	var m Index
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("pxe: %s: %w", filepath.Join(dir, Manifest), err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("pxe: %s: %w", filepath.Join(dir, Manifest), err)
	}
	d := &Dir{Path: dir, Name: m.Name, files: map[string]*File{}}
	for name, sum := range m.Files {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("pxe: %s lists %s: %w", Manifest, name, err)
		}
		fi, err := f.Stat()
		if err == nil && !fi.Mode().IsRegular() {
			err = errors.New("not a regular file")
		}
		if err != nil {
			f.Close()
			d.Close()
			return nil, fmt.Errorf("pxe: %s: %w", filepath.Join(dir, name), err)
		}
		d.files[name] = &File{Name: name, Size: fi.Size(), SHA256: strings.ToLower(sum), ModTime: fi.ModTime(), f: f}
	}
	if err := d.verify(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// check refuses a manifest that lacks a contract file or names anything but a plain file of the directory.
func (m *Index) check() error {
	for _, r := range Required {
		if _, ok := m.Files[r]; !ok {
			return fmt.Errorf("lists no %s: not a complete kiln pxe build", r)
		}
	}
	for name, sum := range m.Files {
		if name == "" || name == "." || name == ".." || name == Manifest || strings.ContainsAny(name, `/\`) {
			return fmt.Errorf("file name %q: not a plain file name of the directory", name)
		}
		if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%s: sha256 %q is not 64 hex digits", name, sum)
		}
	}
	return nil
}

func (d *Dir) verify() error {
	names := d.Names()
	errs := make([]error, len(names))
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f := d.files[name]
			h := sha256.New()
			if _, err := io.Copy(h, f.Reader()); err != nil {
				errs[i] = fmt.Errorf("pxe: read %s: %w", filepath.Join(d.Path, name), err)
				return
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
				errs[i] = fmt.Errorf("pxe: %s does not match %s (sha256 %s, %s says %s): from another build? "+
					"Rebuild with kiln build --format pxe", filepath.Join(d.Path, name), Manifest, got, Manifest, f.SHA256)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// File returns the named file; ok is false for any name pxe.json does not list.
func (d *Dir) File(name string) (f *File, ok bool) {
	f, ok = d.files[name]
	return f, ok
}

// Names lists the served files, sorted.
func (d *Dir) Names() []string {
	names := make([]string, 0, len(d.files))
	for n := range d.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Size is the sum of the files' sizes.
func (d *Dir) Size() int64 {
	var n int64
	for _, f := range d.files {
		n += f.Size
	}
	return n
}

// Close closes every file.
func (d *Dir) Close() error {
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.f.Close())
	}
	return errors.Join(errs...)
}
