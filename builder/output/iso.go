package output

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"

	"github.com/kiln-project/kiln/builder/cache"
	builddisk "github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/firstboot/install"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
)

// The installer ISO (docs/install.md): GRUB boots the image's own kernel and initrd with kiln.install, for
// BIOS (El Torito no-emulation, and from a USB stick through GRUB's hybrid MBR) and UEFI (El Torito EFI image,
// and the same image as an EFI partition on a USB stick); the initramfs runs kiln-install from the medium,
// which writes the node image described by kiln/image.json onto the install disk.
//
// Why GRUB on both firmwares, not isolinux and systemd-boot: systemd-boot reads only its own FAT, so the EFI
// image would have to carry the kernel and initrd a second time (47 MB, a tenth of the image: the ISO must
// stay within 5 % of the raw image's allocated size); isolinux covers BIOS only. GRUB reads ISO 9660 on both,
// and xorriso's --grub2-mbr is the hybrid layout grub-mkrescue ships, known to boot from CD and USB alike.

// isoLayout changes whenever this file writes the ISO differently for the same inputs.
const isoLayout = "1"

// Host packages the ISO is made with, and where their files are.
const (
	grubEFIPackage = "grub-efi-amd64-bin"
	grubEFIDir     = "/usr/lib/grub/x86_64-efi"
	xorrisoPackage = "xorriso"
)

// InstallerName is the installer binary, looked for next to the kiln executable (make build puts it there).
const InstallerName = "kiln-install"

// isoBIOSModules and isoEFIModules are built into GRUB's images: the ISO carries no module directory.
var (
	isoCommonModules = []string{"iso9660", "part_gpt", "part_msdos", "normal", "linux", "search", "search_fs_file",
		"configfile", "serial", "terminal", "echo", "test"}
	isoBIOSModules = append([]string{"biosdisk"}, isoCommonModules...)
	isoEFIModules  = append([]string{"fat", "efi_gop", "all_video"}, isoCommonModules...)
)

// efiImageSize is the El Torito EFI image: a floppy-sized FAT12 (what grub-mkrescue makes) holding GRUB.
const efiImageSize = 2880 << 10

// installerPath is kiln-install next to the running kiln.
func installerPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(exe), InstallerName), nil
}

// isoInputs: the installer binary's hash and the versions of the tools whose bytes go into the ISO.
func isoInputs(ctx context.Context, _ *spec.Spec) (map[string]string, error) {
	in := map[string]string{"isoLayout": isoLayout}
	for _, p := range []string{builddisk.GRUBPackage, grubEFIPackage, xorrisoPackage} {
		v, err := run.Cmd(ctx, "dpkg-query", "-W", "-f=${Version}", p)
		if err != nil {
			return nil, fmt.Errorf("the %s package is not installed (the iso format needs it): apt-get install %s: %w", p, p, err)
		}
		in[p] = strings.TrimSpace(string(v))
	}
	inst, err := installerPath()
	if err != nil {
		return nil, err
	}
	if in["installer"], err = cache.HashFile(inst); err != nil {
		return nil, fmt.Errorf("installer (build it with `make build`: %s next to kiln): %w", InstallerName, err)
	}
	return in, nil
}

// writeISO builds the tree in dst.d and makes dst from it with xorriso.
func writeISO(ctx context.Context, in Sources, dst string) error {
	work := dst + ".d"
	tree := filepath.Join(work, "tree")
	defer os.RemoveAll(work)
	for _, d := range []string{"kiln", "boot/grub/i386-pc"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return err
		}
	}
	inst, err := installerPath()
	if err != nil {
		return err
	}
	for _, c := range []struct{ name, src string }{
		{builddisk.KernelPath, in.Kernel}, {builddisk.InitrdPath, in.Initrd}, {install.BinaryPath, inst},
	} {
		mode := os.FileMode(0o644)
		if c.name == install.BinaryPath {
			mode = 0o755
		}
		if err := files.Copy(ctx, filepath.Join(tree, c.name), c.src, mode); err != nil {
			return err
		}
	}
	m, err := imageManifest(in, tree)
	if err != nil {
		return fmt.Errorf("image manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := files.Write(filepath.Join(tree, install.ManifestPath), append(b, '\n'), 0o644); err != nil {
		return err
	}
	// GRUB finds the medium by this file, unique to the image: another kiln medium or disk in the machine
	// carries another name.
	id := sha256.Sum256([]byte(m.SHA256))
	marker := "/kiln/id-" + hex.EncodeToString(id[:8])
	if err := files.Write(filepath.Join(tree, marker), []byte(m.Name+"\n"), 0o644); err != nil {
		return err
	}
	entry := builddisk.BootEntry(in.Spec)
	entry.Title = "Install kiln " + in.Spec.Name + " onto this machine's disk"
	entry.Options += " kiln.install"
	cfg := builddisk.GRUBConfig(isoGRUBHeader, 3, entry)
	if err := files.Write(filepath.Join(tree, "boot/grub/grub.cfg"), []byte(cfg), 0o644); err != nil {
		return err
	}
	early := filepath.Join(work, "early.cfg")
	if err := files.Write(early, []byte("search --no-floppy --set=root --file "+marker+"\nset prefix=($root)/boot/grub\n"), 0o644); err != nil {
		return err
	}
	eltorito := filepath.Join(tree, "boot/grub/i386-pc/eltorito.img")
	if _, err := run.Cmd(ctx, "grub-mkimage", append([]string{"-O", "i386-pc-eltorito", "-d", builddisk.GRUBDir, "-p", "/boot/grub", "-c", early, "-o", eltorito}, isoBIOSModules...)...); err != nil {
		return fmt.Errorf("grub-mkimage i386-pc-eltorito: %w", err)
	}
	efiBin := filepath.Join(work, "BOOTX64.EFI")
	if _, err := run.Cmd(ctx, "grub-mkimage", append([]string{"-O", "x86_64-efi", "-d", grubEFIDir, "-p", "/boot/grub", "-c", early, "-o", efiBin}, isoEFIModules...)...); err != nil {
		return fmt.Errorf("grub-mkimage x86_64-efi: %w", err)
	}
	epoch := time.Unix(in.SourceDateEpoch, 0).UTC()
	if err := efiImage(filepath.Join(tree, "boot/efi.img"), efiBin, epoch); err != nil {
		return fmt.Errorf("EFI image: %w", err)
	}
	if err := clampTimes(tree, epoch); err != nil {
		return err
	}
	return xorriso(ctx, tree, dst, volumeID(in.Spec.Name), epoch)
}

