package disk

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/internal/run"
)

// Legacy BIOS boot: GRUB's i386-pc boot sector in the protective MBR's boot code and its core image in a
// BIOS boot partition, the layout grub-install makes on a GPT disk. The UEFI layout does not move: the BIOS
// boot partition fills the gap between the partition entries and the ESP's first MiB, and takes entry 5, so
// the ESP, the layers and the kiln-state partition the initramfs appends keep numbers 1–4.
const (
	// BIOSBootName is the BIOS boot partition's GPT name.
	BIOSBootName = "bios-boot"
	// BIOSBootIndex is its GPT entry: after kiln-state's 4 (sfdisk --append takes the first free entry).
	BIOSBootIndex = 5
	// biosBootStart is its first sector: the first 4 KiB-aligned one after the 34 of the MBR, GPT header and
	// 128 entries.
	biosBootStart = 40 * sectorSize
)

// GRUBDir is where Debian's grub-pc-bin installs GRUB's i386-pc images and modules; GRUBPackage is the
// package, whose version is a disk stage input (the boot code and core image come from it).
const (
	GRUBDir     = "/usr/lib/grub/i386-pc"
	GRUBPackage = "grub-pc-bin"
)

// grubModules are built into the core image, so GRUB never loads a module from disk: the ESP carries only
// grub/grub.cfg. biosdisk reads disks through the BIOS; part_gpt and fat find grub.cfg, the kernel and the
// initrd on the ESP; normal runs grub.cfg (menuentry, if); linux boots the kernel; serial and terminal put
// GRUB on the serial console beside the screen; echo and test are for grub.cfg's conditions.
var grubModules = []string{"biosdisk", "part_gpt", "fat", "normal", "linux", "serial", "terminal", "echo", "test"}

// grubPrefix is relative: "(,gpt1)" is partition 1 (the ESP) of the disk the BIOS booted from, whatever
// number the BIOS gave it. It does what an embedded config with `search` would, without matching the label
// of another kiln disk in the same machine (a USB stick flashed with the image).
const grubPrefix = "(,gpt1)/grub"

// GRUBConfigPath is grub.cfg on the ESP.
const GRUBConfigPath = "/grub/grub.cfg"

// grubVersion is the installed grub-pc-bin's version.
func grubVersion(ctx context.Context) (string, error) {
	v, err := run.Cmd(ctx, "dpkg-query", "-W", "-f=${Version}", GRUBPackage)
	if err != nil {
		return "", fmt.Errorf("the %s package (GRUB for legacy BIOS boot) is not installed: apt-get install %s: %w", GRUBPackage, GRUBPackage, err)
	}
	return strings.TrimSpace(string(v)), nil
}

// makeCoreImage writes GRUB's i386-pc core image to dst.
func makeCoreImage(ctx context.Context, dst string) error {
	args := append([]string{"-O", "i386-pc", "-d", GRUBDir, "-p", grubPrefix, "-o", dst}, grubModules...)
	_, err := run.Cmd(ctx, "grub-mkimage", args...)
	return err
}

// Offsets in GRUB's boot.img and core.img that grub-bios-setup fills in (include/grub/i386/pc/boot.h).
const (
	bootKernelSector = 0x5c  // 8 bytes: first sector of core.img
	bootDrive        = 0x64  // the BIOS drive to read core.img from; 0xff: the one the BIOS booted
	bootDriveCheck   = 0x66  // a jump that trusts the BIOS's drive number; two NOPs on a hard disk
	bootCodeEnd      = 0x1b8 // boot code ends where the disk signature and partition table begin
	// The first sector of core.img (diskboot.img) ends with the block list of the sectors to load:
	// start (8 bytes), length (2), segment (2), growing down; a zero length ends it.
	blocklistEnd = 512
	blocklistLen = 12
	// kernelSegment is where the block list loads core.img's second sector: 0x800 + 512 bytes.
	kernelSegment = 0x820
)

