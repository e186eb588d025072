package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/firstboot/brickdisk"
)

func disk(name string, size int64, mod func(*Disk)) Disk {
	d := Disk{Disk: brickdisk.Disk{Name: name, Size: size, Empty: true}}
	if mod != nil {
		mod(&d)
	}
	return d
}

func TestChoose(t *testing.T) {
	const gib = 1 << 30
	img := int64(700 << 20)
	parts := func(d *Disk) { d.Partitions, d.Empty = 3, false }
	removable := func(d *Disk) { d.Removable = true }
	installed := func(d *Disk) { d.HoldsImage, d.Partitions, d.Empty = true, 4, false }
	for _, c := range []struct {
		name   string
		disks  []Disk
		want   Want
		action Action
		target string
		reason []string
	}{
		{"first empty internal disk", []Disk{disk("sr0", gib, nil), disk("sda", 8*gib, removable), disk("vdb", 8*gib, nil), disk("vda", 8*gib, parts)},
			Want{}, Write, "vdb", []string{"first empty internal disk"}},
		{"no target", []Disk{disk("sda", 8*gib, removable), disk("vda", 8*gib, parts), disk("vdb", 512<<20, nil)},
			Want{}, Refuse, "", []string{"no install target", "sda: removable", "vda: has 3 partitions", "vdb: 512 MiB, smaller than 1024 MiB", "install: {disk: /dev/sdX}"}},
		{"the medium is never a target", []Disk{disk("sdb", 8*gib, nil)}, Want{}, Refuse, "", []string{"sdb: the installation medium"}},
		{"installed, medium still in", []Disk{disk("vda", 8*gib, installed), disk("vdb", 8*gib, nil)}, Want{}, Boot, "vda", nil},
		{"named, empty", []Disk{disk("vda", 8*gib, nil), disk("vdb", 8*gib, nil)}, Want{Disk: "/dev/vdb"}, Write, "vdb", nil},
		{"named, data, no wipe", []Disk{disk("vda", 8*gib, parts)}, Want{Disk: "/dev/vda"}, Refuse, "",
			[]string{"install.disk /dev/vda holds data (has 3 partitions)", "install.wipe: true"}},
		{"named, data, wipe", []Disk{disk("vda", 8*gib, parts)}, Want{Disk: "vda", Wipe: true}, Write, "vda", []string{"overwritten"}},
		{"named, installed, wipe", []Disk{disk("vda", 8*gib, installed)}, Want{Disk: "/dev/vda", Wipe: true}, Boot, "vda", nil},
		{"named, missing", []Disk{disk("vda", 8*gib, nil)}, Want{Disk: "/dev/sdz"}, Refuse, "", []string{"/dev/sdz: no such disk"}},
		{"named, too small", []Disk{disk("vda", 100<<20, nil)}, Want{Disk: "/dev/vda"}, Refuse, "", []string{"100 MiB"}},
		{"named medium", []Disk{disk("sdb", 8*gib, nil)}, Want{Disk: "/dev/sdb", Wipe: true}, Refuse, "", []string{"installation medium"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Choose(c.disks, c.want, "sdb", img)
			if d.Action != c.action || (d.Target == nil) != (c.target == "") || (d.Target != nil && d.Target.Name != c.target) {
				t.Fatalf("Choose = %v %+v (%s), want %v %s", d.Action, d.Target, d.Reason, c.action, c.target)
			}
			for _, w := range c.reason {
				if !strings.Contains(d.Reason, w) {
					t.Errorf("reason %q lacks %q", d.Reason, w)
				}
			}
		})
	}
}

// TestWriteImage: the target gets the image's bytes exactly, from extents in two files, zeros between them
// (over old data), the disk's last MiB zeroed; holdsImage then recognises it.
func TestWriteImage(t *testing.T) {
	dir := t.TempDir()
	image := make([]byte, 8<<20)
	copy(image[4096:], bytes.Repeat([]byte("kernel"), 1000))
	copy(image[3<<20:], bytes.Repeat([]byte("layer!"), 100000))
	os.MkdirAll(filepath.Join(dir, "kiln"), 0o755)
	os.WriteFile(filepath.Join(dir, "kiln/vmlinuz"), image[4096:4096+6000], 0o644)
	os.WriteFile(filepath.Join(dir, DataPath), image[3<<20:3<<20+600000], 0o644)
	sum := sha256.Sum256(image)
	id := sha256.Sum256(image[3<<20 : 4<<20])
	m := Manifest{Name: "t", Size: int64(len(image)), SHA256: hex.EncodeToString(sum[:]),
		Extents:  []Extent{{Offset: 4096, Length: 6000, File: "kiln/vmlinuz"}, {Offset: 3 << 20, Length: 600000, File: DataPath}},
		Identity: []Range{{Offset: 3 << 20, Length: 1 << 20, SHA256: hex.EncodeToString(id[:])}}}
	target := filepath.Join(dir, "disk")
	old := bytes.Repeat([]byte{0xee}, 16<<20)
	os.WriteFile(target, old, 0o644)
	if holdsImage(target, m) {
		t.Fatal("an old disk holds the image")
	}
	if err := writeImage(context.Background(), target, dir, m, int64(len(old)), func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got[:len(image)], image) {
		t.Error("the disk's first bytes are not the image")
	}
	if !bytes.Equal(got[len(old)-1<<20:], make([]byte, 1<<20)) || got[len(image)] != 0xee {
		t.Error("want the last MiB zeroed and the rest between left alone")
	}
	if !holdsImage(target, m) {
		t.Error("holdsImage false after the install")
	}

	m.SHA256 = strings.Repeat("0", 64)
	err := writeImage(context.Background(), target, dir, m, int64(len(old)), func(string, ...any) {})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a manifest hash mismatch: %v", err)
	}
	got, _ = os.ReadFile(target)
	if !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) {
		t.Error("after a mismatch the first MiB must be zero")
	}
}

// TestWriteImageFromMedium checks an extracted real ISO (KILN_TEST_MEDIUM: a directory with kiln/) against
// the raw image it was made from (KILN_TEST_RAW).
func TestWriteImageFromMedium(t *testing.T) {
	medium, raw := os.Getenv("KILN_TEST_MEDIUM"), os.Getenv("KILN_TEST_RAW")
	if medium == "" || raw == "" {
		t.Skip("set KILN_TEST_MEDIUM and KILN_TEST_RAW")
	}
	m, err := readManifest(filepath.Join(medium, ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeImage(context.Background(), target, medium, m, m.Size, t.Logf); err != nil {
		t.Fatal(err)
	}
	if !holdsImage(target, m) || !holdsImage(raw, m) {
		t.Error("holdsImage")
	}
}
