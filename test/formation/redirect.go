package formation

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/netns"
)

// HTTPRedirect does one GET http://addr/path (Host: host, the address when empty) from inside namespace ns
// and returns the status code and the Location header.
func HTTPRedirect(ctx context.Context, ns string, addr netip.Addr, host, path string, timeout time.Duration) (code int, location string, err error) {
	c := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: netns.DialContext(ns, &net.Dialer{Timeout: timeout})}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+path, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, resp.Header.Get("Location"), nil
}

// HostAddr is the lab host's address on the lab bridge.
func HostAddr() netip.Addr {
	p := netip.MustParsePrefix(lab.HostCIDR)
	return p.Addr()
}
