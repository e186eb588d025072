// Package preload loads the container images baked into the node image (/usr/lib/kiln/images, written by
// the builder's images stage) into the local dockerd, at every boot, skipping those already present: a node
// with no registry still has the images its services run, also after a reimage emptied its /var.
package preload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// Dir is where the image keeps its preloaded archives and their index (docs/design.md, "Paths inside a node").
const Dir = "/usr/lib/kiln/images"

// IndexFile is the index's name in Dir.
const IndexFile = "index.json"

// Sources of a preloaded image (the spec's preload entry kinds).
const (
	// SourceTraefik is Traefik built from its Go module by the builder.
	SourceTraefik = "traefik"
	// SourceArchive is a `docker save` archive the spec names.
	SourceArchive = "archive"
)

// Index lists the preloaded images, in the spec's order.
type Index struct {
	Images []Entry `json:"images"`
}

// Entry is one preloaded image.
type Entry struct {
	// Name is the reference the image is loaded under (kiln/traefik:v3.7.13).
	Name string `json:"name"`
	// Source is SourceTraefik or SourceArchive; Version is Traefik's version, empty for an archive.
	Source  string `json:"source"`
	Version string `json:"version,omitempty"`
	// Digest is the image ID ("sha256:…", the digest of its config): what dockerd calls it once loaded.
	Digest string `json:"digest"`
	// File is the archive's name in Dir; several entries may share one (an archive of several images).
	File string `json:"file"`
	// Binary, for a Traefik entry, is the Traefik executable's name in Dir. The image holds no binary of its
	// own (only its CA bundle, a few hundred kilobytes to load): the ingress stack bind-mounts this file at
	// TraefikEntrypoint, read-only from the node's root. Loaded as a layer, the 144 MB binary costs a TCG
	// lab node minutes at every first boot; on the read-only root it costs nothing to "load".
	Binary string `json:"binary,omitempty"`
}

// TraefikEntrypoint is where a Traefik entry's image expects its binary (its entrypoint): the ingress stack
// mounts Entry.Binary there. It is where Traefik's own image has it, too.
const TraefikEntrypoint = "/usr/local/bin/traefik"

// ReadIndex reads dir's index; an image without preloaded images has none, which is an empty Index.
func ReadIndex(dir string) (Index, error) {
	var ix Index
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if errors.Is(err, os.ErrNotExist) {
		return ix, nil
	}
	if err != nil {
		return ix, fmt.Errorf("preload: %w", err)
	}
	if err := json.Unmarshal(b, &ix); err != nil {
		return ix, fmt.Errorf("preload: %s: %w", filepath.Join(dir, IndexFile), err)
	}
	return ix, nil
}

// Find returns the first entry from source, if any.
func (ix Index) Find(source string) (Entry, bool) {
	for _, e := range ix.Images {
		if e.Source == source {
			return e, true
		}
	}
	return Entry{}, false
}

// DockerAPI is the part of the Docker client Load uses (*client.Client satisfies it).
type DockerAPI interface {
	Ping(ctx context.Context) (types.Ping, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
}

// dockerdWait bounds the wait for dockerd to answer: the unit runs right after docker.service, whose socket
// may lag its start-up notification on a loaded node.
const dockerdWait = 2 * time.Minute

// Load makes every image of dir's index present in dockerd: an image whose name already resolves to its
// digest is skipped, any other archive is loaded (`docker load`), each file at most once. It returns how
// many archives it loaded. Loading is idempotent: a crash half-way is finished by the next run.
func Load(ctx context.Context, docker DockerAPI, dir string, log *slog.Logger) (int, error) {
	ix, err := ReadIndex(dir)
	if err != nil || len(ix.Images) == 0 {
		return 0, err
	}
	if err := waitDockerd(ctx, docker); err != nil {
		return 0, err
	}
	missing := map[string]bool{}
	var order []string
	for _, e := range ix.Images {
		present, err := Present(ctx, docker, e)
		if err != nil {
			return 0, err
		}
		if present {
			log.Debug("preloaded image already present", "image", e.Name, "digest", e.Digest)
			continue
		}
		if !missing[e.File] {
			order = append(order, e.File)
		}
		missing[e.File] = true
	}
	for _, f := range order {
		start := time.Now()
		if err := loadFile(ctx, docker, filepath.Join(dir, f)); err != nil {
			return 0, err
		}
		log.Info("loaded preloaded image archive", "file", f, "duration", time.Since(start).Round(time.Millisecond))
	}
	for _, e := range ix.Images {
		if present, err := Present(ctx, docker, e); err != nil {
			return len(order), err
		} else if !present {
			return len(order), fmt.Errorf("preload: %s loaded, but %s does not resolve to %s", e.File, e.Name, e.Digest)
		}
	}
	return len(order), nil
}

// Present reports whether e's name resolves to e's digest in dockerd.
func Present(ctx context.Context, docker DockerAPI, e Entry) (bool, error) {
	img, err := docker.ImageInspect(ctx, e.Name)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("preload: inspect %s: %w", e.Name, err)
	}
	return img.ID == e.Digest, nil
}

func loadFile(ctx context.Context, docker DockerAPI, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	defer f.Close()
	resp, err := docker.ImageLoad(ctx, f, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("preload: docker load %s: %w", path, err)
	}
	defer resp.Body.Close()
	// The body is a JSON message stream; an error in it (a corrupt layer) is the load's failure.
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("preload: docker load %s: reading the answer: %w", path, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("preload: docker load %s: %s", path, msg.Error)
		}
	}
}

func waitDockerd(ctx context.Context, docker DockerAPI) error {
	ctx, cancel := context.WithTimeout(ctx, dockerdWait)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := docker.Ping(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("preload: dockerd did not answer within %s: %w", dockerdWait, err)
		case <-time.After(time.Second): // dockerd start-up takes seconds; one ping a second costs nothing
		}
	}
}
