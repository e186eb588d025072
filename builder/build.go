package builder

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/version"
)

// Options is one `kiln build`.
type Options struct {
	Spec *spec.Spec
	// Stages run in order; the last one's output files (<name>.raw, <name>.qcow2 …) are the artifacts.
	Stages []Stage
	Cache  *cache.Cache
	// OutDir receives the artifacts, manifest.json and SHA256SUMS.
	OutDir string
	// Rebuild forces this stage and the ones after it to run even if cached ("" none).
	Rebuild string
	// SourceDateEpoch is the build's timestamp; see SourceDateEpoch.
	SourceDateEpoch int64
	Log             *slog.Logger
	Observer        Observer
}

// SourceDateEpoch is $SOURCE_DATE_EPOCH when set (the reproducible-builds.org convention, so a CI or
// distribution can pin it), else the spec's DefaultSourceDateEpoch: never the clock, so two builds of one
// spec record the same times.
func SourceDateEpoch(s *spec.Spec) (int64, error) {
	if v, ok := os.LookupEnv("SOURCE_DATE_EPOCH"); ok && v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970 (a non-negative integer)", v)
		}
		return n, nil
	}
	return s.DefaultSourceDateEpoch(), nil
}

// Build runs the pipeline and publishes its artifacts, manifest.json and SHA256SUMS to OutDir atomically:
// on any error or cancellation, every output path keeps its previous content (or stays absent).
func Build(ctx context.Context, o Options) (*Manifest, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{Stages: o.Stages, Cache: o.Cache, Log: log, Observer: o.Observer,
		SourceDateEpoch: o.SourceDateEpoch, Rebuild: o.Rebuild}
	res, err := p.Run(ctx)
	if err != nil {
		return nil, err
	}
	defer res.Close()

	m := &Manifest{Name: o.Spec.Name, Spec: o.Spec.File, SourceDateEpoch: o.SourceDateEpoch, Key: res.Last().Key,
		Kiln:      version.Get(),
		Artifacts: []Artifact{}, Packages: []Package{}, Images: []PreloadedImage{}}
	for _, r := range res.Stages {
		m.Stages = append(m.Stages, StageManifest{Name: r.Name, Key: r.Key, Inputs: r.Inputs, CacheHit: r.Hit,
			Why: r.Why, Duration: cache.Duration(r.Duration), BuildDuration: cache.Duration(r.BuildDuration)})
	}
	if dir := res.Output(PackagesStage); dir != "" {
		if m.Packages, err = readPackages(filepath.Join(dir, PackageList)); err != nil {
			return nil, err
		}
	}

	if dir := res.Output(ImagesStage); dir != "" {
		if m.Images, err = readImages(filepath.Join(dir, ImageList)); err != nil {
			return nil, err
		}
	}

	last := res.entries[len(res.entries)-1]
	sums, err := last.Sums()
	if err != nil {
		return nil, err
	}
	var files []pubFile
	for _, name := range cache.SortedNames(sums) {
		if reserved(name) {
			return nil, fmt.Errorf("builder: stage %s wrote %q, a name the output directory reserves", res.Last().Name, name)
		}
		i := len(m.Artifacts)
		m.Artifacts = append(m.Artifacts, Artifact{File: name, Format: artifactFormat(name),
			SHA256: sums[name].SHA256, Size: sums[name].Size})
		files = append(files, pubFile{name: name, src: filepath.Join(last.Out(), filepath.FromSlash(name)), written: func(p string) error {
			a, err := allocated(p)
			m.Artifacts[i].Allocated = a
			return err
		}})
	}
	if len(m.Artifacts) == 0 {
		return nil, fmt.Errorf("builder: stage %s produced no artifacts", res.Last().Name)
	}
	// The manifest is rendered last, once the artifacts are copied (allocated sizes are measured on the copies).
	files = append(files,
		pubFile{name: SumsFile, data: sha256sums(m.Artifacts)},
		pubFile{name: ManifestFile, render: func() ([]byte, error) {
			b, err := json.MarshalIndent(m, "", "  ")
			if err != nil {
				return nil, fmt.Errorf("builder: manifest: %w", err)
			}
			return append(b, '\n'), nil
		}},
	)
	if err := publish(ctx, o.OutDir, files); err != nil {
		return nil, err
	}
	log.Info("wrote artifacts", "dir", o.OutDir, "files", len(m.Artifacts))
	return m, nil
}

// reserved reports whether the artifact path name (slash-separated) would collide with the output directory's
// own files: manifest.json, SHA256SUMS, or a dot name (the lock, temp dirs, "..").
func reserved(name string) bool {
	parts := strings.Split(name, "/")
	if parts[0] == ManifestFile || parts[0] == SumsFile {
		return true
	}
	for _, p := range parts {
		if p == "" || strings.HasPrefix(p, ".") {
			return true
		}
	}
	return false
}

// artifactFormat is the format that wrote an artifact: its directory for a file in one (pxe/vmlinuz: pxe),
// else its extension (node.qcow2: qcow2).
func artifactFormat(name string) string {
	if dir, _, ok := strings.Cut(name, "/"); ok {
		return dir
	}
	return strings.TrimPrefix(filepath.Ext(name), ".")
}
