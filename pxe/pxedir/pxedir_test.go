package pxedir_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/pxe/internal/pxetest"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

func TestOpenVerifiedDir(t *testing.T) {
	dir := pxetest.Dir(t, nil)
	d, err := pxedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name != "node" {
		t.Errorf("name %q, want node", d.Name)
	}
	if got, want := strings.Join(d.Names(), " "), "base.squashfs boot.ipxe initrd.img ipxe.efi node.squashfs undionly.kpxe vmlinuz"; got != want {
		t.Errorf("names %q, want %q", got, want)
	}
	f, ok := d.File(pxedir.Base)
	if !ok {
		t.Fatal("base.squashfs not served")
	}
	got, err := io.ReadAll(f.Reader())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pxetest.Read(t, dir, pxedir.Base)) || f.Size != int64(len(got)) {
		t.Error("base.squashfs: served bytes differ from the file")
	}
	// What was verified is what is served: replacing the file on disk after Open does not change it.
	if err := os.Rename(filepath.Join(dir, pxedir.Kernel), filepath.Join(dir, "old")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pxedir.Kernel), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, _ := d.File(pxedir.Kernel)
	if kb, _ := io.ReadAll(k.Reader()); !bytes.Equal(kb, pxetest.Read(t, dir, "old")) {
		t.Error("a file replaced after Open changed what is served")
	}
	for _, name := range []string{pxedir.Manifest, "../pxe.json", "/etc/passwd", "", "old"} {
		if _, ok := d.File(name); ok {
			t.Errorf("%q is served: only pxe.json's files may be", name)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	manifest := func(t *testing.T, dir string, edit func(files map[string]string)) {
		t.Helper()
		var m struct {
			Name  string            `json:"name"`
			Files map[string]string `json:"files"`
		}
		p := filepath.Join(dir, pxedir.Manifest)
		if err := json.Unmarshal(pxetest.Read(t, dir, pxedir.Manifest), &m); err != nil {
			t.Fatal(err)
		}
		edit(m.Files)
		b, _ := json.Marshal(m)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the --dir to open
		want  string
	}{
		{"missing directory", func(t *testing.T, dir string) string { return filepath.Join(dir, "nope") }, "no such directory"},
		{"not a pxe directory", func(t *testing.T, dir string) string {
			os.Remove(filepath.Join(dir, pxedir.Manifest))
			return dir
		}, "not a kiln pxe directory: it has no pxe.json"},
		{"a file from another build", func(t *testing.T, dir string) string {
			if err := os.WriteFile(filepath.Join(dir, pxedir.Node), []byte("another build's layer"), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "node.squashfs does not match pxe.json"},
		{"a listed file missing", func(t *testing.T, dir string) string {
			os.Remove(filepath.Join(dir, pxedir.EFI))
			return dir
		}, "pxe.json lists ipxe.efi"},
		{"a contract file not listed", func(t *testing.T, dir string) string {
			manifest(t, dir, func(f map[string]string) { delete(f, pxedir.BIOS) })
			return dir
		}, "lists no undionly.kpxe"},
		{"a path outside the directory", func(t *testing.T, dir string) string {
			manifest(t, dir, func(f map[string]string) { f["../secret"] = f[pxedir.Kernel] })
			return dir
		}, `"../secret": not a plain file name`},
		{"a bad hash", func(t *testing.T, dir string) string {
			manifest(t, dir, func(f map[string]string) { f[pxedir.Kernel] = "abc" })
			return dir
		}, "not 64 hex digits"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t, pxetest.Dir(t, nil))
			d, err := pxedir.Open(dir)
			if err == nil {
				d.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
	t.Run("mismatch says which build", func(t *testing.T) {
		dir := pxetest.Dir(t, nil)
		if err := os.WriteFile(filepath.Join(dir, pxedir.Base), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := pxedir.Open(dir)
		if err == nil || !strings.Contains(err.Error(), "from another build?") {
			t.Errorf("error %v does not ask whether the file is from another build", err)
		}
	})
}
