package netif

import (
	"net/netip"
	"strings"
	"testing"
)

func addr(s string) Addr { return Addr{Prefix: netip.MustParsePrefix(s)} }

func TestChoose(t *testing.T) {
	lo := Link{Name: "lo", Index: 1, Loopback: true, Carrier: true, Addrs: []Addr{addr("127.0.0.1/8")}}
	eth0 := Link{Name: "eth0", Index: 2, Carrier: true, Addrs: []Addr{addr("10.77.0.11/24")}}
	eth1 := Link{Name: "eth1", Index: 3, Carrier: true, Addrs: []Addr{addr("192.168.5.7/16")}}
	down := Link{Name: "eth2", Index: 4, Carrier: false, Addrs: []Addr{addr("172.16.0.2/24")}}
	noAddr := Link{Name: "eth3", Index: 5, Carrier: true}
	withVIP := Link{Name: "eth0", Index: 2, Carrier: true, Addrs: []Addr{addr("10.77.0.250/24"), {Prefix: netip.MustParsePrefix("10.77.0.11/24"), Secondary: true}}}
	vip := netip.MustParseAddr("10.77.0.250")
	cases := []struct {
		name       string
		links      []Link
		def        int
		configured string
		exclude    netip.Addr
		want       string // iface addr subnet bcast reason, or "error: substring"
	}{
		{"configured wins", []Link{lo, eth0, eth1}, 2, "eth1", netip.Addr{}, "eth1 192.168.5.7 192.168.0.0/16 192.168.255.255 configured"},
		{"configured missing", []Link{lo, eth0}, 2, "ens9", netip.Addr{}, `error: "ens9" not found`},
		{"configured without address", []Link{lo, noAddr}, 0, "eth3", netip.Addr{}, "error: no usable IPv4"},
		{"default route", []Link{lo, eth0, eth1}, 3, "", netip.Addr{}, "eth1 192.168.5.7 192.168.0.0/16 192.168.255.255 default route"},
		{"first with carrier", []Link{eth1, down, lo, eth0}, 0, "", netip.Addr{}, "eth0 10.77.0.11 10.77.0.0/24 10.77.0.255 first with carrier"},
		{"skips down and addressless", []Link{lo, down, noAddr, eth1}, 0, "", netip.Addr{}, "eth1 192.168.5.7 192.168.0.0/16 192.168.255.255 first with carrier"},
		{"default route without address falls through", []Link{lo, noAddr, eth0}, 5, "", netip.Addr{}, "eth0 10.77.0.11 10.77.0.0/24 10.77.0.255 first with carrier"},
		{"never the VIP", []Link{lo, withVIP}, 2, "", vip, "eth0 10.77.0.11 10.77.0.0/24 10.77.0.255 default route"},
		{"nothing", []Link{lo, down}, 0, "", netip.Addr{}, "error: no interface"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Choose(c.links, c.def, c.configured, c.exclude)
			if strings.HasPrefix(c.want, "error: ") {
				if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(c.want, "error: ")) {
					t.Fatalf("err = %v, want %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := strings.Join([]string{got.Interface, got.Addr.String(), got.Subnet.String(), got.Broadcast.String(), got.Reason}, " ")
			if s != c.want {
				t.Fatalf("got  %s\nwant %s", s, c.want)
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/8": "10.255.255.255", "10.77.0.0/24": "10.77.0.255", "10.0.0.4/30": "10.0.0.7", "10.0.0.0/31": "invalid IP", "10.0.0.1/32": "invalid IP"} {
		if got := broadcast(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestObserve reads this machine's real interfaces: loopback always exists.
func TestObserve(t *testing.T) {
	links, _, err := Observe()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Loopback {
			if len(l.Addrs) == 0 || l.Addrs[0].Prefix.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("lo addresses %v", l.Addrs)
			}
			return
		}
	}
	t.Fatalf("no loopback among %+v", links)
}

func TestHasAddr(t *testing.T) {
	if ok, err := HasAddr("lo", netip.MustParseAddr("127.0.0.1")); err != nil || !ok {
		t.Fatalf("lo has 127.0.0.1: %v %v", ok, err)
	}
	if ok, err := HasAddr("lo", netip.MustParseAddr("192.0.2.77")); err != nil || ok {
		t.Fatalf("lo has 192.0.2.77: %v %v", ok, err)
	}
	if _, err := HasAddr("nonexistent0", netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Fatal("no error for a missing link")
	}
}
