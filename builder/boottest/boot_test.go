package boottest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/testenv"
)

const (
	// diskSize is the virtual size of the test disk: bigger than the image, so the state partition must be
	// created in (and grow into) the remainder.
	diskSize = 6 << 30
	// bootTimeout bounds one boot to SSH through OVMF under TCG (about a minute on a quiet 2-core host,
	// docs/measurements.md; a busy host is slower).
	bootTimeout = 6 * time.Minute
	ovmfCode    = "/usr/share/OVMF/OVMF_CODE.fd"
	ovmfVars    = "/usr/share/OVMF/OVMF_VARS.fd"
)

// TestBootImage installs the node from node.iso and boots what was installed (OVMF, TCG), as a user with a
// spare machine does. The installer, booted as a CD beside a blank target disk, a blank and a dirty extra disk
// and the cluster config in fw_cfg, writes the image and the config onto the first empty disk (vda) and
// restarts. That disk then boots on its own, without the CD and without fw_cfg, by the rules of a flashed
// disk: read-only root, the state partition created in the rest of the bigger disk, services enabled, the
// agent ran with the config the installer carried to the ESP, the blank disk became the brick disk and the
// dirty one was left alone, and state survives a reboot while /etc does not. node.raw's own OVMF boot is the
// one every lab node makes (test/formation); from kiln-base to its end the installed disk holds its bytes.
func TestBootImage(t *testing.T) {
	e2e(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	work := t.TempDir()
	key, config := sshKeyAndConfig(ctx, t, work)
	target, disks := installDisks(ctx, t, work)
	install(ctx, t, filepath.Join(work, "install"), firmwareUEFI, cdrom(sibling(t, "iso")), key, config, target, disks)

	vm := startFirmwareVM(t, vmSpec{work: filepath.Join(work, "boot"), firmware: firmwareUEFI, key: key, drives: disks})
	t.Log("first boot: waiting for SSH")
	firstBootID := vm.waitSSH(ctx, t, "")
	t.Logf("first boot reached SSH after %s", vm.sinceStart())
	vm.waitBootFinished(ctx, t)
	out := vm.mustSSH(ctx, t, "systemctl is-system-running; systemctl --failed --no-legend; systemd-analyze time")
	t.Logf("boot: %s", out)

	// / is read-only by construction; /etc is writable.
	if out, err := vm.ssh(ctx, "touch /usr/kiln-boottest"); err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("touch /usr/kiln-boottest: want EROFS, got err=%v out=%q", err, out)
	}
	vm.mustSSH(ctx, t, "echo x >/etc/kiln-boottest-ephemeral")

	// /var is the kiln-state partition, filling the disk's remainder.
	out = vm.mustSSH(ctx, t, `dev=$(findmnt -no SOURCE /var); echo "$dev $(findmnt -no FSTYPE /var) $(lsblk -no PARTLABEL "$dev") $(lsblk -bdno SIZE "$dev")"`)
	f := strings.Fields(out)
	if len(f) != 4 || f[1] != "ext4" || f[2] != "kiln-state" {
		t.Fatalf("/var: want an ext4 partition labelled kiln-state, got %q", out)
	}
	rawSize := fileSize(t, imagePath(t))
	stateSize, _ := strconv.ParseInt(f[3], 10, 64)
	// It starts where the image's last partition ends (1 MiB before the image's end) and stops at the backup
	// GPT, give or take sfdisk's 1 MiB alignment.
	if want := int64(diskSize) - rawSize; stateSize < want-(4<<20) || stateSize > want+(1<<20) {
		t.Errorf("kiln-state is %d bytes, want ≈ disk %d − image %d = %d", stateSize, int64(diskSize), rawSize, want)
	}
	checkNode(ctx, t, vm, firmwareUEFI)
	if out := vm.mustSSH(ctx, t, `grep -o '"config_source": *"[a-z_-]*"' /run/kiln/status.json`); !strings.Contains(out, `"esp"`) {
		t.Errorf("the installed node's config source: %q, want esp (carried over by the installer)", out)
	}

	// The cluster's software is installed and enabled (keepalived waits for the agent's configuration).
	out = vm.mustSSH(ctx, t, "command -v dockerd glusterd keepalived; systemctl is-enabled docker glusterd keepalived kiln-firstboot ssh systemd-networkd")
	t.Logf("services:\n%s", out)
	if strings.Contains(out, "disabled") || strings.Count(out, "enabled") != 6 {
		t.Errorf("want dockerd, glusterd, keepalived installed and every unit enabled, got:\n%s", out)
	}
	for _, u := range []string{"docker", "glusterd", "ssh", "systemd-networkd"} {
		if out, err := vm.ssh(ctx, "systemctl is-active "+u); err != nil {
			t.Errorf("%s is not active: %s", u, out)
		}
	}
	// The agent ran: its own output (not systemd's) is in the journal.
	out = vm.mustSSH(ctx, t, "journalctl -b -o cat _SYSTEMD_UNIT=kiln-firstboot.service | head -n 5")
	if strings.TrimSpace(out) == "" {
		t.Errorf("kiln-firstboot wrote nothing to the journal")
	} else {
		t.Logf("agent: %s", out)
	}
	// Nothing listens that the image did not mean to (rpcbind would come with Recommends).
	out = vm.mustSSH(ctx, t, "ss -Hltnu")
	t.Logf("listening:\n%s", out)
	if strings.Contains(out, ":111 ") {
		t.Errorf("rpcbind (port 111) listens")
	}
	// Identity is per node: no host key or machine-id came from the image.
	machineID := strings.TrimSpace(vm.mustSSH(ctx, t, "cat /etc/machine-id; cmp /etc/machine-id /var/lib/kiln/machine-id >&2"))
	if len(machineID) != 32 {
		t.Fatalf("machine-id %q", machineID)
	}
	// The empty second disk became the brick disk; the one holding a byte was left alone.
	out = vm.mustSSH(ctx, t, "findmnt -no SOURCE,FSTYPE,LABEL /var/lib/kiln/bricks; test -d /var/lib/kiln/bricks/data && echo data-dir")
	if f := strings.Fields(out); len(f) != 4 || f[0] != "/dev/vdb" || f[1] != "ext4" || f[2] != "kiln-bricks" || f[3] != "data-dir" {
		t.Errorf("/var/lib/kiln/bricks: want /dev/vdb ext4 kiln-bricks with data/, got %q\n%s", out,
			vm.mustSSH(ctx, t, "journalctl -b -u kiln-brick-disk -o cat --no-pager | tail -n 20"))
	}
	out = vm.mustSSH(ctx, t, "blkid -p /dev/vdc; echo rc=$?; od -An -tx1 -j4096 -N1 /dev/vdc")
	if f := strings.Fields(out); len(f) != 2 || f[0] != "rc=2" || f[1] != "5a" {
		t.Errorf("/dev/vdc (not empty) was touched: blkid/od say %q", out)
	}
	marker := randomHex(t)
	vm.mustSSH(ctx, t, "echo "+marker+" >/var/lib/kiln/boottest-marker && echo "+marker+" >/var/lib/kiln/bricks/data/marker && sync")

	t.Log("rebooting")
	vm.reboot(ctx, t)
	vm.waitSSH(ctx, t, firstBootID)
	t.Logf("second boot reached SSH after %s", vm.sinceStart())
	if out := strings.TrimSpace(vm.mustSSH(ctx, t, "cat /var/lib/kiln/boottest-marker")); out != marker {
		t.Errorf("/var/lib/kiln/boottest-marker after reboot: %q, want %q", out, marker)
	}
	// The brick disk is mounted again (by its label, not formatted again: the marker is there).
	if out := strings.TrimSpace(vm.mustSSH(ctx, t, "findmnt -no SOURCE /var/lib/kiln/bricks; cat /var/lib/kiln/bricks/data/marker")); out != "/dev/vdb\n"+marker {
		t.Errorf("brick disk after reboot: %q, want /dev/vdb and the marker", out)
	}
	if out := strings.TrimSpace(vm.mustSSH(ctx, t, "cat /etc/machine-id")); out != machineID {
		t.Errorf("machine-id changed across reboot: %q → %q", machineID, out)
	}
	if out, err := vm.ssh(ctx, "test -e /etc/kiln-boottest-ephemeral"); err == nil {
		t.Errorf("/etc/kiln-boottest-ephemeral survived the reboot (%s): /etc must be reset every boot", out)
	}
	if out := vm.mustSSH(ctx, t, "lsblk -no PARTLABEL $(findmnt -no SOURCE /var)"); strings.TrimSpace(out) != "kiln-state" {
		t.Errorf("/var after reboot: %q", out)
	}
}

