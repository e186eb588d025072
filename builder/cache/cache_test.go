package cache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// pinnedKey is Key("node", {a:1, b:2}, "p") under formatVersion 1.
const pinnedKey = "b624690f9a0c8c705ff6fe187b27f82b47a30d681be6221ef40fc6a8ca356cd1"

func TestKeyStable(t *testing.T) {
	a := Key("node", map[string]string{"a": "1", "b": "2"}, "p")
	b := Key("node", map[string]string{"b": "2", "a": "1"}, "p")
	if a != b {
		t.Fatal("key depends on map order")
	}
	// Pinned: a change here invalidates every user's cache, so it must be deliberate (bump formatVersion).
	if a != pinnedKey {
		t.Errorf("key = %s, want %s", a, pinnedKey)
	}
	for name, other := range map[string]string{
		"stage":  Key("disk", map[string]string{"a": "1", "b": "2"}, "p"),
		"input":  Key("node", map[string]string{"a": "1", "b": "3"}, "p"),
		"added":  Key("node", map[string]string{"a": "1", "b": "2", "c": ""}, "p"),
		"parent": Key("node", map[string]string{"a": "1", "b": "2"}, "q"),
		// The JSON encoding keeps "a"+"b=c" apart from "a=b"+"c": no separator ambiguity.
		"split": Key("node", map[string]string{"a": "1\",\"b\":\"2"}, "p"),
	} {
		if other == a {
			t.Errorf("changing the %s keeps the key", name)
		}
	}
	if Key("x", nil, "") != Key("x", map[string]string{}, "") {
		t.Error("nil and empty inputs differ")
	}
}

// TestConcurrentSameKey: builds of one key at once (goroutines here; each opens its own lock file
// description, so they exclude each other exactly as processes do) run the stage once and leave one entry.
func TestConcurrentSameKey(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Stage: "packages", Inputs: map[string]string{"packages": "systemd"}}
	var built atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	entries := make([]*Entry, 8)
	errs := make([]error, 8)
	for i := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			entries[i], errs[i] = c.Get(context.Background(), req, func(ctx context.Context, dir string) error {
				built.Add(1)
				<-release // hold the exclusive lock until every goroutine has started
				return os.WriteFile(filepath.Join(dir, "rootfs"), []byte("tree"), 0o644)
			})
		}()
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		defer entries[i].Close()
	}
	if n := built.Load(); n != 1 {
		t.Errorf("stage ran %d times, want 1", n)
	}
	hits := 0
	for _, e := range entries {
		if e.Hit {
			hits++
		}
		if e.Dir() != entries[0].Dir() {
			t.Errorf("entries differ: %s vs %s", e.Dir(), entries[0].Dir())
		}
	}
	if hits != len(entries)-1 {
		t.Errorf("%d hits, want %d", hits, len(entries)-1)
	}
	dirs, _ := os.ReadDir(filepath.Join(c.Root(), "stages", "packages"))
	if len(dirs) != 1 || dirs[0].Name() != Key("packages", req.Inputs, "") {
		t.Errorf("stage dir holds %v, want exactly the entry", dirs)
	}
}

