// Package disk is the disk stage: it assembles the bootable GPT image (ESP with systemd-boot, kernel and
// initrd; the base and node squashfs layers) in user space with go-diskfs: no loop devices, no mounts.
// The layout is the contract in docs/design.md, "Image on disk".
package disk

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/layers"
	"github.com/kiln-project/kiln/builder/rootfs"
	"github.com/kiln-project/kiln/builder/spec"
)

// Image is the disk stage's output file.
const Image = "disk.raw"

// Partition names (GPT PARTLABEL), which the boot script looks for.
const (
	ESPName   = "esp"
	BaseName  = "kiln-base"
	NodeName  = "kiln-node"
	StateName = "kiln-state" // created on first boot, never in the image
)

// ESPLabel is the FAT volume label of the ESP.
const ESPLabel = "KILN-ESP"

// BootLoaderPath is systemd-boot inside the package tree.
const BootLoaderPath = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"

const (
	sectorSize = 512
	mib        = 1 << 20
	// alignment of every partition: 1 MiB, what every partitioning tool uses and what SSDs want.
	alignment = mib
	// layerSlack is room left after a layer's content in its partition: a rebuilt layer of almost the same
	// size can be written in place later without moving the partitions behind it.
	layerSlack = mib
	// tailBytes follows the last partition: the backup GPT (33 sectors) and alignment.
	tailBytes = mib
)

// BaseCmdline is kiln's own kernel command line; the spec's arguments follow it. initramfs-tools reads the
// boot script's name from lowercase boot= (an uppercase BOOT= only lands in init's environment, which init resets).
var BaseCmdline = []string{"boot=kiln", "console=tty0", "console=ttyS0,115200"}

// Stage writes disk.raw.
type Stage struct {
	spec *spec.Spec
}

// New returns the disk stage for s.
func New(s *spec.Spec) builder.Stage { return &Stage{spec: s} }

// Name implements builder.Stage.
func (*Stage) Name() string { return "disk" }

// layoutVersion changes whenever this package lays the disk out differently for the same inputs.
const layoutVersion = "2"

// Inputs implements builder.Stage. The kernel, initrd, boot loader and layers are covered by the parent keys;
// GRUB's BIOS boot code comes from the build host's grub-pc-bin, so its version is an input.
func (st *Stage) Inputs(ctx context.Context) (map[string]string, error) {
	grub, err := grubVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	return map[string]string{
		"name":         st.spec.Name,
		"espMiB":       strconv.Itoa(st.espSize() / mib),
		"cmdline":      Cmdline(st.spec),
		"layout":       layoutVersion,
		"grub-pc":      grub,
		"pmbrBootFlag": strconv.FormatBool(st.spec.Disk.PMBRBootFlag),
	}, nil
}

func (st *Stage) espSize() int {
	n := st.spec.Disk.ESPSizeMiB
	if n == 0 {
		n = spec.DefaultESPSizeMiB
	}
	return n * mib
}

// Cmdline is the kernel command line of s's boot entry: BaseCmdline, then the spec's arguments. The disk's
// boot entry and the pxe format's iPXE script both use it, so a disk boot and a netboot start the same kernel
// the same way.
func Cmdline(s *spec.Spec) string {
	return strings.Join(append(append([]string{}, BaseCmdline...), s.Kernel.Cmdline...), " ")
}

// Part is one partition of the layout, in bytes.
type Part struct {
	// Index is the GPT entry (1-based): the partition's number (vda1).
	Index int
	Name  string
	Type  gpt.Type
	Start int64
	Size  int64
	// Source is the file written at Start (empty for the ESP, which is formatted in place).
	Source string
}

