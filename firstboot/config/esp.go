package config

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend"
	diskfile "github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// ESP reads kiln/cluster.yaml from the boot disk's EFI System Partition without mounting it: the node's
// kernel may lack vfat, and a mount would race whatever else touches the ESP. The FAT32 is read in user space
// with go-diskfs.
type ESP struct {
	// Root prefixes /sys and /dev (tests); "" or "/" on a node.
	Root string
}

func (ESP) Name() string { return "esp" }

func (e ESP) Load(ctx context.Context) ([]byte, error) {
	dev, err := e.findDevice()
	if err != nil {
		return nil, err
	}
	return readFATFile(dev, ESPFile)
}

// blockPart is a partition as sysfs describes it.
type blockPart struct {
	dev, disk, partName string
}

// findDevice finds the ESP's device node. It reads PARTNAME= from sysfs uevents rather than relying on
// /dev/disk/by-partlabel (udev's symlink picks one arbitrarily when two disks carry an "esp", say the node's
// disk and the USB stick it was flashed from). Preference: the esp on the disk that holds kiln-base (the one we
// booted), else the only esp, else udev's by-partlabel link.
func (e ESP) findDevice() (string, error) {
	parts, err := scanPartitions(filepath.Join(e.Root, "sys/class/block"))
	if err != nil {
		return "", err
	}
	bootDisk := ""
	for _, p := range parts {
		if p.partName == "kiln-base" {
			bootDisk = p.disk
		}
	}
	var esps []blockPart
	for _, p := range parts {
		if p.partName == ESPPartName {
			esps = append(esps, p)
		}
	}
	for _, p := range esps {
		if bootDisk != "" && p.disk == bootDisk {
			return filepath.Join(e.Root, "dev", p.dev), nil
		}
	}
	if len(esps) == 1 {
		return filepath.Join(e.Root, "dev", esps[0].dev), nil
	}
	if len(esps) > 1 {
		var names []string
		for _, p := range esps {
			names = append(names, p.dev)
		}
		return "", fmt.Errorf("several partitions labelled %q (%s) and none on the boot disk", ESPPartName, strings.Join(names, ", "))
	}
	link := filepath.Join(e.Root, "dev/disk/by-partlabel", ESPPartName)
	if _, err := os.Stat(link); err != nil {
		return "", fmt.Errorf("no partition labelled %q: %w", ESPPartName, fs.ErrNotExist)
	}
	return link, nil
}

// scanPartitions lists the partitions under a /sys/class/block directory, sorted by device name.
func scanPartitions(classBlock string) ([]blockPart, error) {
	entries, err := os.ReadDir(classBlock)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", classBlock, err)
	}
	var parts []blockPart
	for _, ent := range entries {
		link := filepath.Join(classBlock, ent.Name())
		kv, err := readUevent(filepath.Join(link, "uevent"))
		if err != nil || kv["DEVTYPE"] != "partition" || kv["PARTNAME"] == "" {
			continue // not a partition, or vanished while we looked: not ours to report
		}
		// /sys/class/block/vda1 → /sys/devices/…/block/vda/vda1: the parent directory is the disk.
		resolved, err := filepath.EvalSymlinks(link)
		if err != nil {
			continue
		}
		dev := kv["DEVNAME"]
		if dev == "" {
			dev = ent.Name()
		}
		parts = append(parts, blockPart{dev: dev, disk: filepath.Base(filepath.Dir(resolved)), partName: kv["PARTNAME"]})
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].dev < parts[j].dev })
	return parts, nil
}

func readUevent(p string) (map[string]string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	return kv, sc.Err()
}

// readFATFile reads name (slash-separated, matched case-insensitively as FAT does) from the FAT32 filesystem
// that fills dev. A missing file wraps fs.ErrNotExist.
func readFATFile(dev, name string) ([]byte, error) {
	b, err := diskfile.OpenFromPath(dev, true)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dev, err)
	}
	defer b.Close()
	size, err := b.Seek(0, io.SeekEnd) // block devices stat as size 0; seeking to the end gives their size
	if err != nil {
		return nil, fmt.Errorf("size of %s: %w", dev, err)
	}
	return readFAT(b, size, dev, name)
}

