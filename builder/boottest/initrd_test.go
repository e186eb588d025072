package boottest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
)

// mostScript builds, in the packages stage's tree of the image under test, the initrd that initramfs-tools'
// own MODULES=most would give (kiln's conf with MODULES=most, without hooks/kiln-modules), and lists both
// that one and the image's initrd. Everything it mounts lives in a private mount namespace (unshare), and
// writes go to tmpfs: the cached tree is left as it was.
const mostScript = `set -eu
tree="$1" initrd="$2" work="$3"
mount -t tmpfs tmpfs "$tree/tmp"
mount -t tmpfs tmpfs "$tree/var/tmp"
mount -t proc proc "$tree/proc"
mount -t sysfs sysfs "$tree/sys"
mount --rbind /dev "$tree/dev"
cp -a "$tree/etc/initramfs-tools" "$tree/tmp/conf"
sed -i 's/^MODULES=.*/MODULES=most/' "$tree/tmp/conf/conf.d/kiln.conf"
rm "$tree/tmp/conf/hooks/kiln-modules"
version=$(ls "$tree/usr/lib/modules")
chroot "$tree" mkinitramfs -d /tmp/conf -o /tmp/most.img "$version"
cp "$initrd" "$tree/tmp/kiln.img"
chroot "$tree" lsinitramfs /tmp/most.img >"$work/most.txt"
chroot "$tree" lsinitramfs /tmp/kiln.img >"$work/kiln.txt"
`

// TestInitrdMatchesModulesMost proves that hooks/kiln-modules, which adds MODULES=most's modules in one
// batch (a cold build's initrd in 5 s instead of 19 s), puts the same modules and firmware in the initrd as
// initramfs-tools does module by module, for the image under test. It guards against initramfs-tools
// changing its lists or its dependency rules under the hook.
func TestInitrdMatchesModulesMost(t *testing.T) {
	if testing.Short() {
		t.Skip("initrd comparison: skipped with -short")
	}
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("initrd comparison: set KILN_E2E=1 (needs the image's cached packages tree)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("initrd comparison: needs root (chroot, mounts in a private namespace)")
	}
	out := packagesOut(t, imagePath(t))
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", mostScript, "sh",
		filepath.Join(out, "tree"), filepath.Join(out, "initrd.img"), work)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	t.Logf("MODULES=most initrd built and both listed in %s", time.Since(start).Round(time.Second))

	most, kiln := readList(t, filepath.Join(work, "most.txt")), readList(t, filepath.Join(work, "kiln.txt"))
	var modules, firmware int
	for _, p := range most {
		switch {
		case strings.HasSuffix(p, ".ko"):
			modules++
		case strings.HasPrefix(p, "usr/lib/firmware/") && !strings.HasSuffix(p, "/"):
			firmware++
		}
	}
	// The image's node.yaml carries NIC firmware packages: both must be there, or the comparison proves little.
	if modules < 500 || firmware < 20 {
		t.Fatalf("MODULES=most initrd has only %d modules and %d firmware entries: not the set under test", modules, firmware)
	}
	for _, p := range most {
		if _, ok := slices.BinarySearch(kiln, p); !ok {
			t.Errorf("in a MODULES=most initrd, missing from kiln's: %s", p)
		}
	}
	for _, p := range kiln {
		if _, ok := slices.BinarySearch(most, p); !ok {
			t.Errorf("in kiln's initrd, not in a MODULES=most one: %s", p)
		}
	}
	t.Logf("same %d paths in both (%d modules, %d firmware entries)", len(most), modules, firmware)

	// The drivers a machine needs to reach its root and its network before the layers are mounted: VMs
	// (virtio), EC2 Nitro (NVMe disks, ENA NICs) and older Xen instances. docs/aws.md relies on these.
	for _, mod := range []string{"virtio_blk", "virtio_net", "nvme", "nvme-core", "ena", "xen-blkfront", "xen-netfront"} {
		if !slices.ContainsFunc(kiln, func(p string) bool { return strings.HasSuffix(p, "/"+mod+".ko") }) {
			t.Errorf("kiln's initrd has no %s.ko", mod)
		}
	}
}

// packagesOut is the cached packages stage output the image was built from, named by its manifest.
func packagesOut(t *testing.T, img string) string {
	t.Helper()
	out := stageOut(t, img, "packages")
	if _, err := os.Stat(filepath.Join(out, "tree")); err != nil {
		t.Fatalf("the image's packages stage is not in the cache (build it with make image): %v", err)
	}
	return out
}

// stageOut is the cached output directory of one stage of the image's build, named by its manifest.
func stageOut(t *testing.T, img, stage string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(img), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m builder.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	root, err := cache.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Stages {
		if s.Name == stage {
			return filepath.Join(root, "stages", stage, s.Key, "out")
		}
	}
	t.Fatalf("manifest.json names no %s stage", stage)
	return ""
}

// readList is a file's lines, sorted.
func readList(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(lines)
	return lines
}