// Layout places the ESP and the two layers one after another, 1 MiB aligned, each layer sized to its content
// plus layerSlack, and the BIOS boot partition in the first MiB before them. It returns the partitions (ESP,
// layers, BIOS boot) and the disk size.
func Layout(espSize int64, base, node string) ([]Part, int64, error) {
	parts := []Part{{Index: 1, Name: ESPName, Type: gpt.EFISystemPartition, Size: espSize}}
	for i, l := range []struct {
		name string
		typ  gpt.Type
		src  string
	}{{BaseName, gpt.LinuxRootX86_64, base}, {NodeName, gpt.LinuxFilesystem, node}} {
		fi, err := os.Stat(l.src)
		if err != nil {
			return nil, 0, err
		}
		parts = append(parts, Part{Index: i + 2, Name: l.name, Type: l.typ, Size: alignUp(fi.Size()+layerSlack, alignment), Source: l.src})
	}
	off := int64(alignment)
	for i := range parts {
		parts[i].Start = off
		off += parts[i].Size
	}
	parts = append(parts, Part{Index: BIOSBootIndex, Name: BIOSBootName, Type: gpt.BIOSBoot, Start: biosBootStart, Size: alignment - biosBootStart})
	return parts, off + tailBytes, nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// GUID derives a stable, v4-shaped UUID from the spec name and a partition name ("" for the disk itself), so
// two builds of one spec carry the same identifiers.
func GUID(specName, part string) string {
	h := sha256.Sum256([]byte(specName + "\x00" + part))
	h[6] = h[6]&0x0f | 0x40 // version 4
	h[8] = h[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Run implements builder.Stage.
func (st *Stage) Run(ctx context.Context, env *builder.Env, dir string) error {
	pkgs, base, node := env.Outputs["packages"], env.Outputs["base"], env.Outputs["node"]
	if pkgs == "" || base == "" || node == "" {
		return fmt.Errorf("disk: needs the outputs of packages, base and node, have %v", env.Outputs)
	}
	parts, size, err := Layout(int64(st.espSize()), filepath.Join(base, layers.BaseImage), filepath.Join(node, layers.NodeImage))
	if err != nil {
		return fmt.Errorf("disk: layout: %w", err)
	}
	path := filepath.Join(dir, Image)
	env.Log.Info("writing disk image", "size_mib", size/mib)
	env.Progress(0, "partition table")
	if err := st.writeTable(path, size, parts); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	env.Progress(0.1, "ESP")
	files := []espFile{
		{"/EFI/BOOT/BOOTX64.EFI", filepath.Join(pkgs, rootfs.TreeDir, BootLoaderPath), nil},
		{KernelPath, filepath.Join(pkgs, rootfs.Kernel), nil},
		{InitrdPath, filepath.Join(pkgs, rootfs.Initrd), nil},
		{"/loader/loader.conf", "", []byte(loaderConf)},
		{"/loader/entries/kiln.conf", "", []byte(BootEntry(st.spec).SystemdBoot())},
		{GRUBConfigPath, "", []byte(GRUBConfig(grubHeader, 0, BootEntry(st.spec)))},
		{"/kiln/README.txt", "", []byte(readme)},
	}
	if err := writeESP(path, parts[0], files, time.Unix(env.SourceDateEpoch, 0)); err != nil {
		return fmt.Errorf("disk: ESP: %w", err)
	}
	env.Progress(0.4, "layers")
	for _, p := range parts {
		if p.Source == "" {
			continue
		}
		if err := copyAt(path, p.Start, p.Source); err != nil {
			return fmt.Errorf("disk: partition %s: %w", p.Name, err)
		}
	}
	env.Progress(0.9, "BIOS boot")
	if err := biosBoot(ctx, path, dir, parts[len(parts)-1], st.spec.Disk.PMBRBootFlag); err != nil {
		return fmt.Errorf("disk: BIOS boot: %w", err)
	}
	env.Progress(1, "done")
	return nil
}

// writeTable creates the sparse image file and writes the protective MBR and both GPTs.
func (st *Stage) writeTable(path string, size int64, parts []Part) error {
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		// go-diskfs defaults to none; firmware and Linux want the 0xEE entry.
		ProtectiveMBR: true,
		GUID:          GUID(st.spec.Name, ""),
	}
	for _, p := range parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: p.Index,
			Start: uint64(p.Start / sectorSize),
			End:   uint64((p.Start+p.Size)/sectorSize - 1),
			Size:  uint64(p.Size),
			Type:  p.Type,
			Name:  p.Name,
			GUID:  GUID(st.spec.Name, p.Name),
		})
	}
	if err := d.Partition(table); err != nil {
		d.Close()
		return fmt.Errorf("write partition table: %w", err)
	}
	return d.Close()
}

