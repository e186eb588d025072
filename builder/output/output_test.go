package output

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-project/kiln/builder/spec"
)

func TestLookup(t *testing.T) {
	if f, err := Lookup("qcow2"); err != nil || f.Ext != "qcow2" {
		t.Errorf("Lookup(qcow2) = %+v, %v", f, err)
	}
	// pxe is a directory, not a <name>.<ext> file.
	if f, err := Lookup("pxe"); err != nil || f.Name != "pxe" || f.Ext != "" {
		t.Errorf("Lookup(pxe) = %+v, %v", f, err)
	}
	_, err := Lookup("vdi")
	if err == nil || !strings.Contains(err.Error(), `unknown format "vdi"`) || !strings.Contains(err.Error(), "iso, pxe, qcow2, raw, vhd, vmdk") {
		t.Errorf("Lookup(vdi) error = %v, want one naming the format and the known ones", err)
	}
	st := New(&spec.Spec{Name: "x", Formats: []string{"raw", "vdi", "ova"}})
	if _, err := st.Inputs(context.Background()); err == nil || !strings.Contains(err.Error(), "vdi") || !strings.Contains(err.Error(), "ova") {
		t.Errorf("Inputs with unknown formats: %v, want both named", err)
	}
}

// TestWriteRawSparse: the copy has the same bytes and stays sparse where the source is zero.
func TestWriteRawSparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), 64<<20)
	f.Close()
	if err := writeRaw(context.Background(), Sources{Disk: src}, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if string(a) != string(b) {
		t.Fatal("copy differs")
	}
	fi, _ := os.Stat(dst)
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 4<<20 {
		t.Errorf("copy allocates %d bytes for 8 bytes of data: not sparse", blocks)
	}
}
