package output

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/layers"
	"github.com/kiln-project/kiln/builder/rootfs"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// TestBootScript pins boot.ipxe: the kernel line is the disk entry's command line plus the netboot arguments
// the initramfs and the agent read (docs: kiln.layers lowest first, each with its sha256).
func TestBootScript(t *testing.T) {
	s := &spec.Spec{Name: "node", Kernel: spec.Kernel{Cmdline: []string{"quiet", "mitigations=off"}}}
	base, node := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	want := `#!ipxe
# kiln netboot: boots the kernel and initrd below; the initramfs fetches the layers listed in
# kiln.layers into RAM and checks each against its sha256 before mounting it.
# kiln-url is the URL of the directory holding these files, ending in '/'. ` + "`kiln pxe serve`" + `
# sets it on the second line; served otherwise, it defaults to the DHCP next-server on port 80.
isset ${kiln-url} || set kiln-url http://${next-server}/
kernel ${kiln-url}vmlinuz initrd=initrd.img boot=kiln console=tty0 console=ttyS0,115200 quiet mitigations=off BOOTIF=01-${netX/mac:hexhyp} kiln.layers=${kiln-url}base.squashfs?sha256=` + base + `,${kiln-url}node.squashfs?sha256=` + node + ` kiln.config=${kiln-url}cluster.yaml
initrd ${kiln-url}initrd.img
boot
`
	if got := BootScript(disk.Cmdline(s), base, node); got != want {
		t.Errorf("boot.ipxe =\n%s\nwant\n%s", got, want)
	}
}

// stageOutputs fakes the earlier stages' outputs the formats stage reads: small files with distinct bytes.
func stageOutputs(t *testing.T) map[string]string {
	t.Helper()
	root := t.TempDir()
	outs := map[string]string{}
	for stage, files := range map[string]map[string]string{
		"packages": {rootfs.Kernel: "kernel bytes", rootfs.Initrd: "initrd bytes"},
		"base":     {layers.BaseImage: "hsqs base layer"},
		"node":     {layers.NodeImage: "hsqs node layer"},
		"disk":     {disk.Image: "disk image"},
	} {
		dir := filepath.Join(root, stage)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		outs[stage] = dir
	}
	return outs
}

func testEnv(outs map[string]string) *builder.Env {
	return &builder.Env{Outputs: outs, Log: slog.New(slog.DiscardHandler), Progress: func(float64, string) {}}
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestPXEStage runs the formats stage for raw and pxe over fake earlier outputs and the host's real ipxe
// package: pxe/ holds exactly the contract's files, each a copy of its source, named in pxe.json with its
// sha256, and boot.ipxe carries the layers' hashes.
func TestPXEStage(t *testing.T) {
	s := &spec.Spec{Name: "node", Formats: []string{"raw", "pxe"}, Kernel: spec.Kernel{Cmdline: []string{"quiet"}}}
	outs := stageOutputs(t)
	dir := t.TempDir()
	if err := New(s).Run(context.Background(), testEnv(outs), dir); err != nil {
		t.Fatal(err)
	}
	top, _ := os.ReadDir(dir)
	var names []string
	for _, d := range top {
		names = append(names, d.Name())
	}
	if strings.Join(names, " ") != "node.raw pxe" {
		t.Fatalf("stage output = %v, want node.raw and pxe/", names)
	}

	pxe := filepath.Join(dir, "pxe")
	sources := map[string]string{
		pxedir.Kernel: filepath.Join(outs["packages"], rootfs.Kernel),
		pxedir.Initrd: filepath.Join(outs["packages"], rootfs.Initrd),
		pxedir.Base:   filepath.Join(outs["base"], layers.BaseImage),
		pxedir.Node:   filepath.Join(outs["node"], layers.NodeImage),
		pxedir.EFI:    filepath.Join(IPXEDir, pxedir.EFI),
		pxedir.BIOS:   filepath.Join(IPXEDir, pxedir.BIOS),
	}
	ents, _ := os.ReadDir(pxe)
	names = nil
	for _, d := range ents {
		names = append(names, d.Name())
		if !d.Type().IsRegular() {
			t.Errorf("pxe/%s is not a regular file (%s)", d.Name(), d.Type())
		}
	}
	want := []string{pxedir.Base, pxedir.Script, pxedir.Initrd, pxedir.EFI, pxedir.Node, pxedir.Manifest, pxedir.BIOS, pxedir.Kernel}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("pxe/ = %v, want %v", names, want)
	}

	var idx pxedir.Index
	b, err := os.ReadFile(filepath.Join(pxe, pxedir.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("pxe.json: %v", err)
	}
	if idx.Name != "node" || len(idx.Files) != len(want)-1 {
		t.Errorf("pxe.json = %+v, want name node and every other file", idx)
	}
	for _, name := range want {
		if name == pxedir.Manifest {
			continue
		}
		got, err := os.ReadFile(filepath.Join(pxe, name))
		if err != nil {
			t.Fatal(err)
		}
		if idx.Files[name] != sha(got) {
			t.Errorf("pxe.json: %s = %s, file has %s", name, idx.Files[name], sha(got))
		}
		if src, ok := sources[name]; ok {
			orig, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, orig) {
				t.Errorf("pxe/%s differs from %s", name, src)
			}
		}
	}
	script, _ := os.ReadFile(filepath.Join(pxe, pxedir.Script))
	if want := BootScript(disk.Cmdline(s), sha([]byte("hsqs base layer")), sha([]byte("hsqs node layer"))); string(script) != want {
		t.Errorf("boot.ipxe =\n%s\nwant\n%s", script, want)
	}
}

