package brickdisk

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/firstboot/statefs"
)

const gib = int64(1) << 30

// TestChoose: the rules, one disk set per case. A disk is taken only when it is provably empty or labelled by
// kiln, never the boot disk, and never when the state partition's brick already holds the volume.
func TestChoose(t *testing.T) {
	boot := Disk{Name: "vda", Size: 20 * gib, Partitions: 4}
	empty := func(name string) Disk { return Disk{Name: name, Size: 100 * gib, Empty: true} }
	cases := map[string]struct {
		disks   []Disk
		used    bool
		boot    string
		want    string // chosen disk, "" none
		format  bool
		skipped map[string]string // substrings of the reasons
	}{
		"only the boot disk": {disks: []Disk{boot}, boot: "vda", skipped: map[string]string{"vda": "boot disk"}},
		"empty second disk":  {disks: []Disk{boot, empty("vdb")}, boot: "vda", want: "vdb", format: true},
		"labelled disk wins over an empty one, no format": {
			disks: []Disk{boot, empty("sda"), {Name: "sdb", Size: 50 * gib, FSType: "ext4", FSLabel: Label}},
			boot:  "vda", want: "sdb", skipped: map[string]string{"sda": "a kiln-bricks disk exists"}},
		"two empty disks: the first by name": {
			disks: []Disk{boot, empty("vdc"), empty("vdb")}, boot: "vda", want: "vdb", format: true,
			skipped: map[string]string{"vdc": "another empty disk"}},
		"never anything holding data": {
			disks: []Disk{boot,
				{Name: "sdb", Size: 100 * gib, FSType: "xfs", FSLabel: "backup"},
				{Name: "sdc", Size: 100 * gib, Partitions: 1},
				{Name: "sdd", Size: 100 * gib}, // no signature, but bytes in its first MiB
				{Name: "sde", Size: 100 * gib, FSType: "ext4", FSLabel: "kiln-bricks-old"}},
			boot: "vda",
			skipped: map[string]string{"sdb": "not empty (xfs)", "sdc": "has 1 partitions", "sdd": "not empty",
				"sde": "not empty (ext4)"}},
		"removable, read-only, small, virtual": {
			disks: []Disk{boot,
				{Name: "sdb", Size: 32 * gib, Removable: true, Empty: true},
				{Name: "sdc", Size: 32 * gib, ReadOnly: true, Empty: true},
				{Name: "sdd", Size: 512 << 20, Empty: true},
				{Name: "loop0", Size: 32 * gib, Empty: true},
				{Name: "zram0", Size: 32 * gib, Empty: true}},
			boot: "vda",
			skipped: map[string]string{"sdb": "removable", "sdc": "read-only", "sdd": "smaller than",
				"loop0": "not a physical disk", "zram0": "not a physical disk"}},
		"state brick in use: nothing moves": {
			disks: []Disk{boot, empty("vdb")}, boot: "vda", used: true,
			skipped: map[string]string{"vdb": "already holds data"}},
		"unknown boot disk: hands off": {disks: []Disk{boot, empty("vdb")}},
		"netbooted: the state disk holds /var, the next empty disk is taken": {
			disks: []Disk{{Name: "sda", Size: 500 * gib, Partitions: 1}, empty("sdb")}, boot: "sda", want: "sdb", format: true,
			skipped: map[string]string{"sda": "boot disk"}},
		"another disk's kiln-state is never taken": {
			disks: []Disk{boot, {Name: "sdb", Size: 100 * gib, FSType: "ext4", FSLabel: StateLabel},
				{Name: "sdc", Size: 100 * gib, FSType: "ext4", FSLabel: StateLabel, Empty: true}, empty("sdd")},
			boot: "vda", want: "sdd", format: true,
			skipped: map[string]string{"sdb": "holds kiln-state", "sdc": "holds kiln-state"}},
		"two labelled disks: no guess": {
			disks: []Disk{boot, {Name: "sdb", Size: 50 * gib, FSType: "ext4", FSLabel: Label},
				{Name: "sdc", Size: 50 * gib, FSType: "ext4", FSLabel: Label}},
			boot: "vda", skipped: map[string]string{"sdb": "several", "sdc": "several"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := Choose(c.disks, c.boot, c.used)
			got := ""
			if d.Disk != nil {
				got = d.Disk.Name
			}
			if got != c.want || d.Format != c.format {
				t.Fatalf("chose %q format=%v (%s), want %q format=%v", got, d.Format, d.Reason, c.want, c.format)
			}
			if d.Reason == "" {
				t.Error("no reason given")
			}
			for disk, want := range c.skipped {
				if !strings.Contains(d.Skipped[disk], want) {
					t.Errorf("%s skipped for %q, want %q", disk, d.Skipped[disk], want)
				}
			}
		})
	}
}

