// Package proxydhcp is kiln's proxyDHCP server: it answers only the boot part of a PXE client's DHCP exchange
// (which file to boot, from which server) and never an address, so it runs beside the LAN's own DHCP server
// without touching it, the way pixiecore and dnsmasq's proxy mode do.
package proxydhcp

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Ports a PXE client sends to: the DHCP server port (broadcast DISCOVER) and the PXE boot server port
// (ProxyDHCPREQUEST, unicast to the proxy's server identifier, sent by iPXE and by UEFI's PXE driver).
const (
	PortDHCP = 67
	PortPXE  = 4011
)

// Self is what a reply says about this server.
type Self struct {
	Addr     netip.Addr // our IPv4 address on the boot LAN: siaddr, server identifier, the script URL's host
	HTTPPort int
	// Files for firmware that is not iPXE, fetched over TFTP from Addr.
	BIOSFile, EFIFile string
	// Script is the HTTP path of the iPXE script, without the leading slash.
	Script string
}

// Decision is the answer to one request. Reply is nil when the request gets none; Ignored then says why, or is
// empty for traffic that is not a PXE client's (every plain DHCP client on the LAN: not worth a log line).
type Decision struct {
	Reply    *dhcpv4.DHCPv4
	Ignored  string
	MAC      net.HardwareAddr
	Arch     iana.Arch
	IPXE     bool   // the client is iPXE (user class "iPXE"), so it can fetch the script over HTTP
	BootFile string // what the reply tells the client to boot
}

// pxeVendorOptions is option 43 for every reply: PXE_DISCOVERY_CONTROL (6) = 8, "boot the file named in this
// offer, no boot server discovery, no menu", then the end tag.
var pxeVendorOptions = []byte{6, 1, 8, 255}

// Decide is the whole protocol decision: which requests get an answer and what it holds. Pure: the server
// around it only moves bytes. port is the port the request arrived on.
func Decide(req *dhcpv4.DHCPv4, port int, self Self) Decision {
	d := Decision{MAC: req.ClientHWAddr}
	if req.OpCode != dhcpv4.OpcodeBootRequest || !strings.HasPrefix(req.ClassIdentifier(), "PXEClient") {
		return d
	}
	var reply dhcpv4.MessageType
	switch t := req.MessageType(); {
	case t == dhcpv4.MessageTypeDiscover && port == PortDHCP:
		reply = dhcpv4.MessageTypeOffer
	case t == dhcpv4.MessageTypeRequest && port == PortPXE:
		reply = dhcpv4.MessageTypeAck
	default:
		// The rest of the exchange is the LAN's DHCP server's. A REQUEST on 67 always selects its lease, even when
		// it names our address as server identifier (a DHCP server on this same host): an ACK from us, with no
		// address in it, could be taken for the lease's.
		return d
	}
	if g := req.GatewayIPAddr; g != nil && !g.IsUnspecified() {
		d.Ignored = fmt.Sprintf("relayed by %s: proxyDHCP serves its own LAN only", g)
		return d
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		d.Ignored = fmt.Sprintf("hardware type %s: only Ethernet clients are served", req.HWType)
		return d
	}
	archs := req.ClientArch()
	if len(archs) == 0 {
		d.Ignored = "no client architecture (option 93): not a PXE client kiln can serve"
		return d
	}
	d.Arch = archs[0]
	d.IPXE = slices.Contains(req.UserClass(), "iPXE")
	switch {
	case d.Arch != iana.INTEL_X86PC && d.Arch != iana.EFI_X86_64 && d.Arch != iana.EFI_BC:
		// kiln images are x86-64; a client of another architecture could not run the kernel.
		d.Ignored = fmt.Sprintf("architecture %d (%s): kiln serves x86-64 BIOS (0) and UEFI (7, 9) clients", uint16(d.Arch), d.Arch)
		return d
	case d.IPXE:
		d.BootFile = fmt.Sprintf("http://%s/%s", netip.AddrPortFrom(self.Addr, uint16(self.HTTPPort)), self.Script)
	case d.Arch == iana.INTEL_X86PC:
		d.BootFile = self.BIOSFile
	default:
		d.BootFile = self.EFIFile
	}
	server := net.IP(self.Addr.AsSlice())
	r, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(reply),
		dhcpv4.WithServerIP(server),
		dhcpv4.WithClientIP(req.ClientIPAddr),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		// Option 60 "PXEClient" marks the reply as PXE's: without it a PXE ROM ignores the offer.
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
		dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions),
		// The PXE spec has the client's UUID echoed; some ROMs drop a proxy reply without it.
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionClientMachineIdentifier),
	)
	if err != nil {
		d.Ignored = fmt.Sprintf("build reply: %v", err)
		return d
	}
	r.YourIPAddr = net.IPv4zero
	r.BootFileName = d.BootFile
	d.Reply = r
	return d
}
