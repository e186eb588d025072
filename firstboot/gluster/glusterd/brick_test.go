package glusterd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

const volID = "12345678-1234-4123-8123-123456789abc"

// needXattrs skips when err says trusted xattrs are unavailable: they need root and a filesystem that has them.
func needXattrs(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) {
		t.Skipf("trusted xattrs need root and a filesystem that has them: %v", err)
	}
}

func TestPrepareBrick(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "brick")
	if err := PrepareBrick(dir, volID); err != nil {
		needXattrs(t, err)
		t.Fatal(err)
	}
	if !BrickPrepared(dir) {
		t.Fatal("volume id xattr not set")
	}
	buf := make([]byte, 16)
	if _, err := unix.Getxattr(dir, volumeIDXattr, buf); err != nil || buf[0] != 0x12 || buf[15] != 0xbc {
		t.Fatalf("xattr = %x %v", buf, err)
	}
	if got := VolumeID(dir); got != "12345678123441238123123456789abc" {
		t.Errorf("VolumeID = %q", got)
	}
	other := filepath.Join(t.TempDir(), "used")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "file"), []byte("data"), 0o644)
	if err := PrepareBrick(other, volID); err == nil {
		t.Fatal("a non-empty directory was adopted as a fresh brick")
	}
	if err := PrepareBrick(filepath.Join(t.TempDir(), "b"), "nope"); err == nil {
		t.Fatal("a malformed volume id was set on a brick")
	}
}

func TestBrickData(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, ".glusterfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if name, err := BrickData(dir); err != nil || name != "" {
		t.Fatalf("only .glusterfs: %q %v, want no data", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "record"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if name, err := BrickData(dir); err != nil || name != "record" {
		t.Fatalf("with a file: %q %v, want record", name, err)
	}
	if _, err := BrickData(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent brick: %v, want ErrNotExist", err)
	}
}

// TestClearVolumeMarks: what staging leaves (volume id, root GFID, .glusterfs) is gone, and clearing twice
// is no error (a crash between the removals is cleared by the next pass).
func TestClearVolumeMarks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "brick")
	if err := os.MkdirAll(filepath.Join(dir, ".glusterfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(dir, volumeIDXattr, bytes.Repeat([]byte{1}, 16), 0); err != nil {
		needXattrs(t, err)
		t.Fatal(err)
	}
	if err := unix.Setxattr(dir, gfidXattr, rootGFID, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := ClearVolumeMarks(dir); err != nil {
			t.Fatal(err)
		}
	}
	if VolumeID(dir) != "" || BrickPrepared(dir) {
		t.Fatal("volume id left on the brick")
	}
	if _, err := unix.Getxattr(dir, gfidXattr, make([]byte, 16)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("root GFID left on the brick: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".glusterfs")); !os.IsNotExist(err) {
		t.Errorf(".glusterfs left behind: %v", err)
	}
}
