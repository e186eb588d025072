package boottest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

const (
	// netbootMAC is the guest NIC's address; the command line names it in BOOTIF=, as iPXE's boot.ipxe does.
	netbootMAC = "52:54:00:4b:11:01"
	// stateDiskSize is the blank disk a netbooted node gets for its state.
	stateDiskSize = 4 << 30
	// serialTimeout bounds the wait for a console message that ends a boot in the initramfs: the layers'
	// download under TCG, or 20 fetch attempts with their pauses (about 90 s).
	serialTimeout = 5 * time.Minute
)

// netbootImage is what a netbooted node gets: the image's kernel and initrd, and its layers, lowest first.
type netbootImage struct {
	kernel, initrd string
	layers         []netbootLayer
}

type netbootLayer struct {
	name, path, sha256 string
}

// TestNetboot boots the image's own kernel and initrd the way iPXE does (qemu's direct kernel boot under TCG:
// -kernel, -initrd, -append with BOOTIF= and kiln.layers=), the layers served over HTTP by this test process
// and reached through qemu's user network (10.0.2.2 is the host's loopback). Each case is one machine.
func TestNetboot(t *testing.T) {
	if testing.Short() {
		t.Skip("netboot test: skipped with -short")
	}
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("netboot test: set KILN_E2E=1 (netboots the built image in qemu: minutes)")
	}
	img := netbootFiles(t, imagePath(t))

	t.Run("tampered layer", func(t *testing.T) { testNetbootTampered(t, img) })
	// make test keeps to the tampered layer and a blank disk (with its reboot): the netboot path of one machine.
	// No disk and server down run in make e2e (KILN_E2E_LARGE), beside test/formation's TestNetboot (three nodes
	// through the real firmware and kiln pxe serve), within CI's time budget.
	t.Run("blank disk", func(t *testing.T) { testNetbootBlankDisk(t, img) })
	if os.Getenv("KILN_E2E_LARGE") != "1" {
		t.Log("no disk and server down: set KILN_E2E_LARGE=1 (make e2e)")
		return
	}
	t.Run("no disk", func(t *testing.T) { testNetbootNoDisk(t, img) })
	t.Run("server down", func(t *testing.T) { testNetbootServerDown(t, img) })
}

