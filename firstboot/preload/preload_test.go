package preload

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/docker/api/types/image"
)

func imageRemoveOptions() image.RemoveOptions { return image.RemoveOptions{Force: true} }

func TestReadIndex(t *testing.T) {
	dir := t.TempDir()
	ix, err := ReadIndex(dir)
	if err != nil || len(ix.Images) != 0 {
		t.Fatalf("no index: %+v, %v; want empty, nil", ix, err)
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"images":[{"name":"kiln/traefik:v3.7.13","source":"traefik","version":"v3.7.13","digest":"sha256:ab","file":"t.tar"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err = ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := ix.Find(SourceTraefik)
	if !ok || e.Name != "kiln/traefik:v3.7.13" || e.Digest != "sha256:ab" {
		t.Errorf("Find(traefik) = %+v, %v", e, ok)
	}
	if _, ok := ix.Find(SourceArchive); ok {
		t.Error("Find(archive) found one")
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIndex(dir); err == nil {
		t.Error("a broken index was read")
	}
}
