package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/firstboot/brickdisk"
	"github.com/kiln-project/kiln/firstboot/config"
)

// Options is one run of the installer.
type Options struct {
	// Medium is the directory the installation medium is mounted on.
	Medium string
	// MediumDisk is the kernel name of the disk holding the medium (sr0, sdb): never a target.
	MediumDisk string
	// Root prefixes /sys and /dev ("" on a machine).
	Root string
	// Say prints one line on the console.
	Say func(format string, args ...any)
	Log *slog.Logger
}

// Result is what Run did.
type Result struct {
	Decision Decision
	// Config names the source of the cluster config carried over ("" when none was found).
	Config string
}

// ErrRefused is returned (wrapped, with the reason) when no disk may be written.
var ErrRefused = errors.New("install refused")

// Run installs the medium's image: it reads the manifest and the cluster config, chooses the disk, and
// writes the image and the config onto it. A refusal touches no disk.
func Run(ctx context.Context, o Options) (Result, error) {
	var res Result
	m, err := readManifest(filepath.Join(o.Medium, ManifestPath))
	if err != nil {
		return res, err
	}
	o.Say("kiln install: this medium installs the node image %q (%d MiB) onto this machine's disk", m.Name, m.Size>>20)

	cfgName, cfgData, want, err := loadConfig(ctx, o)
	if err != nil {
		return res, err
	}
	res.Config = cfgName
	if cfgName == "" {
		o.Say("kiln install: no cluster config (fw_cfg opt/kiln/config, %s on the medium): the node will look for one when it boots", ConfigPath)
	} else {
		o.Say("kiln install: cluster config from %s; install section: disk %q, wipe %v", cfgName, want.Disk, want.Wipe)
	}

	host := brickdisk.Real(o.Log)
	host.Root = o.Root
	scanned, err := host.Scan(ctx)
	if err != nil {
		return res, err
	}
	disks := make([]Disk, len(scanned))
	for i, k := range scanned {
		disks[i] = Disk{Disk: k}
		if k.Name != o.MediumDisk && k.Size >= m.Size {
			disks[i].HoldsImage = holdsImage(filepath.Join(o.Root, "/dev", k.Name), m)
		}
	}
	if want.Disk != "" {
		// A /dev/disk/by-id/… link names the same disk across reboots and controllers: resolve it.
		if p, err := filepath.EvalSymlinks(filepath.Join(o.Root, want.Disk)); err == nil && strings.HasPrefix(want.Disk, "/dev/") {
			want.Disk = "/dev/" + filepath.Base(p)
		}
	}
	d := Choose(disks, want, o.MediumDisk, m.Size)
	res.Decision = d
	for name, why := range d.Skipped {
		o.Log.Info("not an install target", "dev", name, "why", why)
	}
	switch d.Action {
	case Refuse:
		return res, fmt.Errorf("%w: %s. No disk was written", ErrRefused, d.Reason)
	case Boot:
		o.Say("kiln install: %s: nothing to write, booting it", d.Reason)
		return res, nil
	}
	dev := filepath.Join(o.Root, "/dev", d.Target.Name)
	o.Say("kiln install: writing the image onto %s (%d MiB): %s", dev, d.Target.Size>>20, d.Reason)
	if err := writeImage(ctx, dev, o.Medium, m, d.Target.Size, o.Say); err != nil {
		return res, fmt.Errorf("install onto %s: %w", dev, err)
	}
	if cfgData != nil {
		if err := writeESPConfig(dev, cfgData); err != nil {
			return res, fmt.Errorf("install onto %s: cluster config: %w", dev, err)
		}
		o.Say("kiln install: cluster config (from %s) written to the ESP of %s as %s", cfgName, dev, config.ESPFile)
	}
	return res, nil
}

func readManifest(path string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("install: manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("install: manifest %s: %w", path, err)
	}
	if m.Size <= 0 || len(m.Extents) == 0 {
		return m, fmt.Errorf("install: manifest %s describes no image", path)
	}
	return m, nil
}

// loadConfig finds the cluster config the installed node is to have: the machine's own (fw_cfg) first, then
// the medium's. A config that exists but is invalid stops the install: the node would not form with it.
func loadConfig(ctx context.Context, o Options) (name string, data []byte, want Want, err error) {
	sources := []config.Source{
		config.File{SourceName: "fw_cfg", Path: filepath.Join(o.Root, config.FwCfgPath)},
		config.File{SourceName: "medium", Path: filepath.Join(o.Medium, ConfigPath)},
	}
	for _, s := range sources {
		b, err := s.Load(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, want, fmt.Errorf("install: config from %s: %w", s.Name(), err)
		}
		if _, err := config.Parse(b); err != nil {
			return "", nil, want, fmt.Errorf("install: config from %s is invalid, so nothing is installed: %w", s.Name(), err)
		}
		in, err := config.ParseInstall(b)
		if err != nil {
			return "", nil, want, fmt.Errorf("install: config from %s: %w", s.Name(), err)
		}
		return s.Name(), b, Want{Disk: in.Disk, Wipe: in.Wipe}, nil
	}
	return "", nil, want, nil
}

