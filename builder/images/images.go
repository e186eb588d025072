// Package images is the images stage: the container images a spec preloads (spec.Preload), as `docker save`
// archives under the node layer's /usr/lib/kiln/images with their index and the boot unit that loads them.
// Traefik's binary comes from the compile stage (built from its Go module); nothing is pulled from a registry.
package images

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/internal/dockerarchive"
	"github.com/kiln-project/kiln/internal/files"
)

// TreeDir is the stage's output tree, copied over the node layer's root by the node stage; empty when the
// spec preloads nothing, so such an image's node layer is what it was without this stage.
const TreeDir = "tree"

// layout versions the stage's output shape (archive layout, unit, index): a change here must re-run it.
const layout = "2"

// UnitName is the boot unit that loads the archives (kiln-firstboot preload).
const UnitName = "kiln-preload.service"

// unit runs at every boot: the first boot loads everything, a reboot finds every image present and loads
// nothing, a reimaged node (empty /var, so an empty dockerd) loads again. Not ordered before the agent:
// formation needs no image, and the ingress reconciler waits for its image to be present.
const unit = `# kiln: load the container images baked into this image (/usr/lib/kiln/images) into dockerd, skipping
# those already present. Written by kiln build for a spec with preload: (docs/ingress.md).
[Unit]
Description=kiln: load preloaded container images
Requires=docker.service
After=docker.service
ConditionPathExists=/usr/lib/kiln/images/index.json

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/kiln-firstboot preload
# A 150 MB archive loads in seconds on a disk, in a minute or more on a loaded TCG VM.
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
`

// Stage builds the preloaded images.
type Stage struct {
	spec *spec.Spec
}

// New returns the images stage for s.
func New(s *spec.Spec) builder.Stage { return &Stage{spec: s} }

// Name implements builder.Stage.
func (*Stage) Name() string { return "images" }

// Needs implements builder.Needer: the package tree (its CA bundle goes into Traefik's image) and the
// compiled binaries.
func (*Stage) Needs() []string { return []string{"packages", "compile"} }

// Inputs implements builder.Stage: per entry, Traefik's version and the Go that compiles it, or the archive's
// content hash. A spec without preload has no inputs: the stage writes an empty tree.
func (st *Stage) Inputs(ctx context.Context) (map[string]string, error) {
	in := map[string]string{}
	if len(st.spec.Preload) == 0 {
		return in, nil
	}
	in["layout"] = layout
	for i, p := range st.spec.Preload {
		k := fmt.Sprintf("preload.%03d", i)
		switch {
		case p.Traefik != "":
			goVersion, err := goVersion(ctx)
			if err != nil {
				return nil, fmt.Errorf("images: preload[%d] (traefik %s): %w", i, p.Traefik, err)
			}
			in[k] = "traefik " + p.Traefik + " " + goVersion + " patches " + sourcePatches
		case p.Archive != "":
			h, err := cache.HashFile(st.spec.Path(p.Archive))
			if err != nil {
				return nil, fmt.Errorf("images: preload[%d]: %w", i, err)
			}
			in[k] = "archive " + p.Archive + " " + h
		}
	}
	return in, nil
}

// Run implements builder.Stage.
func (st *Stage) Run(ctx context.Context, env *builder.Env, dir string) error {
	tree := filepath.Join(dir, TreeDir)
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	list := []builder.PreloadedImage{}
	defer func() { _ = os.RemoveAll(filepath.Join(dir, ".work")) }()
	if len(st.spec.Preload) == 0 {
		return writeJSON(filepath.Join(dir, builder.ImageList), list)
	}
	imgDir := filepath.Join(tree, strings.TrimPrefix(preload.Dir, "/"))
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	var ix preload.Index
	mtime := time.Unix(env.SourceDateEpoch, 0)
	for i, p := range st.spec.Preload {
		env.Progress(float64(i)/float64(len(st.spec.Preload)), describe(p))
		var (
			file    string
			entries []preload.Entry
			err     error
		)
		switch {
		case p.Traefik != "":
			file = "traefik-" + p.Traefik + ".tar"
			binary := "traefik-" + p.Traefik
			var img dockerarchive.Image
			img, err = st.traefik(ctx, env, p.Traefik, filepath.Join(imgDir, file), filepath.Join(imgDir, binary), mtime)
			entries = []preload.Entry{{Name: spec.TraefikImage(p.Traefik), Source: preload.SourceTraefik, Version: p.Traefik, Digest: img.ID, File: file, Binary: binary}}
		case p.Archive != "":
			file = fmt.Sprintf("archive-%03d-%s", i, filepath.Base(p.Archive))
			entries, err = copyArchive(ctx, st.spec.Path(p.Archive), filepath.Join(imgDir, file), file)
		}
		if err != nil {
			return fmt.Errorf("images: preload[%d]: %w", i, err)
		}
		sum, err := cache.HashFile(filepath.Join(imgDir, file))
		if err != nil {
			return fmt.Errorf("images: %w", err)
		}
		fi, err := os.Stat(filepath.Join(imgDir, file))
		if err != nil {
			return fmt.Errorf("images: %w", err)
		}
		for _, e := range entries {
			env.Log.Info("preloaded image", "image", e.Name, "digest", e.Digest, "file", file, "bytes", fi.Size(), "binary", e.Binary)
			pi := builder.PreloadedImage{Name: e.Name, Source: e.Source, Version: e.Version,
				Digest: e.Digest, File: file, SHA256: sum, Size: fi.Size()}
			if e.Binary != "" {
				if pi.BinarySHA256, err = cache.HashFile(filepath.Join(imgDir, e.Binary)); err != nil {
					return fmt.Errorf("images: %w", err)
				}
				pi.Binary = e.Binary
			}
			list = append(list, pi)
		}
		ix.Images = append(ix.Images, entries...)
	}
	if err := writeJSON(filepath.Join(imgDir, preload.IndexFile), ix); err != nil {
		return err
	}
	units := filepath.Join(tree, "etc/systemd/system")
	if err := os.MkdirAll(filepath.Join(units, "multi-user.target.wants"), 0o755); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if err := os.WriteFile(filepath.Join(units, UnitName), []byte(unit), 0o644); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if err := os.Symlink("/etc/systemd/system/"+UnitName, filepath.Join(units, "multi-user.target.wants", UnitName)); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	env.Progress(1, "done")
	return writeJSON(filepath.Join(dir, builder.ImageList), list)
}

func describe(p spec.PreloadImage) string {
	if p.Traefik != "" {
		return "traefik " + p.Traefik
	}
	return filepath.Base(p.Archive)
}

// copyArchive copies a user's `docker save` archive into the image and lists its images.
func copyArchive(ctx context.Context, src, dst, file string) ([]preload.Entry, error) {
	imgs, err := dockerarchive.Inspect(src)
	if err != nil {
		return nil, err
	}
	if err := files.Copy(ctx, dst, src, 0o644); err != nil {
		return nil, err
	}
	var out []preload.Entry
	for _, img := range imgs {
		for _, tag := range img.Tags {
			out = append(out, preload.Entry{Name: tag, Source: preload.SourceArchive, Digest: img.ID, File: file})
		}
	}
	return out, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	return nil
}