// TestPXEInputs: listing pxe adds the ipxe package's version to the stage's inputs (a new ipxe re-runs
// formats only); a spec without pxe does not depend on it.
func TestPXEInputs(t *testing.T) {
	ctx := context.Background()
	v, err := exec.Command("dpkg-query", "-W", "-f=${Version}", IPXEPackage).Output()
	if err != nil {
		t.Fatalf("the ipxe package is a build dependency (make deps): %v", err)
	}
	in, err := New(&spec.Spec{Name: "node", Formats: []string{"raw", "qcow2", "pxe"}}).Inputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in["ipxe"] != string(v) || in["pxeLayout"] != pxeLayout || in["formats"] != "raw,qcow2,pxe" || in["qemu-img"] == "" {
		t.Errorf("inputs with pxe = %v, want ipxe %q", in, v)
	}
	in, err = New(&spec.Spec{Name: "node", Formats: []string{"raw"}}).Inputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := in["ipxe"]; ok {
		t.Errorf("inputs without pxe = %v: name ipxe", in)
	}
	_, err = New(&spec.Spec{Name: "node", Formats: []string{"pxe"}, Kernel: spec.Kernel{Cmdline: []string{"x=${net0/ip}"}}}).Inputs(ctx)
	if err == nil || !strings.Contains(err.Error(), `kernel.cmdline[0] "x=${net0/ip}"`) {
		t.Errorf("a kernel argument iPXE expands: %v", err)
	}
}

// TestPXEMissingSource: a missing layer or iPXE binary fails the stage naming the file.
func TestPXEMissingSource(t *testing.T) {
	s := &spec.Spec{Name: "node", Formats: []string{"pxe"}}
	outs := stageOutputs(t)
	st := New(s).(*Stage)
	st.ipxeDir = filepath.Join(t.TempDir(), "no-ipxe")
	err := st.Run(context.Background(), testEnv(outs), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "formats: pxe") || !strings.Contains(err.Error(), "no-ipxe/ipxe.efi") {
		t.Errorf("without iPXE binaries: %v", err)
	}

	if err := os.Remove(filepath.Join(outs["node"], layers.NodeImage)); err != nil {
		t.Fatal(err)
	}
	err = New(s).Run(context.Background(), testEnv(outs), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), layers.NodeImage) {
		t.Errorf("without the node layer: %v", err)
	}
}
