package builder_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/spec"
)

// fakeStage stands in for a real stage: its inputs are a map the test edits, and it counts its runs.
type fakeStage struct {
	name   string
	inputs map[string]string
	runs   int
	// run writes the output; nil writes a file named after the stage.
	run func(ctx context.Context, env *builder.Env, dir string) error
}

func (f *fakeStage) Name() string { return f.name }
func (f *fakeStage) Inputs(context.Context) (map[string]string, error) {
	return f.inputs, nil
}
func (f *fakeStage) Run(ctx context.Context, env *builder.Env, dir string) error {
	f.runs++
	env.Progress(1, "done")
	if f.run != nil {
		return f.run(ctx, env, dir)
	}
	return os.WriteFile(filepath.Join(dir, f.name), []byte(fmt.Sprint(f.inputs)), 0o644)
}

// fakePipeline is packages → base → node → disk → formats, where packages writes packages.tsv and
// formats writes a sparse test.raw and a test.qcow2, like the real stages.
func fakePipeline() []*fakeStage {
	pkgs := &fakeStage{name: "packages", inputs: map[string]string{"packages": "systemd linux-image-amd64"},
		run: func(_ context.Context, _ *builder.Env, dir string) error {
			return os.WriteFile(filepath.Join(dir, "packages.tsv"), []byte("linux-image-amd64\t6.1.140-1\nsystemd\t252.38-1~deb12u1\n"), 0o644)
		}}
	formats := &fakeStage{name: "formats", inputs: map[string]string{"formats": "raw,qcow2"},
		run: func(_ context.Context, env *builder.Env, dir string) error {
			// The disk stage's output is readable here, as a real formats stage reads disk.raw.
			if _, err := os.Stat(filepath.Join(env.Outputs["disk"], "disk")); err != nil {
				return err
			}
			return writeFakeImages(dir, "test")
		}}
	return []*fakeStage{
		pkgs,
		{name: "base", inputs: map[string]string{"compression": "zstd"}},
		{name: "node", inputs: map[string]string{"overlays": "h1", "agent": "h2"}},
		{name: "disk", inputs: map[string]string{"espSizeMiB": "256"}},
		formats,
	}
}

// writeFakeImages writes a 64 MiB sparse raw image with 1 MiB of data, and a small qcow2 stand-in.
func writeFakeImages(dir, name string) error {
	f, err := os.Create(filepath.Join(dir, name+".raw"))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte("kiln"), 256<<10), 32<<20); err != nil {
		return err
	}
	if err := f.Truncate(64 << 20); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".qcow2"), []byte("QFI\xfb fake"), 0o644)
}

func stages(fs []*fakeStage) []builder.Stage {
	var s []builder.Stage
	for _, f := range fs {
		s = append(s, f)
	}
	return s
}

func runs(fs []*fakeStage) string {
	var s []string
	for _, f := range fs {
		s = append(s, fmt.Sprintf("%s=%d", f.name, f.runs))
	}
	return strings.Join(s, " ")
}

type env struct {
	cache *cache.Cache
	out   string
	spec  *spec.Spec
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{cache: c, out: filepath.Join(t.TempDir(), "out"), spec: &spec.Spec{Name: "test", File: "images/test.yaml"}}
}

func (e *env) build(ctx context.Context, fs []*fakeStage, rebuild string) (*builder.Manifest, error) {
	return builder.Build(ctx, builder.Options{Spec: e.spec, Stages: stages(fs), Cache: e.cache, OutDir: e.out,
		Rebuild: rebuild, SourceDateEpoch: 1686355200})
}