// testNetbootBlankDisk: good layers and two blank disks. The initramfs makes vda the state disk (GPT, one
// kiln-state partition), leaves vdb to the brick disk step, and a reboot finds the same state: same node.
func testNetbootBlankDisk(t *testing.T, img netbootImage) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	work := t.TempDir()
	srv := serveLayers(t, img, nil)
	state := blankRaw(t, work, "state.raw", stateDiskSize)
	brick := blankRaw(t, work, "brick.raw", 2<<30)
	v := startNetbootVM(ctx, t, work, img, srv.URL, state, brick)

	firstBootID := v.waitSSH(ctx, t, "")
	toSSH := v.sinceStart()
	v.waitBootFinished(ctx, t)
	t.Logf("netboot: SSH after %s, multi-user after %s", toSSH, v.sinceStart())
	t.Logf("systemd-analyze: %s", v.mustSSH(ctx, t, "systemd-analyze time"))
	t.Logf("initramfs:\n%s", v.mustSSH(ctx, t, "dmesg | grep -E 'kiln: (netboot|state|root)'"))

	if out, err := v.ssh(ctx, "touch /usr/kiln-netboottest"); err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("touch /usr/kiln-netboottest: want EROFS, got err=%v out=%q", err, out)
	}
	// / is the overlay of the two layers, each a loop device over its file in RAM.
	out := v.mustSSH(ctx, t, "findmnt -no FSTYPE /; losetup -nO BACK-FILE | sort")
	if got, want := strings.Fields(out), []string{"overlay", "/run/kiln/layers/base.squashfs", "/run/kiln/layers/node.squashfs"}; !slices.Equal(got, want) {
		t.Errorf("root and loop devices: got %q, want %q", got, want)
	}
	// /var is the new partition: a GPT on vda with one partition, named kiln-state, of type Linux /var.
	out = v.mustSSH(ctx, t, "findmnt -no SOURCE,FSTYPE /var; lsblk -no PARTLABEL,PARTTYPE,LABEL /dev/vda1; "+
		"blkid -p -s PTTYPE -o value /dev/vda; ls /sys/block/vda | grep -c '^vda[0-9]'")
	if f := strings.Fields(out); len(f) != 7 || f[0] != "/dev/vda1" || f[1] != "ext4" || f[2] != "kiln-state" ||
		f[3] != "4d21b016-b534-45c2-a9fb-5c16e091fd2d" || f[4] != "kiln-state" || f[5] != "gpt" || f[6] != "1" {
		t.Errorf("/var: want /dev/vda1 ext4, partition kiln-state of type Linux /var, ext4 label kiln-state, "+
			"the only partition of a GPT; got %q", out)
	}
	if out, err := v.ssh(ctx, "test -e /run/kiln/state-tmpfs"); err == nil {
		t.Errorf("/run/kiln/state-tmpfs exists with /var on a disk: %s", out)
	}
	// The initramfs took one empty disk; the brick disk step took the other.
	if out := strings.TrimSpace(v.mustSSH(ctx, t, "findmnt -no SOURCE,LABEL /var/lib/kiln/bricks")); out != "/dev/vdb kiln-bricks" {
		t.Errorf("brick disk: got %q, want /dev/vdb kiln-bricks\n%s", out,
			v.mustSSH(ctx, t, "journalctl -b -u kiln-brick-disk -o cat --no-pager | tail -n 20"))
	}
	t.Logf("RAM with the layers in it:\n%s", v.mustSSH(ctx, t,
		"grep -E '^(MemTotal|MemAvailable|Shmem):' /proc/meminfo; du -sm /run/kiln/layers/*; free -m"))

	machineID := strings.TrimSpace(v.mustSSH(ctx, t, "cat /etc/machine-id"))
	if len(machineID) != 32 {
		t.Fatalf("machine-id %q", machineID)
	}
	marker := randomHex(t)
	v.mustSSH(ctx, t, "echo "+marker+" >/var/lib/kiln/netboot-marker && sync")

	t.Log("rebooting")
	v.reboot(ctx, t)
	v.waitSSH(ctx, t, firstBootID)
	t.Logf("second netboot: SSH after %s", v.sinceStart())
	if out := strings.TrimSpace(v.mustSSH(ctx, t, "cat /etc/machine-id")); out != machineID {
		t.Errorf("machine-id changed across reboot: %q → %q", machineID, out)
	}
	if out := strings.TrimSpace(v.mustSSH(ctx, t, "cat /var/lib/kiln/netboot-marker")); out != marker {
		t.Errorf("/var/lib/kiln/netboot-marker after reboot: %q, want %q", out, marker)
	}
	// Found again by its label, not made again.
	out = v.mustSSH(ctx, t, "findmnt -no SOURCE /var; dmesg | grep -E 'kiln: state:'")
	if !strings.HasPrefix(out, "/dev/vda1\n") || !strings.Contains(out, "kiln-state found on /dev/vda1") ||
		strings.Contains(out, "creating partition") {
		t.Errorf("second boot's state: %q", out)
	}
}

// testNetbootTampered: one layer's bytes differ from the sha256 on the command line. The console names the
// layer and both hashes, and the boot stops before any disk is touched: the blank disk is still all zero.
func testNetbootTampered(t *testing.T, img netbootImage) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	top := img.layers[len(img.layers)-1]
	data, err := os.ReadFile(top.path)
	if err != nil {
		t.Fatal(err)
	}
	// One byte in the middle of the top layer: the file is as long as the real one, and a squashfs reader
	// might not even notice.
	data[len(data)/2] ^= 0xff
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	srv := serveLayers(t, img, map[string][]byte{top.name: data})
	state := blankRaw(t, work, "state.raw", stateDiskSize)
	v := startNetbootVM(ctx, t, work, img, srv.URL, state)

	line := v.waitSerial(ctx, t, "does not match the boot entry")
	t.Logf("console: %s", line)
	for _, want := range []string{guestURL(srv.URL) + "/" + top.name, "expected " + top.sha256, "got " + got, "nothing was written to any disk"} {
		if !strings.Contains(line, want) {
			t.Errorf("mismatch message lacks %q", want)
		}
	}
	// The rescue shell the panic leaves is the end of this boot; give a misbehaving script a moment to write.
	time.Sleep(5 * time.Second)
	v.kill()
	if !allZero(t, state) {
		t.Errorf("the state disk was written to although the layer did not verify")
	}
}

