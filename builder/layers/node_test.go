package layers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestCopyTreeNormalisesModes(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(src, "etc/x"), 0o700)
	os.WriteFile(filepath.Join(src, "etc/x/conf"), []byte("a"), 0o600)
	os.WriteFile(filepath.Join(src, "etc/x/run.sh"), []byte("b"), 0o744)
	os.Symlink("/lib/systemd/system/ssh.service", filepath.Join(src, "etc/x/ssh.service"))
	if err := copyTree(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{"etc/x": 0o755 | os.ModeDir, "etc/x/conf": 0o644, "etc/x/run.sh": 0o755} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "etc/x/ssh.service")); err != nil || l != "/lib/systemd/system/ssh.service" {
		t.Errorf("symlink: %q %v", l, err)
	}
}

func TestHashTree(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("1"), 0o644)
	h1, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "a"), 0o600) // not visible in the layer (normalised): same hash
	if h, _ := hashTree(dir); h != h1 {
		t.Errorf("hash changed with a mode the layer normalises away")
	}
	os.WriteFile(filepath.Join(dir, "a"), []byte("2"), 0o644)
	if h, _ := hashTree(dir); h == h1 {
		t.Errorf("hash unchanged after a content change")
	}
}