// TestInvalidation: a changed input re-runs its stage and the ones after it, nothing before.
func TestInvalidation(t *testing.T) {
	e := newEnv(t)
	fs := fakePipeline()
	ctx := context.Background()
	if _, err := e.build(ctx, fs, ""); err != nil {
		t.Fatal(err)
	}
	if got := runs(fs); got != "packages=1 base=1 node=1 disk=1 formats=1" {
		t.Fatalf("first build runs: %s", got)
	}

	// Same inputs: everything from the cache.
	m, err := e.build(ctx, fs, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := runs(fs); got != "packages=1 base=1 node=1 disk=1 formats=1" {
		t.Fatalf("warm build runs: %s", got)
	}
	for _, s := range m.Stages {
		if !s.CacheHit {
			t.Errorf("warm build: %s missed: %s", s.Name, s.Why)
		}
	}

	// One node input changes: node, disk and formats run again; the miss says which input changed.
	fs[2].inputs = map[string]string{"overlays": "h1-edited", "agent": "h2"}
	m, err = e.build(ctx, fs, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := runs(fs); got != "packages=1 base=1 node=2 disk=2 formats=2" {
		t.Fatalf("after node input change: %s", got)
	}
	if why := m.Stages[2].Why; !strings.Contains(why, "inputs changed") || !strings.Contains(why, "overlays") {
		t.Errorf("node why = %q", why)
	}
	if why := m.Stages[3].Why; !strings.Contains(why, "previous stage changed") {
		t.Errorf("disk why = %q", why)
	}

	// Back to the old input: the old entries are still there.
	fs[2].inputs = map[string]string{"overlays": "h1", "agent": "h2"}
	if _, err := e.build(ctx, fs, ""); err != nil {
		t.Fatal(err)
	}
	if got := runs(fs); got != "packages=1 base=1 node=2 disk=2 formats=2" {
		t.Fatalf("after reverting: %s", got)
	}

	// --rebuild disk forces disk and formats only.
	m, err = e.build(ctx, fs, "disk")
	if err != nil {
		t.Fatal(err)
	}
	if got := runs(fs); got != "packages=1 base=1 node=2 disk=3 formats=3" {
		t.Fatalf("after --rebuild disk: %s", got)
	}
	if m.Stages[3].Why != "forced rebuild" {
		t.Errorf("disk why = %q", m.Stages[3].Why)
	}
	if _, err := e.build(ctx, fs, "nope"); err == nil || !strings.Contains(err.Error(), `--rebuild "nope": no such stage`) {
		t.Errorf("--rebuild nope: %v", err)
	}

	// SOURCE_DATE_EPOCH is an input of every stage.
	if _, err := builder.Build(ctx, builder.Options{Spec: e.spec, Stages: stages(fs), Cache: e.cache, OutDir: e.out,
		SourceDateEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	if got := runs(fs); got != "packages=2 base=2 node=3 disk=4 formats=4" {
		t.Fatalf("after SOURCE_DATE_EPOCH change: %s", got)
	}
}

// TestManifest shows what out/ holds after a build.
func TestManifest(t *testing.T) {
	e := newEnv(t)
	fs := fakePipeline()
	m, err := e.build(context.Background(), fs, "")
	if err != nil {
		t.Fatal(err)
	}
	var onDisk builder.Manifest
	b, err := os.ReadFile(filepath.Join(e.out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &onDisk); err != nil {
		t.Fatal(err)
	}
	if onDisk.Name != "test" || onDisk.Spec != "images/test.yaml" || onDisk.SourceDateEpoch != 1686355200 {
		t.Errorf("manifest header = %+v", onDisk)
	}
	if onDisk.Key != m.Stages[4].Key || len(onDisk.Stages) != 5 || onDisk.Stages[0].Inputs["SOURCE_DATE_EPOCH"] != "1686355200" {
		t.Errorf("manifest stages = %+v", onDisk.Stages)
	}
	if len(onDisk.Packages) != 2 || onDisk.Packages[1] != (builder.Package{Name: "systemd", Version: "252.38-1~deb12u1"}) {
		t.Errorf("packages = %+v", onDisk.Packages)
	}
	if len(onDisk.Artifacts) != 2 || onDisk.Artifacts[0].File != "test.qcow2" || onDisk.Artifacts[1].Format != "raw" {
		t.Fatalf("artifacts = %+v", onDisk.Artifacts)
	}
	var sums strings.Builder
	for _, a := range onDisk.Artifacts {
		data, err := os.ReadFile(filepath.Join(e.out, a.File))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(data)
		if hex.EncodeToString(h[:]) != a.SHA256 || int64(len(data)) != a.Size {
			t.Errorf("%s: manifest says %s/%d, file is %x/%d", a.File, a.SHA256, a.Size, h, len(data))
		}
		fmt.Fprintf(&sums, "%s  %s\n", a.SHA256, a.File)
	}
	// The raw image stays sparse in out/: 64 MiB apparent, about 1 MiB allocated.
	if raw := onDisk.Artifacts[1]; raw.Size != 64<<20 || raw.Allocated > 4<<20 {
		t.Errorf("raw size %d allocated %d: not sparse", raw.Size, raw.Allocated)
	}
	got, _ := os.ReadFile(filepath.Join(e.out, "SHA256SUMS"))
	if string(got) != sums.String() {
		t.Errorf("SHA256SUMS =\n%s\nwant\n%s", got, sums.String())
	}
	// Only the published files are left in out/ (plus the publishing lock).
	ents, _ := os.ReadDir(e.out)
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	if strings.Join(names, " ") != ".kiln.lock SHA256SUMS manifest.json test.qcow2 test.raw" {
		t.Errorf("out/ = %v", names)
	}
}

// TestAtomicOutput: a failing or cancelled build leaves out/ as it was: absent, or the previous build's.
func TestAtomicOutput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	boom := errors.New("boom")

	// A first build that fails in its last stage writes nothing at all.
	fs := fakePipeline()
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		writeFakeImages(dir, "test") // a half-written output, as a crashed stage leaves it
		return boom
	}
	if _, err := e.build(ctx, fs, ""); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	for _, f := range []string{"test.raw", "test.qcow2", "manifest.json", "SHA256SUMS"} {
		if _, err := os.Stat(filepath.Join(e.out, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a failed build: %v", f, err)
		}
	}
	assertNoTemp(t, e)

	// A good build, then failing and cancelled rebuilds: the good build's files stay intact.
	fs = fakePipeline()
	if _, err := e.build(ctx, fs, ""); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e.out)
	fs[4].inputs = map[string]string{"formats": "changed"}
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		os.WriteFile(filepath.Join(dir, "test.raw"), []byte("half"), 0o644)
		return boom
	}
	if _, err := e.build(ctx, fs, ""); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if after := snapshot(t, e.out); after != before {
		t.Errorf("out/ changed after a failed build:\n%s\nwas\n%s", after, before)
	}
	cctx, cancel := context.WithCancel(ctx)
	fs[4].run = func(ctx context.Context, _ *builder.Env, dir string) error {
		writeFakeImages(dir, "test")
		cancel() // SIGINT arrives while the stage runs
		return ctx.Err()
	}
	if _, err := e.build(cctx, fs, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if after := snapshot(t, e.out); after != before {
		t.Errorf("out/ changed after a cancelled build:\n%s\nwas\n%s", after, before)
	}
	assertNoTemp(t, e)
}

// snapshot is the path and sha256 of every file under dir, and every directory.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var s strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			fmt.Fprintf(&s, "%s/\n", rel)
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&s, "%s %x\n", rel, sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

// assertNoTemp checks no temp dir is left in out/ or in the cache.
func assertNoTemp(t *testing.T, e *env) {
	t.Helper()
	for _, pat := range []string{filepath.Join(e.out, ".kiln-tmp-*"), filepath.Join(e.cache.Root(), "stages", "*", ".tmp-*")} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			t.Errorf("temp left behind: %v", m)
		}
	}
}

// TestSourceDateEpoch: the environment wins, else the spec's default; garbage is an error.
func TestSourceDateEpoch(t *testing.T) {
	s := &spec.Spec{Distribution: spec.Distribution{Suite: "bookworm", Snapshot: "20250520T000000Z"}}
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if got, _ := builder.SourceDateEpoch(s); got != 1747699200 {
		t.Errorf("snapshot epoch = %d", got)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "42")
	if got, _ := builder.SourceDateEpoch(s); got != 42 {
		t.Errorf("env epoch = %d", got)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := builder.SourceDateEpoch(s); err == nil {
		t.Error("SOURCE_DATE_EPOCH=yesterday accepted")
	}
}

// writePXEDir writes pxe/ files named in files (their content is the name and tag) and a test.raw.
func writePXEDir(dir, tag string, files ...string) error {
	if err := os.Mkdir(filepath.Join(dir, "pxe"), 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, "pxe", f), []byte(f+" "+tag), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "test.raw"), []byte("raw "+tag), 0o644)
}

