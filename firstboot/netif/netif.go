// Package netif picks the cluster interface and this node's address on it: the configured interface, else
// the one with the default route, else the first with carrier; its primary IPv4 address and subnet.
package netif

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Choice is the selected interface and address.
type Choice struct {
	Interface string
	Addr      netip.Addr
	// Subnet is the interface's IPv4 network (masked), e.g. 10.77.0.0/24.
	Subnet netip.Prefix
	// Broadcast is the subnet's broadcast address (where LAN beacons go); invalid for /31 and /32.
	Broadcast netip.Addr
	// Reason says which rule chose the interface, for logs.
	Reason string
}

// Link is what selection needs to know about one interface.
type Link struct {
	Name     string
	Index    int
	Loopback bool
	// Carrier reports that the link is up with carrier (operstate up, or IFF_RUNNING where operstate is
	// unknown, as for some virtual NICs).
	Carrier bool
	Addrs   []Addr
}

// Addr is one IPv4 address of a link.
type Addr struct {
	Prefix    netip.Prefix
	Secondary bool
}

// Choose applies the selection rules to observed links. defaultIndex is the interface index of the IPv4
// default route (0: none). exclude is an address never to pick (the VIP, which keepalived adds to the
// interface of whichever node holds it).
func Choose(links []Link, defaultIndex int, configured string, exclude netip.Addr) (Choice, error) {
	slices.SortFunc(links, func(a, b Link) int { return a.Index - b.Index })
	pick := func(l Link, reason string) (Choice, error) {
		var best *Addr
		for i := range l.Addrs {
			a := &l.Addrs[i]
			ip := a.Prefix.Addr()
			if !ip.Is4() || !ip.IsGlobalUnicast() && !ip.IsPrivate() || ip == exclude {
				continue
			}
			if best == nil || best.Secondary && !a.Secondary {
				best = a
			}
		}
		if best == nil {
			return Choice{}, fmt.Errorf("netif: %s (%s) has no usable IPv4 address", l.Name, reason)
		}
		c := Choice{Interface: l.Name, Addr: best.Prefix.Addr(), Subnet: best.Prefix.Masked(), Reason: reason}
		c.Broadcast = broadcast(c.Subnet)
		return c, nil
	}
	if configured != "" {
		for _, l := range links {
			if l.Name == configured {
				return pick(l, "configured")
			}
		}
		return Choice{}, fmt.Errorf("netif: configured interface %q not found", configured)
	}
	if defaultIndex != 0 {
		for _, l := range links {
			if l.Index == defaultIndex {
				if c, err := pick(l, "default route"); err == nil {
					return c, nil
				}
			}
		}
	}
	for _, l := range links {
		if l.Loopback || !l.Carrier {
			continue
		}
		if c, err := pick(l, "first with carrier"); err == nil {
			return c, nil
		}
	}
	return Choice{}, errors.New("netif: no interface with carrier and an IPv4 address (and no default route)")
}

func broadcast(p netip.Prefix) netip.Addr {
	if !p.Addr().Is4() || p.Bits() >= 31 {
		return netip.Addr{}
	}
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Select observes the interfaces through netlink and chooses.
func Select(configured string, exclude netip.Addr) (Choice, error) {
	links, def, err := Observe()
	if err != nil {
		return Choice{}, err
	}
	return Choose(links, def, configured, exclude)
}

// Observe lists links with their IPv4 addresses and the default route's interface index.
func Observe() ([]Link, int, error) {
	nls, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, 0, fmt.Errorf("netif: list links: %w", err)
	}
	var links []Link
	for _, nl := range nls {
		a := nl.Attrs()
		l := Link{Name: a.Name, Index: a.Index, Loopback: a.Flags&(1<<2) != 0 || a.EncapType == "loopback",
			Carrier: a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown && a.RawFlags&unix.IFF_RUNNING != 0}
		addrs, err := netlink.AddrList(nl, netlink.FAMILY_V4)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, 0, fmt.Errorf("netif: addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok || ad.IPNet == nil {
				continue
			}
			bits, _ := ad.Mask.Size()
			l.Addrs = append(l.Addrs, Addr{Prefix: netip.PrefixFrom(ip.Unmap(), bits), Secondary: ad.Flags&unix.IFA_F_SECONDARY != 0})
		}
		links = append(links, l)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, 0, fmt.Errorf("netif: list routes: %w", err)
	}
	def, prio := 0, -1
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.LinkIndex != 0 && (prio < 0 || r.Priority < prio) {
			def, prio = r.LinkIndex, r.Priority
		}
	}
	return links, def, nil
}

func isZeroMask(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

// Addrs is the part of *netlink.Handle that reads a link's addresses (tests give fakes).
type Addrs interface {
	LinkByName(name string) (netlink.Link, error)
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
}

// hostAddrs reads the addresses of this network namespace through netlink's package handle.
type hostAddrs struct{}

func (hostAddrs) LinkByName(name string) (netlink.Link, error) { return netlink.LinkByName(name) }
func (hostAddrs) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return netlink.AddrList(l, family)
}

// HasAddr reports whether the interface named dev carries address a (e.g. whether this node holds the VIP).
func HasAddr(dev string, a netip.Addr) (bool, error) { return Carries(hostAddrs{}, dev, a) }

// Carries is HasAddr through h. A dump interrupted by a concurrent change (keepalived adding or removing the
// VIP at that moment) returns partial data with ErrDumpInterrupted: it is asked again, up to three times, and
// a dump still interrupted then is an error rather than a guess.
func Carries(h Addrs, dev string, a netip.Addr) (bool, error) {
	l, err := h.LinkByName(dev)
	if err != nil {
		return false, fmt.Errorf("netif: link %s: %w", dev, err)
	}
	var addrs []netlink.Addr
	for range 3 {
		if addrs, err = h.AddrList(l, netlink.FAMILY_ALL); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return false, fmt.Errorf("netif: addresses of %s: %w", dev, err)
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a.Unmap() {
			return true, nil
		}
	}
	return false, nil
}
