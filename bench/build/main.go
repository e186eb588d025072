// Command build benchmarks `kiln build` against mkosi 14 (Debian's package) building the same package set into a
// bootable image on the same machine, in one run, and prints one table: cold build (empty cache), warm rebuild
// (nothing changed), rebuild after one overlay file changed, and the image's apparent, allocated and
// zstd-compressed sizes, with the ratio kiln/mkosi and the targets beside the figures.
//
//	go run ./bench/build [-kiln bin/kiln] [-spec images/node.yaml]              # the full run, ~30+ min
//	go run ./bench/build -skip-mkosi -seed-cache ~/.cache/kiln -drop-caches=false  # quick check of the table
//
// A second table gives each artifact format's cost on top of the raw image alone: the formats stage's extra
// seconds and the artifact's size against the raw image's allocated size (the ISO's target: ≤ 1.05×).
//
// Nothing in the checkout is modified: the spec, its Butane file and its overlays are copied to a temporary
// directory, and the one-file change is made in the copy. mkosi runs with the PATH shims in bench/build/mkosi/shims
// (this machine's kernel has no vfat, GPT parser or device-mapper; see docs/measurements.md).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kiln-project/kiln/internal/run"
)

// Targets from the builder's brief.
const (
	coldRatioTarget      = 0.5              // kiln cold ≤ 0.5× mkosi cold
	rebuildTarget        = 10 * time.Second // warm and one-overlay rebuilds
	allocatedRatioTarget = 0.5              // kiln's allocated image ≤ 0.5× mkosi's
)

type options struct {
	kiln       string // kiln binary (kiln-firstboot next to it is baked in)
	spec       string
	shims      string // bench/build/mkosi: mkosi.default.in and bin/
	skipMkosi  bool
	seedCache  string // quick mode: hard-link this kiln cache into the temp cache, so "cold" is not cold
	dropCaches bool
	keep       bool
}

func main() {
	var o options
	flag.StringVar(&o.kiln, "kiln", "bin/kiln", "kiln binary (built by make build; bin/kiln-firstboot beside it is baked in)")
	flag.StringVar(&o.spec, "spec", "images/node.yaml", "image spec to build")
	flag.StringVar(&o.shims, "mkosi-dir", "bench/build/mkosi", "mkosi config template and PATH shims")
	flag.BoolVar(&o.skipMkosi, "skip-mkosi", false, "quick check: kiln only, no mkosi columns")
	flag.StringVar(&o.seedCache, "seed-cache", "", "quick check: hard-link this existing kiln cache into the temporary one (the cold row is then not cold)")
	flag.BoolVar(&o.dropCaches, "drop-caches", true, "drop the page cache before each cold build, as the peer measurements did")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary work directory (logs, images) instead of removing it")
	timeout := flag.Duration("timeout", 3*time.Hour, "bound on the whole benchmark")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// Large: a kiln cache plus mkosi's workspace and images. /var/tmp, not /tmp, which may be a small tmpfs.
	root, err := os.MkdirTemp("/var/tmp", "kiln-bench-build-")
	if err != nil {
		fail(err)
	}
	fmt.Fprintln(os.Stderr, "bench-build: work dir (logs):", root)
	err = bench(ctx, o, root)
	if o.keep || err != nil {
		fmt.Fprintln(os.Stderr, "bench-build: kept", root)
	} else {
		os.RemoveAll(root)
	}
	if err != nil {
		fail(err)
	}
}

// result is one builder's figures; a zero duration means "not measured".
type result struct {
	cold, warm, overlay            time.Duration
	coldRan, warmRan, overlayRan   string // kiln: the stages that ran (not cache hits)
	apparent, allocated, zstdBytes int64
}

