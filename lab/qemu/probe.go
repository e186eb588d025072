package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
)

// ProbeTimeout bounds the KVM probe. OVMF prints its boot manager line after ~5 s under TCG and well under 2 s under
// working KVM; nested KVM here hangs instead, so anything slower than this is treated as "no KVM".
const ProbeTimeout = 8 * time.Second

// ovmfReachedBDS is what OVMF prints on the serial console once it has run through PEI and DXE to the boot
// manager: proof that guest code really executes under the tested accelerator.
var ovmfReachedBDS = []byte("BdsDxe:")

// ProbeKVM boots OVMF without disks under KVM and reports whether it reached its boot manager within timeout.
// It never returns an error for an unusable KVM: the reason is the second result, for logs.
func ProbeKVM(ctx context.Context, ovmfCode, ovmfVars string, timeout time.Duration) (bool, string) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false, "no /dev/kvm"
	}
	dir, err := os.MkdirTemp("", "kiln-kvm-probe-")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	vars := filepath.Join(dir, "vars.fd")
	if err := files.Copy(ctx, vars, ovmfVars, 0o644); err != nil {
		return false, err.Error()
	}
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := run.Cmd(ctx, Binary, "-nodefaults", "-no-user-config", "-display", "none", "-machine", "q35",
			"-accel", "kvm", "-m", "256",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars,
			"-chardev", "file,id=serial0,path="+serial, "-serial", "chardev:serial0")
		done <- err
	}()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if b, _ := os.ReadFile(serial); bytes.Contains(b, ovmfReachedBDS) {
				return true, ""
			}
			return false, fmt.Sprintf("qemu -accel kvm exited: %v", err)
		case <-ctx.Done():
			<-done
			return false, fmt.Sprintf("OVMF did not reach its boot manager under KVM within %s", timeout)
		case <-t.C:
			if b, _ := os.ReadFile(serial); bytes.Contains(b, ovmfReachedBDS) {
				cancel()
				<-done
				return true, ""
			}
		}
	}
}

// CopyVars gives a node its own OVMF variable store, so boot entries one node writes never leak to another.
// An existing store (a node started again) is replaced.
func CopyVars(src, dst string) error {
	if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return files.Copy(context.Background(), dst, src, 0o644)
}

// CreateDisk makes a copy-on-write qcow2 overlay of the raw image at backing with the given virtual size.
// The backing path must be absolute: qemu resolves a relative one against the overlay's directory.
func CreateDisk(ctx context.Context, backing, disk string, sizeGiB int) error {
	if !filepath.IsAbs(backing) {
		return fmt.Errorf("qemu: disk %s: backing %s is not absolute", disk, backing)
	}
	format, err := imageFormat(backing)
	if err != nil {
		return fmt.Errorf("qemu: disk %s: %w", disk, err)
	}
	if _, err := run.Cmd(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", format, "-b", backing,
		disk, fmt.Sprintf("%dG", sizeGiB)); err != nil {
		return fmt.Errorf("qemu: create disk %s: %w", disk, err)
	}
	return nil
}

// CreateBlankDisk creates an empty qcow2 disk of sizeGiB (a data disk: all zeros to the guest).
func CreateBlankDisk(ctx context.Context, disk string, sizeGiB int) error {
	if _, err := run.Cmd(ctx, "qemu-img", "create", "-q", "-f", "qcow2", disk, fmt.Sprintf("%dG", sizeGiB)); err != nil {
		return fmt.Errorf("qemu: create disk %s: %w", disk, err)
	}
	return nil
}

// qcow2Magic starts every qcow2 file.
var qcow2Magic = []byte("QFI\xfb")

// imageFormat tells a qcow2 image (out/node.qcow2) from a raw one (out/node.raw) by its magic, so either can back
// node disks; the format is always given to qemu explicitly, never probed by it.
func imageFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, len(qcow2Magic))
	if _, err := f.ReadAt(head, 0); err == nil && bytes.Equal(head, qcow2Magic) {
		return "qcow2", nil
	}
	return "raw", nil
}
