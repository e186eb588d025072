package preload

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/dockerarchive"
	"github.com/kiln-project/kiln/internal/testenv"
)

// TestLoadRealDockerd loads an archive written by dockerarchive into a private dockerd, then again (nothing
// to do), then after the image was removed (loaded again): what a first boot, a reboot and a reimage see.
// KILN_PRELOAD_ARCHIVE adds a real archive (the images stage's Traefik) to the same round.
func TestLoadRealDockerd(t *testing.T) {
	testenv.NeedDocker(t)
	base, err := os.MkdirTemp("", "kpl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	h := testenv.LAN(t, "kpl", netip.MustParsePrefix("10.99.8.0/24"), 1)[0]
	docker := testenv.Dockerd(t, h.NS, filepath.Join(base, "d"))

	dir := filepath.Join(base, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := dockerarchive.WriteSingleLayer(filepath.Join(dir, "app.tar"), "kiln-test/app:1",
		dockerarchive.Config{Entrypoint: []string{"/app"}, ExposedPorts: []string{"80/tcp"}},
		[]dockerarchive.File{{Path: "app", Mode: 0o755, Data: []byte("#!/bin/sh\n")}}, time.Unix(1686355200, 0))
	if err != nil {
		t.Fatal(err)
	}
	ix := Index{Images: []Entry{{Name: "kiln-test/app:1", Source: SourceArchive, Digest: img.ID, File: "app.tar"}}}
	if extra := os.Getenv("KILN_PRELOAD_ARCHIVE"); extra != "" {
		imgs, err := dockerarchive.Inspect(extra)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(extra, filepath.Join(dir, "extra.tar")); err != nil {
			t.Fatal(err)
		}
		ix.Images = append(ix.Images, Entry{Name: imgs[0].Tags[0], Source: SourceArchive, Digest: imgs[0].ID, File: "extra.tar"})
	}
	b, _ := json.Marshal(ix)
	if err := os.WriteFile(filepath.Join(dir, IndexFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	start := time.Now()
	n, err := Load(ctx, docker, dir, log)
	if err != nil || n != len(ix.Images) {
		t.Fatalf("first load: %d archives, %v; want %d", n, err, len(ix.Images))
	}
	t.Logf("first load of %d archives: %s", n, time.Since(start).Round(time.Millisecond))
	got, err := docker.ImageInspect(ctx, "kiln-test/app:1")
	if err != nil || got.ID != img.ID {
		t.Fatalf("loaded image id %s (%v), the archive's %s", got.ID, err, img.ID)
	}
	start = time.Now()
	if n, err := Load(ctx, docker, dir, log); err != nil || n != 0 {
		t.Fatalf("second load: %d archives, %v; want none", n, err)
	}
	t.Logf("second load (all present): %s", time.Since(start).Round(time.Millisecond))
	if _, err := docker.ImageRemove(ctx, "kiln-test/app:1", imageRemoveOptions()); err != nil {
		t.Fatal(err)
	}
	if n, err := Load(ctx, docker, dir, log); err != nil || n != 1 {
		t.Fatalf("load after removal: %d archives, %v; want 1", n, err)
	}
}
