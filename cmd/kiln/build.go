package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/builder/stages"
	"github.com/kiln-project/kiln/internal/cli"
)

// buildFlags are `kiln build`'s options.
type buildFlags struct {
	out      string
	formats  []string
	cacheDir string
	json     bool
	rebuild  string
}

// buildStages builds the pipeline for a spec; tests replace it with fakes.
var buildStages = stages.For

// DefaultSpec is what `kiln build` builds without an argument.
const DefaultSpec = "images/node.yaml"

func newBuildCmd() *cobra.Command {
	f := &buildFlags{}
	cmd := &cobra.Command{
		Use:   "build [SPEC]",
		Short: "Build an immutable, UEFI-bootable node image from an image spec",
		Long: `kiln build turns an image spec (default ` + DefaultSpec + `, see docs/spec.md) into artifacts in --out:
<name>.raw (GPT disk, write it to a USB stick or disk), <name>.qcow2 (for VMs), with --format pxe the
directory pxe/ (kernel, initrd, layers and iPXE script for kiln pxe serve), manifest.json (artifacts with
sha256 and sizes, every package with its version, each stage's inputs, key, cache hit and duration) and
SHA256SUMS (check with: cd out && sha256sum -c SHA256SUMS).

The build runs the stages ` + strings.Join(stages.Names, " → ") + `. Each stage's output is cached under a
key hashing its inputs and the previous stage's key, so a changed input re-runs that stage and those after it
only. Artifacts are written atomically: an interrupted or failed build leaves --out as it was.

Timestamps recorded in the image come from $SOURCE_DATE_EPOCH if set, else from the spec (its snapshot
time, or its Debian suite's release day): two builds of one spec record the same times.`,
		Example: `  kiln build                                # images/node.yaml → out/
  kiln build images/node.yaml --format raw  # only the raw disk
  kiln build --format raw,qcow2,pxe         # also out/pxe/ for netboot
  kiln build --json | jq .artifacts         # the manifest, for scripts
  kiln build --rebuild disk                 # re-run disk and formats even if cached`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true // from here on, errors are about the build, not the command line
			if len(args) == 1 {
				return runBuild(cmd, f, args[0], false)
			}
			return runBuild(cmd, f, DefaultSpec, true)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "out", "directory for the artifacts, manifest.json and SHA256SUMS (created if missing)")
	fl.StringSliceVar(&f.formats, "format", nil, "artifact formats to write, comma-separated: "+strings.Join(spec.KnownFormats, ", ")+
		" (default: the spec's formats, else raw,qcow2)")
	fl.StringVar(&f.cacheDir, "cache", "", "stage cache directory (default $XDG_CACHE_HOME/kiln, else ~/.cache/kiln); safe to delete")
	fl.BoolVar(&f.json, "json", false, "print the manifest as JSON on stdout instead of the summary table")
	fl.StringVar(&f.rebuild, "rebuild", "", "re-run this stage and every later one even if cached: one of "+strings.Join(stages.Names, ", "))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(spec.KnownFormats, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("rebuild", cobra.FixedCompletions(stages.Names, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("out", dirsOnly)
	_ = cmd.RegisterFlagCompletionFunc("cache", dirsOnly)
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return []cobra.Completion{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
	}
	return cmd
}

func runBuild(cmd *cobra.Command, f *buildFlags, path string, isDefault bool) error {
	for _, fm := range f.formats {
		if !slices.Contains(spec.KnownFormats, fm) {
			return cli.Usagef("--format %s: not one of %s", fm, strings.Join(spec.KnownFormats, ", "))
		}
	}
	if f.rebuild != "" && !slices.Contains(stages.Names, f.rebuild) {
		return cli.Usagef("--rebuild %s: not a stage (%s)", f.rebuild, strings.Join(stages.Names, ", "))
	}
	s, err := loadSpec(path, f.formats)
	if errors.Is(err, fs.ErrNotExist) && isDefault {
		return fmt.Errorf("default spec %s: no such file (run kiln build in a kiln checkout, or name a spec: kiln build SPEC)", path)
	}
	if err != nil {
		return err
	}
	epoch, err := builder.SourceDateEpoch(s)
	if err != nil {
		return err
	}
	dir := f.cacheDir
	if dir == "" {
		if dir, err = cache.DefaultDir(); err != nil {
			return err
		}
	}
	c, err := cache.Open(dir)
	if err != nil {
		return err
	}

	stderr := cmd.ErrOrStderr()
	prog := newProgress(stderr)
	log := prog.Logger()
	log.Info("building", "spec", path, "name", s.Name, "cache", c.Root(), "out", f.out, "SOURCE_DATE_EPOCH", epoch)
	start := time.Now()
	m, err := builder.Build(cmd.Context(), builder.Options{Spec: s, Stages: buildStages(s), Cache: c, OutDir: f.out,
		Rebuild: f.rebuild, SourceDateEpoch: epoch, Log: log, Observer: prog})
	prog.Wait()
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	printSummary(cmd.OutOrStdout(), m, f.out, time.Since(start))
	return nil
}

// dirsOnly completes a flag that takes a directory.
func dirsOnly(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveFilterDirs
}

// loadSpec is spec.Load with --format applied before defaults and validation.
func loadSpec(path string, formats []string) (*spec.Spec, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("spec %s: no such file: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	s, err := spec.Parse(path, data)
	if err != nil {
		return nil, err
	}
	if len(formats) > 0 {
		s.Formats = formats
	}
	s.Default()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// printSummary is the closing table: per stage its key, whether it came from the cache, and its time.
func printSummary(w io.Writer, m *builder.Manifest, out string, total time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tKEY\tCACHE\tDURATION")
	for _, s := range m.Stages {
		hit := "miss"
		if s.CacheHit {
			hit = "hit"
		}
		fmt.Fprintf(tw, "%s\t%.12s\t%s\t%s\n", s.Name, s.Key, hit, time.Duration(s.Duration).Round(10*time.Millisecond))
	}
	fmt.Fprintf(tw, "total\t\t\t%s\n", total.Round(10*time.Millisecond))
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range m.Artifacts {
		fmt.Fprintf(tw, "%s/%s\t%s\t(%s allocated)\tsha256 %.16s…\n", strings.TrimSuffix(out, "/"), a.File,
			size(a.Size), size(a.Allocated), a.SHA256)
	}
	tw.Flush()
}

// size renders bytes in binary units, as ls -h and qemu-img do.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