// installBIOSBoot does what `grub-bios-setup` does on a GPT disk without Reed-Solomon codes (they repair a
// core image damaged by tools writing into the gap before the first partition; in a partition of its own
// nothing writes over it): core.img into the BIOS boot partition p, its block list pointing at its own
// sectors there, and boot.img's code into the MBR, pointing at core.img. The MBR's partition table and
// signature, which go-diskfs wrote, stay.
func installBIOSBoot(image, bootImg, coreImg string, p Part) error {
	boot, err := os.ReadFile(bootImg)
	if err != nil {
		return err
	}
	core, err := os.ReadFile(coreImg)
	if err != nil {
		return err
	}
	if len(boot) != sectorSize {
		return fmt.Errorf("%s: %d bytes, want %d", bootImg, len(boot), sectorSize)
	}
	sectors := (int64(len(core)) + sectorSize - 1) / sectorSize
	if sectors*sectorSize > p.Size {
		return fmt.Errorf("core image %s (%d bytes) does not fit the %d-byte BIOS boot partition", coreImg, len(core), p.Size)
	}
	first := p.Start / sectorSize
	core = append(core, make([]byte, sectors*sectorSize-int64(len(core)))...)
	// The block list: clear what grub-mkimage put there, then one run of every sector after the first.
	for off := blocklistEnd - blocklistLen; off > 0; off -= blocklistLen {
		if binary.LittleEndian.Uint16(core[off+8:]) == 0 {
			break
		}
		clear(core[off : off+blocklistLen])
	}
	bl := core[blocklistEnd-blocklistLen : blocklistEnd]
	binary.LittleEndian.PutUint64(bl[0:], uint64(first+1))
	binary.LittleEndian.PutUint16(bl[8:], uint16(sectors-1))
	binary.LittleEndian.PutUint16(bl[10:], kernelSegment)
	clear(core[blocklistEnd-2*blocklistLen : blocklistEnd-blocklistLen]) // the terminator

	binary.LittleEndian.PutUint64(boot[bootKernelSector:], uint64(first))
	boot[bootDrive] = 0xff
	boot[bootDriveCheck], boot[bootDriveCheck+1] = 0x90, 0x90

	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(core, p.Start); err != nil {
		f.Close()
		return fmt.Errorf("write core image: %w", err)
	}
	// The BPB range (0x03–0x59) is zero in boot.img and on the disk alike: nothing to carry over.
	if _, err := f.WriteAt(boot[:bootCodeEnd], 0); err != nil {
		f.Close()
		return fmt.Errorf("write MBR boot code: %w", err)
	}
	return f.Close()
}

// setBootFlag marks the protective MBR's partition active (0x80), for BIOSes that boot only a disk with an
// active MBR partition. The UEFI specification wants it clear, and some UEFI firmware then ignores the GPT:
// hence a spec option (docs/install.md, "BIOS").
func setBootFlag(image string) error {
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	entry := make([]byte, 16)
	if _, err := f.ReadAt(entry, 446); err != nil {
		f.Close()
		return err
	}
	if entry[4] != 0xee {
		f.Close()
		return fmt.Errorf("MBR entry 1 has type %#x, not the protective 0xee", entry[4])
	}
	if _, err := f.WriteAt([]byte{0x80}, 446); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// biosBoot makes the BIOS boot code for the image at path, whose BIOS boot partition is p; work is a
// directory for the core image.
func biosBoot(ctx context.Context, path, work string, p Part, bootFlag bool) error {
	core := filepath.Join(work, "core.img")
	if err := makeCoreImage(ctx, core); err != nil {
		return fmt.Errorf("grub-mkimage: %w", err)
	}
	defer os.Remove(core)
	if err := installBIOSBoot(path, filepath.Join(GRUBDir, "boot.img"), core, p); err != nil {
		return err
	}
	if bootFlag {
		return setBootFlag(path)
	}
	return nil
}
