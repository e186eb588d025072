package output

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/builder/cache"
	builddisk "github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/firstboot/install"
)

// span is [start, end) of the raw image.
type span struct{ start, end int64 }

// imageManifest writes the raw image's data to tree/kiln/image.data and describes it (install.Manifest):
// its data extents, minus the bytes of the kernel and initrd, which the tree already holds (the ISO boots
// them) and the ESP stores contiguously (a fresh FAT written file after file). A file not found whole in the
// ESP stays in image.data: the ISO is then bigger, never wrong.
func imageManifest(in Sources, tree string) (install.Manifest, error) {
	m := install.Manifest{Name: in.Spec.Name}
	raw, err := os.Open(in.Disk)
	if err != nil {
		return m, err
	}
	defer raw.Close()
	fi, err := raw.Stat()
	if err != nil {
		return m, err
	}
	m.Size = fi.Size()
	if m.SHA256, err = cache.HashFile(in.Disk); err != nil {
		return m, err
	}
	parts, err := partitionsByName(in.Disk)
	if err != nil {
		return m, err
	}
	esp, base, node := parts[builddisk.ESPName], parts[builddisk.BaseName], parts[builddisk.NodeName]
	if esp.end == 0 || base.end == 0 || node.end == 0 {
		return m, fmt.Errorf("%s lacks the esp, %s or %s partition", in.Disk, builddisk.BaseName, builddisk.NodeName)
	}
	for _, r := range []span{{base.start, base.start + 1<<20}, {node.start, node.end}} {
		sum, err := hashSpan(raw, r)
		if err != nil {
			return m, err
		}
		m.Identity = append(m.Identity, install.Range{Offset: r.start, Length: r.end - r.start, SHA256: sum})
	}

	data, err := dataSpans(raw, m.Size)
	if err != nil {
		return m, err
	}
	// Where the ESP's kernel and initrd are, by file on the medium.
	var shared []install.Extent
	for _, f := range []struct{ medium, src string }{
		{builddisk.KernelPath[1:], in.Kernel}, {builddisk.InitrdPath[1:], in.Initrd},
	} {
		off, n, err := findFile(raw, data, esp, f.src)
		if err != nil {
			return m, err
		}
		if n > 0 {
			shared = append(shared, install.Extent{Offset: off, Length: n, File: f.medium})
		}
	}
	slices.SortFunc(shared, func(a, b install.Extent) int { return int(a.Offset - b.Offset) })

	out, err := os.Create(filepath.Join(tree, install.DataPath))
	if err != nil {
		return m, err
	}
	defer out.Close()
	var written int64
	keep := func(s span) error {
		if s.end <= s.start {
			return nil
		}
		if _, err := io.Copy(out, io.NewSectionReader(raw, s.start, s.end-s.start)); err != nil {
			return err
		}
		m.Extents = append(m.Extents, install.Extent{Offset: s.start, Length: s.end - s.start, File: install.DataPath, FileOffset: written})
		written += s.end - s.start
		return nil
	}
	for _, d := range data {
		pos := d.start
		for _, sh := range shared {
			if sh.Offset+sh.Length <= pos || sh.Offset >= d.end {
				continue
			}
			if err := keep(span{pos, sh.Offset}); err != nil {
				return m, err
			}
			m.Extents = append(m.Extents, sh)
			pos = sh.Offset + sh.Length
		}
		if err := keep(span{pos, d.end}); err != nil {
			return m, err
		}
	}
	return m, out.Close()
}

// partitionsByName reads the image's GPT.
func partitionsByName(image string) (map[string]span, error) {
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	t, err := d.GetPartitionTable()
	if err != nil {
		return nil, err
	}
	gt, ok := t.(*gpt.Table)
	if !ok {
		return nil, errors.New("not a GPT disk")
	}
	out := map[string]span{}
	for _, p := range gt.Partitions {
		out[p.Name] = span{p.GetStart(), p.GetStart() + p.GetSize()}
	}
	return out, nil
}

// dataSpans lists the file's data extents (SEEK_DATA/SEEK_HOLE; all of it where holes are unknown). A
// span that straddles the kernel or initrd is fine: imageManifest splits it.
func dataSpans(f *os.File, size int64) ([]span, error) {
	var out []span
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, syscall.ENXIO):
			return out, nil
		case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
			data = off
		case err != nil:
			return nil, err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		out = append(out, span{data, hole})
		off = hole
	}
	return out, nil
}

// findFile returns where in the ESP the file src is stored whole and contiguous, and its length; (0, 0) when
// it is not. Candidates are 512-byte aligned positions inside the ESP's data extents where src's first
// 4 KiB occur.
func findFile(raw *os.File, data []span, esp span, src string) (int64, int64, error) {
	want, err := os.ReadFile(src)
	if err != nil {
		return 0, 0, err
	}
	head := want[:min(len(want), 4096)]
	for _, d := range data {
		s := span{max(d.start, esp.start), min(d.end, esp.end)}
		if s.end-s.start < int64(len(want)) {
			continue
		}
		buf := make([]byte, s.end-s.start)
		if _, err := raw.ReadAt(buf, s.start); err != nil {
			return 0, 0, err
		}
		for i := 0; ; {
			j := bytes.Index(buf[i:], head)
			if j < 0 {
				break
			}
			at := i + j
			if at%512 == 0 && at+len(want) <= len(buf) && bytes.Equal(buf[at:at+len(want)], want) {
				return s.start + int64(at), int64(len(want)), nil
			}
			i = at + 1
		}
	}
	return 0, 0, nil
}

func hashSpan(f *os.File, s span) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, s.start, s.end-s.start)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
