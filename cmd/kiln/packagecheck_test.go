package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMirror serves a Debian archive's dists/ for one suite (InRelease and a Packages.gz per component) and
// records every path asked for.
func fakeMirror(t *testing.T, packages ...string) (url string, asked func() []string) {
	t.Helper()
	var stanzas bytes.Buffer
	for _, p := range packages {
		fmt.Fprintf(&stanzas, "Package: %s\nVersion: 1.0\nArchitecture: amd64\nDescription: %s\n\n", p, p)
	}
	files := map[string][]byte{}
	var release strings.Builder
	release.WriteString("Origin: Debian\nSuite: stable\nCodename: bookworm\nSHA256:\n")
	for _, comp := range []string{"main", "non-free-firmware"} {
		var gz bytes.Buffer
		w := gzip.NewWriter(&gz)
		if comp == "main" {
			w.Write(stanzas.Bytes())
		}
		w.Close()
		path := comp + "/binary-amd64/Packages.gz"
		files["/debian/dists/bookworm/"+path] = gz.Bytes()
		fmt.Fprintf(&release, " %x %d %s\n", sha256.Sum256(gz.Bytes()), gz.Len(), path)
	}
	files["/debian/dists/bookworm/InRelease"] = []byte(release.String())
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/debian", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), paths...)
	}
}

// TestBuildUnknownPackages runs `kiln build` with the real stages on a spec naming three packages the mirror
// does not have: the build fails within seconds, before mmdebstrap or any package download, naming all three
// at their places in the spec, each with the nearest name the mirror has.
func TestBuildUnknownPackages(t *testing.T) {
	mirror, asked := fakeMirror(t, "busybox", "e2fsprogs", "fdisk", "initramfs-tools", "kmod", "linux-image-amd64",
		"systemd-boot-efi", "systemd-resolved", "systemd-sysv", "udev", "zstd", "systemd", "docker.io",
		"glusterfs-server", "keepalived", "openssh-server")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if err := os.WriteFile("agent", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := `name: demo
distribution:
  suite: bookworm
  mirror: ` + mirror + `
packages:
  - linux-image-amd64
  - systemd
  - dockr.io
  - keepalived
  - glusterfs-servr
  - opensh-server
agent: agent
`
	if err := os.WriteFile("demo.yaml", []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stdout, stderr, code := cliRun(t, "build", "demo.yaml", "--cache", "cache", "--out", "out")
	took := time.Since(start)
	if took > 10*time.Second {
		t.Errorf("kiln build took %s to fail, want seconds", took)
	}
	for _, p := range asked() {
		if !strings.HasPrefix(p, "/debian/dists/bookworm/") {
			t.Errorf("the build fetched %s: something was downloaded before the package check", p)
		}
	}
	if _, err := os.Stat("out"); !os.IsNotExist(err) {
		t.Errorf("out/ exists after a failed build")
	}
	t.Logf("failed after %s; the mirror was asked for %v", took.Round(time.Millisecond), asked())
	// The log lines before the error (timestamps, the cache path) vary; the error itself is pinned.
	_, errText, _ := strings.Cut(stderr, "kiln: ")
	got := fmt.Sprintf("--- demo.yaml\n%s$ kiln build demo.yaml\n--- stdout\n%s--- error\nkiln: %s--- exit %d\n",
		spec, stdout, errText, code)
	got = strings.ReplaceAll(got, mirror, "http://MIRROR/debian")
	compareGolden(t, filepath.Join(wd, "testdata", "spec", "unknown-packages.golden"), got)
}
