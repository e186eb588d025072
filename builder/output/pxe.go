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

	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// IPXEDir is where Debian's ipxe package installs its binaries, and IPXEPackage the package.
const (
	IPXEDir     = "/usr/lib/ipxe"
	IPXEPackage = "ipxe"
)

// pxeLayout changes whenever this file writes the pxe directory differently for the same inputs (the
// script's text, the file set), so that the cached formats entry is rebuilt.
const pxeLayout = "1"

// pxeInputs is the ipxe package's version (its binaries are copied as they are) and the directory's layout.
// A kernel argument iPXE would expand is refused here, before any stage runs.
func pxeInputs(ctx context.Context, s *spec.Spec) (map[string]string, error) {
	for i, a := range s.Kernel.Cmdline {
		if strings.Contains(a, "${") {
			return nil, fmt.Errorf("kernel.cmdline[%d] %q: iPXE would expand ${…} in boot.ipxe", i, a)
		}
	}
	v, err := run.Cmd(ctx, "dpkg-query", "-W", "-f=${Version}", IPXEPackage)
	if err != nil {
		return nil, fmt.Errorf("the %s package (iPXE binaries) is not installed: apt-get install %s: %w", IPXEPackage, IPXEPackage, err)
	}
	return map[string]string{"ipxe": strings.TrimSpace(string(v)), "pxeLayout": pxeLayout}, nil
}

// writePXE fills the directory dst: kernel, initrd and layers copied from the earlier stages (copies, not
// links: nothing that writes to the output may reach the cache), iPXE's binaries, boot.ipxe naming each
// layer's sha256, and pxe.json.
func writePXE(ctx context.Context, in Sources, dst string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	copies := []struct{ name, src string }{
		{pxedir.Kernel, in.Kernel},
		{pxedir.Initrd, in.Initrd},
		{pxedir.Base, in.Base},
		{pxedir.Node, in.Node},
		{pxedir.EFI, filepath.Join(in.IPXE, pxedir.EFI)},
		{pxedir.BIOS, filepath.Join(in.IPXE, pxedir.BIOS)},
	}
	sums := map[string]string{}
	for _, c := range copies {
		p := filepath.Join(dst, c.name)
		if err := files.Copy(ctx, p, c.src, 0o644); err != nil {
			return err
		}
		sum, err := cache.HashFile(p)
		if err != nil {
			return err
		}
		sums[c.name] = sum
	}
	script := BootScript(disk.Cmdline(in.Spec), sums[pxedir.Base], sums[pxedir.Node])
	if err := files.Write(filepath.Join(dst, pxedir.Script), []byte(script), 0o644); err != nil {
		return err
	}
	h := sha256.Sum256([]byte(script))
	sums[pxedir.Script] = hex.EncodeToString(h[:])
	b, err := json.MarshalIndent(pxedir.Index{Name: in.Spec.Name, Files: sums}, "", "  ")
	if err != nil {
		return err
	}
	return files.Write(filepath.Join(dst, pxedir.Manifest), append(b, '\n'), 0o644)
}

// BootScript is boot.ipxe for a kernel command line and the layers' sha256. Every URL is relative to
// ${kiln-url}, which the serving side sets on the script's second line; without it, the next-server
// of the DHCP answer on port 80. The initramfs verifies each layer against the hash before mounting it.
func BootScript(cmdline, baseSHA256, nodeSHA256 string) string {
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	b.WriteString("# kiln netboot: boots the kernel and initrd below; the initramfs fetches the layers listed in\n")
	b.WriteString("# kiln.layers into RAM and checks each against its sha256 before mounting it.\n")
	b.WriteString("# kiln-url is the URL of the directory holding these files, ending in '/'. `kiln pxe serve`\n")
	b.WriteString("# sets it on the second line; served otherwise, it defaults to the DHCP next-server on port 80.\n")
	b.WriteString("isset ${kiln-url} || set kiln-url http://${next-server}/\n")
	fmt.Fprintf(&b, "kernel ${kiln-url}%s initrd=%s %s BOOTIF=01-${netX/mac:hexhyp} kiln.layers=${kiln-url}%s?sha256=%s,${kiln-url}%s?sha256=%s kiln.config=${kiln-url}cluster.yaml\n",
		pxedir.Kernel, pxedir.Initrd, cmdline, pxedir.Base, baseSHA256, pxedir.Node, nodeSHA256)
	fmt.Fprintf(&b, "initrd ${kiln-url}%s\n", pxedir.Initrd)
	b.WriteString("boot\n")
	return b.String()
}