// imagePath is the image under test: $KILN_IMAGE, default out/node.raw, as `make image` builds it. The test
// boots the published artifact rather than building its own, so it proves what users flash.
func imagePath(t *testing.T) string {
	t.Helper()
	img, err := testenv.ImagePath()
	if err != nil {
		t.Fatalf("KILN_E2E=1 but no %v", err)
	}
	return img
}

// vm is one qemu process booting the image.
type vm struct {
	argv    []string
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	serial  string
	key     string
	port    int
	started time.Time
	exited  chan struct{}
}

// installDisks makes the disks of an install: the target (blank, diskSize, first in the boot order after the
// medium: vda), a blank one (vdb, the brick disk to be) and one with a byte of "data" in its first MiB (vdc),
// which nothing may ever write to. The same arguments serve the installer's boot and the installed disk's.
func installDisks(ctx context.Context, t *testing.T, work string) (target string, args []string) {
	t.Helper()
	target = blankRaw(t, work, "target.raw", diskSize)
	blank := filepath.Join(work, "blank.qcow2")
	run(ctx, t, "qemu-img", "create", "-q", "-f", "qcow2", blank, "2G")
	dirty := filepath.Join(work, "dirty.raw")
	if err := os.WriteFile(dirty, append(make([]byte, 4096), 0x5a), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dirty, 2<<30); err != nil {
		t.Fatal(err)
	}
	return target, []string{
		"-drive", "file=" + target + ",if=none,id=target,format=raw", "-device", "virtio-blk-pci,drive=target,bootindex=2",
		"-drive", "file=" + blank + ",if=none,id=blank,format=qcow2", "-device", "virtio-blk-pci,drive=blank",
		"-drive", "file=" + dirty + ",if=none,id=dirty,format=raw", "-device", "virtio-blk-pci,drive=dirty",
	}
}

