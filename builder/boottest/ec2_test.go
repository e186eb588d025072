package boottest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ec2InstanceID is what the test's SMBIOS claims, as an EC2 Nitro instance's baseboard asset tag does.
const ec2InstanceID = "i-0abc1234def567890"

// TestBootNVMeEC2 boots the image as an EC2 Nitro instance sees it: UEFI, the disk on an NVMe controller (the
// boot volume is nvme0n1 there), SMBIOS naming Amazon EC2 with the instance id in the asset tag, and a volume
// larger than the image. It proves the initrd finds the layers and appends kiln-state on NVMe, /var fills
// the volume, and the node is named by its instance id. The ENA NIC has no qemu model: the initrd test
// checks its driver is there, and networkd's match (Type=ether, en*) names it as any other port.
func TestBootNVMeEC2(t *testing.T) {
	if testing.Short() {
		t.Skip("boot test: skipped with -short")
	}
	if os.Getenv("KILN_E2E") != "1" || os.Getenv("KILN_E2E_LARGE") != "1" {
		t.Skip("EC2-like boot: set KILN_E2E=1 KILN_E2E_LARGE=1 (make e2e)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	work := t.TempDir()
	raw := imagePath(t)

	const volume = 8 << 30 // an 8 GiB gp3 volume
	overlay := filepath.Join(work, "volume.qcow2")
	run(ctx, t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", raw, overlay, strconv.Itoa(volume))
	key, config := sshKeyAndConfig(ctx, t, work)
	v := startFirmwareVM(t, vmSpec{work: work, firmware: firmwareUEFI, key: key, config: config, drives: []string{
		"-drive", "if=none,id=vol0,format=qcow2,file=" + overlay,
		"-device", "nvme,drive=vol0,serial=vol0abc1234def56789",
		"-smbios", "type=1,manufacturer=Amazon EC2,product=t3.small,uuid=ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8",
		"-smbios", "type=2,manufacturer=Amazon EC2,asset=" + ec2InstanceID}})

	v.waitSSH(ctx, t, "")
	t.Logf("reached SSH after %s", v.sinceStart())
	v.waitBootFinished(ctx, t)

	// The layers came from the NVMe disk's partitions, and kiln-state was appended to it, filling the volume.
	out := v.mustSSH(ctx, t, `for m in /run/kiln/base /var; do findmnt -no SOURCE "$m" 2>/dev/null || echo "$m?"; done; `+
		`lsblk -bdno SIZE "$(findmnt -no SOURCE /var)"; lsblk -no PARTLABEL "$(findmnt -no SOURCE /var)"`)
	t.Logf("mounts and sizes:\n%s", out)
	f := strings.Fields(out)
	if len(f) < 3 || !strings.HasPrefix(f[len(f)-3], "/dev/nvme0n1p") || f[len(f)-1] != "kiln-state" {
		t.Fatalf("/var: want kiln-state on /dev/nvme0n1pN, got %q", out)
	}
	stateSize, _ := strconv.ParseInt(f[len(f)-2], 10, 64)
	if want := int64(volume) - fileSize(t, raw); stateSize < want-(4<<20) || stateSize > want+(1<<20) {
		t.Errorf("kiln-state is %d bytes, want ≈ volume %d − image %d = %d", stateSize, int64(volume), fileSize(t, raw), want)
	}
	if out := strings.TrimSpace(v.mustSSH(ctx, t, "hostname")); out != ec2InstanceID {
		t.Errorf("hostname %q, want the instance id %s", out, ec2InstanceID)
	}
	// The serial console is the one EC2's "get system log" and serial console read.
	if out := v.mustSSH(ctx, t, "cat /proc/cmdline"); !strings.Contains(out, "console=ttyS0") {
		t.Errorf("kernel command line %q has no serial console", out)
	}
	if out, err := v.ssh(ctx, "systemctl is-active kiln-firstboot"); err != nil {
		t.Errorf("kiln-firstboot is not active: %s", out)
	}
}
