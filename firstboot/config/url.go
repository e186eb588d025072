package config

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/kiln-project/kiln/internal/files"
)

// The kernel command line parameters the URL source reads (docs/design.md, "Kernel command line").
const (
	CmdlinePath  = "/proc/cmdline"
	CmdlineParam = "kiln.config"
	// bootIFParam names the NIC the node netbooted from (initramfs-tools convention: 01-aa-bb-cc-dd-ee-ff).
	bootIFParam = "BOOTIF"
	// URLCachePath keeps the config fetched from the URL for the rest of the boot (see URL).
	URLCachePath = "/run/kiln/cmdline-config.yaml"
)

// Defaults of the URL source's bounds.
const (
	// DefaultURLWait is how long the source keeps trying a server it cannot reach: a node may come up before
	// the laptop that serves its config. After it the source counts as having no config.
	DefaultURLWait = 2 * time.Minute
	// DefaultURLRequestTimeout bounds one request, headers and body (a config is a few hundred bytes).
	DefaultURLRequestTimeout = 10 * time.Second
	// urlBackoff and urlMaxBackoff pace the attempts: 1 s, 2 s, 4 s, 8 s, then every 10 s.
	urlBackoff    = time.Second
	urlMaxBackoff = 10 * time.Second
)

// URL is the cluster config over HTTP, named by `kiln.config=URL` on the kernel command line: how a netbooted
// node (kiln pxe serve) gets its config. Without that parameter it has none.
//
// What the server answers decides what happens next:
//   - 200: the config (at most MaxSize bytes are kept; Parse reports a larger one).
//   - 404: no config here: the next source applies at once.
//   - 403: an *Error. The server holds the operator's config and refuses this node (kiln pxe serve
//     --allow-mac); forming with a lower-priority config instead would put the node into the wrong cluster.
//   - any other status: an *Error.
//   - no answer (refused, unreachable, timeout): retried with backoff for Wait, then no config, with the reason
//     (Skipped), so the next source applies and the status says why.
//
// A config that parses is kept at Cache for the rest of the boot, and read from there afterwards: the agent
// restarts (address change, crash) and sshd's key lookups then neither depend on the server, which may be gone
// once the cluster formed, nor see a config the server changed mid-boot. The cache lives in /run, so every boot
// fetches anew (a netbooted node needs the server to boot at all).
type URL struct {
	// Cmdline is the kernel command line file (CmdlinePath under the root).
	Cmdline string
	// Cache is where a fetched config is kept for the boot ("": not kept).
	Cache string
	// Wait bounds the retries while the server does not answer (default DefaultURLWait); RequestTimeout one
	// request (default DefaultURLRequestTimeout).
	Wait, RequestTimeout time.Duration
	// Log receives one line per failed attempt (the journal says what the node waits for); nil: none.
	Log *slog.Logger
}

// URLSourceName is the URL source's name in status and errors.
const URLSourceName = "cmdline-url"

func (URL) Name() string { return URLSourceName }

// Load reads the URL from the command line and fetches it (see URL).
func (u URL) Load(ctx context.Context) ([]byte, error) {
	params, err := readCmdline(u.Cmdline)
	if err != nil {
		return nil, err
	}
	raw, ok := params[CmdlineParam]
	if !ok {
		return nil, fmt.Errorf("no %s= on the kernel command line: %w", CmdlineParam, fs.ErrNotExist)
	}
	target, err := url.Parse(raw)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("%s=%q is not an http:// or https:// URL", CmdlineParam, raw)
	}
	if data, ok := u.cached(raw); ok {
		return data, nil
	}
	data, err := u.fetch(ctx, target, bootIF(params[bootIFParam]))
	if err != nil {
		return nil, err
	}
	if u.Cache != "" {
		if _, perr := Parse(data); perr == nil {
			// 0600: the config holds the cluster key. A failed write only costs a fetch next time.
			if err := files.Write(u.Cache, append([]byte(cacheHeader(raw)), data...), 0o600); err != nil && u.Log != nil {
				u.Log.Warn("config: keep the fetched config for this boot", "path", u.Cache, "err", err)
			}
		}
	}
	return data, nil
}

// cacheHeader is the cache file's first line: a YAML comment naming the URL, so a cache of another URL (a
// kernel command line cannot change within a boot, but a test root can) is never used.
func cacheHeader(raw string) string { return "# fetched from " + raw + "\n" }

func (u URL) cached(raw string) ([]byte, bool) {
	if u.Cache == "" {
		return nil, false
	}
	header := cacheHeader(raw)
	f, err := os.Open(u.Cache)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(len(header))+MaxSize+1))
	if err != nil {
		return nil, false
	}
	rest, ok := bytes.CutPrefix(data, []byte(header))
	return rest, ok
}

