package proxydhcp

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	self = Self{Addr: netip.MustParseAddr("10.77.0.1"), HTTPPort: 8080, BIOSFile: "undionly.kpxe",
		EFIFile: "ipxe.efi", Script: "boot.ipxe"}
	mac  = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	uuid = append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...) // option 97: type 0, then the UUID
)

// request is a PXE client's message as firmware sends it: vendor class "PXEClient:Arch:…", architecture, UUID.
func request(t *testing.T, typ dhcpv4.MessageType, arch iana.Arch, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, uuid),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	// Through the wire format, as the server gets it.
	p, err := dhcpv4.FromBytes(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// iPXE sends its user class as the bare string, not in RFC 3004's length-prefixed form.
var ipxeRaw = dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))

func TestDecideAnswers(t *testing.T) {
	for _, tt := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		port int
		typ  dhcpv4.MessageType
		file string
		ipxe bool
	}{
		{"BIOS PXE ROM", request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC), PortDHCP,
			dhcpv4.MessageTypeOffer, "undionly.kpxe", false},
		{"UEFI x86-64", request(t, dhcpv4.MessageTypeDiscover, iana.EFI_X86_64), PortDHCP,
			dhcpv4.MessageTypeOffer, "ipxe.efi", false},
		{"UEFI BC", request(t, dhcpv4.MessageTypeDiscover, iana.EFI_BC), PortDHCP,
			dhcpv4.MessageTypeOffer, "ipxe.efi", false},
		{"iPXE on BIOS", request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC, ipxeRaw), PortDHCP,
			dhcpv4.MessageTypeOffer, "http://10.77.0.1:8080/boot.ipxe", true},
		{"iPXE on UEFI, RFC 3004 user class", request(t, dhcpv4.MessageTypeDiscover, iana.EFI_X86_64,
			dhcpv4.WithOption(dhcpv4.OptRFC3004UserClass([]string{"iPXE"}))), PortDHCP,
			dhcpv4.MessageTypeOffer, "http://10.77.0.1:8080/boot.ipxe", true},
		{"ProxyDHCPREQUEST on 4011", request(t, dhcpv4.MessageTypeRequest, iana.INTEL_X86PC, ipxeRaw,
			dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 11)), dhcpv4.WithBroadcast(false)), PortPXE,
			dhcpv4.MessageTypeAck, "http://10.77.0.1:8080/boot.ipxe", true},
		{"UEFI BINL request on 4011", request(t, dhcpv4.MessageTypeRequest, iana.EFI_X86_64,
			dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 11))), PortPXE,
			dhcpv4.MessageTypeAck, "ipxe.efi", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.req, tt.port, self)
			if d.Reply == nil {
				t.Fatalf("no reply (ignored: %q)", d.Ignored)
			}
			r, err := dhcpv4.FromBytes(d.Reply.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"op", r.OpCode, dhcpv4.OpcodeBootReply},
				{"message type", r.MessageType(), tt.typ},
				{"xid", r.TransactionID, tt.req.TransactionID},
				{"chaddr", r.ClientHWAddr.String(), mac.String()},
				{"flags", r.Flags, tt.req.Flags},
				{"yiaddr (never an address)", r.YourIPAddr.String(), "0.0.0.0"},
				{"ciaddr", r.ClientIPAddr.String(), tt.req.ClientIPAddr.String()},
				{"siaddr", r.ServerIPAddr.String(), "10.77.0.1"},
				{"server identifier", r.ServerIdentifier().String(), "10.77.0.1"},
				{"vendor class", r.ClassIdentifier(), "PXEClient"},
				{"option 43", r.GetOneOption(dhcpv4.OptionVendorSpecificInformation), []byte{6, 1, 8, 255}},
				{"option 97", r.GetOneOption(dhcpv4.OptionClientMachineIdentifier), uuid},
				{"file", r.BootFileName, tt.file},
				{"decision file", d.BootFile, tt.file},
				{"ipxe", d.IPXE, tt.ipxe},
				{"lease time (none)", r.GetOneOption(dhcpv4.OptionIPAddressLeaseTime), []byte(nil)},
				{"router (none)", r.GetOneOption(dhcpv4.OptionRouter), []byte(nil)},
			}
			for _, c := range checks {
				if gb, ok := c.got.([]byte); ok {
					if !bytes.Equal(gb, c.want.([]byte)) {
						t.Errorf("%s: %v, want %v", c.what, gb, c.want)
					}
					continue
				}
				if c.got != c.want {
					t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestDecideStaysQuiet(t *testing.T) {
	plain, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	windows := request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("MSFT 5.0")))
	reply := request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC)
	reply.OpCode = dhcpv4.OpcodeBootReply
	for _, tt := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		port int
		why  string // "" : not a PXE client's business of ours, not logged
	}{
		{"plain DHCP client", plain, PortDHCP, ""},
		{"another vendor class", windows, PortDHCP, ""},
		{"a BOOTREPLY", reply, PortDHCP, ""},
		{"REQUEST for the LAN's DHCP server", request(t, dhcpv4.MessageTypeRequest, iana.INTEL_X86PC,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 254)))), PortDHCP, ""},
		{"REQUEST on 67 for a DHCP server on our host", request(t, dhcpv4.MessageTypeRequest, iana.EFI_X86_64,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1)))), PortDHCP, ""},
		{"REQUEST on 67 naming no server", request(t, dhcpv4.MessageTypeRequest, iana.INTEL_X86PC), PortDHCP, ""},
		{"DISCOVER on 4011", request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC), PortPXE, ""},
		{"RELEASE", request(t, dhcpv4.MessageTypeRelease, iana.INTEL_X86PC), PortDHCP, ""},
		{"ARM64 UEFI", request(t, dhcpv4.MessageTypeDiscover, iana.EFI_ARM64), PortDHCP, "architecture 11"},
		{"iPXE on ARM64", request(t, dhcpv4.MessageTypeDiscover, iana.EFI_ARM64, ipxeRaw), PortDHCP, "architecture 11"},
		{"UEFI HTTP boot", request(t, dhcpv4.MessageTypeDiscover, iana.EFI_X86_64_HTTP), PortDHCP, "architecture 16"},
		{"no option 93", request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC,
			dhcpv4.WithoutOption(dhcpv4.OptionClientSystemArchitectureType)), PortDHCP, "option 93"},
		{"relayed", request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC,
			dhcpv4.WithGatewayIP(net.IPv4(192, 168, 5, 1))), PortDHCP, "relayed by 192.168.5.1"},
		{"not Ethernet", request(t, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC,
			dhcpv4.WithHWType(iana.HWTypeInfiniband)), PortDHCP, "only Ethernet"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.req, tt.port, self)
			if d.Reply != nil {
				t.Fatalf("answered with %s", d.Reply.Summary())
			}
			if tt.why == "" && d.Ignored != "" || tt.why != "" && !strings.Contains(d.Ignored, tt.why) {
				t.Errorf("ignored because %q, want %q", d.Ignored, tt.why)
			}
		})
	}
}

