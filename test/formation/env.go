package formation

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/kiln-project/kiln/firstboot/config"
)

// VIP is the cluster's floating address in every lab: inside the lab subnet 10.77.0.0/24 (docs/lab.md), above
// every address the lab hands out (10.77.0.11 … 10.77.0.250) and not the lab host's.
var VIP = netip.MustParsePrefix("10.77.0.254/24")

// OffLANSource is an address the tests add to the lab bridge so the lab host can also probe nodes from outside
// the cluster's subnet: nodes answer it through their default route, which is the lab host (dnsmasq router
// option). TEST-NET-2, so it can never mean a real host.
var OffLANSource = netip.MustParsePrefix("198.51.100.1/32")

// RepoRoot is the repository root, found from this source file (tests and `go run` both have it).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ImagePath is $KILN_IMAGE, default <repo>/out/node.raw, made absolute.
func ImagePath() (string, error) {
	img := os.Getenv("KILN_IMAGE")
	if img == "" {
		img = filepath.Join(RepoRoot(), "out", "node.raw")
	}
	abs, err := filepath.Abs(img)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("image: %w (make image, or set KILN_IMAGE)", err)
	}
	return abs, nil
}

// BinDir is $KILN_BIN, default <repo>/bin.
func BinDir() string {
	if b := os.Getenv("KILN_BIN"); b != "" {
		return b
	}
	return filepath.Join(RepoRoot(), "bin")
}

// ClusterConfig generates a fresh cluster config the way `kiln cluster new` does (firstboot/config.New: a random
// key), with the lab VIP and the given size, and returns its file bytes.
func ClusterConfig(name string, size int) ([]byte, *config.Config, error) {
	c, err := config.New(name)
	if err != nil {
		return nil, nil, err
	}
	c.Cluster.Size = size
	c.Cluster.VIP = VIP
	if err := c.Validate(); err != nil {
		return nil, nil, fmt.Errorf("cluster config: %w", err)
	}
	b, err := c.Marshal()
	if err != nil {
		return nil, nil, fmt.Errorf("cluster config: %w", err)
	}
	return b, c, nil
}
