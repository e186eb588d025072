package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfile "github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

func cfgYAML(name string) string {
	return "cluster:\n  name: " + name + "\n  key: " + goodKey + "\n"
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeESP writes a FAT32 image at path holding files (FAT path → content), like the one builder/disk writes.
func makeESP(t testing.TB, path string, files map[string]string) {
	t.Helper()
	const size = 40 << 20 // above FAT32's minimum cluster count with 512-byte clusters; sparse on disk
	b, err := diskfile.CreateFromPath(path, size)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fs, err := fat32.Create(b, size, 0, 512, "KILN-ESP", true)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := fs.Mkdir(filepath.Dir(name)); err != nil {
			t.Fatal(err)
		}
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// fakeSysBlock makes /sys/class/block/<part> → /sys/devices/virtual/block/<disk>/<part> with a uevent.
func fakeSysBlock(t *testing.T, root, disk, part, partName string) {
	t.Helper()
	dir := filepath.Join(root, "sys/devices/pci0000:00/block", disk, part)
	writeFile(t, filepath.Join(dir, "uevent"), "MAJOR=254\nMINOR=1\nDEVNAME="+part+"\nDEVTYPE=partition\nPARTN=1\nPARTNAME="+partName+"\n")
	link := filepath.Join(root, "sys/class/block", part)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(filepath.Dir(link), dir)
	if err := os.Symlink(rel, link); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrder(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		fwcfg      string
		esp        string // "" means no ESP partition at all
		image      string
		wantSource string
		wantName   string
		wantErr    string
	}{
		{name: "fw_cfg wins", fwcfg: cfgYAML("fw"), esp: cfgYAML("esp"), image: cfgYAML("img"), wantSource: "fw_cfg", wantName: "fw"},
		{name: "esp next", esp: cfgYAML("esp"), image: cfgYAML("img"), wantSource: "esp", wantName: "esp"},
		{name: "image last", image: cfgYAML("img"), wantSource: "image", wantName: "img"},
		{name: "nothing", wantErr: "no cluster config"},
		{name: "invalid found config stops the search", fwcfg: "cluster: {name: x}\n", image: cfgYAML("img"), wantErr: "config from fw_cfg: 1:10: cluster.key: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.fwcfg != "" {
				writeFile(t, filepath.Join(root, FwCfgPath), tt.fwcfg)
			}
			if tt.image != "" {
				writeFile(t, filepath.Join(root, ImagePath), tt.image)
			}
			if tt.esp != "" {
				fakeSysBlock(t, root, "vda", "vda1", "esp")
				fakeSysBlock(t, root, "vda", "vda2", "kiln-base")
				os.MkdirAll(filepath.Join(root, "dev"), 0o755)
				makeESP(t, filepath.Join(root, "dev/vda1"), map[string]string{"/kiln/cluster.yaml": tt.esp})
			}
			c, err := Load(ctx, Sources(root, nil))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Source != tt.wantSource || c.Cluster.Name != tt.wantName {
				t.Errorf("got source %q name %q, want %q %q", c.Source, c.Cluster.Name, tt.wantSource, tt.wantName)
			}
		})
	}
}

func TestLoadErrorsAreTyped(t *testing.T) {
	_, err := Load(context.Background(), Sources(t.TempDir(), nil))
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("no config: %v, want ErrNotFound", err)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, ImagePath), "cluster: {name: UPPER}\n")
	_, err = Load(context.Background(), Sources(root, nil))
	var ce *Error
	if !errors.As(err, &ce) || ce.Source != "image" {
		t.Errorf("invalid config: %v, want *Error from image", err)
	}
}

func TestESPDeviceChoice(t *testing.T) {
	tests := []struct {
		name    string
		parts   [][3]string // disk, part, partname
		byLabel bool
		want    string
		wantErr string
	}{
		{name: "the only esp", parts: [][3]string{{"sda", "sda1", "esp"}}, want: "dev/sda1"},
		{name: "esp on the boot disk wins", parts: [][3]string{{"sda", "sda1", "esp"}, {"vda", "vda1", "esp"}, {"vda", "vda2", "kiln-base"}}, want: "dev/vda1"},
		{name: "two esps, no boot disk", parts: [][3]string{{"sda", "sda1", "esp"}, {"sdb", "sdb1", "esp"}}, wantErr: "several partitions"},
		{name: "udev link fallback", byLabel: true, want: "dev/disk/by-partlabel/esp"},
		{name: "none", parts: [][3]string{{"vda", "vda2", "kiln-base"}}, wantErr: "no partition labelled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, p := range tt.parts {
				fakeSysBlock(t, root, p[0], p[1], p[2])
			}
			if tt.byLabel {
				writeFile(t, filepath.Join(root, "dev/disk/by-partlabel/esp"), "")
			}
			got, err := ESP{Root: root}.findDevice()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != filepath.Join(root, tt.want) {
				t.Errorf("device = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestReadFATFile(t *testing.T) {
	img := filepath.Join(t.TempDir(), "esp.img")
	makeESP(t, img, map[string]string{"/KILN/Cluster.yaml": "hello", "/loader/loader.conf": "x"})
	data, err := readFATFile(img, "kiln/cluster.yaml")
	if err != nil || string(data) != "hello" {
		t.Errorf("case-insensitive read = %q, %v", data, err)
	}
	if _, err := readFATFile(img, "kiln/missing.yaml"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := readFATFile(img, "nodir/cluster.yaml"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v, want ErrNotExist", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.img")
	writeFile(t, junk, strings.Repeat("x", 1<<20))
	if _, err := readFATFile(junk, "kiln/cluster.yaml"); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("not a FAT: %v, want a real error", err)
	}
}