// TestDecideRealFirmware feeds Decide the DHCP requests real firmware sent (captured on a lab bridge with a
// dnsmasq on the proxy's own address, 10.98.8.1): qemu's iPXE ROM under SeaBIOS and OVMF, OVMF's own UEFI PXE,
// and Debian's ipxe.efi chainloaded over TFTP.
func TestDecideRealFirmware(t *testing.T) {
	self := self
	self.Addr = netip.MustParseAddr("10.98.8.1")
	for _, tt := range []struct {
		file string
		arch iana.Arch
		boot string // "": no answer (the REQUEST selecting dnsmasq's lease, whose server identifier is ours)
	}{
		{"seabios-ipxe-rom-discover", iana.INTEL_X86PC, "http://10.98.8.1:8080/boot.ipxe"},
		{"seabios-ipxe-rom-request", iana.INTEL_X86PC, ""},
		{"ovmf-ipxe-rom-discover", iana.EFI_X86_64, "http://10.98.8.1:8080/boot.ipxe"},
		{"ovmf-uefi-pxe-discover", iana.EFI_X86_64, "ipxe.efi"},
		{"ovmf-uefi-pxe-request", iana.EFI_X86_64, ""},
		{"ovmf-ipxe-efi-discover", iana.EFI_X86_64, "http://10.98.8.1:8080/boot.ipxe"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tt.file+".bin"))
			if err != nil {
				t.Fatal(err)
			}
			req, err := dhcpv4.FromBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			d := Decide(req, PortDHCP, self)
			if tt.boot == "" {
				if d.Reply != nil || d.Ignored != "" {
					t.Fatalf("answered %v or logged %q; the lease's REQUEST is the DHCP server's", d.Reply, d.Ignored)
				}
				return
			}
			if d.Reply == nil {
				t.Fatalf("no answer: %q", d.Ignored)
			}
			if d.Arch != tt.arch || d.Reply.BootFileName != tt.boot || d.Reply.MessageType() != dhcpv4.MessageTypeOffer ||
				d.Reply.ClientHWAddr.String() != "52:54:00:98:08:01" || d.Reply.TransactionID != req.TransactionID {
				t.Errorf("arch %d, answer %s", d.Arch, d.Reply.Summary())
			}
			if uuid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); uuid != nil &&
				!bytes.Equal(d.Reply.GetOneOption(dhcpv4.OptionClientMachineIdentifier), uuid) {
				t.Error("the client's UUID (option 97) is not echoed")
			}
		})
	}
}
