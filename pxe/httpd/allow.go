package httpd

import (
	"fmt"
	"net"
	"strings"
)

// Allow says which nodes may fetch the cluster config, by MAC address.
type Allow struct {
	any  bool
	macs map[string]bool
}

// ParseAllow reads --allow-mac values (any notation net.ParseMAC takes: aa:bb:…, AA-BB-…) and --allow-any.
func ParseAllow(macs []string, any bool) (Allow, error) {
	a := Allow{any: any, macs: map[string]bool{}}
	for _, s := range macs {
		m, err := net.ParseMAC(strings.TrimSpace(s))
		if err != nil || len(m) != 6 {
			return Allow{}, fmt.Errorf("pxe: --allow-mac %q: not an Ethernet MAC address (aa:bb:cc:dd:ee:ff)", s)
		}
		a.macs[m.String()] = true
	}
	return a, nil
}

// Permits reports whether a peer whose neighbour entry gave mac (nil: none) may have the config. A peer with no
// entry is refused unless any node may: what is not known cannot be allowed.
func (a Allow) Permits(mac net.HardwareAddr) bool {
	if a.any {
		return true
	}
	return mac != nil && a.macs[mac.String()]
}

// Empty reports that nothing is allowed: no MAC and not any.
func (a Allow) Empty() bool { return !a.any && len(a.macs) == 0 }

// Any reports --allow-any.
func (a Allow) Any() bool { return a.any }

// Len is the number of allowed MACs.
func (a Allow) Len() int { return len(a.macs) }
