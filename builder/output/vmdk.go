package output

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"

	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/run"
)

// vmdkLayout changes whenever this file writes the vmdk differently for the same inputs.
const vmdkLayout = "1"

// vmdkInputs is qemu-img's version, which decides the vmdk bytes, and how kiln post-processes them.
func vmdkInputs(ctx context.Context, _ *spec.Spec) (map[string]string, error) {
	v, err := qemuImgVersion(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"qemu-img": v, "vmdkLayout": vmdkLayout}, nil
}

// writeVMDK converts the raw image to a streamOptimized vmdk: the one kind ESXi, vSphere's OVF import and
// VMware Workstation all accept as an upload, compressed (holes and zeros take nothing). adapter_type lsilogic
// and compat6 (hardware version 6) are what coreos-assembler ships to VMware for the same reason: every ESXi
// version knows them. qemu-img writes a random content ID (CID) into the descriptor; it is replaced by one
// derived from the image, so two builds give the same bytes.
func writeVMDK(ctx context.Context, in Sources, dst string) error {
	if _, err := run.Cmd(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk",
		"-o", "subformat=streamOptimized,adapter_type=lsilogic,compat6", in.Disk, dst); err != nil {
		return err
	}
	return fixVMDKCID(dst, vmdkCID(in.DiskKey))
}

// vmdkCID is the descriptor's content ID for the raw image identified by diskKey. VMware only compares CIDs
// between a disk and its children (snapshots, linked clones): any stable value serves.
func vmdkCID(diskKey string) uint32 {
	h := sha256.Sum256([]byte("kiln vmdk\x00" + diskKey))
	return binary.BigEndian.Uint32(h[:4])
}

var cidLine = regexp.MustCompile(`(?m)^CID=[0-9a-fA-F]+$`)

// fixVMDKCID rewrites the CID line of the embedded descriptor, whose place the sparse header names
// (descriptorOffset and descriptorSize, in sectors). The text keeps its NUL padding to the same size.
func fixVMDKCID(path string, cid uint32) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return fmt.Errorf("vmdk header: %w", err)
	}
	if string(hdr[:4]) != "KDMV" {
		return fmt.Errorf("vmdk %s: no sparse extent header (magic %q)", path, hdr[:4])
	}
	off := int64(binary.LittleEndian.Uint64(hdr[28:36])) * 512
	size := int64(binary.LittleEndian.Uint64(hdr[36:44])) * 512
	if off == 0 || size == 0 || size > 1<<20 {
		return fmt.Errorf("vmdk %s: no embedded descriptor (offset %d, size %d)", path, off, size)
	}
	desc := make([]byte, size)
	if _, err := f.ReadAt(desc, off); err != nil {
		return fmt.Errorf("vmdk descriptor: %w", err)
	}
	text := desc
	if i := bytes.IndexByte(desc, 0); i >= 0 {
		text = desc[:i]
	}
	if len(cidLine.FindAll(text, -1)) != 1 {
		return fmt.Errorf("vmdk %s: descriptor has no single CID line", path)
	}
	fixed := cidLine.ReplaceAll(text, fmt.Appendf(nil, "CID=%08x", cid))
	if len(fixed) > len(desc) {
		return fmt.Errorf("vmdk %s: descriptor outgrows its %d bytes", path, size)
	}
	out := make([]byte, size)
	copy(out, fixed)
	if _, err := f.WriteAt(out, off); err != nil {
		return err
	}
	return f.Close()
}
