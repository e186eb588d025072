package formation

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/ingress"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/test/acmeca"
)

// PreloadedImage is one entry of manifest.json's images (docs/builder.md, "Preloaded images").
type PreloadedImage struct {
	Name    string `json:"name"`
	Source  string `json:"source"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
}

// PreloadedTraefik returns the Traefik image the build at img preloads, from the manifest.json beside it.
func PreloadedTraefik(img string) (PreloadedImage, error) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(img), "manifest.json"))
	if err != nil {
		return PreloadedImage{}, fmt.Errorf("preloaded traefik: %w", err)
	}
	var m struct {
		Images []PreloadedImage `json:"images"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return PreloadedImage{}, fmt.Errorf("preloaded traefik: manifest.json: %w", err)
	}
	for _, im := range m.Images {
		if im.Source == "traefik" {
			return im, nil
		}
	}
	return PreloadedImage{}, fmt.Errorf("preloaded traefik: %s preloads no Traefik (spec preload: - traefik: VERSION)", img)
}

// TraefikTask is where the ingress service's running task is: its id and its node's hostname ("" when no
// task is running).
func TraefikTask(ctx context.Context, n *lab.Node) (id, hostname string, err error) {
	out, err := Exec(ctx, n, "docker", "service", "ps", "--no-trunc", "--filter", "desired-state=running",
		"--format", "{{.ID}} {{.Node}} {{.CurrentState}}", ingress.ServiceName)
	if err != nil {
		return "", "", err
	}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "Running" {
			return f[0], f[1], nil
		}
	}
	return "", "", nil
}

// WaitHTTPS polls https://name/ through addr (every 2 s, bounded by ctx) until it answers 200 with a
// certificate for name that chains to root, and returns that answer.
func WaitHTTPS(ctx context.Context, ns string, addr netip.Addr, name string, root *x509.Certificate) (acmeca.TLSAnswer, error) {
	var got acmeca.TLSAnswer
	err := Poll(ctx, 2*time.Second, "https://"+name+"/ through "+addr.String()+" with a certificate from the test CA", func(ctx context.Context) (bool, string, error) {
		ans, err := acmeca.HTTPSGet(ctx, ns, addr, name, "/", 10*time.Second)
		if err != nil {
			return false, err.Error(), nil
		}
		if err := ans.VerifyChain(root, name); err != nil {
			return false, fmt.Sprintf("%d, certificate %s: %v", ans.Code, acmeca.Describe(ans.Leaf()), err), nil
		}
		if ans.Code != 200 {
			return false, fmt.Sprintf("%d %q", ans.Code, ans.Body), nil
		}
		got = ans
		return true, "", nil
	})
	return got, err
}
