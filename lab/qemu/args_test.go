package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testSpec() Spec {
	return Spec{
		Name: "kiln-demo-node1", MemoryMiB: 1536, CPUs: 1, Accel: AccelTCG,
		OVMFCode: DefaultOVMFCode, OVMFVars: "/state/node1/OVMF_VARS.fd", Disk: "/state/node1/disk.qcow2",
		MAC: "52:54:00:12:34:56", Tap: "tap1", UUID: "0b8f2e5c-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
		SerialLog: "/state/node1/serial.log", QMPSocket: "/state/node1/qmp.sock", PidFile: "/state/node1/qemu.pid",
		ConfigFile: "/state/node1/config.yaml",
	}
}

func TestArgsGolden(t *testing.T) {
	multi := testSpec()
	multi.CPUs = 2
	multi.ConfigFile = ""
	data := testSpec()
	data.DataDisk = "/state/node1/data.qcow2"
	netboot := testSpec()
	netboot.NetBoot = true
	netboot.ConfigFile = ""
	bios := netboot
	bios.Firmware, bios.OVMFCode, bios.OVMFVars = FirmwareBIOS, "", ""
	ec2 := testSpec()
	ec2.ConfigFile, ec2.EC2InstanceID = "", "i-0d1f2a3b4c5d6e7f8"
	for name, s := range map[string]Spec{"tcg-1cpu": testSpec(), "tcg-2cpu-noconfig": multi, "tcg-1cpu-datadisk": data,
		"tcg-netboot-uefi": netboot, "tcg-netboot-bios": bios, "tcg-ec2": ec2} {
		t.Run(name, func(t *testing.T) {
			a, err := Args(s)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(a, "\n") + "\n"
			golden := filepath.Join("testdata", name+".args")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("args differ from %s (run with -update to accept):\n%s", golden, got)
			}
		})
	}
}

func TestArgsRejectsBadSpec(t *testing.T) {
	s := testSpec()
	s.MAC = "52:54:00:12:34"
	s.UUID = "nope"
	s.Accel = "hvf"
	s.QMPSocket = "/" + strings.Repeat("x", 120)
	s.EC2InstanceID = "i-1,type=3"
	_, err := Args(s)
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"mac:", "uuid:", "accel:", "qmp socket:", "ec2 instance id:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