// dirNames lists dir's entries.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return strings.Join(names, " ")
}

// TestPublishSubdirectory: a format written as a directory (pxe/) is published file by file under its
// path, listed in manifest.json with its format and in SHA256SUMS so that sha256sum -c checks it; files of
// another build in that directory are removed once the new ones are in place, other directories are not.
func TestPublishSubdirectory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	fs := fakePipeline()
	fs[4].inputs = map[string]string{"formats": "raw,pxe", "build": "1"}
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		return writePXEDir(dir, "1", "vmlinuz", "base.squashfs", "pxe.json")
	}
	m, err := e.build(ctx, fs, "")
	if err != nil {
		t.Fatal(err)
	}
	var arts []string
	for _, a := range m.Artifacts {
		arts = append(arts, a.File+":"+a.Format)
	}
	if got := strings.Join(arts, " "); got != "pxe/base.squashfs:pxe pxe/pxe.json:pxe pxe/vmlinuz:pxe test.raw:raw" {
		t.Errorf("artifacts = %s", got)
	}
	if b, _ := os.ReadFile(filepath.Join(e.out, "pxe", "vmlinuz")); string(b) != "vmlinuz 1" {
		t.Errorf("out/pxe/vmlinuz = %q", b)
	}
	sums, _ := os.ReadFile(filepath.Join(e.out, "SHA256SUMS"))
	if !strings.Contains(string(sums), "  pxe/vmlinuz\n") {
		t.Errorf("SHA256SUMS =\n%s", sums)
	}
	cmd := exec.Command("sha256sum", "-c", "--strict", "SHA256SUMS")
	cmd.Dir = e.out
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}

	// Files another build left, in pxe/ and elsewhere; then a build whose pxe/ has no base.squashfs.
	os.WriteFile(filepath.Join(e.out, "pxe", "stale.squashfs"), []byte("old"), 0o644)
	os.MkdirAll(filepath.Join(e.out, "pxe", "olddir"), 0o755)
	os.WriteFile(filepath.Join(e.out, "pxe", "olddir", "x"), []byte("old"), 0o644)
	os.MkdirAll(filepath.Join(e.out, "keep"), 0o755)
	os.WriteFile(filepath.Join(e.out, "keep", "x"), []byte("user's"), 0o644)
	os.WriteFile(filepath.Join(e.out, "test.qcow2"), []byte("older format"), 0o644)
	fs[4].inputs = map[string]string{"formats": "raw,pxe", "build": "2"}
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		return writePXEDir(dir, "2", "vmlinuz", "node.squashfs", "pxe.json")
	}
	if _, err := e.build(ctx, fs, ""); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, filepath.Join(e.out, "pxe")); got != "node.squashfs pxe.json vmlinuz" {
		t.Errorf("out/pxe after the second build = %s, want only its files", got)
	}
	if b, _ := os.ReadFile(filepath.Join(e.out, "pxe", "pxe.json")); string(b) != "pxe.json 2" {
		t.Errorf("out/pxe/pxe.json = %q", b)
	}
	if got := dirNames(t, e.out); got != ".kiln.lock SHA256SUMS keep manifest.json pxe test.qcow2 test.raw" {
		t.Errorf("out/ = %s: a file outside pxe/ was touched", got)
	}
	if b, _ := os.ReadFile(filepath.Join(e.out, "keep", "x")); string(b) != "user's" {
		t.Errorf("out/keep/x = %q", b)
	}

	// A build without pxe leaves out/pxe as the last pxe build wrote it.
	before := snapshot(t, filepath.Join(e.out, "pxe"))
	fs[4].inputs = map[string]string{"formats": "raw"}
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		return os.WriteFile(filepath.Join(dir, "test.raw"), []byte("raw 3"), 0o644)
	}
	if _, err := e.build(ctx, fs, ""); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, filepath.Join(e.out, "pxe")); after != before {
		t.Errorf("out/pxe changed by a build without pxe:\n%s\nwas\n%s", after, before)
	}
}