// fakeNode is a sysfs/proc/dev tree: the boot disk vda (with /var on vda4) and the given extra disks, each a
// regular file standing in for the device.
type fakeNode struct {
	root      string
	formatted []string
	mounted   map[string]string // dir → dev
	labels    map[string]string // dev → label after format
}

func newFakeNode(t *testing.T, disks map[string][]byte) (*fakeNode, *Host) {
	t.Helper()
	f := &fakeNode{root: t.TempDir(), mounted: map[string]string{}, labels: map[string]string{}}
	mk := func(p, content string) {
		p = filepath.Join(f.root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// vda with partition vda4 holding /var; /sys/dev/block/254:4 points at it as on a real node.
	mk("/sys/devices/pci0000:00/virtio2/block/vda/size", "41943040\n")
	mk("/sys/devices/pci0000:00/virtio2/block/vda/vda4/partition", "4\n")
	if err := os.MkdirAll(filepath.Join(f.root, "/sys/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../devices/pci0000:00/virtio2/block/vda", filepath.Join(f.root, "/sys/block/vda")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.root, "/sys/dev/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../devices/pci0000:00/virtio2/block/vda/vda4", filepath.Join(f.root, "/sys/dev/block/254:4")); err != nil {
		t.Fatal(err)
	}
	mk("/proc/self/mountinfo", "25 1 0:23 / / ro,relatime - overlay overlay ro\n"+
		"26 25 254:4 / /var rw,relatime - ext4 /dev/vda4 rw\n")
	mk("/dev/vda", "")
	for name, head := range disks {
		mk("/sys/block/"+name+"/size", "209715200\n") // 100 GiB
		mk("/sys/block/"+name+"/removable", "0\n")
		mk("/dev/"+name, string(head))
	}
	h := &Host{Root: f.root, Log: slog.New(slog.DiscardHandler),
		Probe: func(_ context.Context, dev string) (string, string, error) {
			if l, ok := f.labels[dev]; ok {
				return "ext4", l, nil
			}
			return "", "", nil
		},
		Format: func(_ context.Context, dev string) error {
			f.formatted = append(f.formatted, dev)
			f.labels[dev] = Label
			return nil
		},
		Mount: func(dev, dir string) error {
			f.mounted[dir] = dev
			// What the kernel would show from now on.
			mi, err := os.OpenFile(filepath.Join(f.root, "/proc/self/mountinfo"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer mi.Close()
			_, err = io.WriteString(mi, "40 26 254:16 / "+MountPoint+" rw,noatime - ext4 "+dev+" rw\n")
			return err
		},
	}
	return f, h
}

// TestReconcileFormatsEmptyDiskOnce: first boot formats the empty vdb and mounts it, leaves vdc (bytes in its
// first MiB) alone; running again the same boot does nothing; the next boot mounts without formatting.
func TestReconcileFormatsEmptyDiskOnce(t *testing.T) {
	junk := bytes.Repeat([]byte{0}, headSize)
	junk[4096] = 1
	f, h := newFakeNode(t, map[string][]byte{"vdb": make([]byte, headSize), "vdc": junk})
	d, err := h.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vdb := filepath.Join(f.root, "/dev/vdb")
	if d.Disk == nil || d.Disk.Name != "vdb" || len(f.formatted) != 1 || f.formatted[0] != vdb {
		t.Fatalf("decision %+v, formatted %v: want vdb formatted", d, f.formatted)
	}
	if f.mounted[filepath.Join(f.root, MountPoint)] != vdb {
		t.Fatalf("mounts %v", f.mounted)
	}
	if _, err := os.Stat(filepath.Join(f.root, MountPoint, "data")); err != nil {
		t.Errorf("brick parent not made on the disk: %v", err)
	}
	if !strings.Contains(d.Skipped["vdc"], "not empty") {
		t.Errorf("vdc: %q", d.Skipped["vdc"])
	}

	// Same boot, unit restarted: mounted already.
	if d, err := h.Reconcile(context.Background()); err != nil || d.Disk != nil {
		t.Fatalf("second run: %+v %v", d, err)
	}

	// Next boot: nothing mounted, vdb carries the label now.
	if err := os.WriteFile(filepath.Join(f.root, "/proc/self/mountinfo"),
		[]byte("26 25 254:4 / /var rw,relatime - ext4 /dev/vda4 rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err = h.Reconcile(context.Background())
	if err != nil || d.Disk == nil || d.Disk.Name != "vdb" || d.Format || len(f.formatted) != 1 {
		t.Fatalf("next boot: %+v %v, formatted %v: want vdb mounted, not formatted again", d, err, f.formatted)
	}
}

// TestReconcileKeepsUsedStateBrick: a node whose volume already lives on the state partition (a disk added
// later) keeps it there: mounting over it would hide the brick.
func TestReconcileKeepsUsedStateBrick(t *testing.T) {
	f, h := newFakeNode(t, map[string][]byte{"vdb": make([]byte, headSize)})
	if err := os.MkdirAll(filepath.Join(f.root, stateBrick, ".glusterfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := h.Reconcile(context.Background())
	if err != nil || d.Disk != nil || len(f.formatted) != 0 || len(f.mounted) != 0 {
		t.Fatalf("%+v %v formatted %v mounted %v: want nothing touched", d, err, f.formatted, f.mounted)
	}
}

func TestBootDisk(t *testing.T) {
	_, h := newFakeNode(t, nil)
	if got, err := h.BootDisk(); err != nil || got != "vda" {
		t.Fatalf("BootDisk = %q, %v; want vda", got, err)
	}
}

// setVar makes the fake node's /var a mount of devno, with /sys/dev/block/<devno> pointing at sysPath (none
// when "").
func setVar(t *testing.T, f *fakeNode, devno, fstype, sysPath string) {
	t.Helper()
	if sysPath != "" {
		if err := os.Symlink(sysPath, filepath.Join(f.root, "/sys/dev/block", devno)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.root, "/proc/self/mountinfo"),
		[]byte("25 1 0:23 / / ro,relatime - overlay overlay ro\n26 25 "+devno+" / /var rw,relatime - "+fstype+" x rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReconcileWholeDiskState: a state filesystem that fills a whole disk (vdb) protects that disk by name, and
// the next empty disk becomes the brick disk.
func TestReconcileWholeDiskState(t *testing.T) {
	f, h := newFakeNode(t, map[string][]byte{"vdb": nil, "vdc": make([]byte, headSize)})
	f.labels[filepath.Join(f.root, "/dev/vdb")] = StateLabel
	if err := os.MkdirAll(filepath.Join(f.root, "/sys/devices/pci0000:00/virtio3/block/vdb"), 0o755); err != nil {
		t.Fatal(err)
	}
	setVar(t, f, "254:16", "ext4", "../../devices/pci0000:00/virtio3/block/vdb")
	if got, err := h.BootDisk(); err != nil || got != "vdb" {
		t.Fatalf("BootDisk = %q, %v; want vdb", got, err)
	}
	d, err := h.Reconcile(context.Background())
	if err != nil || d.Disk == nil || d.Disk.Name != "vdc" || !d.Format {
		t.Fatalf("%+v %v: want vdc formatted", d, err)
	}
	if len(f.formatted) != 1 || f.formatted[0] != filepath.Join(f.root, "/dev/vdc") || d.Skipped["vdb"] != "boot disk" {
		t.Errorf("formatted %v, vdb skipped for %q", f.formatted, d.Skipped["vdb"])
	}
}

// TestReconcileVarInRAM: a node whose /var is in RAM (the initramfs's marker) formats and mounts nothing, not
// even a disk labelled kiln-bricks by an earlier boot, and says why.
func TestReconcileVarInRAM(t *testing.T) {
	f, h := newFakeNode(t, map[string][]byte{"vdb": nil, "vdc": make([]byte, headSize)})
	f.labels[filepath.Join(f.root, "/dev/vdb")] = Label
	setVar(t, f, "0:30", "tmpfs", "")
	marker := filepath.Join(f.root, statefs.Marker)
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, []byte("no empty local disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := h.Reconcile(context.Background())
	if err != nil || d.Disk != nil || len(f.formatted) != 0 || len(f.mounted) != 0 {
		t.Fatalf("%+v %v formatted %v mounted %v: want nothing touched", d, err, f.formatted, f.mounted)
	}
	if want := "no brick: /var is in RAM (no empty local disk)"; !strings.Contains(d.Reason, want) {
		t.Errorf("reason %q, want it to contain %q", d.Reason, want)
	}
	// Without the marker a /var on tmpfs is no disk to protect by name: hands off too.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if got, err := h.BootDisk(); err != nil || got != "" {
		t.Errorf("BootDisk with /var on tmpfs = %q, %v; want \"\", nil", got, err)
	}
	if d, err := h.Reconcile(context.Background()); err != nil || d.Disk != nil || len(f.formatted) != 0 {
		t.Errorf("no marker, /var on tmpfs: %+v %v formatted %v: want nothing touched", d, err, f.formatted)
	}
}

func TestZeroHead(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		content []byte
		want    bool
	}{
		"zeros":        {make([]byte, headSize+10), true},
		"short zeros":  {make([]byte, 100), true},
		"byte at 1MiB": {append(make([]byte, headSize), 1), true}, // beyond the head: not looked at
		"byte at 0":    {append([]byte{1}, make([]byte, 10)...), false},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, c.content, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := zeroHead(p); err != nil || got != c.want {
			t.Errorf("%s: %v %v, want %v", name, got, err, c.want)
		}
	}
}
