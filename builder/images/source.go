package images

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/kiln-project/kiln/internal/run"
)

// legoModule is Traefik's ACME client.
const legoModule = "github.com/go-acme/lego/v5"

// sourcePatches versions what sourceTree changes in Traefik's source: a change must re-run the stage.
const sourcePatches = "3"

// noDNSProviders replaces lego's generated registry of DNS-01 providers. Fourteen of those providers import
// cloud SDKs the module proxy kiln builds against does not serve (403), and kiln's ingress uses HTTP-01
// only: without the registry none of them is compiled, and a DNS challenge configured by hand fails with
// lego's own "unrecognized DNS provider".
const noDNSProviders = `// Code written by kiln's images stage: no DNS-01 providers (kiln's ingress uses HTTP-01).

package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName Factory for DNS providers.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("unrecognized DNS provider: %s (this Traefik has no DNS-01 providers)", name)
}
`

// extModule is Traefik's dynamic-configuration extension point, a nested module of its repository that its
// go.mod replaces with ./pkg/config/dynamic/ext: the module zip leaves nested modules out, and the proxy
// serves no version of it. In the open-source build the extension adds nothing: the types Traefik's
// dynamic configuration embeds (HTTP, Router) are empty, and kiln writes them so.
const (
	extDir    = "pkg/config/dynamic/ext"
	extGoMod  = "module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n"
	extSource = `// Package ext is written by kiln's images stage: Traefik's empty dynamic-configuration extension point.
package ext

// HTTP extends dynamic.HTTP; empty.
type HTTP struct{}

// Router extends dynamic.Router; empty.
type Router struct{}
`
)

// httpAuth is go-http-auth: Traefik's go.mod replaces it by its own fork, whose pseudo-version the module
// proxy does not serve. The build uses upstream v0.4.0, which the fork is based on, plus the two functions
// the fork added and Traefik's auth middlewares call (httpAuthForkAPI).
const (
	httpAuthModule  = "github.com/abbot/go-http-auth"
	httpAuthVersion = "v0.4.0"
	httpAuthForkAPI = `// Written by kiln's images stage: the two functions Traefik's go-http-auth fork adds to v0.4.0.

package auth

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// CheckSecret reports whether password matches secret, an htpasswd hash ({SHA}, bcrypt, else MD5 crypt).
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, c := range compareFuncs[1:] {
		if strings.HasPrefix(secret, c.prefix) {
			compare = c.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale is RequireAuth telling the client its nonce was stale (RFC 7616 3.3): it may retry with
// the new nonce without asking the user again.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	if len(a.clients) > a.ClientCacheSize+a.ClientCacheTolerance {
		a.Purge(a.ClientCacheTolerance * 2)
	}
	nonce := RandomKey()
	a.clients[nonce] = &digest_client{nc: 0, last_seen: time.Now().UnixNano()}
	w.Header().Set(contentType, a.Headers.V().UnauthContentType)
	w.Header().Set(a.Headers.V().Authenticate,
		fmt.Sprintf(` + "`" + `Digest realm="%s", nonce="%s", opaque="%s", algorithm="MD5", qop="auth", stale=true` + "`" + `,
			a.Realm, nonce, a.Opaque))
	w.WriteHeader(a.Headers.V().UnauthCode)
	w.Write([]byte(a.Headers.V().UnauthResponse))
}
`
)

// httpAuthReplace matches Traefik's replace of go-http-auth by its fork.
var httpAuthReplace = regexp.MustCompile(`(?m)^(\s*(?:replace\s+)?github\.com/abbot/go-http-auth\s+=>\s+)github\.com/containous/go-http-auth\s+\S+`)

// sourceTree downloads Traefik and lego at the versions Traefik pins and lays out a buildable copy under
// work/src: traefik/ with its go.mod pointing lego at ../lego and go-http-auth at upstream, and lego/ without
// its DNS provider registry. It returns the traefik directory.
func sourceTree(ctx context.Context, work, version string) (string, error) {
	traefikDir, err := download(ctx, work, TraefikModule+"@"+version)
	if err != nil {
		return "", err
	}
	gomod, err := os.ReadFile(filepath.Join(traefikDir, "go.mod"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(legoModule) + `\s+(v\S+)`).FindSubmatch(gomod)
	if m == nil {
		return "", fmt.Errorf("%s/go.mod requires no %s", TraefikModule, legoModule)
	}
	legoDir, err := download(ctx, work, legoModule+"@"+string(m[1]))
	if err != nil {
		return "", err
	}
	src := filepath.Join(work, "src")
	if err := os.RemoveAll(src); err != nil {
		return "", err
	}
	dst := filepath.Join(src, "traefik")
	if err := copyWritable(traefikDir, dst); err != nil {
		return "", err
	}
	if err := copyWritable(legoDir, filepath.Join(src, "lego")); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "lego", "providers", "dns", "zz_gen_dns_providers.go"), []byte(noDNSProviders), 0o644); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dst, extDir), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dst, extDir, "go.mod"), []byte(extGoMod), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dst, extDir, "ext.go"), []byte(extSource), 0o644); err != nil {
		return "", err
	}
	authDir, err := download(ctx, work, httpAuthModule+"@"+httpAuthVersion)
	if err != nil {
		return "", err
	}
	if err := copyWritable(authDir, filepath.Join(src, "go-http-auth")); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go-http-auth", "kiln_fork_api.go"), []byte(httpAuthForkAPI), 0o644); err != nil {
		return "", err
	}
	// v0.4.0 predates modules: a replacement directory needs a go.mod; its imports (x/crypto, x/net) resolve
	// from Traefik's own requirements.
	if err := os.WriteFile(filepath.Join(src, "go-http-auth", "go.mod"), []byte("module "+httpAuthModule+"\n\ngo 1.12\n"), 0o644); err != nil {
		return "", err
	}
	patched := httpAuthReplace.ReplaceAll(gomod, []byte("${1}../go-http-auth"))
	patched = append(patched, []byte("\nreplace "+legoModule+" => ../lego\n")...)
	if err := os.WriteFile(filepath.Join(dst, "go.mod"), patched, 0o644); err != nil {
		return "", err
	}
	return dst, nil
}

// download fetches a module version into the module cache and returns its directory.
func download(ctx context.Context, work, modVersion string) (string, error) {
	out, err := run.CmdOpts(ctx, run.Opts{Dir: work, Env: goEnv}, nil, "go", "mod", "download", "-json", modVersion)
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr == nil && mod.Error != "" {
		return "", fmt.Errorf("%s: %s", modVersion, mod.Error)
	}
	if err != nil {
		return "", fmt.Errorf("download %s: %w", modVersion, err)
	}
	if mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s named no directory", modVersion)
	}
	return mod.Dir, nil
}

// copyWritable copies a module directory (read-only in the module cache) into dst with writable modes.
func copyWritable(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		default:
			return fmt.Errorf("%s: unexpected file type in a module", strings.TrimPrefix(p, src))
		}
	})
}
