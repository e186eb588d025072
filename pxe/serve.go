// Package pxe is `kiln pxe serve`: one process that netboots kiln nodes from a pxe directory on the LAN it
// shares with them. proxyDHCP (pxe/proxydhcp) tells PXE clients what to boot and never hands out an address,
// so the LAN's own DHCP server keeps doing that; TFTP (pxe/tftpd) carries iPXE to firmware that is not iPXE;
// HTTP (pxe/httpd) carries the script, the kernel, the initrd, the layers and the cluster config.
package pxe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/pxe/httpd"
	"github.com/kiln-project/kiln/pxe/neigh"
	"github.com/kiln-project/kiln/pxe/proxydhcp"
	"github.com/kiln-project/kiln/pxe/pxedir"
	"github.com/kiln-project/kiln/pxe/tftpd"
)

// DefaultHTTPPort is --http-port's default.
const DefaultHTTPPort = 8080

// Options are `kiln pxe serve`'s flags.
type Options struct {
	Dir        string   // --dir: OUT/pxe of a pxe build
	ConfigFile string   // --config: the cluster config served at /cluster.yaml; "" for none
	Interface  string   // --interface: the boot LAN; "" for the default route's
	HTTPPort   int      // --http-port
	AllowMACs  []string // --allow-mac
	AllowAny   bool     // --allow-any
	Log        *slog.Logger
}

// Server is a started `kiln pxe serve`: every check passed and every port bound.
type Server struct {
	Interface string
	Addr      netip.Addr
	HTTPPort  int

	log   *slog.Logger
	dir   *pxedir.Dir
	neigh *neigh.Table
	dhcp  *proxydhcp.Server
	tftp  *tftpd.Server
	http  *httpd.Server
}

// Start checks everything that can be wrong before a node asks (the directory and its hashes, the config and
// who may have it, the interface, the ports) and binds every port.
func Start(ctx context.Context, o Options) (_ *Server, err error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	allow, err := httpd.ParseAllow(o.AllowMACs, o.AllowAny)
	if err != nil {
		return nil, err
	}
	var cfg []byte
	if o.ConfigFile != "" {
		if cfg, err = os.ReadFile(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("pxe: --config: %w", err)
		}
		if _, err := config.ParseFile(o.ConfigFile, cfg); err != nil {
			return nil, fmt.Errorf("pxe: --config is not a valid cluster config (kiln cluster new writes one): %w", err)
		}
		if allow.Empty() {
			return nil, fmt.Errorf("pxe: --config holds the cluster key: name the nodes that may fetch it with " +
				"--allow-mac MAC (repeatable), or serve it to anyone on the LAN with --allow-any")
		}
	}
	if o.HTTPPort <= 0 || o.HTTPPort > 65535 {
		return nil, fmt.Errorf("pxe: --http-port %d: not a TCP port", o.HTTPPort)
	}
	ifname, addr, err := pickInterface(o.Interface)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	dir, err := pxedir.Open(o.Dir)
	if err != nil {
		return nil, err
	}
	s := &Server{Interface: ifname, Addr: addr, HTTPPort: o.HTTPPort, log: log, dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	script, _ := dir.File(pxedir.Script)
	raw, err := io.ReadAll(script.Reader())
	if err == nil {
		_, err = httpd.Rewrite(raw, "http://check/")
	}
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, o.Dir)
	}
	log.Info("pxe: directory verified", "dir", o.Dir, "image", dir.Name, "files", len(dir.Names()),
		"bytes", dir.Size(), "dur", time.Since(start).Round(time.Millisecond))
	if s.neigh, err = neigh.Open(); err != nil {
		return nil, err
	}

	want := map[string]int64{}
	for _, n := range []string{pxedir.Kernel, pxedir.Initrd, pxedir.Base, pxedir.Node} {
		f, _ := dir.File(n)
		want[n] = f.Size
	}
	if cfg != nil {
		want[httpd.ConfigPath] = int64(len(cfg))
	}
	j := newJournal(log, want)

	// proxyDHCP first: its exclusive port 4011 is what tells a second proxy on this host, by name.
	self := proxydhcp.Self{Addr: addr, HTTPPort: o.HTTPPort, BIOSFile: pxedir.BIOS, EFIFile: pxedir.EFI, Script: pxedir.Script}
	if s.dhcp, err = proxydhcp.Listen(ctx, ifname, self, log, func(d proxydhcp.Decision) {
		j.booting(d.MAC, netip.Addr{})
	}); err != nil {
		return nil, err
	}

	if s.tftp, err = tftpd.Listen(ctx, addr, dir, s.neigh, log, func(t tftpd.Transfer) {
		if t.Err == nil {
			j.served(t.MAC, t.Peer.Addr(), t.File, t.Bytes)
		}
	}); err != nil {
		return nil, err
	}
	h := &httpd.Handler{Dir: dir, Config: cfg, Allow: allow, Neigh: s.neigh, Log: log, ConfigTime: time.Now(),
		Observe: func(f httpd.Fetch) {
			if f.File == pxedir.Script {
				j.booting(f.MAC, f.Peer)
			}
			if f.Status/100 == 2 {
				j.served(f.MAC, f.Peer, f.File, f.Bytes)
			}
		}}
	if s.http, err = httpd.Listen(ctx, netip.AddrPortFrom(addr, uint16(o.HTTPPort)), h, log); err != nil {
		return nil, err
	}
	log.Info("pxe: serving", "interface", ifname, "addr", addr, "proxydhcp", "udp 67, 4011", "tftp", "udp 69",
		"http", fmt.Sprintf("http://%s/", netip.AddrPortFrom(addr, uint16(o.HTTPPort))), "image", dir.Name)
	switch {
	case cfg == nil:
		log.Info("pxe: no --config: /cluster.yaml is 404, nodes use their image's default config")
	case allow.Any():
		log.Warn("pxe: --allow-any: the cluster config, and the cluster key in it, goes to any host on the LAN that asks")
	default:
		log.Info("pxe: cluster config served to allowed MACs only", "macs", strings.Join(o.AllowMACs, ","))
	}
	if !allow.Empty() && cfg == nil {
		log.Warn("pxe: --allow-mac/--allow-any without --config: there is no config to allow")
	}
	return s, nil
}