func bench(ctx context.Context, o options, root string) error {
	var err error
	if o.kiln, err = filepath.Abs(o.kiln); err != nil {
		return err
	}
	if o.shims, err = filepath.Abs(o.shims); err != nil {
		return err
	}
	sp, err := readSpec(o.spec)
	if err != nil {
		return err
	}
	if len(sp.Overlays) == 0 {
		return fmt.Errorf("spec %s: no overlays, nothing to change for the overlay rebuild", o.spec)
	}
	// The copied spec and its overlays: the one-file change happens here, never in the checkout.
	specCopy, overlays, err := copySpec(ctx, o.spec, sp, filepath.Join(root, "src"))
	if err != nil {
		return err
	}
	changed, err := pickFile(overlays[0])
	if err != nil {
		return err
	}

	// Run copies of the binaries: bin/ is shared, and a `make build` elsewhere mid-run would change the baked-in
	// agent and turn the warm rebuild into a miss. kiln bakes in the kiln-firstboot that sits next to it.
	kilnBin := filepath.Join(root, "bin", "kiln")
	for _, b := range []string{"kiln", "kiln-firstboot", "kiln-install"} {
		if err := os.MkdirAll(filepath.Dir(kilnBin), 0o755); err != nil {
			return err
		}
		if _, err := run.Cmd(ctx, "cp", "-p", filepath.Join(filepath.Dir(o.kiln), b), filepath.Dir(kilnBin)); err != nil {
			return fmt.Errorf("snapshot binaries: %w", err)
		}
	}
	k := kilnRunner{bin: kilnBin, spec: specCopy, cache: filepath.Join(root, "kiln-cache"), out: filepath.Join(root, "kiln-out"), logs: root}
	if o.seedCache != "" {
		if err := seed(ctx, o.seedCache, k.cache); err != nil {
			return err
		}
	}
	var m *mkosiRunner
	if !o.skipMkosi {
		if m, err = newMkosiRunner(ctx, o, sp, overlays[0], filepath.Join(root, "mkosi")); err != nil {
			return err
		}
	}

	var kr, mr result
	// Each scenario runs kiln then mkosi back to back, so load drift on this shared machine hits both alike.
	if o.dropCaches {
		dropCaches()
	}
	if kr.cold, kr.coldRan, err = k.build(ctx, "cold"); err != nil {
		return err
	}
	if m != nil {
		if o.dropCaches {
			dropCaches()
		}
		if mr.cold, err = m.build(ctx, "cold", "-ff"); err != nil {
			return err
		}
	}
	if kr.warm, kr.warmRan, err = k.build(ctx, "warm"); err != nil {
		return err
	}
	if m != nil {
		if mr.warm, err = m.build(ctx, "warm", "-f"); err != nil {
			return err
		}
	}
	if err := touch(changed); err != nil {
		return err
	}
	if kr.overlay, kr.overlayRan, err = k.build(ctx, "overlay"); err != nil {
		return err
	}
	if m != nil {
		if err := touch(m.changed); err != nil {
			return err
		}
		if mr.overlay, err = m.build(ctx, "overlay", "-f"); err != nil {
			return err
		}
	}

	if err := measureImage(ctx, filepath.Join(k.out, sp.Name+".raw"), &kr); err != nil {
		return err
	}
	if m != nil {
		img, err := m.image()
		if err != nil {
			return err
		}
		if err := measureImage(ctx, img, &mr); err != nil {
			return err
		}
	}
	rows, rawAllocated, err := k.formatCosts(ctx, sp.Name)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(filepath.Join(root, "src"), changed)
	printTable(os.Stdout, o, sp.Name, kr, mr, rel)
	fmt.Fprintln(os.Stdout)
	printFormats(os.Stdout, rows, rawAllocated)
	return nil
}

// benchFormats are the formats measured against the raw image alone.
var benchFormats = []string{"qcow2", "vmdk", "vhd", "iso", "pxe"}

// isoRatioTarget: the installer ISO may be at most this much bigger than the raw image's allocated size.
const isoRatioTarget = 1.05

// formatRow is one format's cost on top of the raw image: the formats stage's extra wall time (the whole
// build with --rebuild formats, raw and the format, minus the same with raw alone) and the artifact's size.
type formatRow struct {
	name                string
	extra               time.Duration
	apparent, allocated int64
}

