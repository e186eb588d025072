// Package httpd serves a pxe directory over HTTP: the iPXE script (pointed at this server), the kernel, the
// initrd and the layers (range requests, any number of clients at once), and the cluster config only to the
// nodes allowed it.
package httpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/pxe/neigh"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// ConfigPath is the URL path of the cluster config (the script's kiln.config=${kiln-url}cluster.yaml).
const ConfigPath = "cluster.yaml"

// Fetch is one answered request.
type Fetch struct {
	MAC      net.HardwareAddr // nil when the peer has no neighbour entry
	Peer     netip.Addr
	File     string
	Status   int
	Bytes    int64 // body bytes sent
	Size     int64 // the whole file's size
	Duration time.Duration
}

// Handler is the HTTP side of `kiln pxe serve`.
type Handler struct {
	Dir    *pxedir.Dir
	Config []byte // nil: no --config, /cluster.yaml is 404 and the node uses its image's default
	Allow  Allow
	Neigh  *neigh.Table
	Log    *slog.Logger
	// Observe (may be nil) sees every answered request, after its body was sent.
	Observe func(Fetch)
	// ConfigTime is the config's Last-Modified; the files carry their own.
	ConfigTime time.Time
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := strings.TrimPrefix(r.URL.Path, "/")
	peer := remoteAddr(r)
	mac, err := h.Neigh.MAC(peer)
	if err != nil {
		h.Log.Warn("http: MAC lookup", "ip", peer, "err", err)
	}
	cw := &countingWriter{ResponseWriter: w}
	size := h.serve(cw, r, name, peer, mac)
	f := Fetch{MAC: mac, Peer: peer, File: name, Status: cw.status(), Bytes: cw.n, Size: size, Duration: time.Since(start)}
	h.Log.Info("http", "mac", macString(mac), "ip", peer, "file", name, "status", f.Status, "bytes", f.Bytes,
		"range", r.Header.Get("Range"), "dur", f.Duration.Round(time.Millisecond))
	if h.Observe != nil {
		h.Observe(f)
	}
}

// serve answers one request and returns the size of the file it names (0 for none).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, name string, peer netip.Addr, mac net.HardwareAddr) int64 {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return 0
	}
	switch name {
	case ConfigPath:
		if h.Config == nil {
			http.Error(w, "no cluster config served (kiln pxe serve --config): the node uses its image's default", http.StatusNotFound)
			return 0
		}
		if !h.Allow.Permits(mac) {
			h.Log.Warn("http: cluster config refused: MAC not allowed (--allow-mac)", "mac", macString(mac), "ip", peer)
			http.Error(w, "this node's MAC is not allowed the cluster config", http.StatusForbidden)
			return 0
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "no-store")
		http.ServeContent(w, r, name, h.ConfigTime, bytes.NewReader(h.Config))
		return int64(len(h.Config))
	case pxedir.Script:
		f, _ := h.Dir.File(pxedir.Script)
		raw, err := io.ReadAll(f.Reader())
		if err == nil {
			raw, err = Rewrite(raw, baseURL(r))
		}
		if err != nil {
			h.Log.Error("http: boot.ipxe", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return 0
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		http.ServeContent(w, r, name, f.ModTime, bytes.NewReader(raw))
		return int64(len(raw))
	}
	// Names are looked up in pxe.json's list, never joined to a path: nothing else is reachable.
	f, ok := h.Dir.File(name)
	if !ok {
		http.NotFound(w, r)
		return 0
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, f.ModTime, f.Reader())
	return f.Size
}

// baseURL is the directory URL as this client reached it.
func baseURL(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return fmt.Sprintf("http://%s/", netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	return fmt.Sprintf("http://%s/", r.Host)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func macString(m net.HardwareAddr) string {
	if m == nil {
		return "unknown"
	}
	return m.String()
}

// countingWriter counts body bytes and remembers the status.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}

// Server is the listening HTTP server.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (the boot LAN address and --http-port).
func Listen(ctx context.Context, addr netip.AddrPort, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp4", addr.String())
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("pxe: TCP port %d (--http-port) on %s is in use: pick another with --http-port: %w",
			addr.Port(), addr.Addr(), err)
	case err != nil:
		return nil, fmt.Errorf("pxe: --http-port %d: %w", addr.Port(), err)
	}
	return &Server{ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

// Addr is the bound address.
func (s *Server) Addr() netip.AddrPort { return netip.MustParseAddrPort(s.ln.Addr().String()) }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("pxe: http: %w", err)
	}
	return nil
}

// Close stops accepting, lets running transfers finish for at most grace, then cuts them.
func (s *Server) Close(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}
