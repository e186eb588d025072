// Package tftpd serves the iPXE binaries (and any other file of a pxe directory) over TFTP to firmware that can
// only fetch its first program that way: read-only, only the files pxe.json lists.
package tftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/kiln-project/kiln/pxe/neigh"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// Port is TFTP's; PXE firmware knows no other.
const Port = 69

// Transfer is one finished (or failed) read.
type Transfer struct {
	MAC      net.HardwareAddr // nil when the peer has no neighbour entry
	Peer     netip.AddrPort
	File     string
	Bytes    int64
	Duration time.Duration
	Err      error
}

// sizeQuery tells UEFI's first request for a file: it asks for the size alone (tsize) and ends the transfer with
// error 8 (RFC 2347: options refused) on the answer, then asks again for the file. pin/tftp reports the end only
// as text.
func sizeQuery(t Transfer) bool {
	return t.Bytes == 0 && t.Err != nil && strings.Contains(t.Err.Error(), "sending block 0: code=8,")
}

// Server is a read-only TFTP server over one pxe directory.
type Server struct {
	conn *net.UDPConn
	srv  *tftp.Server
}

// Listen binds addr:69. observe (may be nil) sees every transfer.
func Listen(ctx context.Context, addr netip.Addr, dir *pxedir.Dir, nt *neigh.Table, log *slog.Logger, observe func(Transfer)) (*Server, error) {
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp4", netip.AddrPortFrom(addr, Port).String())
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("pxe: UDP port %d (TFTP, fixed by PXE) on %s is in use: another TFTP server runs on this host "+
			"(dnsmasq with enable-tftp, tftpd-hpa): %w", Port, addr, err)
	case err != nil:
		return nil, fmt.Errorf("pxe: TFTP port %d on %s: %w", Port, addr, err)
	}
	if observe == nil {
		observe = func(Transfer) {}
	}
	read := func(filename string, rf io.ReaderFrom) error {
		t := Transfer{File: strings.TrimPrefix(filename, "/")}
		if ot, ok := rf.(tftp.OutgoingTransfer); ok {
			ra := ot.RemoteAddr()
			t.Peer = ra.AddrPort()
		}
		start := time.Now()
		// Names are looked up in pxe.json's list, never joined to a path: nothing else is reachable.
		f, ok := dir.File(t.File)
		if !ok {
			t.Err = fmt.Errorf("%s: not a file of this pxe directory", filename)
		} else {
			if ot, ok := rf.(tftp.OutgoingTransfer); ok {
				ot.SetSize(f.Size) // the tsize option: iPXE and UEFI ask for it
			}
			t.Bytes, t.Err = rf.ReadFrom(f.Reader())
		}
		t.Duration = time.Since(start)
		t.MAC, _ = nt.MAC(t.Peer.Addr()) // a failed lookup only makes the log line say "unknown"
		mac := "unknown"
		if t.MAC != nil {
			mac = t.MAC.String()
		}
		switch {
		case sizeQuery(t):
			log.Info("tftp: size query", "mac", mac, "ip", t.Peer.Addr(), "file", t.File)
		case t.Err != nil:
			log.Warn("tftp: not served", "mac", mac, "ip", t.Peer.Addr(), "file", filename, "bytes", t.Bytes, "err", t.Err)
		default:
			log.Info("tftp", "mac", mac, "ip", t.Peer.Addr(), "file", t.File, "bytes", t.Bytes, "dur", t.Duration.Round(time.Millisecond))
		}
		observe(t)
		return t.Err
	}
	s := &Server{conn: pc.(*net.UDPConn), srv: tftp.NewServer(read, nil)}
	s.srv.SetTimeout(2 * time.Second)
	s.srv.SetRetries(5)
	return s, nil
}

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.conn); err != nil {
		return fmt.Errorf("pxe: tftp: %w", err)
	}
	return nil
}

// Close stops accepting requests and waits (bounded by the transfer timeout and retries) for running transfers.
func (s *Server) Close() { s.srv.Shutdown() }
