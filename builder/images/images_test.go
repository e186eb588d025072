package images

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/internal/dockerarchive"
)

func testEnv(outputs map[string]string) *builder.Env {
	return &builder.Env{Outputs: outputs, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Progress: func(float64, string) {}, SourceDateEpoch: 1686355200}
}

// TestNoPreload: a spec without preload gives the stage no inputs and an empty tree, so the node layer
// of such an image holds exactly what it held before the stage existed.
func TestNoPreload(t *testing.T) {
	st := New(&spec.Spec{Name: "x"})
	in, err := st.Inputs(context.Background())
	if err != nil || len(in) != 0 {
		t.Fatalf("inputs = %v, %v; want none", in, err)
	}
	dir := t.TempDir()
	if err := st.Run(context.Background(), testEnv(nil), dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, TreeDir))
	if len(entries) != 0 {
		t.Errorf("tree holds %d entries, want none", len(entries))
	}
	var list []builder.PreloadedImage
	b, _ := os.ReadFile(filepath.Join(dir, builder.ImageList))
	if err := json.Unmarshal(b, &list); err != nil || list == nil || len(list) != 0 {
		t.Errorf("images.json = %s (%v), want []", b, err)
	}
}

func TestArchive(t *testing.T) {
	specDir := t.TempDir()
	src := filepath.Join(specDir, "app.tar")
	img, err := dockerarchive.WriteSingleLayer(src, "example/app:1", dockerarchive.Config{Entrypoint: []string{"/app"}},
		[]dockerarchive.File{{Path: "app", Mode: 0o755, Data: []byte("#!/bin/sh\n")}}, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	s := &spec.Spec{Name: "x", Dir: specDir, Preload: []spec.PreloadImage{{Archive: "app.tar"}}}
	st := New(s)
	in, err := st.Inputs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if in["preload.000"] == "" || in["layout"] == "" {
		t.Errorf("inputs = %v", in)
	}
	dir := t.TempDir()
	if err := st.Run(context.Background(), testEnv(nil), dir); err != nil {
		t.Fatal(err)
	}
	ix, err := preload.ReadIndex(filepath.Join(dir, TreeDir, preload.Dir))
	if err != nil {
		t.Fatal(err)
	}
	want := preload.Entry{Name: "example/app:1", Source: preload.SourceArchive, Digest: img.ID, File: "archive-000-app.tar"}
	if len(ix.Images) != 1 || ix.Images[0] != want {
		t.Fatalf("index = %+v, want %+v", ix.Images, want)
	}
	if _, err := os.Stat(filepath.Join(dir, TreeDir, preload.Dir, want.File)); err != nil {
		t.Error(err)
	}
	link, err := os.Readlink(filepath.Join(dir, TreeDir, "etc/systemd/system/multi-user.target.wants", UnitName))
	if err != nil || link != "/etc/systemd/system/"+UnitName {
		t.Errorf("unit not enabled: %q %v", link, err)
	}
	var list []builder.PreloadedImage
	b, _ := os.ReadFile(filepath.Join(dir, builder.ImageList))
	if err := json.Unmarshal(b, &list); err != nil || len(list) != 1 || list[0].Digest != img.ID || list[0].SHA256 == "" || list[0].Size == 0 {
		t.Errorf("images.json = %s (%v)", b, err)
	}
}

// TestTraefik builds Traefik from its Go module (minutes on a cold Go build cache; needs the module proxy),
// so it runs only when asked for.
func TestTraefik(t *testing.T) {
	if os.Getenv("KILN_TRAEFIK_BUILD") != "1" {
		t.Skip("set KILN_TRAEFIK_BUILD=1 to build Traefik from its Go module (minutes)")
	}
	s := &spec.Spec{Name: "x", Preload: []spec.PreloadImage{{Traefik: "v3.7.13"}}}
	dir := t.TempDir()
	start := time.Now()
	if err := New(s).Run(context.Background(), testEnv(nil), dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("images stage with traefik v3.7.13: %s", time.Since(start).Round(time.Second))
	ix, err := preload.ReadIndex(filepath.Join(dir, TreeDir, preload.Dir))
	if err != nil || len(ix.Images) != 1 || ix.Images[0].Name != "kiln/traefik:v3.7.13" {
		t.Fatalf("index = %+v, %v", ix, err)
	}
	imgs, err := dockerarchive.Inspect(filepath.Join(dir, TreeDir, preload.Dir, ix.Images[0].File))
	if err != nil || imgs[0].ID != ix.Images[0].Digest {
		t.Fatalf("archive = %+v, %v; index digest %s", imgs, err, ix.Images[0].Digest)
	}
	// The binary is beside the archive, executable; the archive is the small image without it.
	bin, err := os.Stat(filepath.Join(dir, TreeDir, preload.Dir, ix.Images[0].Binary))
	if err != nil || ix.Images[0].Binary == "" || bin.Mode().Perm() != 0o755 || bin.Size() < 10<<20 {
		t.Errorf("binary %q: %v %v", ix.Images[0].Binary, bin, err)
	}
	if arch, err := os.Stat(filepath.Join(dir, TreeDir, preload.Dir, ix.Images[0].File)); err != nil || arch.Size() > 2<<20 {
		t.Errorf("archive %v %v: want the image without the binary (under 2 MiB)", arch, err)
	}
	var list []builder.PreloadedImage
	b, _ := os.ReadFile(filepath.Join(dir, builder.ImageList))
	if err := json.Unmarshal(b, &list); err != nil || len(list) != 1 || list[0].Binary != ix.Images[0].Binary || list[0].BinarySHA256 == "" {
		t.Errorf("images.json = %s (%v)", b, err)
	}
	if out := os.Getenv("KILN_TRAEFIK_OUT"); out != "" { // keep the archive for the docker tests
		b, _ := os.ReadFile(filepath.Join(dir, TreeDir, preload.Dir, ix.Images[0].File))
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
