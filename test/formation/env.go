package formation

import (
	"fmt"
	"net/netip"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/internal/testenv"
)

// VIP is the cluster's floating address in every lab: inside the lab subnet 10.77.0.0/24 (docs/lab.md), above
// every address the lab hands out (10.77.0.11 … 10.77.0.250) and not the lab host's.
var VIP = netip.MustParsePrefix("10.77.0.254/24")

// OffLANSource is an address the tests add to the lab bridge so the lab host can also probe nodes from outside
// the cluster's subnet: nodes answer it through their default route, which is the lab host (dnsmasq router
// option). TEST-NET-2, so it can never mean a real host.
var OffLANSource = netip.MustParsePrefix("198.51.100.1/32")

// RepoRoot, ImagePath and BinDir: see internal/testenv (shared with builder/boottest).
var (
	RepoRoot  = testenv.RepoRoot
	ImagePath = testenv.ImagePath
	BinDir    = testenv.BinDir
)

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