// TestFailedBuildLeavesNothing: an error or cancellation leaves no entry and no temp dir; the next try builds.
func TestFailedBuildLeavesNothing(t *testing.T) {
	c, _ := Open(t.TempDir())
	req := Request{Stage: "disk", Inputs: map[string]string{"x": "1"}}
	boom := errors.New("boom")
	_, err := c.Get(context.Background(), req, func(ctx context.Context, dir string) error {
		os.WriteFile(filepath.Join(dir, "half.raw"), []byte("half"), 0o644)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(c.Root(), "stages", "disk", "*")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
	e, err := c.Get(context.Background(), req, func(ctx context.Context, dir string) error {
		return os.WriteFile(filepath.Join(dir, "disk.raw"), []byte("full"), 0o644)
	})
	if err != nil || e.Hit || e.Why != "first build of this stage" {
		t.Fatalf("second try: %+v %v", e, err)
	}
	e.Close()
}

// TestDamagedEntryRebuilt: deleting part of an entry by hand makes it a miss, not a broken hit.
func TestDamagedEntryRebuilt(t *testing.T) {
	c, _ := Open(t.TempDir())
	req := Request{Stage: "base", Inputs: map[string]string{"x": "1"}}
	build := func(ctx context.Context, dir string) error {
		os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644)
		return os.WriteFile(filepath.Join(dir, "b"), []byte("b"), 0o644)
	}
	e, err := c.Get(context.Background(), req, build)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	os.Remove(filepath.Join(e.Out(), "b"))
	e, err = c.Get(context.Background(), req, build)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Hit || !strings.HasPrefix(e.Why, "entry damaged") {
		t.Errorf("hit=%v why=%q", e.Hit, e.Why)
	}
	if _, err := os.Stat(filepath.Join(e.Out(), "b")); err != nil {
		t.Error("not rebuilt")
	}
}

// TestSumsCached: the digest is computed once and stored; a changed file is hashed again.
func TestSumsCached(t *testing.T) {
	c, _ := Open(t.TempDir())
	e, err := c.Get(context.Background(), Request{Stage: "formats"}, func(ctx context.Context, dir string) error {
		return os.WriteFile(filepath.Join(dir, "x.raw"), []byte("abc"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := e.Sums()
	if err != nil {
		t.Fatal(err)
	}
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if s["x.raw"].SHA256 != abc {
		t.Fatalf("sum = %+v", s)
	}
	if _, err := os.Stat(filepath.Join(e.Dir(), "sums.json")); err != nil {
		t.Fatal("sums.json not stored")
	}
	os.WriteFile(filepath.Join(e.Out(), "x.raw"), []byte("abcd"), 0o644)
	s, _ = e.Sums()
	if s["x.raw"].SHA256 == abc || s["x.raw"].Size != 4 {
		t.Errorf("stale sum trusted: %+v", s)
	}
}

// TestSumsSubdirectory: files in subdirectories of out/ (the pxe format's pxe/) are summed under their slash
// path, and their stored digests are reused like top-level ones; symlinks are not outputs.
func TestSumsSubdirectory(t *testing.T) {
	c, _ := Open(t.TempDir())
	e, err := c.Get(context.Background(), Request{Stage: "formats"}, func(ctx context.Context, dir string) error {
		os.MkdirAll(filepath.Join(dir, "pxe", "deeper"), 0o755)
		os.WriteFile(filepath.Join(dir, "x.raw"), []byte("abc"), 0o644)
		os.WriteFile(filepath.Join(dir, "pxe", "vmlinuz"), []byte("abc"), 0o644)
		os.WriteFile(filepath.Join(dir, "pxe", "deeper", "f"), []byte(""), 0o644)
		return os.Symlink("vmlinuz", filepath.Join(dir, "pxe", "link"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := e.Sums()
	if err != nil {
		t.Fatal(err)
	}
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := strings.Join(SortedNames(s), " "); got != "pxe/deeper/f pxe/vmlinuz x.raw" {
		t.Fatalf("names = %s", got)
	}
	if s["pxe/vmlinuz"].SHA256 != abc || s["pxe/vmlinuz"].Size != 3 || s["pxe/deeper/f"].SHA256 != empty {
		t.Errorf("sums = %+v", s)
	}
	// A stored digest whose size and mtime still match is used as is: the proof is a planted one.
	planted := s
	planted["pxe/vmlinuz"] = Sum{SHA256: "planted", Size: s["pxe/vmlinuz"].Size, ModTime: s["pxe/vmlinuz"].ModTime}
	if err := writeJSON(filepath.Join(e.Dir(), "sums.json"), planted); err != nil {
		t.Fatal(err)
	}
	if s, _ = e.Sums(); s["pxe/vmlinuz"].SHA256 != "planted" {
		t.Errorf("stored digest of pxe/vmlinuz not reused: %+v", s["pxe/vmlinuz"])
	}
}

// TestRemoveTreeDetachesMounts: a failed stage that left a mount in its temp tree (mmdebstrap's /proc)
// must not make cleanup delete through the mount.
func TestRemoveTreeDetachesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	os.WriteFile(keep, []byte("host file"), 0o644)
	tree := filepath.Join(t.TempDir(), ".tmp-x")
	mnt := filepath.Join(tree, "out", "proc")
	os.MkdirAll(mnt, 0o755)
	if err := unix.Mount(outside, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := removeTree(tree); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("file behind the mount was deleted: %v", err)
	}
	if _, err := os.Stat(tree); !os.IsNotExist(err) {
		t.Fatalf("tree not removed: %v", err)
	}
}