// testNetbootNoDisk: no disk to keep state on. /var is a tmpfs and the marker says why.
func testNetbootNoDisk(t *testing.T, img netbootImage) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	work := t.TempDir()
	srv := serveLayers(t, img, nil)
	v := startNetbootVM(ctx, t, work, img, srv.URL)
	v.waitSSH(ctx, t, "")
	t.Logf("netboot without a disk: SSH after %s", v.sinceStart())
	out := v.mustSSH(ctx, t, "findmnt -no FSTYPE /var; cat /run/kiln/state-tmpfs")
	t.Logf("/var and marker: %s", out)
	fstype, reason, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if fstype != "tmpfs" || !strings.HasPrefix(reason, "no local disk holds a kiln-state filesystem and none is empty") {
		t.Errorf("want /var on tmpfs and the marker's reason, got %q", out)
	}
	if out, err := v.ssh(ctx, "findmnt /var/lib/kiln/bricks"); err == nil {
		t.Errorf("a brick disk is mounted on a node without disks: %s", out)
	}
}

// testNetbootServerDown: nothing answers at the layers' address. The console shows each attempt and why it
// failed, then stops the boot after the last one; the disk is untouched.
func testNetbootServerDown(t *testing.T, img netbootImage) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	// A port that was free a moment ago: connections to it are refused.
	url := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	state := blankRaw(t, work, "state.raw", stateDiskSize)
	v := startNetbootVM(ctx, t, work, img, url, state)
	base := guestURL(url) + "/" + img.layers[0].name
	first := v.waitSerial(ctx, t, "(attempt 1/20)")
	last := v.waitSerial(ctx, t, "failed 20 times")
	t.Logf("console, first and last:\n%s\n%s\n(stopped %s after qemu started)", first, last, v.sinceStart())
	if !strings.Contains(first, "fetching "+base+" (attempt 1/20): ") || !strings.Contains(first, "refused") {
		t.Errorf("first retry line: %q", first)
	}
	log := v.serialText(t)
	for i := 1; i < 20; i++ {
		if !strings.Contains(log, fmt.Sprintf("(attempt %d/20)", i)) {
			t.Errorf("console shows no attempt %d", i)
		}
	}
	if !strings.Contains(last, base) || !strings.Contains(last, "nothing was written to any disk") {
		t.Errorf("final message: %q", last)
	}
	v.kill()
	if !allZero(t, state) {
		t.Errorf("the state disk was written to although no layer was fetched")
	}
}

// netbootFiles finds what a netbooted node gets for the image under test: the pxe format's files when the
// build wrote them (OUT/pxe/, checked against its pxe.json), else the cached stage outputs the manifest names
// (the same bytes).
func netbootFiles(t *testing.T, raw string) netbootImage {
	t.Helper()
	var img netbootImage
	if pxe := filepath.Join(filepath.Dir(raw), "pxe"); fileExists(filepath.Join(pxe, pxedir.Manifest)) {
		var idx pxedir.Index
		if b, err := os.ReadFile(filepath.Join(pxe, pxedir.Manifest)); err != nil {
			t.Fatal(err)
		} else if err := json.Unmarshal(b, &idx); err != nil {
			t.Fatalf("pxe.json: %v", err)
		}
		img.kernel, img.initrd = filepath.Join(pxe, pxedir.Kernel), filepath.Join(pxe, pxedir.Initrd)
		for _, name := range []string{pxedir.Base, pxedir.Node} {
			img.layers = append(img.layers, netbootLayer{name: name, path: filepath.Join(pxe, name), sha256: idx.Files[name]})
		}
	} else {
		pkgs := packagesOut(t, raw)
		img.kernel, img.initrd = filepath.Join(pkgs, "vmlinuz"), filepath.Join(pkgs, "initrd.img")
		for _, l := range []string{"base", "node"} {
			img.layers = append(img.layers, netbootLayer{name: l + ".squashfs", path: filepath.Join(stageOut(t, raw, l), l+".squashfs")})
		}
	}
	for i, l := range img.layers {
		if got := hashFile(t, l.path); l.sha256 == "" {
			img.layers[i].sha256 = got
		} else if got != l.sha256 {
			t.Fatalf("%s: sha256 %s, pxe.json says %s", l.path, got, l.sha256)
		}
	}
	for _, p := range []string{img.kernel, img.initrd} {
		if !fileExists(p) {
			t.Fatalf("%s is missing", p)
		}
	}
	t.Logf("netboot: kernel %s, initrd %s, layers %v", img.kernel, img.initrd, img.layers)
	return img
}

