package files

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteReplacesWholeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "state.json")
	if err := Write(p, []byte("old content, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".tmp-*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestWriteRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if err := Write(link, []byte("x"), 0o644); err == nil {
		t.Fatal("writing through a symlink: want an error")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("symlink target changed to %q", b)
	}
}

// A disk image: 8 MiB with data at 0 and at 5 MiB, a hole between, and an allocated all-zero MiB at 7 MiB.
// The copy has the same bytes, and only the two data blocks allocated.
func TestCopyKeepsHolesAndSkipsZeros(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.raw")
	f, _ := os.Create(src)
	f.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
	f.WriteAt(bytes.Repeat([]byte{2}, 1<<20), 5<<20)
	f.WriteAt(make([]byte, 1<<20), 7<<20)
	f.Close()
	if err := Copy(context.Background(), dst, src, 0o640); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from source")
	}
	var st syscall.Stat_t
	syscall.Stat(dst, &st)
	if used := st.Blocks * 512; used > 2<<20+64<<10 {
		t.Errorf("copy allocates %d bytes, want ~2 MiB (holes and zero blocks kept sparse)", used)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if err := Copy(context.Background(), dst, src, 0o640); err == nil {
		t.Error("copy onto an existing file: want an error")
	} else if b2, _ := os.ReadFile(dst); !bytes.Equal(a, b2) {
		t.Error("a refused copy changed the existing file")
	}
}

func TestCopyCancelledLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, bytes.Repeat([]byte{7}, 3<<20), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Copy(ctx, dst, src, 0o644); err == nil {
		t.Fatal("cancelled copy: want an error")
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("cancelled copy left %s (%v)", dst, err)
	}
}