const isoGRUBHeader = `kiln installer: boots the node image's kernel and initrd in kiln.install mode, which writes the image onto
this machine's disk (docs/install.md). Written by kiln build from the disk image's boot entry.`

// volumeID is the ISO's volume label: KILN_<NAME>, in the d-characters ISO 9660 allows.
func volumeID(name string) string {
	v := "KILN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	return v[:min(len(v), 32)]
}

// efiImage writes the El Torito EFI image: FAT12 with GRUB as the removable-media loader EFI/BOOT/BOOTX64.EFI.
func efiImage(path, efiBin string, epoch time.Time) error {
	data, err := os.ReadFile(efiBin)
	if err != nil {
		return err
	}
	restore := setEpochEnv(epoch)
	defer restore()
	d, err := diskfs.Create(path, efiImageSize, diskfs.SectorSize512)
	if err != nil {
		return err
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat12, VolumeLabel: "KILN-EFI", Reproducible: true})
	if err != nil {
		d.Close()
		return err
	}
	for _, dir := range []string{"/EFI", "/EFI/BOOT"} {
		if err := fsys.Mkdir(dir); err != nil {
			d.Close()
			return err
		}
	}
	w, err := fsys.OpenFile("/EFI/BOOT/BOOTX64.EFI", os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		d.Close()
		return err
	}
	if _, err := w.Write(data); err != nil {
		d.Close()
		return err
	}
	if err := w.Close(); err != nil {
		d.Close()
		return err
	}
	for _, p := range []string{"/EFI", "/EFI/BOOT", "/EFI/BOOT/BOOTX64.EFI"} {
		if err := fsys.Chtimes(p, epoch, epoch, epoch); err != nil {
			d.Close()
			return err
		}
	}
	if err := fsys.Close(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// setEpochEnv sets SOURCE_DATE_EPOCH (go-diskfs stamps new FAT entries with it, xorriso its dates and
// identifiers) and returns a function restoring the previous value. The pipeline runs one stage at a time.
func setEpochEnv(epoch time.Time) func() {
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", fmt.Sprint(epoch.Unix()))
	return func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}
}

// clampTimes sets every file's and directory's times to epoch: xorriso records them.
func clampTimes(root string, epoch time.Time) error {
	return filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, epoch, epoch)
	})
}

// xorriso makes the hybrid ISO as grub-mkrescue does: El Torito no-emulation boot of GRUB's eltorito.img for
// BIOS (--grub2-boot-info patches its location in), GRUB's boot_hybrid.img as the MBR boot code so a BIOS
// boots the same image from a USB stick, the EFI image as a second El Torito entry and as an MBR partition
// (type 0xEF) for UEFI from USB, and a protective MBR partition over the ISO. Dates and identifiers come from
// SOURCE_DATE_EPOCH; files are sorted by name (xorriso's default).
func xorriso(ctx context.Context, tree, dst, volid string, epoch time.Time) error {
	restore := setEpochEnv(epoch)
	defer restore()
	date := epoch.Format("2006010215040500")
	_, err := run.Cmd(ctx, "xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-r", "-V", volid,
		"--modification-date="+date,
		"-b", "boot/grub/i386-pc/eltorito.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"--grub2-boot-info", "--grub2-mbr", filepath.Join(builddisk.GRUBDir, "boot_hybrid.img"),
		"--efi-boot", "boot/efi.img", "-efi-boot-part", "--efi-boot-image",
		"--protective-msdos-label", "-o", dst, tree)
	return err
}
