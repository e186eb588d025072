package firewall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
)

// PersistPath is where the agent keeps the last ruleset it loaded, on the state partition, so the next boot
// starts from the members it last knew (Boot).
const PersistPath = "/var/lib/kiln/firewall.nft"

// BootRules is the ruleset of a node whose agent has loaded nothing yet: 22, 80 and 443 from anyone, the
// membership ports from anyone (discovery is authenticated by the cluster key, and at boot the node knows
// neither its subnet nor its peers), and every cluster port closed.
func BootRules(discoveryPorts []uint16) Rules {
	return Rules{
		Discovery:      []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		DiscoveryPorts: discoveryPorts,
	}
}

// Boot loads the table before any service listens (kiln-firewall.service, ordered before glusterd, dockerd
// and sshd): the ruleset the agent last loaded (persisted, so members reach each other from the first packet
// after a reboot), or BootRules when there is none or it does not load. It returns which one it loaded.
func Boot(ctx context.Context, nft NFT, persisted string, discoveryPorts []uint16) (string, error) {
	r := &Reconciler{nft: nft}
	script, err := os.ReadFile(persisted)
	switch {
	case err == nil && MarkerOf(string(script)) != "":
		lerr := r.Apply(ctx, string(script))
		if lerr == nil {
			return persisted, nil
		}
		err = lerr
	case err == nil:
		err = errors.New("no kiln marker")
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("firewall: last ruleset %s not loaded, using the boot rules: %w", persisted, err)
	} else {
		err = nil
	}
	if lerr := r.Apply(ctx, Render(BootRules(discoveryPorts))); lerr != nil {
		return "", errors.Join(err, lerr)
	}
	return "boot rules", err
}
