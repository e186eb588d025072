package brickdisk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/firstboot/statefs"
	"github.com/kiln-project/kiln/internal/run"
)

// stateBrick is the brick directory as it is on the state partition (gluster.BrickPath; not imported, to
// keep this early-boot step free of the agent's packages).
const stateBrick = MountPoint + "/data/brick"

// headSize is how much of a disk must be zero for it to count as empty: partition tables, RAID and LVM
// labels and every filesystem superblock kiln knows of live in the first MiB.
const headSize = 1 << 20

// Host is the machine Scan and Apply work on. Real returns this node; tests replace the commands and
// point Root at a fake tree.
type Host struct {
	// Root prefixes /sys, /proc, /dev and /var ("" on a node).
	Root string
	// Probe reports a device's filesystem type and label ("" when it has none), like `blkid -p`.
	Probe func(ctx context.Context, dev string) (fstype, label string, err error)
	// Format makes an ext4 filesystem labelled Label on dev.
	Format func(ctx context.Context, dev string) error
	// Mount mounts dev (ext4) at dir.
	Mount func(dev, dir string) error
	Log   *slog.Logger
}

// Real is this node.
func Real(log *slog.Logger) *Host {
	return &Host{Probe: blkid, Format: mkfs, Mount: mountExt4, Log: log}
}

func (h *Host) path(p string) string { return filepath.Join(h.Root, p) }

// Scan lists the whole disks (from /sys/block) with what Choose needs to know.
func (h *Host) Scan(ctx context.Context) ([]Disk, error) {
	ents, err := os.ReadDir(h.path("/sys/block"))
	if err != nil {
		return nil, fmt.Errorf("brickdisk: %w", err)
	}
	var disks []Disk
	for _, e := range ents {
		name := e.Name()
		sys := h.path("/sys/block/" + name)
		k := Disk{Name: name, Removable: readInt(sys+"/removable") == 1, ReadOnly: readInt(sys+"/ro") == 1,
			Size: readInt(sys+"/size") * 512}
		parts, _ := os.ReadDir(sys)
		for _, p := range parts {
			if _, err := os.Stat(filepath.Join(sys, p.Name(), "partition")); err == nil {
				k.Partitions++
			}
		}
		// Only disks that could be taken are opened: reading every disk at boot is not free on real hardware.
		if k.Partitions == 0 && !k.Removable && !k.ReadOnly && k.Size >= MinSize {
			dev := h.path("/dev/" + name)
			if k.FSType, k.FSLabel, err = h.Probe(ctx, dev); err != nil {
				return nil, fmt.Errorf("brickdisk: probe %s: %w", dev, err)
			}
			if k.FSType == "" {
				if k.Empty, err = zeroHead(dev); err != nil {
					return nil, err
				}
			}
		}
		disks = append(disks, k)
	}
	return disks, nil
}

// BootDisk names the disk holding /var: the disk of the state partition, or the disk itself when the state
// filesystem fills a whole disk. "" when /var is on no disk (a virtual device such as LVM): then Choose touches
// nothing, since the disks under it cannot be named.
func (h *Host) BootDisk() (string, error) {
	devno, err := h.mountInfo("/var")
	if err != nil || devno == "" {
		return "", err
	}
	if strings.HasPrefix(devno, "0:") {
		return "", nil // an anonymous device (tmpfs, overlay): on no disk
	}
	link, err := filepath.EvalSymlinks(h.path("/sys/dev/block/" + devno))
	if err != nil {
		return "", fmt.Errorf("brickdisk: device %s of /var: %w", devno, err)
	}
	if _, err := os.Stat(filepath.Join(link, "partition")); err == nil {
		return filepath.Base(filepath.Dir(link)), nil
	}
	if strings.Contains(link, "/devices/virtual/") {
		return "", nil
	}
	return filepath.Base(link), nil
}

// Mounted reports whether something is mounted at MountPoint already (the unit ran earlier this boot).
func (h *Host) Mounted() (bool, error) {
	devno, err := h.mountInfo(MountPoint)
	return devno != "", err
}

// mountInfo returns the major:minor of the mount at mountPoint ("" when none).
func (h *Host) mountInfo(mountPoint string) (devno string, err error) {
	f, err := os.Open(h.path("/proc/self/mountinfo"))
	if err != nil {
		return "", fmt.Errorf("brickdisk: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[4] != mountPoint {
			continue
		}
		devno = fields[2]
	}
	return devno, sc.Err()
}

