package proxydhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sys/unix"
)

// Server answers PXE clients on one interface.
type Server struct {
	self    Self
	log     *slog.Logger
	observe func(Decision)
	conns   [2]*net.UDPConn // PortDHCP, PortPXE
	closed  atomic.Bool
}

// Listen binds UDP 67 and 4011 on ifname. observe (may be nil) sees every answered request.
//
// Port 67 is bound to the limited broadcast address 255.255.255.255 with SO_REUSEADDR: clients without an address
// broadcast their DISCOVER, so that is all a proxy needs, and a DHCP server on this same host (the lab's dnsmasq,
// bound to 0.0.0.0:67 with SO_REUSEADDR) keeps receiving every unicast to port 67 (renewals) alone, where two
// sockets on one address would split them. No SO_REUSEPORT: that would let a second proxy bind silently.
// Port 4011 is exclusive, which also makes a second proxyDHCP on this host fail at start.
func Listen(ctx context.Context, ifname string, self Self, log *slog.Logger, observe func(Decision)) (*Server, error) {
	if observe == nil {
		observe = func(Decision) {}
	}
	s := &Server{self: self, log: log, observe: observe}
	var err error
	if s.conns[1], err = listen(ctx, ifname, "0.0.0.0", PortPXE, false); err != nil {
		return nil, err
	}
	if s.conns[0], err = listen(ctx, ifname, "255.255.255.255", PortDHCP, true); err != nil {
		s.conns[1].Close()
		return nil, err
	}
	return s, nil
}

func listen(ctx context.Context, ifname, ip string, port int, shared bool) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// SO_BINDTODEVICE: answer only the boot LAN, and send broadcasts out of it whatever the routes say.
			if serr = unix.BindToDevice(int(fd), ifname); serr != nil {
				serr = fmt.Errorf("bind to interface %s: %w", ifname, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			if shared {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort(ip, strconv.Itoa(port)))
	switch {
	case errors.Is(err, syscall.EADDRINUSE) && shared:
		return nil, fmt.Errorf("pxe: UDP port %d (proxyDHCP, fixed by PXE) on %s: a DHCP server on this host holds it "+
			"exclusively (dnsmasq shares it with bind-interfaces): %w", port, ifname, err)
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("pxe: UDP port %d (PXE boot server, fixed by PXE) on %s is in use: another proxyDHCP "+
			"(kiln pxe serve, dnsmasq in proxy mode) runs on this host: %w", port, ifname, err)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("pxe: UDP port %d needs root (CAP_NET_BIND_SERVICE, CAP_NET_RAW): %w", port, err)
	case err != nil:
		return nil, fmt.Errorf("pxe: UDP port %d on %s: %w", port, ifname, err)
	}
	return pc.(*net.UDPConn), nil
}

// Serve answers until Close; it returns nil after Close, else the first socket error.
func (s *Server) Serve() error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, port := range []int{PortDHCP, PortPXE} {
		srv, err := server4.NewServer("", nil, s.handler(port), server4.WithConn(s.conns[i]))
		if err != nil {
			return fmt.Errorf("pxe: proxyDHCP port %d: %w", port, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(); err != nil && !s.closed.Load() {
				errs[i] = fmt.Errorf("pxe: proxyDHCP port %d: %w", port, err)
				s.Close() // one port down is a broken proxy: stop the other too, so the caller sees it
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops both ports.
func (s *Server) Close() error {
	s.closed.Store(true)
	return errors.Join(s.conns[0].Close(), s.conns[1].Close())
}

var broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}

func (s *Server) handler(port int) server4.Handler {
	return func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		d := Decide(req, port, s.self)
		if d.Reply == nil {
			if d.Ignored != "" {
				s.log.Info("proxyDHCP: not answered", "mac", d.MAC.String(), "type", req.MessageType(), "port", port, "why", d.Ignored)
			}
			return
		}
		// On 67 the client has no address yet: the answer is a broadcast, out of the bound interface.
		// On 4011 it has one and listens on the port it sent from.
		dst := peer
		if port == PortDHCP {
			dst = broadcast
		}
		if _, err := conn.WriteTo(d.Reply.ToBytes(), dst); err != nil {
			s.log.Warn("proxyDHCP: send", "mac", d.MAC.String(), "to", dst, "err", err)
			return
		}
		s.log.Info("proxyDHCP "+d.Reply.MessageType().String(), "mac", d.MAC.String(), "arch", uint16(d.Arch), "ipxe", d.IPXE,
			"port", port, "boot", d.BootFile)
		s.observe(d)
	}
}
