// Package rootfs is the packages stage: it installs the spec's Debian packages into a root tree with
// mmdebstrap, with kiln's initramfs boot script in place before the kernel, so the initrd is generated once.
package rootfs

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/debindex"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/internal/yamlstrict"
)

// Output names in the stage directory, read by later stages.
const (
	TreeDir     = "tree"
	PackagesTSV = "packages.tsv"
	Kernel      = "vmlinuz"
	Initrd      = "initrd.img"
)

// DefaultMirror is used when the spec names neither a mirror nor a snapshot.
const DefaultMirror = "http://deb.debian.org/debian"

// bootPackages are what kiln's boot path needs whatever the spec lists: the kernel and initramfs-tools with
// busybox (the boot script's toolbox), sfdisk and mkfs.ext4 (the state partition), systemd-boot (the ESP's
// loader is taken from the tree), zstd (initrd compression), systemd-resolved (DNS for the DHCP leases of
// overlays/base's systemd-networkd: networkd alone writes no resolv.conf).
var bootPackages = []string{
	"busybox", "e2fsprogs", "fdisk", "initramfs-tools", "kmod", "linux-image-amd64",
	"systemd-boot-efi", "systemd-resolved", "systemd-sysv", "udev", "zstd",
}

//go:embed initramfs
var initramfsFiles embed.FS

// essentialScript runs once the essential packages are installed, before the others: it diverts
// update-initramfs to a no-op, so that neither the kernel's postinst nor the update-initramfs triggers of
// busybox, udev, firmware… build an initrd (each build takes minutes with MODULES=most).
const essentialScript = `set -eu
root="$1"
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
ln -s /bin/true "$root/usr/sbin/update-initramfs"
`

// customizeScript runs in the finished tree (mmdebstrap's customize hook: "$1" is the tree). It builds the
// initrd once, with every package, hook and firmware in place, then removes everything that would give
// every node flashed from one image the same identity, and anything that only records when or where the
// build ran.
const customizeScript = `set -eu
root="$1"
rm "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
for kernel in $(ls "$root/usr/lib/modules"); do
	chroot "$root" update-initramfs -c -k "$kernel"
done
# Identity: generated per node at boot (machine-id by the initramfs, SSH host keys by kiln-ssh-keygen).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/etc/ssh/ssh_host_"*
rm -f "$root/var/lib/systemd/random-seed" "$root/var/lib/systemd/credential.secret"
rm -f "$root/var/lib/glusterd/glusterd.info" "$root/etc/docker/key.json"
rm -f "$root/etc/hostname"
# No password for anyone: root logs in with SSH keys only.
sed -i -E 's/^root:[^:]*:/root:*:/' "$root/etc/shadow"
# Build-time records that differ between two builds of the same packages.
rm -rf "$root/var/log/apt" "$root/var/cache/apt/"*.bin "$root/var/cache/ldconfig/aux-cache"
rm -f "$root/var/log/dpkg.log" "$root/var/log/alternatives.log" "$root/var/log/bootstrap.log"
rm -f "$root/var/lib/dpkg/"*-old "$root/var/cache/debconf/"*-old
`

// Stage installs packages into a tree.
type Stage struct {
	spec *spec.Spec
}

// New returns the packages stage for s.
func New(s *spec.Spec) builder.Stage { return &Stage{spec: s} }

// Name implements builder.Stage.
func (*Stage) Name() string { return "packages" }

// Inputs implements builder.Stage: the package set, where it comes from, and kiln's files that go in the tree.
func (st *Stage) Inputs(context.Context) (map[string]string, error) {
	files, err := hashFS(initramfsFiles)
	if err != nil {
		return nil, fmt.Errorf("packages: hash initramfs files: %w", err)
	}
	d := st.spec.Distribution
	in := map[string]string{
		"suite":        d.Suite,
		"architecture": d.Architecture,
		"sources":      strings.Join(st.sources(), "\n"),
		"packages":     strings.Join(st.packages(), " "),
		"initramfs":    files,
		"hooks":        sha256Hex([]byte(essentialScript + customizeScript)),
	}
	if len(st.spec.Exclude) > 0 {
		// Only when set: a spec without excludes keeps the key (and the cache entry) it had before the field.
		in["exclude"] = strings.Join(st.spec.Exclude, "\n")
	}
	return in, nil
}