// formatCosts rebuilds the formats stage with raw alone, then with raw and each format, from the warm cache.
func (k kilnRunner) formatCosts(ctx context.Context, name string) ([]formatRow, int64, error) {
	base, err := k.timedFormats(ctx, "raw")
	if err != nil {
		return nil, 0, err
	}
	var raw syscall.Stat_t
	if err := syscall.Stat(filepath.Join(k.out, name+".raw"), &raw); err != nil {
		return nil, 0, err
	}
	var rows []formatRow
	for _, f := range benchFormats {
		d, err := k.timedFormats(ctx, "raw,"+f)
		if err != nil {
			return nil, 0, err
		}
		r := formatRow{name: f, extra: d - base}
		p := filepath.Join(k.out, name+"."+f)
		if f == "pxe" {
			p = filepath.Join(k.out, "pxe")
		}
		if err := filepath.WalkDir(p, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				return err
			}
			r.apparent += st.Size
			r.allocated += st.Blocks * 512
			return nil
		}); err != nil {
			return nil, 0, fmt.Errorf("format %s: %w", f, err)
		}
		rows = append(rows, r)
	}
	return rows, raw.Blocks * 512, nil
}

func (k kilnRunner) timedFormats(ctx context.Context, formats string) (time.Duration, error) {
	tag := "formats-" + strings.ReplaceAll(formats, ",", "-")
	log := filepath.Join(k.logs, "kiln-"+tag+".log")
	fmt.Fprintf(os.Stderr, "bench-build: kiln build --format %s --rebuild formats (log %s)\n", formats, log)
	d, err := timed(ctx, log, nil, "", k.bin, "build", k.spec, "--cache", k.cache, "--out", k.out, "--format", formats, "--rebuild", "formats")
	if err != nil {
		return 0, fmt.Errorf("kiln build --format %s: %w", formats, err)
	}
	return d, nil
}

func printFormats(out io.Writer, rows []formatRow, rawAllocated int64) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FORMAT	EXTRA TIME (vs raw alone)	APPARENT	ALLOCATED	ALLOCATED/RAW ALLOCATED	TARGET	MET")
	for _, r := range rows {
		ratio := float64(r.allocated) / float64(rawAllocated)
		target, met := "-", ""
		if r.name == "iso" {
			target = fmt.Sprintf("≤ %.2f×", isoRatioTarget)
			met = "yes"
			if ratio > isoRatioTarget {
				met = "NO"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.3f×\t%s\t%s\n", r.name, r.extra.Round(100*time.Millisecond), size(r.apparent), size(r.allocated), ratio, target, met)
	}
	w.Flush()
	fmt.Fprintf(out, "raw image allocated: %s; each row: kiln build --format raw,FORMAT --rebuild formats minus --format raw --rebuild formats\n", size(rawAllocated))
}

// seed hard-links the finished entries of an existing kiln cache into dst (quick mode). Entries are never
// modified in place (docs/builder.md), so hard links cannot corrupt the seed; .tmp-* entries are skipped: they
// belong to a build running now (and may hold its mounts).
func seed(ctx context.Context, from, dst string) error {
	entries, err := filepath.Glob(filepath.Join(from, "stages", "*", "*"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(filepath.Base(e), ".") {
			continue
		}
		to := filepath.Join(dst, "stages", filepath.Base(filepath.Dir(e)))
		if err := os.MkdirAll(to, 0o755); err != nil {
			return err
		}
		if _, err := run.Cmd(ctx, "cp", "-al", e, to); err != nil {
			return fmt.Errorf("seed cache from %s: %w", e, err)
		}
	}
	return nil
}

// spec holds the fields of a kiln spec this benchmark needs; the full schema lives in builder/spec.
type spec struct {
	Name     string   `yaml:"name"`
	Packages []string `yaml:"packages"`
	Firmware []string `yaml:"firmware"`
	Overlays []string `yaml:"overlays"`
	Butane   string   `yaml:"butane"`
}

func readSpec(path string) (spec, error) {
	var s spec
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := yaml.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("spec %s: %w", path, err)
	}
	if s.Name == "" {
		return s, fmt.Errorf("spec %s: no name", path)
	}
	return s, nil
}

// copySpec copies the spec, its Butane file and its overlays under dst, keeping their relative layout (overlays
// are relative to the spec), and returns the copied spec's path and the copied overlays' directories.
func copySpec(ctx context.Context, specPath string, s spec, dst string) (string, []string, error) {
	specDir := filepath.Dir(specPath)
	dstSpecDir := filepath.Join(dst, filepath.Base(specDir))
	copyRel := func(rel string) (string, error) {
		to := filepath.Join(dstSpecDir, rel)
		if !strings.HasPrefix(to, dst+string(filepath.Separator)) {
			return "", fmt.Errorf("spec %s: %s leaves the spec's parent directory", specPath, rel)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return "", err
		}
		// cp -a keeps symlinks, modes and owners: the node layer hashes them.
		if _, err := run.Cmd(ctx, "cp", "-a", filepath.Join(specDir, rel), to); err != nil {
			return "", fmt.Errorf("copy %s: %w", rel, err)
		}
		return to, nil
	}
	specCopy, err := copyRel(filepath.Base(specPath))
	if err != nil {
		return "", nil, err
	}
	if s.Butane != "" {
		if _, err := copyRel(s.Butane); err != nil {
			return "", nil, err
		}
	}
	var overlays []string
	for _, ov := range s.Overlays {
		to, err := copyRel(ov)
		if err != nil {
			return "", nil, err
		}
		overlays = append(overlays, to)
	}
	return specCopy, overlays, nil
}

// pickFile chooses the overlay file to change: the first *.conf file (a format where an appended comment line is
// harmless, unlike JSON), in lexical order so every run changes the same one.
func pickFile(overlay string) (string, error) {
	var found string
	err := filepath.WalkDir(overlay, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".conf") {
			found = p
		}
		return nil
	})
	if err == nil && found == "" {
		err = fmt.Errorf("overlay %s: no *.conf file to change", overlay)
	}
	return found, err
}