// serveLayers serves the image's layers over HTTP on the loopback, each by its name; replace swaps a layer's
// bytes. Every request is logged.
func serveLayers(t *testing.T, img netbootImage, replace map[string][]byte) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, l := range img.layers {
		mux.HandleFunc("/"+l.name, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			if data, ok := replace[l.name]; ok {
				http.ServeContent(w, r, l.name, time.Time{}, bytes.NewReader(data))
			} else {
				http.ServeFile(w, r, l.path)
			}
			t.Logf("http: %s %s from %s in %s", r.Method, r.URL.Path, r.RemoteAddr, time.Since(start).Round(time.Millisecond))
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// startNetbootVM starts qemu on the image's kernel and initrd, with the layers at serverURL (a loopback URL,
// rewritten to the guest's view of the host) and disks attached as virtio vda, vdb…
func startNetbootVM(ctx context.Context, t *testing.T, work string, img netbootImage, serverURL string, disks ...string) *vm {
	t.Helper()
	key, config := sshKeyAndConfig(ctx, t, work)
	var layers []string
	for _, l := range img.layers {
		layers = append(layers, guestURL(serverURL)+"/"+l.name+"?sha256="+l.sha256)
	}
	cmdline := append(append([]string{}, disk.BaseCmdline...),
		"BOOTIF=01-"+strings.ReplaceAll(netbootMAC, ":", "-"), "kiln.layers="+strings.Join(layers, ","))
	port := freePort(t)
	v := &vm{serial: filepath.Join(work, "serial.log"), key: key, port: port}
	v.argv = []string{
		"-machine", "q35", "-accel", "tcg,thread=multi", "-smp", "2", "-m", "1536",
		"-kernel", img.kernel, "-initrd", img.initrd, "-append", strings.Join(cmdline, " "),
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,mac=%s,hostfwd=tcp:127.0.0.1:%d-:22", netbootMAC, port),
		"-fw_cfg", "name=opt/kiln/config,file=" + config,
		// A reboot ends qemu; v.reboot starts it again on the same disks (a power cycle), as TestBootImage does.
		"-no-reboot",
		"-serial", "file:" + v.serial, "-display", "none", "-monitor", "none",
	}
	for _, d := range disks {
		v.argv = append(v.argv, "-drive", "file="+d+",if=virtio,format=raw")
	}
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

// guestURL is a loopback URL as the guest sees it through qemu's user network.
func guestURL(u string) string { return strings.Replace(u, "127.0.0.1", "10.0.2.2", 1) }

// serialText is the current boot's console output so far.
func (v *vm) serialText(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(v.serial + "." + strconv.Itoa(bootCount(v.serial)-1))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(data)
}

// waitSerial polls the current boot's console until a line contains want, and returns that line.
func (v *vm) waitSerial(ctx context.Context, t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(serialTimeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(v.serialText(t), "\n") {
			if strings.Contains(l, want) {
				return strings.TrimSpace(l)
			}
		}
		select {
		case <-v.exited:
			t.Fatalf("qemu exited before the console showed %q: %v", want, v.cmd.ProcessState)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
	t.Fatalf("the console did not show %q within %s", want, serialTimeout)
	return ""
}

// blankRaw creates a sparse raw disk of size bytes, all zero.
func blankRaw(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// allZero reports whether every byte of the file at path is zero.
func allZero(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf, zero := make([]byte, 4<<20), make([]byte, 4<<20)
	for {
		n, err := f.Read(buf)
		if !bytes.Equal(buf[:n], zero[:n]) {
			return false
		}
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
