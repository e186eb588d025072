// Package qemu builds qemu command lines for lab nodes, runs them as daemons inside a network namespace,
// and talks to them over QMP.
package qemu

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// Accel is how qemu executes guest code.
type Accel string

const (
	// AccelTCG is qemu's software emulator: slow but works everywhere, including here where nested KVM hangs.
	AccelTCG Accel = "tcg"
	// AccelKVM is hardware virtualisation; used only when ProbeKVM proved that a guest actually runs under it.
	AccelKVM Accel = "kvm"
)

// Default firmware paths from Debian's ovmf package.
const (
	DefaultOVMFCode = "/usr/share/OVMF/OVMF_CODE.fd"
	DefaultOVMFVars = "/usr/share/OVMF/OVMF_VARS.fd"
)

// Firmware is what the VM boots with.
type Firmware string

const (
	// FirmwareUEFI is OVMF from pflash: the default, and what kiln images are made for.
	FirmwareUEFI Firmware = "uefi"
	// FirmwareBIOS is qemu's default SeaBIOS (no pflash): legacy PXE through the NIC's iPXE ROM.
	FirmwareBIOS Firmware = "bios"
)

// FwCfgConfigName is the fw_cfg entry the node agent reads its configuration from (docs/design.md).
const FwCfgConfigName = "opt/kiln/config"

// Spec is everything that makes one VM: its hardware identity and the files backing it.
type Spec struct {
	// Name shows up in ps and QMP (-name); any short string.
	Name string
	// MemoryMiB is guest RAM.
	MemoryMiB int
	// CPUs is the number of vCPUs; with TCG and CPUs > 1 qemu runs one host thread per vCPU (thread=multi).
	CPUs int
	// Accel selects TCG or KVM.
	Accel Accel
	// Firmware is UEFI (OVMFCode, OVMFVars) or BIOS; "" means UEFI.
	Firmware Firmware
	// OVMFCode is the read-only UEFI firmware; OVMFVars the node's own writable copy of the variable store.
	OVMFCode, OVMFVars string
	// NetBoot puts the NIC first in the boot order (the disks after it): the node boots from the network every
	// time, as a netbooted garage machine does, and its disks hold only state.
	NetBoot bool
	// Disk is the node's qcow2 overlay.
	Disk string
	// DataDisk, if set, is a second qcow2 disk (the guest's vdb).
	DataDisk string
	// MAC is the NIC's address (52:54:00:xx:xx:xx); Tap the host-side tap device in the namespace.
	MAC, Tap string
	// UUID is the SMBIOS system UUID: with the MAC, the node's "hardware" identity.
	UUID string
	// SerialLog receives the serial console (appended across boots).
	SerialLog string
	// QMPSocket is the unix socket qemu listens on for QMP.
	QMPSocket string
	// PidFile is where the daemonized qemu writes its pid.
	PidFile string
	// ConfigFile, if set, is exposed to the guest as fw_cfg FwCfgConfigName.
	ConfigFile string
	// EC2InstanceID, if set, makes the firmware describe an EC2 Nitro instance: SMBIOS system and baseboard
	// vendor "Amazon EC2" (what the agent's DMI check and identity read) and this id in the baseboard's asset
	// tag, where Nitro puts it.
	EC2InstanceID string
}

