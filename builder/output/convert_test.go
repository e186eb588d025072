package output

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/internal/run"
)

// testDisk writes a 64 MiB sparse raw image with random data at its start and end.
func testDisk(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.Read(data)
	f.WriteAt(data, 0)
	f.WriteAt(data[:1<<20], 63<<20)
	f.Close()
	return p
}

// TestConvertedFormats: vmdk and vhd hold the raw image's bytes (qemu-img compare, and check for the vmdk),
// and two conversions give identical files although qemu-img stamps random identifiers and the clock.
func TestConvertedFormats(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	ctx := context.Background()
	raw := testDisk(t)
	in := Sources{Disk: raw, DiskKey: "k1", SourceDateEpoch: 1686355200}
	for _, c := range []struct {
		name, qemuFmt string
		write         func(context.Context, Sources, string) error
	}{{"vmdk", "vmdk", writeVMDK}, {"vhd", "vpc", writeVHD}} {
		t.Run(c.name, func(t *testing.T) {
			var files [2][]byte
			for i := range files {
				dst := filepath.Join(t.TempDir(), "node."+c.name)
				if err := c.write(ctx, in, dst); err != nil {
					t.Fatal(err)
				}
				if _, err := run.Cmd(ctx, "qemu-img", "compare", "-q", "-f", "raw", "-F", c.qemuFmt, raw, dst); err != nil {
					t.Fatalf("qemu-img compare: %v", err)
				}
				if c.name == "vmdk" {
					if _, err := run.Cmd(ctx, "qemu-img", "check", "-q", "-f", "vmdk", dst); err != nil {
						t.Fatalf("qemu-img check: %v", err)
					}
				}
				files[i], _ = os.ReadFile(dst)
			}
			if !bytes.Equal(files[0], files[1]) {
				t.Fatal("two conversions of one image differ")
			}
		})
	}
}

func TestVHDFooter(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dst := filepath.Join(t.TempDir(), "node.vhd")
	if err := writeVHD(context.Background(), Sources{Disk: testDisk(t), DiskKey: "k1", SourceDateEpoch: 1686355200}, dst); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	foot := b[len(b)-512:]
	if got := binary.BigEndian.Uint32(foot[24:28]); got != 1686355200-vhdEpoch {
		t.Errorf("time stamp %d, want SOURCE_DATE_EPOCH since 2000", got)
	}
	if u := vhdUUID("k1"); !bytes.Equal(foot[68:84], u[:]) {
		t.Errorf("UUID %x, want %x", foot[68:84], u)
	}
	sum := binary.BigEndian.Uint32(foot[64:68])
	copy(foot[64:68], []byte{0, 0, 0, 0})
	if vhdChecksum(foot) != sum {
		t.Error("footer checksum is wrong")
	}
	if len(b) != 64<<20+512 {
		t.Errorf("size %d, want the raw image and a 512-byte footer", len(b))
	}
}
