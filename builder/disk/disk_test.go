package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/layers"
	"github.com/kiln-project/kiln/builder/rootfs"
	"github.com/kiln-project/kiln/builder/spec"
)

// fakeInputs writes stand-ins for the earlier stages' outputs: random bytes where the disk stage only copies.
func fakeInputs(t *testing.T) map[string]string {
	t.Helper()
	root := t.TempDir()
	out := map[string]string{}
	files := map[string]int{
		"packages/" + rootfs.Kernel:                         3 << 20,
		"packages/" + rootfs.Initrd:                         20 << 20,
		"packages/" + rootfs.TreeDir + "/" + BootLoaderPath: 100 << 10,
		"base/" + layers.BaseImage:                          9<<20 + 123,
		"node/" + layers.NodeImage:                          1<<20 + 7,
	}
	for name, size := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256([]byte(name))
		for n := 0; n < size; n += len(h) {
			h = sha256.Sum256(h[:])
			f.Write(h[:min(len(h), size-n)])
		}
		f.Close()
		out[strings.Split(name, "/")[0]] = filepath.Join(root, strings.Split(name, "/")[0])
	}
	return out
}

func build(t *testing.T, outputs map[string]string, s *spec.Spec) string {
	t.Helper()
	dir := t.TempDir()
	env := &builder.Env{Outputs: outputs, Log: slog.New(slog.DiscardHandler), Progress: func(float64, string) {}, SourceDateEpoch: 1686355200}
	if err := New(s).Run(context.Background(), env, dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, Image)
}

func fileHash(t *testing.T, p string) [32]byte {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestDiskLayout checks the image with tools that did not write it: sfdisk reads the GPT, mtools the ESP.
func TestDiskLayout(t *testing.T) {
	for _, tool := range []string{"sfdisk", "mdir", "mtype"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	s := &spec.Spec{Name: "test", Disk: spec.Disk{ESPSizeMiB: 256}, Kernel: spec.Kernel{Cmdline: []string{"quiet"}}}
	img := build(t, fakeInputs(t), s)

	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk: %v", err)
	}
	js := string(out)
	for _, want := range []string{`"label": "gpt"`, `"name": "esp"`, `"name": "kiln-base"`, `"name": "kiln-node"`,
		`"start": 2048`, `"type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"`, `"type": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"`,
		`"id": "` + GUID("test", "") + `"`, `"uuid": "` + GUID("test", "kiln-base") + `"`} {
		if !strings.Contains(js, want) {
			t.Errorf("sfdisk --json lacks %s:\n%s", want, js)
		}
	}
	if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Errorf("sfdisk --verify: %v: %s", err, out)
	}
	esp := img + "@@1M"
	out, err = exec.Command("mtype", "-i", esp, "::/loader/entries/kiln.conf").CombinedOutput()
	if err != nil {
		t.Fatalf("mtype: %v: %s", err, out)
	}
	if want := "options boot=kiln console=tty0 console=ttyS0,115200 quiet\n"; !strings.Contains(string(out), want) {
		t.Errorf("kiln.conf:\n%s\nwant a line %q", out, want)
	}
	out, err = exec.Command("mdir", "-i", esp, "-/", "::/").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v: %s", err, out)
	}
	for _, want := range []string{"BOOTX64  EFI", "vmlinuz", "initrd.img", "README   TXT", "loader.conf", "kiln.conf", "grub.cfg"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ESP lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command("mtype", "-i", esp, "::"+GRUBConfigPath).CombinedOutput()
	if err != nil {
		t.Fatalf("mtype: %v: %s", err, out)
	}
	if want := "\tlinux /kiln/vmlinuz boot=kiln console=tty0 console=ttyS0,115200 quiet\n\tinitrd /kiln/initrd.img\n"; !strings.Contains(string(out), want) {
		t.Errorf("grub.cfg:\n%s\nwant %q", out, want)
	}

	// Legacy BIOS: the BIOS boot partition is entry 5 in the first MiB, the MBR's boot code points at it,
	// and core.img's block list at its own sectors; the protective MBR stays inactive.
	for _, want := range []string{`"node": "` + img + `5"`, `"start": 40`, `"size": 2008`, `"type": "21686148-6449-6E6F-744E-656564454649"`, `"name": "bios-boot"`} {
		if !strings.Contains(js, want) {
			t.Errorf("sfdisk --json lacks %s:\n%s", want, js)
		}
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := os.ReadFile(filepath.Join(GRUBDir, "boot.img"))
	if !bytes.Equal(raw[0x66:bootCodeEnd], append([]byte{0x90, 0x90}, boot[0x68:bootCodeEnd]...)) || raw[0x64] != 0xff {
		t.Error("the MBR does not hold GRUB's boot code")
	}
	if got := binary.LittleEndian.Uint64(raw[bootKernelSector:]); got != 40 {
		t.Errorf("boot code loads core.img from sector %d, want 40", got)
	}
	if bl := raw[40*512+500 : 40*512+512]; binary.LittleEndian.Uint64(bl) != 41 || binary.LittleEndian.Uint16(bl[10:]) != kernelSegment {
		t.Errorf("core.img block list %x, want sector 41 on", bl)
	}
	if raw[446] != 0 || raw[446+4] != 0xee || raw[510] != 0x55 || raw[511] != 0xaa {
		t.Errorf("protective MBR entry %x, signature %x: want inactive 0xee and 55aa", raw[446:462], raw[510:512])
	}

	s.Disk.PMBRBootFlag = true
	flagged, err := os.ReadFile(build(t, fakeInputs(t), s))
	if err != nil {
		t.Fatal(err)
	}
	if flagged[446] != 0x80 {
		t.Errorf("pmbrBootFlag: MBR entry status %#x, want 0x80", flagged[446])
	}
}

func TestGRUBEntry(t *testing.T) {
	e := Entry{Title: "kiln node", Kernel: KernelPath, Initrd: InitrdPath, Options: "boot=kiln console=ttyS0,115200 x=$y a;b"}
	want := "menuentry 'kiln node' {\n\tlinux /kiln/vmlinuz boot=kiln console=ttyS0,115200 'x=$y' 'a;b'\n\tinitrd /kiln/initrd.img\n}\n"
	if got := e.GRUB(); got != want {
		t.Errorf("GRUB() =\n%s\nwant\n%s", got, want)
	}
}

// TestDiskReproducible builds twice, seconds apart, and wants the same bytes.
func TestDiskReproducible(t *testing.T) {
	in := fakeInputs(t)
	s := &spec.Spec{Name: "repro"}
	a := fileHash(t, build(t, in, s))
	time.Sleep(2100 * time.Millisecond) // FAT timestamps have 2 s resolution: make a clock leak visible
	b := fileHash(t, build(t, in, s))
	if a != b {
		t.Errorf("two builds of the same inputs differ")
	}
}

func TestGUID(t *testing.T) {
	g := GUID("node", "esp")
	if len(g) != 36 || g[14] != '4' || !strings.ContainsAny(g[19:20], "89AB") {
		t.Errorf("GUID %s is not v4-shaped", g)
	}
	if g == GUID("node", "kiln-base") || g != GUID("node", "esp") {
		t.Errorf("GUID not stable per (spec, partition)")
	}
}
