// Package neigh answers "which MAC address is this LAN peer": the kernel's IPv4 neighbour (ARP) table, the same
// answer the kernel used to send the peer our packets.
package neigh

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Table reads the neighbour table of the network namespace it was opened in, whichever OS thread asks later.
type Table struct {
	h *netlink.Handle
}

// Open opens a netlink handle in the calling thread's network namespace.
func Open() (*Table, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("pxe: netlink: %w", err)
	}
	return &Table{h: h}, nil
}

// MAC is ip's hardware address, or nil when the table has no usable entry: none, an unresolved or failed one,
// or one without a hardware address (loopback and local addresses).
func (t *Table) MAC(ip netip.Addr) (net.HardwareAddr, error) {
	ip = ip.Unmap()
	if !ip.Is4() {
		return nil, nil
	}
	list, err := t.h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("pxe: neighbour table: %w", err)
	}
	for _, n := range list {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != ip || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 {
			continue
		}
		if len(n.HardwareAddr) == 6 && !bytes.Equal(n.HardwareAddr, make([]byte, 6)) {
			return n.HardwareAddr, nil
		}
	}
	return nil, nil
}

// Close releases the handle.
func (t *Table) Close() { t.h.Close() }
