package rootfs

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/run"
)

func TestInputs(t *testing.T) {
	s := &spec.Spec{Name: "x", Packages: []string{"docker.io", "zstd"}, Firmware: []string{"firmware-realtek"}}
	s.Default()
	in, err := New(s).Inputs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pkgs := strings.Fields(in["packages"])
	if !slices.IsSorted(pkgs) || len(slices.Compact(slices.Clone(pkgs))) != len(pkgs) {
		t.Errorf("packages not sorted and unique: %v", pkgs)
	}
	for _, p := range []string{"docker.io", "firmware-realtek", "linux-image-amd64", "fdisk", "e2fsprogs", "busybox"} {
		if !slices.Contains(pkgs, p) {
			t.Errorf("packages lack %s: %v", p, pkgs)
		}
	}
	if !strings.Contains(in["sources"], "deb http://deb.debian.org/debian bookworm main non-free-firmware") ||
		!strings.Contains(in["sources"], "debian-security bookworm-security") {
		t.Errorf("sources:\n%s", in["sources"])
	}
	s.Distribution.Snapshot = "20250520T000000Z"
	in2, _ := New(s).Inputs(context.Background())
	if !strings.Contains(in2["sources"], "snapshot.debian.org/archive/debian/20250520T000000Z bookworm") {
		t.Errorf("snapshot sources:\n%s", in2["sources"])
	}
	// exclude joins the key only when set, so specs without it keep their cached packages stage.
	if _, ok := in["exclude"]; ok {
		t.Errorf("exclude input present without excludes: %q", in["exclude"])
	}
	s.Exclude = []string{"/usr/lib/x86_64-linux-gnu/glusterfs/gsyncd"}
	if in3, _ := New(s).Inputs(context.Background()); in3["exclude"] != s.Exclude[0] {
		t.Errorf("exclude input %q, want %q", in3["exclude"], s.Exclude[0])
	}
	if in2["initramfs"] != in["initramfs"] || len(in["initramfs"]) != 64 {
		t.Errorf("initramfs hash unstable or malformed: %q %q", in["initramfs"], in2["initramfs"])
	}
}

// TestInitramfsFiles: the boot script, hook and config the setup hook installs are all embedded.
func TestInitramfsFiles(t *testing.T) {
	for _, p := range []string{"initramfs/scripts/kiln", "initramfs/hooks/kiln", "initramfs/conf.d/kiln.conf"} {
		data, err := initramfsFiles.ReadFile(p)
		if err != nil || len(data) == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
	script, _ := initramfsFiles.ReadFile("initramfs/scripts/kiln")
	if !strings.Contains(string(script), "mountroot()") {
		t.Error("scripts/kiln defines no mountroot()")
	}
	// Syntax check with the host's POSIX sh (dash), as strict as the initrd's busybox ash.
	for _, p := range []string{"initramfs/scripts/kiln", "initramfs/hooks/kiln"} {
		data, _ := initramfsFiles.ReadFile(p)
		if out, err := run.CmdIn(context.Background(), data, "sh", "-n"); err != nil {
			t.Errorf("sh -n %s: %v %s", p, err, out)
		}
	}
}
