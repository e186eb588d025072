// Package imds reads EC2's instance metadata service the IMDSv2 way (a session token from PUT
// /latest/api/token, then GETs carrying it), with short per-request timeouts and few attempts: its callers run
// at boot, where a machine that is not on EC2 must not wait for an address nothing answers on.
package imds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultEndpoint is IMDS's IPv4 address.
const DefaultEndpoint = "http://169.254.169.254"

// Defaults of a Client's bounds.
const (
	// DefaultTimeout bounds one request: IMDS answers within milliseconds on an instance.
	DefaultTimeout = 2 * time.Second
	// DefaultTries is how many times a request that got no answer is sent.
	DefaultTries = 3
	// tokenTTL is the token lifetime asked for; a new one is fetched a minute before it ends.
	tokenTTL = 6 * time.Hour
	// maxBody bounds an answer: user-data is at most 16 KiB on EC2.
	maxBody = 1 << 20
)

// ErrNotFound is IMDS's 404: the instance has no such item (no user-data). It wraps fs.ErrNotExist.
var ErrNotFound = fmt.Errorf("imds: not found: %w", fs.ErrNotExist)

// Client asks one IMDS. The zero value asks DefaultEndpoint with the default bounds.
type Client struct {
	// Endpoint is the service's base URL (tests and the lab: a fake's).
	Endpoint string
	// Timeout bounds one request; Tries how often one without an answer is sent.
	Timeout time.Duration
	Tries   int

	// mu guards token and expires.
	mu      sync.Mutex
	token   string
	expires time.Time
}

func (c *Client) endpoint() string {
	if c.Endpoint != "" {
		return strings.TrimSuffix(c.Endpoint, "/")
	}
	return DefaultEndpoint
}

// Get returns the item at path under /latest/ ("user-data", "meta-data/instance-id"), or ErrNotFound.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	tok, err := c.sessionToken(ctx)
	if err != nil {
		return nil, err
	}
	body, status, err := c.do(ctx, http.MethodGet, "/latest/"+strings.TrimPrefix(path, "/"), map[string]string{"X-aws-ec2-metadata-token": tok})
	switch {
	case err != nil:
		return nil, err
	case status == http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
	case status == http.StatusUnauthorized:
		c.mu.Lock()
		c.token = "" // expired or revoked: the next call gets a new one
		c.mu.Unlock()
		return nil, fmt.Errorf("imds: %s: token refused (401)", path)
	case status != http.StatusOK:
		return nil, fmt.Errorf("imds: %s: answered %d", path, status)
	}
	return body, nil
}

// String returns a metadata item as trimmed text.
func (c *Client) String(ctx context.Context, path string) (string, error) {
	b, err := c.Get(ctx, path)
	return string(bytes.TrimSpace(b)), err
}

func (c *Client) sessionToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Now().Before(c.expires) {
		return c.token, nil
	}
	body, status, err := c.do(ctx, http.MethodPut, "/latest/api/token",
		map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": fmt.Sprint(int(tokenTTL.Seconds()))})
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		// 403: IMDS is disabled for this instance; 405 and others: not an IMDSv2 we can use.
		return "", fmt.Errorf("imds: token: answered %d", status)
	}
	c.token, c.expires = string(bytes.TrimSpace(body)), time.Now().Add(tokenTTL-time.Minute)
	return c.token, nil
}

// do sends one request, again on no answer, up to Tries times. Any HTTP answer is returned as it is.
func (c *Client) do(ctx context.Context, method, path string, header map[string]string) ([]byte, int, error) {
	timeout, tries := c.Timeout, c.Tries
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if tries <= 0 {
		tries = DefaultTries
	}
	// No proxy: IMDS is link-local, and a proxy from the environment would answer for another machine.
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: timeout}).DialContext}}
	defer client.CloseIdleConnections()
	var last error
	for try := 1; try <= tries; try++ {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		req, err := http.NewRequestWithContext(rctx, method, c.endpoint()+path, nil)
		if err != nil {
			cancel()
			return nil, 0, fmt.Errorf("imds: %w", err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
			resp.Body.Close()
			cancel()
			if rerr == nil {
				return body, resp.StatusCode, nil
			}
			err = rerr
		}
		cancel()
		last = err
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(try) * 250 * time.Millisecond):
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil, 0, fmt.Errorf("imds: %s %s: %w", method, path, ctx.Err())
	}
	return nil, 0, fmt.Errorf("imds: %s %s: no answer from %s after %d tries: %w", method, path, c.endpoint(), tries, last)
}