var (
	macRe  = regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`)
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	// instanceIDRe is an EC2 instance id; it also keeps commas (qemu's option separator) out of -smbios.
	instanceIDRe = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)
)

// Validate reports every problem with s at once.
func (s Spec) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, errors.New("name: empty"))
	}
	if s.MemoryMiB < 256 {
		errs = append(errs, fmt.Errorf("memory: %d MiB is below 256 MiB", s.MemoryMiB))
	}
	if s.CPUs < 1 {
		errs = append(errs, fmt.Errorf("cpus: %d is below 1", s.CPUs))
	}
	switch s.Accel {
	case AccelTCG, AccelKVM:
	default:
		errs = append(errs, fmt.Errorf("accel: unknown %q", s.Accel))
	}
	required := map[string]string{"disk": s.Disk, "tap": s.Tap, "serial log": s.SerialLog, "qmp socket": s.QMPSocket,
		"pid file": s.PidFile}
	switch s.Firmware {
	case "", FirmwareUEFI:
		required["ovmf code"], required["ovmf vars"] = s.OVMFCode, s.OVMFVars
	case FirmwareBIOS:
	default:
		errs = append(errs, fmt.Errorf("firmware: unknown %q (uefi, bios)", s.Firmware))
	}
	for field, v := range required {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: empty", field))
		}
	}
	if !macRe.MatchString(s.MAC) {
		errs = append(errs, fmt.Errorf("mac: %q is not a lower-case colon-separated MAC", s.MAC))
	}
	if s.EC2InstanceID != "" && !instanceIDRe.MatchString(s.EC2InstanceID) {
		errs = append(errs, fmt.Errorf("ec2 instance id: %q is not i- and 8 to 17 hex digits", s.EC2InstanceID))
	}
	if !uuidRe.MatchString(s.UUID) {
		errs = append(errs, fmt.Errorf("uuid: %q is not a lower-case UUID", s.UUID))
	}
	// sun_path is 108 bytes including the NUL.
	if len(s.QMPSocket) > 107 {
		errs = append(errs, fmt.Errorf("qmp socket: path %q longer than 107 bytes", s.QMPSocket))
	}
	return errors.Join(errs...)
}

// Args is the qemu-system-x86_64 argument list (without the program name) for s. Pure: golden-tested.
func Args(s Spec) ([]string, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("qemu: spec %s: %w", s.Name, err)
	}
	accel := string(s.Accel)
	if s.Accel == AccelTCG && s.CPUs > 1 {
		accel += ",thread=multi"
	}
	a := []string{
		"-name", s.Name,
		// No default devices: everything the node has is listed below, so two runs are the same machine.
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-machine", "q35",
		"-accel", accel,
		"-m", strconv.Itoa(s.MemoryMiB),
		"-smp", strconv.Itoa(s.CPUs),
	}
	if s.Firmware != FirmwareBIOS {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+s.OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+s.OVMFVars)
	}
	nic := "virtio-net-pci,netdev=net0,mac=" + s.MAC
	if s.NetBoot {
		// bootindex reaches both firmwares through fw_cfg's bootorder; the disks get none, so the NIC is the
		// only boot entry and a blank disk is never tried first.
		nic += ",bootindex=0"
	}
	// cache=writeback (the default) honours guest flushes, so a hard kill keeps what the guest synced.
	a = append(a, "-drive", "if=virtio,format=qcow2,file="+s.Disk)
	if s.DataDisk != "" {
		a = append(a, "-drive", "if=virtio,format=qcow2,file="+s.DataDisk)
	}
	a = append(a,
		"-netdev", "tap,id=net0,ifname="+s.Tap+",script=no,downscript=no",
		"-device", nic,
		// Guests generate SSH host keys and seed docker/gluster on first boot: don't let them starve for entropy.
		"-device", "virtio-rng-pci",
	)
	if s.EC2InstanceID == "" {
		a = append(a, "-smbios", "type=1,uuid="+s.UUID)
	} else {
		a = append(a, "-smbios", "type=1,manufacturer=Amazon EC2,product=kiln-lab,uuid="+s.UUID,
			"-smbios", "type=2,manufacturer=Amazon EC2,asset="+s.EC2InstanceID)
	}
	a = append(a,
		"-chardev", "file,id=serial0,path="+s.SerialLog+",append=on",
		"-serial", "chardev:serial0",
		"-qmp", "unix:"+s.QMPSocket+",server=on,wait=off",
		"-pidfile", s.PidFile,
		// qemu's parent exits once the VM is set up: start errors (busy tap, bad disk) still reach us,
		// and the VM outlives the kiln process that started it.
		"-daemonize",
	)
	if s.ConfigFile != "" {
		a = append(a, "-fw_cfg", "name="+FwCfgConfigName+",file="+s.ConfigFile)
	}
	return a, nil
}