// TestAtomicOutputSubdirectory: a failed or cancelled build writes no file under pxe/ either, whether it
// stops in the stage or while publishing.
func TestAtomicOutputSubdirectory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	boom := errors.New("boom")
	fs := fakePipeline()
	fs[4].inputs = map[string]string{"formats": "raw,pxe", "build": "1"}
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		writePXEDir(dir, "1", "vmlinuz", "base.squashfs")
		return boom
	}
	if _, err := e.build(ctx, fs, ""); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := os.Stat(filepath.Join(e.out, "pxe")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("out/pxe exists after a failed first build: %v", err)
	}
	assertNoTemp(t, e)

	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		return writePXEDir(dir, "1", "vmlinuz", "base.squashfs", "pxe.json")
	}
	if _, err := e.build(ctx, fs, ""); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e.out)

	fs[4].inputs = map[string]string{"formats": "raw,pxe", "build": "2"}
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		writePXEDir(dir, "2", "vmlinuz", "node.squashfs")
		return boom
	}
	if _, err := e.build(ctx, fs, ""); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if after := snapshot(t, e.out); after != before {
		t.Errorf("out/ changed after a failed build:\n%s\nwas\n%s", after, before)
	}

	// Cancelled once the stage is done, while the artifacts are being copied into out/.
	fs[4].run = func(_ context.Context, _ *builder.Env, dir string) error {
		return writePXEDir(dir, "2", "vmlinuz", "node.squashfs", "pxe.json")
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := builder.Build(cctx, builder.Options{Spec: e.spec, Stages: stages(fs), Cache: e.cache, OutDir: e.out,
		SourceDateEpoch: 1686355200, Observer: cancelAfter{stage: "formats", cancel: cancel}})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "builder: output") {
		t.Fatalf("err = %v, want context.Canceled while publishing", err)
	}
	if after := snapshot(t, e.out); after != before {
		t.Errorf("out/ changed after a build cancelled while publishing:\n%s\nwas\n%s", after, before)
	}
	assertNoTemp(t, e)
}