// readFAT reads name from the FAT32 filesystem of size bytes in b (dev names it in errors). go-diskfs trusts
// what it reads: a damaged boot sector (a FAT of 2^31 sectors) makes it allocate without bound, and a cycle
// in a cluster chain makes it loop forever, so checkFAT refuses both first. A panic in go-diskfs on a
// malformed filesystem is this source's error too, not the agent's end.
func readFAT(b backend.Storage, size int64, dev, name string) (data []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			data, err = nil, fmt.Errorf("read FAT32 on %s: malformed filesystem (%v)", dev, r)
		}
	}()
	if err := checkFAT(b, size); err != nil {
		return nil, fmt.Errorf("read FAT32 on %s: %w", dev, err)
	}
	fat, err := fat32.Read(b, size, 0, 512)
	if err != nil {
		return nil, fmt.Errorf("read FAT32 on %s: %w", dev, err)
	}
	// Walk by ReadDir: go-diskfs reports a missing file as an untyped error, and "missing" must be told apart
	// from "unreadable" (see Source).
	dir := "." // ReadDir takes io/fs paths; OpenFile below takes the absolute form
	for _, elem := range strings.Split(name, "/") {
		entries, err := fat.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read directory %s on %s: %w", dir, dev, err)
		}
		found := ""
		for _, ent := range entries {
			if strings.EqualFold(ent.Name(), elem) {
				found = ent.Name()
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s on %s: %w", name, dev, fs.ErrNotExist)
		}
		dir = path.Join(dir, found)
	}
	fh, err := fat.OpenFile("/"+dir, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("open %s on %s: %w", dir, dev, err)
	}
	defer fh.Close()
	if data, err = io.ReadAll(io.LimitReader(fh, MaxSize+1)); err != nil {
		return nil, fmt.Errorf("read %s on %s: %w", dir, dev, err)
	}
	return data, nil
}

// checkFAT checks a FAT32's boot sector and its first FAT: sector and cluster sizes FAT allows, at least
// one reserved sector, one or two FATs that end before the filesystem does, a root directory cluster inside
// the data area, and no cluster chain that runs into itself.
func checkFAT(b io.ReaderAt, size int64) error {
	var boot [512]byte
	if _, err := b.ReadAt(boot[:], 0); err != nil {
		return fmt.Errorf("boot sector: %w", err)
	}
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(boot[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(boot[o:])) }
	bps, spc, reserved, fats := le16(11), int64(boot[13]), le16(14), int64(boot[16])
	total, fatSectors, root := le32(32), le32(36), le32(44)
	switch {
	case bps < 512 || bps > 4096 || bps&(bps-1) != 0:
		return fmt.Errorf("boot sector: %d bytes per sector", bps)
	case spc == 0 || spc&(spc-1) != 0:
		return fmt.Errorf("boot sector: %d sectors per cluster", spc)
	case reserved == 0 || fats == 0 || fats > 2 || fatSectors == 0:
		return fmt.Errorf("boot sector: %d reserved sectors, %d FATs of %d sectors", reserved, fats, fatSectors)
	case total*bps > size:
		return fmt.Errorf("boot sector: %d sectors of %d bytes, beyond the %d-byte partition", total, bps, size)
	case reserved+fats*fatSectors >= total:
		return fmt.Errorf("boot sector: the FATs end at sector %d of %d", reserved+fats*fatSectors, total)
	case root < 2 || root >= 2+(total-reserved-fats*fatSectors)/spc:
		return fmt.Errorf("boot sector: root directory cluster %d outside the data area", root)
	}
	table := make([]byte, fatSectors*bps)
	if _, err := b.ReadAt(table, reserved*bps); err != nil {
		return fmt.Errorf("FAT: %w", err)
	}
	return checkChains(table)
}

// checkChains follows every cluster chain of a FAT32 table once: a chain that comes back to a cluster it
// already passed is a cycle. Each cluster is marked while its chain is walked and done once the chain ended,
// so the walk is linear in the table's size.
func checkChains(table []byte) error {
	n := uint32(len(table) / 4)
	next := func(c uint32) uint32 { return binary.LittleEndian.Uint32(table[4*c:]) & 0x0fffffff }
	const (
		unseen = iota
		walking
		done
	)
	mark := make([]uint8, n)
	var path []uint32
	for start := uint32(2); start < n; start++ {
		path = path[:0]
		for c := start; c >= 2 && c < n && mark[c] != done; c = next(c) {
			if mark[c] == walking {
				return fmt.Errorf("FAT: the cluster chain through %d runs into itself", c)
			}
			mark[c] = walking
			path = append(path, c)
		}
		for _, c := range path {
			mark[c] = done
		}
	}
	return nil
}