// StateBrickUsed reports whether the brick directory on the state partition holds anything or carries a
// volume id: the volume already lives there.
func (h *Host) StateBrickUsed() (bool, error) {
	dir := h.path(stateBrick)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("brickdisk: %w", err)
	}
	if len(ents) > 0 {
		return true, nil
	}
	_, err = unix.Getxattr(dir, "trusted.glusterfs.volume-id", make([]byte, 16))
	return err == nil, nil
}

// Decide observes and decides, touching nothing: what Reconcile would do now. A brick disk already mounted
// this boot is reported as such (Disk nil).
//
// A node with /var in RAM (statefs) takes no brick disk, not even one labelled kiln-bricks by an earlier boot: its
// glusterd state is lost at every reboot, so it holds no brick (docs/formation.md, "Nodes with /var in RAM"),
// and a kept brick disk stays as it is for when the machine has its state disk again.
func (h *Host) Decide(ctx context.Context) (Decision, error) {
	if m, err := h.Mounted(); err != nil || m {
		return Decision{Reason: MountPoint + " is mounted already"}, err
	}
	if reason, inRAM, err := statefs.InRAM(h.Root); err != nil || inRAM {
		return Decision{Reason: statefs.NoBrickLine(reason) + ": no disk is formatted or mounted for bricks"}, err
	}
	boot, err := h.BootDisk()
	if err != nil {
		return Decision{}, err
	}
	used, err := h.StateBrickUsed()
	if err != nil {
		return Decision{}, err
	}
	disks, err := h.Scan(ctx)
	if err != nil {
		return Decision{}, err
	}
	return Choose(disks, boot, used), nil
}

// Reconcile decides and acts: the whole boot step. Safe to run again: a mounted brick disk is left as it is,
// a labelled one is mounted without formatting.
func (h *Host) Reconcile(ctx context.Context) (Decision, error) {
	d, err := h.Decide(ctx)
	if err != nil {
		return d, err
	}
	for name, why := range d.Skipped {
		h.Log.Info("brick disk: not using "+name, "reason", why)
	}
	if d.Disk == nil {
		h.Log.Info("brick disk: none", "reason", d.Reason)
		return d, nil
	}
	return d, h.apply(ctx, d)
}

func (h *Host) apply(ctx context.Context, d Decision) error {
	dev := h.path("/dev/" + d.Disk.Name)
	if d.Format {
		// Checked again right before writing: the decision must not outlive what it saw.
		if empty, err := zeroHead(dev); err != nil || !empty {
			return fmt.Errorf("brickdisk: %s no longer empty (%v): not formatting", dev, err)
		}
		h.Log.Warn("brick disk: formatting "+d.Disk.Name, "size_mib", d.Disk.Size>>20, "label", Label, "reason", d.Reason)
		if err := h.Format(ctx, dev); err != nil {
			return fmt.Errorf("brickdisk: format %s: %w", dev, err)
		}
	}
	mp := h.path(MountPoint)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("brickdisk: %w", err)
	}
	if err := h.Mount(dev, mp); err != nil {
		return fmt.Errorf("brickdisk: mount %s at %s: %w", dev, mp, err)
	}
	if err := os.MkdirAll(filepath.Join(mp, "data"), 0o755); err != nil {
		return fmt.Errorf("brickdisk: %w", err)
	}
	h.Log.Info("brick disk: mounted "+d.Disk.Name, "at", MountPoint, "reason", d.Reason)
	return nil
}

// zeroHead reports whether the first headSize bytes of dev are all zero (a shorter device: all of it).
func zeroHead(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, fmt.Errorf("brickdisk: %w", err)
	}
	defer f.Close()
	buf := make([]byte, headSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("brickdisk: read %s: %w", dev, err)
	}
	return bytes.Count(buf[:n], []byte{0}) == n, nil
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// blkid probes dev's superblocks itself (-p: no cache, which is on the read-only root anyway). Exit 2 means
// it found nothing.
func blkid(ctx context.Context, dev string) (string, string, error) {
	out, err := run.Cmd(ctx, "blkid", "-p", "-o", "export", dev)
	var re *run.Error
	if errors.As(err, &re) && re.ExitCode == 2 {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	var fstype, label string
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "TYPE", "PTTYPE":
			if fstype == "" {
				fstype = v
			}
		case "LABEL":
			label = v
		}
	}
	return fstype, label, nil
}

// mkfs: no reserved blocks (a brick is not a root filesystem); lazy inode table init keeps a big disk's
// format to seconds.
func mkfs(ctx context.Context, dev string) error {
	_, err := run.Cmd(ctx, "mkfs.ext4", "-q", "-F", "-L", Label, "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", dev)
	return err
}

func mountExt4(dev, dir string) error {
	return unix.Mount(dev, dir, "ext4", unix.MS_NOATIME, "")
}
