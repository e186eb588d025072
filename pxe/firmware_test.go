package pxe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-project/kiln/pxe/internal/pxetest"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS.fd"
	ipxeDir  = "/usr/lib/ipxe" // Debian's ipxe package
)

// needVMs skips unless KILN_E2E=1 (the suites that boot VMs); then anything missing fails the test.
func needVMs(t *testing.T) {
	t.Helper()
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("set KILN_E2E=1 to netboot qemu VMs (needs root, qemu, OVMF, ipxe, dnsmasq)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("KILN_E2E=1 asks for this test, and it needs root (network namespaces, taps)")
	}
	for _, tool := range []string{"ip", "dnsmasq", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("KILN_E2E=1 asks for this test, and it needs %s (make deps installs it)", tool)
		}
	}
	for _, f := range []string{ovmfCode, ovmfVars, filepath.Join(ipxeDir, pxedir.EFI), filepath.Join(ipxeDir, pxedir.BIOS)} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("KILN_E2E=1 asks for this test, and it needs %s (packages ovmf, ipxe)", f)
		}
	}
}

// TestFirmwareNetboot boots diskless qemu VMs from the NIC on a LAN with a plain DHCP server (dnsmasq) and the
// proxy on one host, as in the lab and a garage: SeaBIOS runs the NIC's iPXE ROM, which gets the script's URL
// from the proxy; OVMF, once the ROM's iPXE gave up, runs UEFI's own PXE, which gets ipxe.efi over TFTP, and
// that iPXE gets the script. The kernel is random bytes: the proof ends when iPXE has fetched it.
func TestFirmwareNetboot(t *testing.T) {
	needVMs(t)
	ns := fmt.Sprintf("kpxfw%d", os.Getpid()%100000)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "link", "add", "br0", "type", "bridge")
	ip("-n", ns, "addr", "add", "10.98.8.1/24", "dev", "br0")
	ip("-n", ns, "link", "set", "br0", "up")
	startDnsmasq(t, ns, "br0", "10.98.8")

	efi, bios := pxetest.Read(t, ipxeDir, pxedir.EFI), pxetest.Read(t, ipxeDir, pxedir.BIOS)
	dir := pxetest.Dir(t, map[string][]byte{pxedir.EFI: efi, pxedir.BIOS: bios})
	cfg, _ := writeConfig(t)
	server := startChild(t, ns, Options{Dir: dir, ConfigFile: cfg, Interface: "br0", HTTPPort: 8080, AllowAny: true})
	server.ready(t)

	const script = "http://10.98.8.1:8080/boot.ipxe"
	for i, fw := range []struct {
		name  string
		args  []string
		steps []string // regexps the server log must match in this order; %[1]s is the VM's MAC
	}{
		{"seabios", []string{"-machine", "q35,graphics=off"}, []string{
			`msg="proxyDHCP OFFER" mac=%[1]s arch=0 ipxe=true port=67 boot=` + script,
			`msg=http mac=%[1]s ip=10\.98\.8\.\d+ file=boot\.ipxe status=200`,
			`msg=http mac=%[1]s ip=10\.98\.8\.\d+ file=vmlinuz status=200`,
		}},
		{"ovmf", []string{"-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file=VARS"}, []string{
			`msg="proxyDHCP OFFER" mac=%[1]s arch=7 ipxe=false port=67 boot=ipxe\.efi`,
			`msg=tftp mac=%[1]s ip=10\.98\.8\.\d+ file=ipxe\.efi bytes=` + strconv.Itoa(len(efi)),
			`msg="proxyDHCP OFFER" mac=%[1]s arch=7 ipxe=true port=67 boot=` + script,
			`msg=http mac=%[1]s ip=10\.98\.8\.\d+ file=boot\.ipxe status=200`,
			`msg=http mac=%[1]s ip=10\.98\.8\.\d+ file=vmlinuz status=200`,
		}},
	} {
		t.Run(fw.name, func(t *testing.T) {
			mac := fmt.Sprintf("52:54:00:98:08:%02x", i+1)
			tap := fmt.Sprintf("tap%d", i)
			ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
			ip("-n", ns, "link", "set", tap, "master", "br0", "up")
			work := t.TempDir()
			vars := filepath.Join(work, "OVMF_VARS.fd")
			if err := os.WriteFile(vars, pxetest.Read(t, filepath.Dir(ovmfVars), filepath.Base(ovmfVars)), 0o644); err != nil {
				t.Fatal(err)
			}
			serial, pidfile := filepath.Join(work, "serial.log"), filepath.Join(work, "qemu.pid")
			args := []string{"netns", "exec", ns, "qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none",
				"-m", "512", "-boot", "n", "-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
				"-device", "virtio-net-pci,netdev=n0,mac=" + mac, "-serial", "file:" + serial,
				"-pidfile", pidfile, "-daemonize"}
			for _, a := range fw.args {
				args = append(args, strings.Replace(a, "file=VARS", "file="+vars, 1))
			}
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu: %v: %s", err, out)
			}
			b, err := os.ReadFile(pidfile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

			start := time.Now()
			deadline := start.Add(5 * time.Minute) // TCG on a loaded two-core host; ~1 min for SeaBIOS, ~2 for OVMF
			from := 0                              // each step is looked for after the one before
			for step, pattern := range fw.steps {
				re := regexp.MustCompile(fmt.Sprintf(pattern, mac))
				for {
					if at := re.FindStringIndex(server.logs(t)[from:]); at != nil {
						from += at[1]
						t.Logf("%s after %s", re, time.Since(start).Round(time.Second))
						break
					}
					if time.Now().After(deadline) {
						s, _ := os.ReadFile(serial)
						t.Fatalf("step %d (%s) not in the server log after %s.\nserver log:\n%s\nserial:\n%s", step, re,
							time.Since(start).Round(time.Second), server.logs(t), s)
					}
					time.Sleep(time.Second)
				}
			}
			if s, _ := os.ReadFile(serial); !strings.Contains(string(s), script+"... ok") {
				t.Errorf("the console does not show iPXE fetching %s:\n%s", script, s)
			}
		})
	}
	server.stop(t)
}
