package install

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/firstboot/brickdisk"
)

// Want is the cluster config's install section.
type Want struct {
	// Disk names the install disk (/dev/sda, sda, or a /dev/disk/by-id/ link resolved to its kernel name by
	// the caller); "" lets the installer pick the first proven-empty internal disk.
	Disk string
	// Wipe allows writing Disk although it holds data. Without it only an empty disk is written.
	Wipe bool
}

// Disk is one whole disk as the installer sees it.
type Disk struct {
	brickdisk.Disk
	// HoldsImage: the image's identity ranges match, an earlier run installed this image here.
	HoldsImage bool
}

// Action is what Choose decided.
type Action int

const (
	// Refuse: no disk may be written; Reason says why. Nothing is touched.
	Refuse Action = iota
	// Write: install onto Target.
	Write
	// Boot: Target already holds this image (the medium stayed in after the install): boot it, write nothing.
	Boot
)

// Decision is Choose's answer.
type Decision struct {
	Action Action
	Target *Disk
	// Reason says why, in one sentence for the console.
	Reason string
	// Skipped says, per disk not taken, why (automatic choice only).
	Skipped map[string]string
}

// virtual are kernel block devices that are never an install disk.
var virtual = []string{"loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd", "mmcblk0boot"}

// Choose picks the install disk among disks for an image of imageSize bytes. medium is the disk the installer
// runs from (never a target). With want.Disk the choice is the user's: that disk is written when it is empty,
// or holds data and want.Wipe; it is booted when it already holds the image. Without it the first disk
// already holding the image is booted, else the first internal disk proven empty by the brick disk's rules
// (no partition table, no signature, first MiB zero; never removable, read-only or virtual) is written.
func Choose(disks []Disk, want Want, medium string, imageSize int64) Decision {
	disks = slices.Clone(disks)
	slices.SortFunc(disks, func(a, b Disk) int { return strings.Compare(a.Name, b.Name) })
	if want.Disk != "" {
		return chooseNamed(disks, want, medium, imageSize)
	}
	d := Decision{Skipped: map[string]string{}}
	for i := range disks {
		if k := &disks[i]; k.HoldsImage && k.Name != medium && !k.Removable {
			return Decision{Action: Boot, Target: k, Reason: fmt.Sprintf("/dev/%s already holds this image", k.Name)}
		}
	}
	minSize := max(imageSize, brickdisk.MinSize)
	for i := range disks {
		k := &disks[i]
		why := ""
		switch {
		case k.Name == medium:
			why = "the installation medium"
		case slices.ContainsFunc(virtual, func(p string) bool { return strings.HasPrefix(k.Name, p) }):
			continue // loop devices, CD drives: not worth a word
		case k.Removable:
			why = "removable"
		case k.ReadOnly:
			why = "read-only"
		case k.Size < minSize:
			why = fmt.Sprintf("%d MiB, smaller than %d MiB", k.Size>>20, minSize>>20)
		default:
			why = notEmpty(k)
		}
		if why == "" {
			return Decision{Action: Write, Target: k, Reason: fmt.Sprintf("/dev/%s is the first empty internal disk (no partition table, no signature, first MiB zero)", k.Name), Skipped: d.Skipped}
		}
		d.Skipped[k.Name] = why
	}
	var skipped []string
	for _, k := range disks {
		if why, ok := d.Skipped[k.Name]; ok {
			skipped = append(skipped, k.Name+": "+why)
		}
	}
	d.Reason = "no install target: no internal disk is empty"
	if len(skipped) > 0 {
		d.Reason += " (" + strings.Join(skipped, "; ") + ")"
	}
	d.Reason += ". Name one in the cluster config (install: {disk: /dev/sdX}), with wipe: true to overwrite what it holds"
	return d
}

func chooseNamed(disks []Disk, want Want, medium string, imageSize int64) Decision {
	name := strings.TrimPrefix(filepath.Clean(want.Disk), "/dev/")
	i := slices.IndexFunc(disks, func(k Disk) bool { return k.Name == name })
	if i < 0 {
		return Decision{Reason: fmt.Sprintf("install.disk %s: no such disk", want.Disk)}
	}
	k := &disks[i]
	dev := "/dev/" + k.Name
	switch {
	case k.Name == medium:
		return Decision{Reason: fmt.Sprintf("install.disk %s is the installation medium itself", dev)}
	case k.ReadOnly:
		return Decision{Reason: fmt.Sprintf("install.disk %s is read-only", dev)}
	case k.HoldsImage:
		return Decision{Action: Boot, Target: k, Reason: dev + " already holds this image"}
	case k.Size < imageSize:
		return Decision{Reason: fmt.Sprintf("install.disk %s has %d MiB, the image needs %d MiB", dev, k.Size>>20, (imageSize+1<<20-1)>>20)}
	}
	why := notEmpty(k)
	switch {
	case why == "":
		return Decision{Action: Write, Target: k, Reason: dev + " is named by install.disk and empty"}
	case want.Wipe:
		return Decision{Action: Write, Target: k, Reason: fmt.Sprintf("%s is named by install.disk with wipe: true; what it holds (%s) is overwritten", dev, why)}
	default:
		return Decision{Reason: fmt.Sprintf("install.disk %s holds data (%s): not writing it. To overwrite it, set install.wipe: true in the cluster config", dev, why)}
	}
}

// notEmpty says why k is not proven empty; "" when it is.
func notEmpty(k *Disk) string {
	switch {
	case k.Partitions > 0:
		return fmt.Sprintf("has %d partitions", k.Partitions)
	case k.FSType != "":
		return "not empty (" + k.FSType + ")"
	case !k.Empty:
		return "not empty (first MiB not all zero)"
	}
	return ""
}