// touch appends a comment with the current time: a real content change, different on every run.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "# bench-build %d\n", time.Now().UnixNano())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// dropCaches empties the page cache so a cold build reads its inputs from disk, as the peer measurements did.
func dropCaches() {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		fmt.Fprintln(os.Stderr, "bench-build: drop caches:", err)
	}
}

type kilnRunner struct {
	bin, spec, cache, out, logs string
}

// build runs `kiln build` and returns its wall time and the stages that were not cache hits (from the manifest).
func (k kilnRunner) build(ctx context.Context, tag string) (time.Duration, string, error) {
	log := filepath.Join(k.logs, "kiln-"+tag+".log")
	fmt.Fprintf(os.Stderr, "bench-build: kiln %s build (log %s)\n", tag, log)
	d, err := timed(ctx, log, nil, "", k.bin, "build", k.spec, "--cache", k.cache, "--out", k.out)
	if err != nil {
		return 0, "", fmt.Errorf("kiln %s build: %w", tag, err)
	}
	b, err := os.ReadFile(filepath.Join(k.out, "manifest.json"))
	if err != nil {
		return 0, "", err
	}
	var man struct {
		Stages []struct {
			Name     string `json:"name"`
			CacheHit bool   `json:"cache_hit"`
		} `json:"stages"`
	}
	if err := json.Unmarshal(b, &man); err != nil {
		return 0, "", fmt.Errorf("kiln %s build: manifest: %w", tag, err)
	}
	var ran []string
	for _, s := range man.Stages {
		if !s.CacheHit {
			ran = append(ran, s.Name)
		}
	}
	if len(ran) == 0 {
		return d, "none (all cached)", nil
	}
	return d, strings.Join(ran, " "), nil
}

type mkosiRunner struct {
	dir     string   // holds mkosi.default, mkosi.extra/, out/, work/, cache/
	env     []string // PATH with the shims first
	changed string   // the mkosi.extra file changed for the overlay rebuild
}

