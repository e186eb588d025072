package boottest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootBIOS boots the same node.raw through SeaBIOS (qemu's legacy BIOS): GRUB's boot code in the MBR,
// its core image in the BIOS boot partition, grub.cfg on the ESP. The node must come up as under UEFI:
// kiln-state appended and mounted on /var, multi-user reached, the agent running.
func TestBootBIOS(t *testing.T) {
	e2e(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	work := t.TempDir()
	overlay := filepath.Join(work, "disk.qcow2")
	run(ctx, t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", imagePath(t), overlay, strconv.Itoa(diskSize))
	key, config := sshKeyAndConfig(ctx, t, work)
	v := startFirmwareVM(t, vmSpec{work: work, firmware: firmwareBIOS, key: key, config: config,
		drives: []string{"-drive", "file=" + overlay + ",if=virtio,format=qcow2"}})
	v.waitSSH(ctx, t, "")
	t.Logf("SeaBIOS boot reached SSH after %s", v.sinceStart())
	v.waitBootFinished(ctx, t)
	checkNode(ctx, t, v, firmwareBIOS)
}

// TestBootVMDK boots node.vmdk (streamOptimized, as VMware gets it) under OVMF through a qcow2 overlay
// (qemu does not write into a streamOptimized vmdk). make e2e only.
func TestBootVMDK(t *testing.T) {
	e2e(t)
	large(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	work := t.TempDir()
	vmdk := sibling(t, "vmdk")
	overlay := filepath.Join(work, "disk.qcow2")
	run(ctx, t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "vmdk", "-b", vmdk, overlay, strconv.Itoa(diskSize))
	key, config := sshKeyAndConfig(ctx, t, work)
	v := startFirmwareVM(t, vmSpec{work: work, firmware: firmwareUEFI, key: key, config: config,
		drives: []string{"-drive", "file=" + overlay + ",if=virtio,format=qcow2"}})
	v.waitSSH(ctx, t, "")
	v.waitBootFinished(ctx, t)
	checkNode(ctx, t, v, firmwareUEFI)
}

// e2e skips unless KILN_E2E=1; large unless KILN_E2E_LARGE=1 (make e2e).
func e2e(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boot test: skipped with -short")
	}
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("boot test: set KILN_E2E=1 (boots the built image in qemu: minutes)")
	}
}

func large(t *testing.T) {
	t.Helper()
	if os.Getenv("KILN_E2E_LARGE") != "1" {
		t.Skip("set KILN_E2E_LARGE=1 (make e2e)")
	}
}

// sibling is the artifact of format ext published beside the image under test (out/node.iso).
func sibling(t *testing.T, ext string) string {
	t.Helper()
	raw := imagePath(t)
	p := strings.TrimSuffix(raw, filepath.Ext(raw)) + "." + ext
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no %s beside the image (%v): build it with formats: [..., %s]", ext, err, ext)
	}
	return p
}

// Firmware a test VM boots with.
const (
	firmwareBIOS = "bios" // SeaBIOS, qemu's default
	firmwareUEFI = "uefi" // OVMF
)

// vmSpec is one test VM: q35, 2 vCPUs, 1.5 GiB, user networking with an SSH port forward.
type vmSpec struct {
	work     string // directory for the serial log and the firmware variables
	firmware string
	key      string // SSH key the guest authorizes (through config, or a config it already has)
	config   string // cluster config handed over in fw_cfg; "" for none
	drives   []string
}

// startFirmwareVM starts the VM with fresh firmware variables in s.work (made if missing); it is killed at the
// test's end, with its console on failure. A guest reboot ends qemu (-no-reboot): the test starts it again on
// the same disk and firmware variables (a power cycle), because qemu 7.2's in-place reset of a q35 OVMF guest
// under TCG hung after "reboot: machine restart".
func startFirmwareVM(t *testing.T, s vmSpec) *vm {
	t.Helper()
	if err := os.MkdirAll(s.work, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &vm{serial: filepath.Join(s.work, "serial.log"), key: s.key, port: freePort(t)}
	v.argv = []string{"-machine", "q35", "-accel", "tcg,thread=multi", "-smp", "2", "-m", "1536"}
	if s.firmware == firmwareUEFI {
		vars := filepath.Join(s.work, "OVMF_VARS.fd")
		if _, err := os.Stat(vars); err != nil {
			data, err := os.ReadFile(ovmfVars)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(vars, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		v.argv = append(v.argv, "-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode, "-drive", "if=pflash,format=raw,file="+vars)
	}
	v.argv = append(v.argv, s.drives...)
	v.argv = append(v.argv, "-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:22", v.port))
	if s.config != "" {
		v.argv = append(v.argv, "-fw_cfg", "name=opt/kiln/config,file="+s.config)
	}
	v.argv = append(v.argv, "-no-reboot", "-serial", "file:"+v.serial, "-display", "none", "-monitor", "none")
	v.launch(t)
	t.Cleanup(func() {
		v.kill()
		if t.Failed() {
			t.Logf("qemu stderr: %s", v.stderr.String())
			t.Logf("serial console (last 80 lines):\n%s", tail(v.serial, 80))
		}
	})
	return v
}

// checkNode checks what every boot of the node image must give, whatever the firmware or medium: booted by
// the expected firmware, /var the kiln-state partition on the disk, the agent running, a machine-id of its own.
func checkNode(ctx context.Context, t *testing.T, v *vm, firmware string) {
	t.Helper()
	out := v.mustSSH(ctx, t, `test -d /sys/firmware/efi && echo uefi || echo bios; lsblk -no PARTLABEL "$(findmnt -no SOURCE /var)"; systemctl is-active kiln-firstboot; systemctl is-system-running`)
	f := strings.Fields(out)
	if len(f) != 4 || f[0] != firmware || f[1] != "kiln-state" || f[2] != "active" || (f[3] != "running" && f[3] != "degraded") {
		t.Errorf("want firmware %s, /var on kiln-state, kiln-firstboot active, multi-user; got %q", firmware, out)
	}
	if id := strings.TrimSpace(v.mustSSH(ctx, t, "cat /etc/machine-id; cmp /etc/machine-id /var/lib/kiln/machine-id >&2")); len(id) != 32 {
		t.Errorf("machine-id %q", id)
	}
}