// fetch GETs target until it answers, at most Wait. mac is the NIC the node booted from ("" unknown), named in
// the 403 message so the operator knows what to allow.
func (u URL) fetch(ctx context.Context, target *url.URL, mac string) ([]byte, error) {
	wait, timeout := u.Wait, u.RequestTimeout
	if wait <= 0 {
		wait = DefaultURLWait
	}
	if timeout <= 0 {
		timeout = DefaultURLRequestTimeout
	}
	// No proxy from the environment: the server is on the node's LAN.
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: timeout}).DialContext,
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout}}
	defer client.CloseIdleConnections()
	start := time.Now()
	deadline := start.Add(wait)
	backoff := urlBackoff
	for attempt := 1; ; attempt++ {
		data, retry, err := u.get(ctx, client, target, timeout, mac)
		if !retry {
			return data, err
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			// Stopping: not "no config here", which would let a lower source's config through meanwhile.
			return nil, fmt.Errorf("%s: %w", target.Redacted(), ctx.Err())
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			// The caller's deadline (sshd's key lookup) ends the wait like ours does: no config from here.
			return nil, &SkipError{Source: URLSourceName, Reason: fmt.Sprintf("%s: no answer for %s (%d attempts; last: %v)",
				target.Redacted(), time.Since(start).Round(time.Second), attempt, err)}
		}
		pause := min(backoff, left)
		if u.Log != nil {
			u.Log.Warn("config: waiting for the config server", "url", target.Redacted(), "attempt", attempt,
				"err", err, "retry_in", pause, "gives_up_in", left.Round(time.Second))
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		backoff = min(2*backoff, urlMaxBackoff)
	}
}

// get makes one request. retry reports a server that did not answer (worth another attempt); otherwise data
// or err is the outcome.
func (u URL) get(ctx context.Context, client *http.Client, target *url.URL, timeout time.Duration, mac string) (data []byte, retry bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, false, fmt.Errorf("request %s: %w", target.Redacted(), err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var cert *tls.CertificateVerificationError
		if errors.As(err, &cert) {
			return nil, false, fmt.Errorf("%s: %w", target.Redacted(), err) // asking again gets the same certificate
		}
		return nil, true, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		data, err := io.ReadAll(io.LimitReader(resp.Body, MaxSize+1))
		if err != nil {
			return nil, true, fmt.Errorf("read the body: %w", err) // the connection broke mid-answer
		}
		return data, false, nil
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, &SkipError{Source: URLSourceName, Reason: target.Redacted() + " answered " + resp.Status}
	case resp.StatusCode == http.StatusForbidden:
		hint := "kiln pxe serve --allow-mac"
		if mac != "" {
			hint += " " + mac
		}
		return nil, false, fmt.Errorf("%s answered %s: this node's MAC is not allowed (%s)", target.Redacted(), resp.Status, hint)
	default:
		return nil, false, fmt.Errorf("%s answered %s%s", target.Redacted(), resp.Status, bodyHint(resp.Body))
	}
}

// bodyHint is the first line of an error response, short and printable, for the error message ("" when none).
func bodyHint(body io.Reader) string {
	line, _ := bufio.NewReader(io.LimitReader(body, 512)).ReadString('\n')
	line = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.TrimSpace(line))
	if len(line) > 160 {
		line = line[:160] + "…"
	}
	if line == "" {
		return ""
	}
	return ": " + line
}

// SkipError is a source's "no config here" that is worth telling: the source was asked for (a kiln.config=
// URL) but gave none (no answer, 404). It wraps fs.ErrNotExist, so the next source is tried; Load and SSHKeys
// keep its text (Config.Skipped, and the ErrNotFound when no source has a config).
type SkipError struct {
	Source, Reason string
}

func (e *SkipError) Error() string { return e.Source + ": " + e.Reason }
func (e *SkipError) Unwrap() error { return fs.ErrNotExist }

// readCmdline parses a kernel command line into its key=value parameters (a bare word maps to ""; the last of
// a repeated key wins, as for the kernel's own parameters). A missing file is no parameters.
func readCmdline(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	params := map[string]string{}
	for _, word := range strings.Fields(string(data)) {
		k, v, _ := strings.Cut(word, "=")
		params[k] = strings.Trim(v, `"`)
	}
	return params, nil
}

// bootIF turns BOOTIF=01-aa-bb-cc-dd-ee-ff into aa:bb:cc:dd:ee:ff ("" when absent or malformed).
func bootIF(v string) string {
	v = strings.ToLower(v)
	if len(v) != 20 || !strings.HasPrefix(v, "01-") {
		return ""
	}
	mac := strings.ReplaceAll(v[3:], "-", ":")
	if _, err := net.ParseMAC(mac); err != nil {
		return ""
	}
	return mac
}

// cacheUnder is the URL cache path under root.
func cacheUnder(root string) string { return filepath.Join(root, URLCachePath) }
