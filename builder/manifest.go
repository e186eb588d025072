package builder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/internal/version"
)

// PackagesStage and PackageList locate the installed package list: the packages stage writes
// "name<TAB>version" lines to packages.tsv at the top of its output directory.
const (
	PackagesStage = "packages"
	PackageList   = "packages.tsv"
)

// ImagesStage and ImageList locate the preloaded images: the images stage writes a JSON list of
// PreloadedImage to images.json at the top of its output directory.
const (
	ImagesStage = "images"
	ImageList   = "images.json"
)

// Manifest is out/manifest.json: what was built, from what, and how the build went.
type Manifest struct {
	// Name is the spec's name; file artifacts are <name>.<format>, the pxe format's are in pxe/.
	Name string `json:"name"`
	// Spec is the spec file as given on the command line.
	Spec string `json:"spec"`
	// SourceDateEpoch is the timestamp recorded in the image (files, filesystems).
	SourceDateEpoch int64 `json:"source_date_epoch"`
	// Kiln is the kiln that ran the build (the same record is in the image's /usr/lib/kiln/image.json).
	Kiln version.Info `json:"kiln"`
	// Key is the last stage's cache key: a hash of every input of the build.
	Key       string     `json:"key"`
	Artifacts []Artifact `json:"artifacts"`
	Packages  []Package  `json:"packages"`
	// Images are the container images the node loads into dockerd at boot (spec preload), in spec order.
	Images []PreloadedImage `json:"images"`
	Stages []StageManifest  `json:"stages"`
}

// Artifact is one file written to the output directory.
type Artifact struct {
	// File is the path in the output directory, slash-separated: node.raw, pxe/vmlinuz.
	File string `json:"file"`
	// Format is the spec format that wrote it: raw, qcow2, pxe.
	Format string `json:"format"`
	SHA256 string `json:"sha256"`
	// Size is the apparent size in bytes (what the disk will be).
	Size int64 `json:"size"`
	// Allocated is the bytes the sparse file really uses on the output's filesystem.
	Allocated int64 `json:"allocated"`
}

// Package is one installed Debian package.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// PreloadedImage is one container image baked into the node layer (spec preload).
type PreloadedImage struct {
	// Name is the reference it is loaded under (kiln/traefik:v3.7.13).
	Name string `json:"name"`
	// Source is traefik (built from its Go module) or archive (a docker save archive from the spec).
	Source string `json:"source"`
	// Version is Traefik's version; empty for an archive.
	Version string `json:"version,omitempty"`
	// Digest is the image ID (sha256 of its config), what `docker image ls --no-trunc` shows once loaded.
	Digest string `json:"digest"`
	// File is the archive under /usr/lib/kiln/images; SHA256 and Size are the archive's.
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Binary is, for Traefik, its executable beside the archive (bind-mounted into the container, not in the
	// image's layer), with its SHA256.
	Binary       string `json:"binary,omitempty"`
	BinarySHA256 string `json:"binary_sha256,omitempty"`
}

// StageManifest records one stage of the build.
type StageManifest struct {
	Name   string            `json:"name"`
	Key    string            `json:"key"`
	Inputs map[string]string `json:"inputs"`
	// CacheHit reports whether the stage came from the cache in this build.
	CacheHit bool `json:"cache_hit"`
	// Why the stage ran (empty on a hit).
	Why string `json:"why,omitempty"`
	// Duration is this build's wall time for the stage, in seconds.
	Duration cache.Duration `json:"duration"`
	// BuildDuration is how long the cached output took to build, in seconds.
	BuildDuration cache.Duration `json:"build_duration"`
}

// readImages parses images.json.
func readImages(path string) ([]PreloadedImage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("builder: image list: %w", err)
	}
	var imgs []PreloadedImage
	if err := json.Unmarshal(b, &imgs); err != nil {
		return nil, fmt.Errorf("builder: %s: %w", path, err)
	}
	return imgs, nil
}

// readPackages parses packages.tsv; a missing file is an error (the manifest promises every package).
func readPackages(path string) ([]Package, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("builder: package list: %w", err)
	}
	var pkgs []Package
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, version, ok := strings.Cut(line, "\t")
		if !ok || name == "" || version == "" {
			return nil, fmt.Errorf("builder: %s: line %d: want \"name<TAB>version\", got %q", path, n, line)
		}
		pkgs = append(pkgs, Package{Name: name, Version: version})
	}
	return pkgs, nil
}

// sha256sums renders artifacts in sha256sum(1) format, so `sha256sum -c SHA256SUMS` in the output directory
// checks them, those in subdirectories (pxe/vmlinuz) too.
func sha256sums(arts []Artifact) []byte {
	var b bytes.Buffer
	for _, a := range arts {
		fmt.Fprintf(&b, "%s  %s\n", a.SHA256, a.File)
	}
	return b.Bytes()
}
