// Package brickdisk puts this node's gluster brick on an empty second disk when the machine has one, instead
// of on the state partition: the volume's data then has a disk of its own (size, wear, I/O), and it survives
// a reimage of the boot disk. It runs at every boot before glusterd (kiln-brick-disk.service):
//
//   - a disk labelled kiln-bricks is mounted at MountPoint (it was formatted by an earlier boot);
//   - otherwise the first disk that is entirely empty (no partition table, no filesystem signature, its first
//     MiB all zero) is formatted ext4 with that label and mounted;
//   - otherwise, or when the brick on the state partition already holds data, nothing happens and the brick
//     stays on the state partition;
//   - a node with /var in RAM (package statefs) takes no disk at all: it holds no brick.
//
// A disk holding /var (the boot disk, or a netbooted node's state disk) or a kiln-state filesystem is never
// taken.
//
// A disk that holds anything is never written to. Choose is the pure decision; Scan observes sysfs and the
// disks; Apply formats and mounts.
package brickdisk

import (
	"fmt"
	"slices"
	"strings"
)

const (
	// Label is the ext4 label of a brick disk: how a later boot (or a reimaged system) finds it again.
	Label = "kiln-bricks"
	// MountPoint is where a brick disk is mounted: the parent of gluster.BrickPath's data directory, so the
	// brick path is the same on every node whichever disk holds it.
	MountPoint = "/var/lib/kiln/bricks"
	// StateLabel is the ext4 label of a node's state filesystem (/var): a disk carrying it is never a brick disk.
	StateLabel = "kiln-state"
	// MinSize is the smallest disk taken for bricks: anything smaller is a card reader or a firmware
	// volume, not a data disk.
	MinSize = 1 << 30
)

// Disk is one whole block device as Scan saw it.
type Disk struct {
	Name       string // kernel name: vdb, sdb, nvme1n1
	Size       int64  // bytes
	Removable  bool   // sysfs removable: USB sticks, card readers
	ReadOnly   bool
	Partitions int
	FSType     string // blkid TYPE, "" when none
	FSLabel    string // blkid LABEL
	// Empty: blkid found no signature and the first MiB is all zero.
	Empty bool
}

// Decision is what Choose decided.
type Decision struct {
	// Disk is the disk to mount at MountPoint; nil leaves the brick on the state partition.
	Disk *Disk
	// Format says Disk is empty and must be formatted first.
	Format bool
	// Reason explains the decision, for the journal.
	Reason string
	// Skipped says, per disk not taken, why.
	Skipped map[string]string
}

// virtualPrefixes are kernel block devices that are never a data disk.
var virtualPrefixes = []string{"loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd", "mmcblk0boot"}

// Choose picks the brick disk. bootDisk is the disk holding /var (never taken: the boot disk of a flashed
// node, the state disk of a netbooted one); stateBrickUsed says the
// brick directory on the state partition already holds something, so the volume lives there and moving it
// under a mount would hide it.
func Choose(disks []Disk, bootDisk string, stateBrickUsed bool) Decision {
	d := Decision{Skipped: map[string]string{}}
	if bootDisk == "" {
		d.Reason = "the boot disk is unknown: not touching any disk"
		return d
	}
	disks = slices.Clone(disks)
	slices.SortFunc(disks, func(a, b Disk) int { return strings.Compare(a.Name, b.Name) })
	var labelled, empty []Disk
	for _, k := range disks {
		why := ""
		switch {
		case k.Name == bootDisk:
			why = "boot disk"
		case slices.ContainsFunc(virtualPrefixes, func(p string) bool { return strings.HasPrefix(k.Name, p) }):
			why = "not a physical disk"
		case k.Removable:
			why = "removable"
		case k.ReadOnly:
			why = "read-only"
		case k.Size < MinSize:
			why = fmt.Sprintf("%d MiB, smaller than %d MiB", k.Size>>20, MinSize>>20)
		case k.FSLabel == StateLabel:
			// A node's /var: on a netbooted node the state disk is not the disk the system was flashed to, and
			// a kiln-state disk moved from another machine is that machine's state.
			why = "holds " + StateLabel + " (a node's /var)"
		case k.FSLabel == Label && k.FSType == "ext4":
			labelled = append(labelled, k)
			continue
		case k.Partitions > 0:
			why = fmt.Sprintf("has %d partitions", k.Partitions)
		case !k.Empty:
			why = "not empty"
			if k.FSType != "" {
				why += " (" + k.FSType + ")"
			}
		default:
			empty = append(empty, k)
			continue
		}
		d.Skipped[k.Name] = why
	}
	switch {
	case stateBrickUsed:
		for _, k := range append(labelled, empty...) {
			d.Skipped[k.Name] = "the brick on the state partition already holds data"
		}
		d.Reason = "the brick on the state partition already holds data: it stays there"
	case len(labelled) > 1:
		for _, k := range labelled {
			d.Skipped[k.Name] = "one of several " + Label + " disks"
		}
		d.Reason = fmt.Sprintf("%d disks are labelled %s: not choosing between them", len(labelled), Label)
	case len(labelled) == 1:
		d.Disk = &labelled[0]
		d.Reason = "labelled " + Label + " by an earlier boot"
		for _, k := range empty {
			d.Skipped[k.Name] = "a " + Label + " disk exists"
		}
	case len(empty) > 0:
		d.Disk, d.Format = &empty[0], true
		d.Reason = "empty: no partition table, no filesystem, first MiB zero"
		for _, k := range empty[1:] {
			d.Skipped[k.Name] = "another empty disk was taken (" + empty[0].Name + ")"
		}
	default:
		d.Reason = "no empty or " + Label + " disk: the brick stays on the state partition"
	}
	return d
}