// newMkosiRunner installs mkosi if missing and prepares its directory: mkosi.default from the template with the
// spec's packages, and mkosi.extra/ from the spec's first overlay (mkosi's analogue of an overlay).
func newMkosiRunner(ctx context.Context, o options, s spec, overlay, dir string) (*mkosiRunner, error) {
	if _, err := exec.LookPath("mkosi"); err != nil {
		// This machine kind ships with linux-image-6.1.0-*-amd64 unpacked but never configured (no
		// initramfs-tools), and apt refuses any install until that is finished. `apt-get install --fix-broken`
		// with no package finishes it (one host initramfs build, ~3 min) instead of removing packages the bench
		// did not install; apt refuses --fix-broken together with a package name, hence two steps. A no-op on a
		// healthy machine. Services do not start: the host's policy-rc.d denies them.
		fmt.Fprintln(os.Stderr, "bench-build: installing mkosi (Debian package), finishing any half-done install first")
		if _, err := run.Cmd(ctx, "apt-get", "install", "-y", "--fix-broken"); err != nil {
			return nil, fmt.Errorf("mkosi: apt-get install --fix-broken: %w", err)
		}
		if _, err := run.Cmd(ctx, "apt-get", "install", "-y", "--no-install-recommends", "mkosi"); err != nil {
			return nil, fmt.Errorf("mkosi: install: %w", err)
		}
	}
	tmpl, err := os.ReadFile(filepath.Join(o.shims, "mkosi.default.in"))
	if err != nil {
		return nil, err
	}
	var pkgs []string
	for _, p := range append(append([]string{}, s.Packages...), s.Firmware...) {
		if p != "initramfs-tools" { // mkosi's initrd is dracut's, which conflicts with initramfs-tools
			pkgs = append(pkgs, p)
		}
	}
	repos := "main"
	if len(s.Firmware) > 0 {
		repos = "main,non-free-firmware"
	}
	conf := strings.NewReplacer("@WORK@", dir, "@PACKAGES@", strings.Join(pkgs, ","), "@REPOSITORIES@", repos).Replace(string(tmpl))
	extra := filepath.Join(dir, "mkosi.extra")
	for _, d := range []string{extra, filepath.Join(dir, "out"), filepath.Join(dir, "work"), filepath.Join(dir, "cache"), filepath.Join(dir, "shim-state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "mkosi.default"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := copyExtraTree(ctx, overlay, extra); err != nil {
		return nil, err
	}
	rel, err := pickFile(overlay)
	if err != nil {
		return nil, err
	}
	rel, _ = filepath.Rel(overlay, rel)
	return &mkosiRunner{
		dir:     dir,
		env:     append(os.Environ(), "PATH="+filepath.Join(o.shims, "shims")+":"+os.Getenv("PATH"), "PYTHONUNBUFFERED=1", "KILN_BENCH_SHIM_STATE="+filepath.Join(dir, "shim-state")),
		changed: filepath.Join(extra, rel),
	}, nil
}

// copyExtraTree copies the overlay's directories into mkosi.extra/, leaving out what only fits kiln's image:
// etc/fstab names kiln's partitions, and a top-level symlink (home -> var/home) cannot replace the directory
// debootstrap made (mkosi's copy renames over it).
func copyExtraTree(ctx context.Context, overlay, extra string) error {
	entries, err := os.ReadDir(overlay)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := run.Cmd(ctx, "cp", "-a", filepath.Join(overlay, e.Name()), extra); err != nil {
			return fmt.Errorf("mkosi.extra: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(extra, "etc", "fstab")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// build runs mkosi in incremental mode (the analogue of kiln's stage cache): -ff rebuilds its cache images too.
func (m *mkosiRunner) build(ctx context.Context, tag, force string) (time.Duration, error) {
	log := filepath.Join(m.dir, "..", "mkosi-"+tag+".log")
	fmt.Fprintf(os.Stderr, "bench-build: mkosi %s build (log %s)\n", tag, log)
	d, err := timed(ctx, log, m.env, m.dir, "mkosi", "--incremental", "--cache="+filepath.Join(m.dir, "cache"), force, "build")
	if err != nil {
		return 0, fmt.Errorf("mkosi %s build: %w", tag, err)
	}
	return d, nil
}

// image finds mkosi's disk image in its output directory (the .raw file that is not an incremental cache image).
func (m *mkosiRunner) image() (string, error) {
	var found string
	err := filepath.WalkDir(filepath.Join(m.dir, "out"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".raw") && !strings.Contains(p, "cache-pre") {
			found = p
		}
		return err
	})
	if err == nil && found == "" {
		err = fmt.Errorf("mkosi: no .raw image under %s/out", m.dir)
	}
	return found, err
}

// timed runs a command with its output to a log file and returns its wall time. It does not use run.Cmd because
// a build's output is long and belongs in a log, not in memory.
func timed(ctx context.Context, log string, env []string, dir, name string, args ...string) (time.Duration, error) {
	f, err := os.Create(log)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fmt.Fprintf(f, "+ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env, cmd.Dir = f, f, env, dir
	start := time.Now()
	err = cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %w (see %s)", name, err, log)
	}
	return d, nil
}

// measureImage records the image's apparent size, its allocated size (st_blocks × 512) and its size after
// zstd -3 with two threads (what shipping it compressed costs; holes compress to almost nothing).
func measureImage(ctx context.Context, path string, r *result) error {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("image %s: %w", path, err)
	}
	r.apparent, r.allocated = st.Size, st.Blocks*512
	fmt.Fprintf(os.Stderr, "bench-build: zstd -T2 -3 %s\n", path)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "zstd", "-T2", "-3", "-q", "-c", path)
	cw := &countWriter{}
	cmd.Stdout, cmd.Stderr = cw, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("zstd %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	r.zstdBytes = cw.n
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func printTable(out io.Writer, o options, name string, k, m result, changed string) {
	mk := !o.skipMkosi
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "METRIC\tKILN\tMKOSI 14\tKILN/MKOSI\tTARGET\tMET\tKILN STAGES RUN")
	dur := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	ratio := func(a, b float64) (string, float64) {
		if !mk || b == 0 {
			return "-", 0
		}
		return fmt.Sprintf("%.2f×", a/b), a / b
	}
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	mcol := func(s string) string {
		if !mk {
			return "skipped"
		}
		return s
	}
	coldName := "cold build (empty cache)"
	if o.seedCache != "" {
		coldName = "first build (SEEDED cache, not cold)"
	}
	rs, rv := ratio(float64(k.cold), float64(m.cold))
	met := "n/a"
	if mk {
		met = yes(rv <= coldRatioTarget)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t≤ %.1f× mkosi\t%s\t%s\n", coldName, dur(k.cold), mcol(dur(m.cold)), rs, coldRatioTarget, met, k.coldRan)
	rs, _ = ratio(float64(k.warm), float64(m.warm))
	fmt.Fprintf(w, "warm rebuild (nothing changed)\t%s\t%s\t%s\t≤ %s\t%s\t%s\n", dur(k.warm), mcol(dur(m.warm)), rs, rebuildTarget, yes(k.warm <= rebuildTarget), k.warmRan)
	rs, _ = ratio(float64(k.overlay), float64(m.overlay))
	fmt.Fprintf(w, "rebuild, one overlay file changed\t%s\t%s\t%s\t≤ %s\t%s\t%s\n", dur(k.overlay), mcol(dur(m.overlay)), rs, rebuildTarget, yes(k.overlay <= rebuildTarget), k.overlayRan)
	rs, _ = ratio(float64(k.apparent), float64(m.apparent))
	fmt.Fprintf(w, "image apparent size\t%s\t%s\t%s\t-\t\t\n", size(k.apparent), mcol(size(m.apparent)), rs)
	rs, rv = ratio(float64(k.allocated), float64(m.allocated))
	met = "n/a"
	if mk {
		met = yes(rv <= allocatedRatioTarget)
	}
	fmt.Fprintf(w, "image allocated (blocks×512)\t%s\t%s\t%s\t≤ %.1f× mkosi\t%s\t\n", size(k.allocated), mcol(size(m.allocated)), rs, allocatedRatioTarget, met)
	rs, _ = ratio(float64(k.zstdBytes), float64(m.zstdBytes))
	fmt.Fprintf(w, "image zstd -3 (-T2)\t%s\t%s\t%s\t-\t\t\n", size(k.zstdBytes), mcol(size(m.zstdBytes)), rs)
	w.Flush()
	fmt.Fprintf(out, "kiln: %s.raw; mkosi: gpt_ext4, Bootable=yes, --incremental; changed file: %s (and its mkosi.extra copy)\n", name, changed)
}

// size prints bytes and MiB: the exact figure for comparison, the rounded one for reading.
func size(n int64) string {
	return fmt.Sprintf("%d B (%d MiB)", n, n>>20)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-build:", err)
	os.Exit(1)
}