// sshKeyAndConfig writes an SSH key pair and a one-node cluster config that authorizes it (for fw_cfg
// opt/kiln/config), and returns their paths.
func sshKeyAndConfig(ctx context.Context, t *testing.T, work string) (key, config string) {
	t.Helper()
	key = filepath.Join(work, "id_ed25519")
	run(ctx, t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiln-boottest", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	clusterKey := make([]byte, 32)
	rand.Read(clusterKey)
	config = filepath.Join(work, "config.yaml")
	cfg := fmt.Sprintf("cluster:\n  name: boottest\n  key: %s\n  size: 1\n  vip: 10.0.2.250/24\nssh_authorized_keys:\n  - %s\n",
		base64.StdEncoding.EncodeToString(clusterKey), strings.TrimSpace(string(pub)))
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, config
}

// launch starts qemu; the serial log is appended to, so a failure shows every boot.
func (v *vm) launch(t *testing.T) {
	t.Helper()
	argv := slices.Clone(v.argv)
	for i, a := range argv {
		if strings.HasPrefix(a, "file:"+v.serial) {
			argv[i] = "file:" + v.serial + "." + strconv.Itoa(bootCount(v.serial))
		}
	}
	v.cmd = exec.Command("qemu-system-x86_64", argv...)
	v.cmd.Stderr = &v.stderr
	// Its own process group: a signal meant for qemu never reaches the test binary.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	v.started = time.Now()
	v.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(v.cmd, v.exited)
}

// bootCount numbers serial logs: serial.log.1, serial.log.2 …
func bootCount(serial string) int {
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(serial + "." + strconv.Itoa(n)); err != nil {
			return n
		}
	}
}

// kill stops qemu by its pid and waits for it.
func (v *vm) kill() {
	if v.cmd != nil && v.cmd.Process != nil {
		_ = v.cmd.Process.Kill()
		<-v.exited
	}
}

// reboot asks the guest to reboot, waits (bounded) for qemu to exit (-no-reboot) and starts it again.
func (v *vm) reboot(ctx context.Context, t *testing.T) {
	t.Helper()
	_, _ = v.ssh(ctx, "systemctl reboot")
	select {
	case <-v.exited:
	case <-time.After(3 * time.Minute):
		t.Fatalf("guest did not shut down within 3 min of systemctl reboot")
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	v.launch(t)
}

func (v *vm) sinceStart() time.Duration { return time.Since(v.started).Round(time.Second) }

// ssh runs a command as root in the guest and returns its combined output.
func (v *vm) ssh(ctx context.Context, command string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", "-q", "-i", v.key, "-p", strconv.Itoa(v.port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
		"root@127.0.0.1", command).CombinedOutput()
	return string(out), err
}

func (v *vm) mustSSH(ctx context.Context, t *testing.T, command string) string {
	t.Helper()
	out, err := v.ssh(ctx, command)
	if err != nil {
		t.Fatalf("ssh %q: %v: %s", command, err, out)
	}
	return out
}

// waitBootFinished polls until systemd's start-up transaction is over (running or degraded). A single
// `is-system-running --wait` would outlive one ssh call's bound when services start slowly under TCG.
func (v *vm) waitBootFinished(ctx context.Context, t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var last string
	for time.Now().Before(deadline) {
		out, _ := v.ssh(ctx, "systemctl is-system-running")
		last = strings.TrimSpace(out)
		if last == "running" || last == "degraded" {
			return
		}
		select {
		case <-v.exited:
			t.Fatalf("qemu exited while the guest was starting: %v", v.cmd.ProcessState)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
	t.Fatalf("boot did not finish within %s: systemctl is-system-running says %q", bootTimeout, last)
}

// waitSSH polls until a root SSH login works in a boot other than notBootID, and returns the boot's id.
func (v *vm) waitSSH(ctx context.Context, t *testing.T, notBootID string) string {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var last string
	for time.Now().Before(deadline) {
		out, err := v.ssh(ctx, "cat /proc/sys/kernel/random/boot_id")
		if id := strings.TrimSpace(out); err == nil && len(id) == 36 && id != notBootID {
			return id
		}
		last = fmt.Sprintf("%v: %s", err, out)
		select {
		case <-v.exited:
			t.Fatalf("qemu exited before SSH came up: %v", v.cmd.ProcessState)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
	t.Fatalf("no SSH login within %s (last: %s)", bootTimeout, last)
	return ""
}

func run(ctx context.Context, t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// tail returns the last n lines of the latest serial log (path.N).
func tail(path string, n int) string {
	return files.Tail(path+"."+strconv.Itoa(bootCount(path)-1), n)
}