// Serve serves until ctx ends (SIGINT/SIGTERM in the command), then stops every server. It returns the first
// server failure, or nil after ctx ended.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	for _, serve := range []func() error{s.dhcp.Serve, s.tftp.Serve, s.http.Serve} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- serve()
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.close()
	wg.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	s.log.Info("pxe: stopped")
	return err
}

// close stops whatever was started; HTTP transfers get a few seconds to end.
func (s *Server) close() {
	if s.dhcp != nil {
		s.dhcp.Close()
	}
	if s.http != nil {
		s.http.Close(3 * time.Second)
	}
	if s.tftp != nil {
		s.tftp.Close()
	}
	if s.neigh != nil {
		s.neigh.Close()
	}
	s.dir.Close()
}

// pickInterface is the named interface, or the one holding the default route, with its first IPv4 address.
func pickInterface(name string) (string, netip.Addr, error) {
	var link netlink.Link
	var err error
	if name != "" {
		if link, err = netlink.LinkByName(name); err != nil {
			return "", netip.Addr{}, fmt.Errorf("pxe: --interface %s: %w", name, err)
		}
	} else {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return "", netip.Addr{}, fmt.Errorf("pxe: routes: %w", err)
		}
		for _, r := range routes {
			if r.LinkIndex > 0 && (r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZero(r.Dst.Mask))) {
				if link, err = netlink.LinkByIndex(r.LinkIndex); err != nil {
					return "", netip.Addr{}, fmt.Errorf("pxe: default route's interface: %w", err)
				}
				break
			}
		}
		if link == nil {
			return "", netip.Addr{}, errors.New("pxe: no default route to pick the boot LAN's interface from: name it with --interface")
		}
	}
	ifname := link.Attrs().Name
	if link.Attrs().Flags&net.FlagUp == 0 {
		return "", netip.Addr{}, fmt.Errorf("pxe: interface %s is down", ifname)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return "", netip.Addr{}, fmt.Errorf("pxe: addresses of %s: %w", ifname, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && a.Flags&unix.IFA_F_SECONDARY == 0 {
			return ifname, ip, nil
		}
	}
	return "", netip.Addr{}, fmt.Errorf("pxe: interface %s has no IPv4 address: the nodes reach the server at it", ifname)
}

func isZero(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}
