package boottest

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// installTimeout bounds one installer run under TCG: firmware, GRUB, kernel, initramfs, writing the image
// (626 MiB) and the 15 s the installer leaves for the medium to be removed.
const installTimeout = 10 * time.Minute

// TestISOInstallBIOS boots node.iso as a CD under SeaBIOS with a blank virtio disk and the cluster config in
// fw_cfg: the installer writes the image and the config onto the disk and restarts. Then the disk boots on its
// own, without the CD and without fw_cfg: the node reads the carried-over config from its ESP (the SSH key in
// it lets the test in) and comes up as a flashed disk does. The same install under OVMF is TestBootImage's
// first step (make test). make e2e only.
func TestISOInstallBIOS(t *testing.T) {
	e2e(t)
	large(t)
	testISOInstall(t, firmwareBIOS, cdrom(sibling(t, "iso")))
}

// TestISOInstallUSB: the ISO written to a USB stick (the hybrid MBR; SeaBIOS boots it as a hard disk). make
// e2e only.
func TestISOInstallUSB(t *testing.T) {
	e2e(t)
	large(t)
	testISOInstall(t, firmwareBIOS, usbStick(sibling(t, "iso")))
}

func testISOInstall(t *testing.T, firmware string, medium []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	work := t.TempDir()
	target := blankRaw(t, work, "target.raw", diskSize)
	disk := []string{"-drive", "file=" + target + ",if=none,id=target,format=raw", "-device", "virtio-blk-pci,drive=target,bootindex=2"}
	key, config := sshKeyAndConfig(ctx, t, work)
	install(ctx, t, filepath.Join(work, "install"), firmware, medium, key, config, target, disk)

	v := startFirmwareVM(t, vmSpec{work: filepath.Join(work, "boot"), firmware: firmware, key: key, drives: disk})
	v.waitSSH(ctx, t, "")
	t.Logf("installed disk reached SSH after %s", v.sinceStart())
	v.waitBootFinished(ctx, t)
	checkNode(ctx, t, v, firmware)
	if out := v.mustSSH(ctx, t, `grep -o '"config_source": *"[a-z_-]*"' /run/kiln/status.json`); !strings.Contains(out, `"esp"`) {
		t.Errorf("the installed node's config source: %q, want esp (carried over by the installer)", out)
	}
}

// install boots the installer from medium with disks (the first, vda, is the blank target file) and the
// cluster config in fw_cfg, waits for it to write the image and restart the machine, and checks what it said
// and wrote.
func install(ctx context.Context, t *testing.T, work, firmware string, medium []string, key, config, target string, disks []string) {
	t.Helper()
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	inst := startFirmwareVM(t, vmSpec{work: work, firmware: firmware, key: key, config: config, drives: append(slices.Clone(medium), disks...)})
	inst.waitSerial(ctx, t, "kiln install: writing the image onto /dev/vda")
	waitExit(ctx, t, inst, installTimeout)
	out := inst.serialText(t)
	for _, want := range []string{"kiln install: cluster config from fw_cfg", "image written and verified", "written to the ESP of /dev/vda", "Remove the installation medium now"} {
		if !strings.Contains(out, want) {
			t.Errorf("installer console lacks %q", want)
		}
	}
	t.Logf("installed after %s", inst.sinceStart())
	// The ESP now also holds the carried config; from the layers to the image's end the bytes are the image's.
	if base := partitions(t, imagePath(t))["kiln-base"].start; !sameRange(t, target, imagePath(t), base) {
		t.Fatalf("the installed disk's layers are not the image's bytes")
	}
}

// TestISORefuses: the installer writes nothing when there is no target (the only disk holds data, no install
// section) or when the config names a disk holding data without wipe: true, and says which disk and why.
// make e2e only.
func TestISORefuses(t *testing.T) {
	e2e(t)
	large(t)
	iso := sibling(t, "iso")
	for _, c := range []struct {
		name, install, want string
	}{
		{"no target", "", "vda: not empty (first MiB not all zero))"},
		{"data without wipe", "install:\n  disk: /dev/vda\n", "REFUSED: install.disk /dev/vda holds data (not empty (first MiB not all zero)): not writing it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			work := t.TempDir()
			target := blankRaw(t, work, "target.raw", diskSize)
			f, err := os.OpenFile(target, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("someone's data"), 4096)
			f.Close()
			before := hashFile(t, target)
			key, config := sshKeyAndConfig(ctx, t, work)
			if c.install != "" {
				b, _ := os.ReadFile(config)
				if err := os.WriteFile(config, append(b, c.install...), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			v := startFirmwareVM(t, vmSpec{work: work, firmware: firmwareUEFI, key: key, config: config,
				drives: append(cdrom(iso), "-drive", "file="+target+",if=none,id=target,format=raw", "-device", "virtio-blk-pci,drive=target,bootindex=2")})
			line := v.waitSerial(ctx, t, "kiln install: REFUSED")
			if !strings.Contains(line, c.want) {
				t.Errorf("console: %q, want %q", line, c.want)
			}
			v.waitSerial(ctx, t, "nothing was installed")
			v.kill()
			if hashFile(t, target) != before {
				t.Error("the refused disk was written")
			}
		})
	}
}

// cdrom attaches iso as a CD on the q35's AHCI controller, first in the boot order.
func cdrom(iso string) []string {
	return []string{"-drive", "file=" + iso + ",if=none,id=cd,media=cdrom,readonly=on", "-device", "ide-cd,drive=cd,bootindex=1"}
}

// usbStick attaches iso as a USB mass-storage disk (the hybrid ISO dd'ed to a stick), first in the boot order.
func usbStick(iso string) []string {
	return []string{"-device", "qemu-xhci,id=xhci", "-drive", "file=" + iso + ",if=none,id=stick,format=raw,readonly=on",
		"-device", "usb-storage,bus=xhci.0,drive=stick,removable=on,bootindex=1"}
}

// waitExit waits for qemu to end (the guest restarted: -no-reboot), at most d.
func waitExit(ctx context.Context, t *testing.T, v *vm, d time.Duration) {
	t.Helper()
	select {
	case <-v.exited:
	case <-time.After(d):
		t.Fatalf("the installer did not restart the machine within %s", d)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
}

// sameRange reports whether disk and image hold the same bytes from off to the image's end.
func sameRange(t *testing.T, disk, image string, off int64) bool {
	t.Helper()
	n := fileSize(t, image) - off
	hash := func(p string) [32]byte {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
			t.Fatal(err)
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		return s
	}
	return hash(disk) == hash(image)
}