// packages is the sorted, de-duplicated install set: the spec's packages and firmware plus bootPackages.
func (st *Stage) packages() []string {
	all := slices.Concat(bootPackages, st.spec.Packages, st.spec.Firmware)
	slices.Sort(all)
	return slices.Compact(all)
}

// hasKernel reports whether pkgs install a kernel.
func hasKernel(pkgs []string) bool {
	return slices.ContainsFunc(pkgs, func(p string) bool { return strings.HasPrefix(p, "linux-image-") })
}

// sources are the apt source lines: the suite, plus its security and updates suites (a node image should carry
// the fixes published since the point release), from a snapshot when the spec pins one.
func (st *Stage) sources() []string {
	d := st.spec.Distribution
	comps := d.Components
	if len(comps) == 0 {
		comps = spec.DefaultComponents
	}
	c := strings.Join(comps, " ")
	main, security := st.mirror()
	lines := []string{fmt.Sprintf("deb %s %s %s", main, d.Suite, c)}
	if d.Suite != "sid" && d.Suite != "unstable" {
		lines = append(lines,
			fmt.Sprintf("deb %s %s-updates %s", main, d.Suite, c),
			fmt.Sprintf("deb %s %s-security %s", security, d.Suite, c))
	}
	return lines
}

// mirror returns the archive URLs of the suite and of its security suite: the spec's snapshot, else its
// mirror, else DefaultMirror.
func (st *Stage) mirror() (main, security string) {
	d := st.spec.Distribution
	main, security = d.Mirror, strings.TrimSuffix(d.Mirror, "/")+"-security"
	if main == "" {
		main, security = DefaultMirror, DefaultMirror+"-security"
	}
	if d.Snapshot != "" {
		main = "http://snapshot.debian.org/archive/debian/" + d.Snapshot
		security = "http://snapshot.debian.org/archive/debian-security/" + d.Snapshot
	}
	return main, security
}

// indexTimeout bounds the package index check: the Release file and, on the first build of a suite, its
// Packages indexes (12 MB for bookworm's main).
const indexTimeout = 2 * time.Minute

