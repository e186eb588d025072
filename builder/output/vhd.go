package output

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/run"
)

// vhdLayout changes whenever this file writes the VHD differently for the same inputs.
const vhdLayout = "1"

func vhdInputs(ctx context.Context, _ *spec.Spec) (map[string]string, error) {
	v, err := qemuImgVersion(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"qemu-img": v, "vhdLayout": vhdLayout}, nil
}

// vhdEpoch is the VHD footer's time origin: 2000-01-01 00:00:00 UTC.
const vhdEpoch = 946684800

// writeVHD converts the raw image to a fixed VHD: the raw bytes and a 512-byte footer, the kind Azure requires
// and Hyper-V boots as is. force_size keeps the virtual size exactly the raw image's instead of rounding it to
// a CHS geometry (Azure wants whole MiB, which the disk layout already is). qemu-img stamps the footer with the
// clock and a random UUID; both are replaced by values derived from the build (SOURCE_DATE_EPOCH, the disk
// stage's key), so two builds give the same bytes.
func writeVHD(ctx context.Context, in Sources, dst string) error {
	if _, err := run.Cmd(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc",
		"-o", "subformat=fixed,force_size=on", in.Disk, dst); err != nil {
		return err
	}
	return fixVHDFooter(dst, in.SourceDateEpoch, vhdUUID(in.DiskKey))
}

// vhdUUID is a v4-shaped UUID derived from the raw image's identity.
func vhdUUID(diskKey string) [16]byte {
	h := sha256.Sum256([]byte("kiln vhd\x00" + diskKey))
	var u [16]byte
	copy(u[:], h[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// fixVHDFooter sets the footer's time stamp (offset 24, seconds since 2000) and UUID (offset 68), then its
// checksum (offset 64: the ones' complement of the byte sum with the field zero). A fixed VHD has its only
// footer in the last 512 bytes.
func fixVHDFooter(path string, epoch int64, uuid [16]byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < 512 {
		return fmt.Errorf("vhd %s: %d bytes, no footer", path, fi.Size())
	}
	foot := make([]byte, 512)
	if _, err := f.ReadAt(foot, fi.Size()-512); err != nil {
		return err
	}
	if string(foot[:8]) != "conectix" {
		return fmt.Errorf("vhd %s: no footer (cookie %q)", path, foot[:8])
	}
	if t := binary.BigEndian.Uint32(foot[60:64]); t != 2 {
		return fmt.Errorf("vhd %s: disk type %d, want 2 (fixed)", path, t)
	}
	stamp := max(epoch-vhdEpoch, 0)
	binary.BigEndian.PutUint32(foot[24:28], uint32(stamp))
	copy(foot[68:84], uuid[:])
	binary.BigEndian.PutUint32(foot[64:68], 0)
	binary.BigEndian.PutUint32(foot[64:68], vhdChecksum(foot))
	if _, err := f.WriteAt(foot, fi.Size()-512); err != nil {
		return err
	}
	return f.Close()
}

func vhdChecksum(foot []byte) uint32 {
	var sum uint32
	for _, b := range foot {
		sum += uint32(b)
	}
	return ^sum
}