// copyAt writes the file src into the image at offset off (a plain io.Copy: go-diskfs's
// WritePartitionContents writes 512 bytes at a time and reports short content as an error).
func copyAt(image string, off int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.NewOffsetWriter(out, off), in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// espFile is one file on the ESP: copied from Source, or Data.
type espFile struct {
	Path   string
	Source string
	Data   []byte
}

// writeESP formats the ESP as FAT32 and writes files, every timestamp set to epoch.
func writeESP(image string, p Part, files []espFile, epoch time.Time) error {
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return fmt.Errorf("open %s: %w", image, err)
	}
	if err := formatESP(d, p, files, epoch); err != nil {
		d.Close()
		return err
	}
	// go-diskfs's Close panics when called twice: once, here.
	return d.Close()
}

func formatESP(d *disk.Disk, p Part, files []espFile, epoch time.Time) error {
	// go-diskfs stamps new entries with SOURCE_DATE_EPOCH when set, else the clock; Chtimes below fixes files,
	// the variable fixes what Chtimes cannot reach (the "." and ".." entries of new directories).
	restore := setEpochEnv(epoch)
	defer restore()
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: ESPLabel, Reproducible: true})
	if err != nil {
		return fmt.Errorf("format FAT32: %w", err)
	}
	made := map[string]bool{}
	var dirs []string
	for _, f := range files {
		// Parents first: Mkdir in go-diskfs's FAT creates one level.
		parts := strings.Split(strings.TrimPrefix(filepath.Dir(f.Path), "/"), "/")
		for i := range parts {
			dir := "/" + strings.Join(parts[:i+1], "/")
			if made[dir] {
				continue
			}
			if err := fsys.Mkdir(dir); err != nil {
				return fmt.Errorf("mkdir %s: %w", dir, err)
			}
			made[dir] = true
			dirs = append(dirs, dir)
		}
		data := f.Data
		if f.Source != "" {
			if data, err = os.ReadFile(f.Source); err != nil {
				return err
			}
		}
		w, err := fsys.OpenFile(f.Path, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
		if err != nil {
			return fmt.Errorf("create %s: %w", f.Path, err)
		}
		if _, err := w.Write(data); err != nil {
			w.Close()
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("close %s: %w", f.Path, err)
		}
		if err := fsys.Chtimes(f.Path, epoch, epoch, epoch); err != nil {
			return fmt.Errorf("chtimes %s: %w", f.Path, err)
		}
	}
	for _, dir := range dirs {
		if err := fsys.Chtimes(dir, epoch, epoch, epoch); err != nil {
			return fmt.Errorf("chtimes %s: %w", dir, err)
		}
	}
	if err := fsys.Close(); err != nil {
		return fmt.Errorf("close FAT32: %w", err)
	}
	return nil
}

// setEpochEnv sets SOURCE_DATE_EPOCH for go-diskfs and returns a function restoring the previous value. The
// pipeline runs one stage at a time, so changing the process environment here races with nothing.
func setEpochEnv(epoch time.Time) func() {
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch.Unix(), 10))
	return func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}
}

// loaderConf boots the kiln entry at once; a key held at power-on still shows the menu.
const loaderConf = "default kiln.conf\ntimeout 0\n"

// grubHeader heads the ESP's grub.cfg.
const grubHeader = `kiln: the legacy BIOS boot entry. kiln build writes it from the same kernel, initrd and command line as
loader/entries/kiln.conf (UEFI, systemd-boot): edit both alike.`

const readme = `kiln node image
===============

This partition (label KILN-ESP) boots the node: systemd-boot (EFI/BOOT/BOOTX64.EFI) starts the kernel in
kiln/ with the options in loader/entries/kiln.conf.

Cluster configuration: after writing this image to a disk, copy your cluster's config (printed by
"kiln cluster new") to kiln/cluster.yaml on this partition. Every node reads it at boot unless qemu's fw_cfg
provides opt/kiln/config; without either, the image's default (/usr/lib/kiln/cluster.yaml) applies.
The file holds the cluster key: keep the disk as safe as the key.
`