// cancelAfter cancels the build when stage is done, the moment before publishing starts.
type cancelAfter struct {
	stage  string
	cancel context.CancelFunc
}

func (cancelAfter) StageStart(string, string)             {}
func (cancelAfter) StageMiss(string, string)              {}
func (cancelAfter) StageProgress(string, float64, string) {}
func (c cancelAfter) StageDone(r builder.StageResult, err error) {
	if r.Name == c.stage && err == nil {
		c.cancel()
	}
}

// needStage is a fakeStage that names what it needs (builder.Needer).
type needStage struct {
	*fakeStage
	needs []string
}

func (n needStage) Needs() []string { return n.needs }

// A stage that needs nothing unbuilt runs beside the chain; its key, and so its reruns, follow only what it
// needs; a stage that needs several sees the outputs of all of them and of what they need.
func TestNeeds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// pkgs and tool wait for each other to have started: run one after the other, the build would hang.
	pkgsStarted, toolStarted := make(chan struct{}), make(chan struct{})
	meet := func(mine, theirs chan struct{}) func(context.Context, *builder.Env, string) error {
		return func(ctx context.Context, _ *builder.Env, dir string) error {
			close(mine)
			select {
			case <-theirs:
			case <-time.After(10 * time.Second):
				return errors.New("the other stage never started beside this one")
			}
			return os.WriteFile(filepath.Join(dir, "packages.tsv"), nil, 0o644) // what Build reads of packages
		}
	}
	pkgs := &fakeStage{name: "packages", inputs: map[string]string{"p": "1"}, run: meet(pkgsStarted, toolStarted)}
	tool := &fakeStage{name: "tool", inputs: map[string]string{"t": "1"}, run: meet(toolStarted, pkgsStarted)}
	base := &fakeStage{name: "base", inputs: map[string]string{"b": "1"}}
	var seen []string
	img := &fakeStage{name: "node", inputs: map[string]string{"i": "1"}, run: func(_ context.Context, env *builder.Env, dir string) error {
		seen = slices.Sorted(maps.Keys(env.Outputs))
		return os.WriteFile(filepath.Join(dir, "node"), nil, 0o644)
	}}
	formats := &fakeStage{name: "formats", inputs: map[string]string{"f": "raw"}, run: func(_ context.Context, _ *builder.Env, dir string) error {
		return writeFakeImages(dir, "test")
	}}
	list := []builder.Stage{pkgs, base, needStage{tool, nil}, needStage{img, []string{"base", "tool"}}, formats}
	build := func(rebuild string) {
		t.Helper()
		if _, err := builder.Build(ctx, builder.Options{Spec: e.spec, Stages: list, Cache: e.cache, OutDir: e.out,
			Rebuild: rebuild, SourceDateEpoch: 1686355200}); err != nil {
			t.Fatal(err)
		}
	}
	all := []*fakeStage{pkgs, base, tool, img, formats}
	build("")
	if got := runs(all); got != "packages=1 base=1 tool=1 node=1 formats=1" {
		t.Fatalf("first build: %s", got)
	}
	if want := []string{"base", "packages", "tool"}; !slices.Equal(seen, want) {
		t.Errorf("node saw the outputs of %v, want %v", seen, want)
	}
	pkgs.run = func(_ context.Context, _ *builder.Env, dir string) error { // from here on one runs without the other
		return os.WriteFile(filepath.Join(dir, "packages.tsv"), nil, 0o644)
	}
	tool.run = nil

	tool.inputs = map[string]string{"t": "2"}
	build("")
	if got := runs(all); got != "packages=1 base=1 tool=2 node=2 formats=2" {
		t.Errorf("tool's input changed: %s", got)
	}
	pkgs.inputs = map[string]string{"p": "2"}
	build("")
	if got := runs(all); got != "packages=2 base=2 tool=2 node=3 formats=3" {
		t.Errorf("packages' input changed: %s", got)
	}
	build("base")
	if got := runs(all); got != "packages=2 base=3 tool=2 node=4 formats=4" {
		t.Errorf("--rebuild base: %s", got)
	}

	bad := []builder.Stage{pkgs, needStage{tool, []string{"formats"}}, formats}
	if _, err := builder.Build(ctx, builder.Options{Spec: e.spec, Stages: bad, Cache: e.cache, OutDir: e.out}); err == nil ||
		!strings.Contains(err.Error(), `tool needs "formats", which is listed after it`) {
		t.Errorf("a need listed later: %v", err)
	}
}
