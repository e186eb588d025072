package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/internal/dockerarchive"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
)

// TraefikModule is the Go module Traefik is built from.
const TraefikModule = "github.com/traefik/traefik/v3"

// caBundle is Debian's CA bundle path, in the package tree and in the image: Traefik checks the ACME
// directory's TLS certificate against it (a static Go binary has no other trust store).
const caBundle = "etc/ssl/certs/ca-certificates.crt"

// goEnv pins how Traefik is fetched and compiled, whatever the caller's environment says: a static
// linux/amd64 binary (CGO_ENABLED=0: the image holds no libc), this machine's Go (GOTOOLCHAIN=local: no
// toolchain download behind the user's back). The build itself runs with -mod=mod: the copy's go.sum gains
// the sums of the substituted modules (checked against the checksum database like any download).
var goEnv = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=readonly -buildvcs=false", "GOTOOLCHAIN=local", "GOWORK=off"}

// goVersion is the compiler's version: a new Go makes another binary, so it is part of the stage's inputs.
func goVersion(ctx context.Context) (string, error) {
	out, err := run.CmdOpts(ctx, run.Opts{Env: goEnv}, nil, "go", "env", "GOVERSION")
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("building Traefik needs Go on PATH (go.dev/dl): %w", err)
		}
		return "", fmt.Errorf("go version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// buildTraefik builds Traefik at version from its Go module into dir/traefikBinary(version) (the compile
// stage). The module is fetched with `go mod download` (the Go module proxy, like any dependency) and built
// from a copy with the substitutions of sourceTree: Traefik's go.mod has replace directives, which `go install
// module@version` refuses, and some of its dependencies are not served by every module proxy.
func buildTraefik(ctx context.Context, env *builder.Env, dir, version string) error {
	work := filepath.Join(dir, ".work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	src, err := sourceTree(ctx, work, version)
	if err != nil {
		return fmt.Errorf("traefik %s: %w", version, err)
	}
	mtime := time.Unix(env.SourceDateEpoch, 0)
	ldflags := strings.Join([]string{"-s", "-w",
		"-X", TraefikModule + "/pkg/version.Version=" + version,
		"-X", TraefikModule + "/pkg/version.Codename=kiln",
		"-X", TraefikModule + "/pkg/version.BuildDate=" + mtime.UTC().Format(time.RFC3339)}, " ")
	start := time.Now()
	env.Log.Info("building traefik from its Go module (minutes on a cold Go build cache)", "version", version, "source", src)
	err = run.LinesOpts(ctx, run.Opts{Dir: src, Env: append(goEnv, "GOFLAGS=-mod=mod -buildvcs=false")}, func(line string) { env.Log.Debug("go build", "line", line) },
		"go", "build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(dir, traefikBinary(version)), "./cmd/traefik")
	if err != nil {
		return fmt.Errorf("traefik %s: build: %w", version, err)
	}
	env.Log.Info("built traefik", "version", version, "duration", time.Since(start).Round(time.Second))
	return nil
}

// traefik writes Traefik's image for version as a one-layer archive holding the CA bundle and no binary, and
// copies the compile stage's binary to binPath: the ingress stack bind-mounts that file (on the node's
// read-only root) at preload.TraefikEntrypoint (docs/builder.md, "Preloaded images").
func (st *Stage) traefik(ctx context.Context, env *builder.Env, version, archive, binPath string, mtime time.Time) (dockerarchive.Image, error) {
	bin := filepath.Join(env.Outputs["compile"], traefikBinary(version))
	if err := files.Copy(ctx, binPath, bin, 0o755); err != nil {
		return dockerarchive.Image{}, fmt.Errorf("traefik %s: %w", version, err)
	}
	if err := os.Chtimes(binPath, mtime, mtime); err != nil {
		return dockerarchive.Image{}, fmt.Errorf("traefik %s: %w", version, err)
	}
	entry := strings.TrimPrefix(preload.TraefikEntrypoint, "/")
	layer := []dockerarchive.File{
		// The mount point of the binary (an empty file: run without the mount, the image fails at once).
		{Path: entry, Mode: 0o755},
		{Path: "tmp", Mode: fs.ModeDir | 0o1777},
	}
	// The CA bundle comes from the image's own ca-certificates package (the packages stage's tree), so the
	// image trusts what the node trusts and the stage reads nothing from the build host.
	if pkgs := env.Outputs["packages"]; pkgs != "" {
		ca := filepath.Join(pkgs, "tree", caBundle)
		if _, err := os.Stat(ca); err == nil {
			layer = append(layer, dockerarchive.File{Path: caBundle, Mode: 0o644, Source: ca})
		} else {
			env.Log.Warn("the image has no CA bundle (add ca-certificates to packages): Traefik will not trust a public ACME CA", "path", ca)
		}
	}
	cfg := dockerarchive.Config{
		Entrypoint:   []string{preload.TraefikEntrypoint},
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/" + caBundle},
		ExposedPorts: []string{"80/tcp", "443/tcp"},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "traefik",
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://" + TraefikModule,
		},
	}
	img, err := dockerarchive.WriteSingleLayer(archive, spec.TraefikImage(version), cfg, layer, mtime)
	if err != nil {
		return dockerarchive.Image{}, fmt.Errorf("traefik %s: %w", version, err)
	}
	return img, nil
}
