package boottest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/output"
	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// TestPXEMatchesDisk builds the pxe format of the image under test from the warm cache and checks it against
// the disk image with tools that wrote neither: the layer files are the bytes of the kiln-base and kiln-node
// partitions (sfdisk for the offsets), vmlinuz and initrd.img those of the ESP (mtools), and boot.ipxe boots
// the kernel with the ESP entry's options. Only the formats stage may run: pxe reuses every earlier stage.
func TestPXEMatchesDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("pxe format test: skipped with -short")
	}
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("pxe format test: set KILN_E2E=1 (needs the image's cache entries)")
	}
	img := imagePath(t)
	kiln, err := filepath.Abs(filepath.Join(testenv.BinDir(), "kiln"))
	if err != nil {
		t.Fatal(err)
	}
	var image builder.Manifest
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(img), "manifest.json")); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &image); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := t.TempDir()
	cmd := exec.CommandContext(ctx, kiln, "build", image.Spec, "--format", "pxe", "--out", out, "--json")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
	t.Logf("pxe format built in %s", time.Since(start).Round(100*time.Millisecond))
	var m builder.Manifest
	if err := json.Unmarshal(stdout, &m); err != nil {
		t.Fatalf("kiln build --json: %v", err)
	}
	for i, s := range m.Stages {
		if s.Name == "formats" {
			continue
		}
		if !s.CacheHit || s.Key != image.Stages[i].Key {
			t.Errorf("stage %s: cacheHit=%v key %.12s, want the image's entry %.12s (%s)", s.Name, s.CacheHit, s.Key, image.Stages[i].Key, s.Why)
		}
	}
	sums := exec.Command("sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS")
	sums.Dir = out
	if b, err := sums.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, b)
	}

	pxe := filepath.Join(out, "pxe")
	var idx pxedir.Index
	if b, err := os.ReadFile(filepath.Join(pxe, pxedir.Manifest)); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("pxe.json: %v", err)
	}
	if idx.Name != m.Name || len(idx.Files) != 7 {
		t.Errorf("pxe.json = %+v", idx)
	}
	for name, want := range idx.Files {
		if got := hashFile(t, filepath.Join(pxe, name)); got != want {
			t.Errorf("pxe/%s: sha256 %s, pxe.json says %s", name, got, want)
		}
	}

	parts := partitions(t, img)
	for name, part := range map[string]string{pxedir.Base: disk.BaseName, pxedir.Node: disk.NodeName} {
		p, ok := parts[part]
		if !ok {
			t.Fatalf("%s has no partition %s", img, part)
		}
		fi, err := os.Stat(filepath.Join(pxe, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > p.size {
			t.Fatalf("pxe/%s is %d bytes, partition %s only %d", name, fi.Size(), part, p.size)
		}
		if got := hashRange(t, img, p.start, fi.Size()); got != idx.Files[name] {
			t.Errorf("partition %s starts with %s, pxe/%s is %s", part, got, name, idx.Files[name])
		}
		t.Logf("pxe/%s: %d bytes, the start of partition %s", name, fi.Size(), part)
	}

	esp := img + "@@" + strconv.FormatInt(parts[disk.ESPName].start, 10)
	for name, onESP := range map[string]string{pxedir.Kernel: "::/kiln/vmlinuz", pxedir.Initrd: "::/kiln/initrd.img"} {
		dst := filepath.Join(t.TempDir(), name)
		if b, err := exec.Command("mcopy", "-n", "-i", esp, onESP, dst).CombinedOutput(); err != nil {
			t.Fatalf("mcopy %s: %v\n%s", onESP, err, b)
		}
		if got := hashFile(t, dst); got != idx.Files[name] {
			t.Errorf("ESP %s is %s, pxe/%s %s", onESP, got, name, idx.Files[name])
		}
	}
	entry, err := exec.Command("mtype", "-i", esp, "::/loader/entries/kiln.conf").CombinedOutput()
	if err != nil {
		t.Fatalf("mtype: %v\n%s", err, entry)
	}
	var options string
	for _, l := range strings.Split(string(entry), "\n") {
		if o, ok := strings.CutPrefix(strings.TrimSpace(l), "options "); ok {
			options = o
		}
	}
	script, err := os.ReadFile(filepath.Join(pxe, pxedir.Script))
	if err != nil {
		t.Fatal(err)
	}
	if want := output.BootScript(options, idx.Files[pxedir.Base], idx.Files[pxedir.Node]); options == "" || string(script) != want {
		t.Errorf("boot.ipxe does not boot with the ESP entry's options %q:\n%s", options, script)
	}
}

type partition struct{ start, size int64 }

// partitions reads the GPT with sfdisk: name → byte offset and size.
func partitions(t *testing.T, img string) map[string]partition {
	t.Helper()
	b, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", img, err)
	}
	var pt struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Name  string `json:"name"`
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(b, &pt); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, b)
	}
	ss := pt.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	parts := map[string]partition{}
	for _, p := range pt.PartitionTable.Partitions {
		parts[p.Name] = partition{start: p.Start * ss, size: p.Size * ss}
	}
	return parts
}

func hashFile(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return hashRange(t, path, 0, fi.Size())
}

// hashRange is the sha256 of n bytes of path from off.
func hashRange(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