// holdsImage reports whether dev's bytes match every identity range of m.
func holdsImage(dev string, m Manifest) bool {
	if len(m.Identity) == 0 {
		return false
	}
	f, err := os.Open(dev)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, r := range m.Identity {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, r.Offset, r.Length)); err != nil {
			return false
		}
		if hex.EncodeToString(h.Sum(nil)) != r.SHA256 {
			return false
		}
	}
	return true
}

// chunk is the write size: large enough for a disk's full speed, small enough to report progress.
const chunk = 4 << 20

// writeImage writes the image onto dev: its extents from the medium's files, zeros in between (a wiped disk
// must not keep old bytes where the image has none: an old filesystem signature inside the ESP or between
// partitions would confuse every later probe), then zeros over the disk's last MiB (an old backup GPT). It
// hashes every byte it writes and compares with the manifest: a medium read wrongly leaves no disk that looks
// bootable (the first MiB is zeroed again).
func writeImage(ctx context.Context, dev, medium string, m Manifest, diskSize int64, say func(string, ...any)) (err error) {
	// O_EXCL on a block device: the open fails while anything has it mounted.
	out, err := os.OpenFile(dev, os.O_WRONLY|unix.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	h := sha256.New()
	zeros := make([]byte, chunk)
	buf := make([]byte, chunk)
	var pos int64
	next := int64(10)
	report := func() {
		for pct := pos * 100 / m.Size; pct >= next && next <= 100; next += 10 {
			say("kiln install: %d%% written", next)
		}
	}
	writeZeros := func(to int64) error {
		for pos < to {
			n := min(int64(chunk), to-pos)
			if _, err := out.WriteAt(zeros[:n], pos); err != nil {
				return err
			}
			h.Write(zeros[:n])
			pos += n
			report()
		}
		return nil
	}
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, e := range m.Extents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Offset < pos || e.Offset+e.Length > m.Size {
			return fmt.Errorf("manifest: extent at %d overlaps or leaves the image", e.Offset)
		}
		if err := writeZeros(e.Offset); err != nil {
			return err
		}
		src := files[e.File]
		if src == nil {
			if src, err = os.Open(filepath.Join(medium, e.File)); err != nil {
				return err
			}
			files[e.File] = src
		}
		for done := int64(0); done < e.Length; {
			n := min(int64(chunk), e.Length-done)
			if _, err := src.ReadAt(buf[:n], e.FileOffset+done); err != nil {
				return fmt.Errorf("read %s: %w", e.File, err)
			}
			if _, err := out.WriteAt(buf[:n], pos); err != nil {
				return err
			}
			h.Write(buf[:n])
			pos += n
			done += n
			report()
		}
	}
	if err := writeZeros(m.Size); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
		_, _ = out.WriteAt(zeros[:1<<20], 0)
		_ = out.Sync()
		return fmt.Errorf("the written image's sha256 is %s, the medium's manifest says %s: the medium is damaged; the disk's first MiB is zeroed again", got, m.SHA256)
	}
	if tail := diskSize - (1 << 20); tail >= m.Size {
		if _, err := out.WriteAt(zeros[:1<<20], tail); err != nil {
			return err
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	// The kernel re-reads the new partition table, so the installed disk's partitions appear at once.
	_ = unix.IoctlSetInt(int(out.Fd()), unix.BLKRRPART, 0)
	say("kiln install: image written and verified (sha256 %s…)", m.SHA256[:16])
	return nil
}

// writeESPConfig writes the cluster config onto the installed disk's ESP (partition 1) as kiln/cluster.yaml,
// the source a flashed disk's node reads (config.ESP).
func writeESPConfig(dev string, data []byte) error {
	d, err := diskfs.Open(dev, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return err
	}
	fsys, err := d.GetFilesystem(1)
	if err != nil {
		d.Close()
		return fmt.Errorf("ESP: %w", err)
	}
	w, err := fsys.OpenFile("/"+config.ESPFile, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		d.Close()
		return err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		w.Close()
		d.Close()
		return err
	}
	if err := w.Close(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