// checkNames looks up every package the spec names in the mirror's index before mmdebstrap runs, and
// reports all unknown ones at once, each at its place in the spec with the nearest known name. An index
// that cannot be had (a mirror without Packages.gz, no network) is logged and left to mmdebstrap.
func (st *Stage) checkNames(ctx context.Context, env *builder.Env, dir string) error {
	d := st.spec.Distribution
	comps := d.Components
	if len(comps) == 0 {
		comps = spec.DefaultComponents
	}
	main, _ := st.mirror()
	indexDir := filepath.Join(os.TempDir(), "kiln-debindex")
	if root, ok := cache.RootOf(dir); ok {
		indexDir = filepath.Join(root, "debindex")
	}
	ctx, cancel := context.WithTimeout(ctx, indexTimeout)
	defer cancel()
	idx, err := debindex.Load(ctx, http.DefaultClient, debindex.Source{Mirror: main, Suite: d.Suite, Components: comps,
		Architecture: d.Architecture}, indexDir)
	if err != nil {
		env.Log.Warn("no package index: unknown packages will only show in mmdebstrap's error", "err", err)
		return nil
	}
	var errs []error
	var known []string
	for _, field := range []struct {
		path  string
		names []string
	}{{"packages", st.spec.Packages}, {"firmware", st.spec.Firmware}} {
		for i, name := range field.names {
			if idx.Has(name) {
				continue
			}
			if known == nil {
				known = idx.Names()
			}
			msg := fmt.Sprintf("%q: no such package in %s %s (%s, %s)", name, d.Suite, strings.Join(comps, ", "), d.Architecture, main)
			if s := yamlstrict.Suggest(name, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			errs = append(errs, st.spec.ErrorAt(fmt.Sprintf("%s[%d]", field.path, i), "%s", msg))
		}
	}
	for _, name := range bootPackages {
		if !idx.Has(name) {
			errs = append(errs, fmt.Errorf("%s: kiln's boot package %q is not in %s %s", st.spec.File, name, d.Suite, strings.Join(comps, ", ")))
		}
	}
	return errors.Join(errs...)
}

// Run implements builder.Stage.
func (st *Stage) Run(ctx context.Context, env *builder.Env, dir string) error {
	env.Progress(0, "package index")
	if err := st.checkNames(ctx, env, dir); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("packages: mmdebstrap --mode=root needs root (run kiln build as root)")
	}
	work := filepath.Join(dir, ".work")
	defer os.RemoveAll(work)
	initramfsDir := filepath.Join(work, "initramfs-tools")
	if err := writeFS(initramfsFiles, "initramfs", initramfsDir); err != nil {
		return fmt.Errorf("packages: stage initramfs files: %w", err)
	}
	customize, essential := filepath.Join(work, "customize.sh"), filepath.Join(work, "essential.sh")
	for path, script := range map[string]string{customize: customizeScript, essential: essentialScript} {
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	tree := filepath.Join(dir, TreeDir)
	if !hasKernel(st.packages()) {
		return errors.New("packages: no linux-image-* package to boot")
	}
	args := []string{
		// --verbose: apt's own lines (the counts it announces, each download, unpack and configure) are
		// what the progress bar follows (installProgress).
		"--mode=root", "--variant=apt", "--format=directory", "--verbose",
		"--architectures=" + st.spec.Distribution.Architecture,
		"--include=" + strings.Join(st.packages(), ","),
		`--aptopt=APT::Install-Recommends "false"`,
		`--aptopt=Acquire::Retries "3"`,
		// Before any package is unpacked, so every initrd ever built in the tree has kiln's script.
		// None of these paths is a conffile of initramfs-tools, so dpkg leaves them alone.
		fmt.Sprintf(`--setup-hook=mkdir -p "$1/etc/initramfs-tools" && cp -a %q/. "$1/etc/initramfs-tools/"`, initramfsDir),
		fmt.Sprintf(`--essential-hook=sh %q "$1"`, essential),
		fmt.Sprintf(`--customize-hook=sh %q "$1"`, customize),
		"--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata",
	}
	for _, x := range st.spec.Exclude {
		args = append(args, "--dpkgopt=path-exclude="+x)
	}
	if st.spec.Distribution.Snapshot != "" {
		// Snapshots' Release files are past their Valid-Until date by design.
		args = append(args, `--aptopt=Acquire::Check-Valid-Until "false"`)
	}
	args = append(args, st.spec.Distribution.Suite, tree)
	args = append(args, st.sources()...)

	env.Progress(0.05, "mmdebstrap")
	env.Log.Info("installing packages", "suite", st.spec.Distribution.Suite, "count", len(st.packages()))
	// mmdebstrap clamps timestamps it writes (apt, dpkg, logs) to SOURCE_DATE_EPOCH.
	argv := append([]string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(env.SourceDateEpoch, 10), "mmdebstrap"}, args...)
	var prog installProgress
	onLine := func(l string) {
		if prog.line(l) {
			env.Progress(prog.frac, prog.msg)
		}
	}
	if err := run.Lines(ctx, onLine, "env", argv...); err != nil {
		return fmt.Errorf("packages: mmdebstrap: %w", err)
	}
	env.Progress(0.9, "package list, kernel")
	if err := writePackageList(ctx, tree, filepath.Join(dir, PackagesTSV)); err != nil {
		return err
	}
	if err := copyBootFiles(tree, dir); err != nil {
		return err
	}
	env.Progress(1, "done")
	return nil
}

// writePackageList writes "name\tversion" for every installed package, sorted, read from the tree's dpkg database.
func writePackageList(ctx context.Context, tree, path string) error {
	out, err := run.Cmd(ctx, "dpkg-query", "--admindir="+filepath.Join(tree, "var/lib/dpkg"),
		"--show", "--showformat=${binary:Package}\t${Version}\n")
	if err != nil {
		return fmt.Errorf("packages: list installed packages: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	slices.Sort(lines)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("packages: %w", err)
	}
	return nil
}

// copyBootFiles copies the tree's one kernel and its initrd next to the tree, for the disk stage (and PXE).
func copyBootFiles(tree, dir string) error {
	kernels, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("packages: want exactly one kernel in /boot, found %d: %v", len(kernels), kernels)
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	initrd := filepath.Join(tree, "boot", "initrd.img-"+version)
	for src, dst := range map[string]string{kernels[0]: Kernel, initrd: Initrd} {
		if err := files.Copy(context.Background(), filepath.Join(dir, dst), src, 0o644); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	return nil
}

// writeFS copies the embedded tree under root to dir; files under hooks/ are executable (initramfs-tools runs them).
func writeFS(fsys fs.FS, root, dir string) error {
	return fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(rel, "hooks/") {
			mode = 0o755
		}
		return os.WriteFile(dst, data, mode)
	})
}

// hashFS hashes every file's path and content, in walk (lexical) order.
func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(data))
		h.Write(data)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
