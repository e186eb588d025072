package dockerarchive

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteInspectRoundTrip(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := []File{
		{Path: "usr/local/bin/app", Mode: 0o755, Source: bin},
		{Path: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: []byte("pem")},
		{Path: "tmp", Mode: fs.ModeDir | 0o1777},
		{Path: "bin/app", Mode: fs.ModeSymlink | 0o777, Link: "/usr/local/bin/app"},
	}
	mtime := time.Unix(1686355200, 0)
	cfg := Config{Entrypoint: []string{"/usr/local/bin/app"}, ExposedPorts: []string{"80/tcp"}}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	ia, err := WriteSingleLayer(a, "kiln/app:v1", cfg, files, mtime)
	if err != nil {
		t.Fatal(err)
	}
	// Same input, other order: same bytes, same ID (the build is reproducible).
	rev := []File{files[3], files[2], files[1], files[0]}
	ib, err := WriteSingleLayer(b, "kiln/app:v1", cfg, rev, mtime)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) || ia.ID != ib.ID {
		t.Fatalf("two writes of one image differ: %s vs %s", ia.ID, ib.ID)
	}
	if _, err := os.Stat(a + ".layer"); !os.IsNotExist(err) {
		t.Errorf("staging layer left behind: %v", err)
	}
	got, err := Inspect(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != ia.ID || len(got[0].Tags) != 1 || got[0].Tags[0] != "kiln/app:v1" {
		t.Fatalf("Inspect = %+v, want %s kiln/app:v1", got, ia.ID)
	}
	// The layer holds every parent directory before its children, and the files as given.
	names := layerNames(t, a)
	want := []string{"bin/", "bin/app", "etc/", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/app"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("layer entries:\n%v\nwant\n%v", names, want)
	}
}

func layerNames(t *testing.T, archive string) []string {
	t.Helper()
	var names []string
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = walk(f, func(name string, r io.Reader) error {
		if !strings.HasSuffix(name, "/layer.tar") {
			return nil
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err != nil {
				return nil
			}
			names = append(names, h.Name)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestInspectRefuses(t *testing.T) {
	dir := t.TempDir()
	notTar := filepath.Join(dir, "x.tar")
	os.WriteFile(notTar, []byte("hello, not a tar at all, but long enough to have a header? no."), 0o644)
	if _, err := Inspect(notTar); err == nil {
		t.Error("a non-tar file was accepted")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("hi"))
	tw.Close()
	noManifest := filepath.Join(dir, "n.tar")
	os.WriteFile(noManifest, buf.Bytes(), 0o644)
	if _, err := Inspect(noManifest); err == nil || !strings.Contains(err.Error(), "no manifest.json") {
		t.Errorf("a tar without manifest.json: %v", err)
	}
	buf.Reset()
	tw = tar.NewWriter(&buf)
	m := []byte(`[{"Config":"abc.json","RepoTags":["x:y"],"Layers":[]}]`)
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(m)), Typeflag: tar.TypeReg})
	tw.Write(m)
	tw.Close()
	missing := filepath.Join(dir, "m.tar")
	os.WriteFile(missing, buf.Bytes(), 0o644)
	if _, err := Inspect(missing); err == nil || !strings.Contains(err.Error(), "does not hold") {
		t.Errorf("a manifest naming a missing config: %v", err)
	}
}
