package config

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve answers every request with status and body, counting the requests.
func serve(t *testing.T, status int, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// nodeRoot is a node's root with a kernel command line naming url (none when "") and the image default config
// (none when image is "").
func nodeRoot(t *testing.T, url, image string) string {
	t.Helper()
	root := t.TempDir()
	cmdline := "boot=kiln console=ttyS0,115200 BOOTIF=01-52-54-00-12-34-56"
	if url != "" {
		cmdline += " " + CmdlineParam + "=" + url
	}
	writeFile(t, filepath.Join(root, CmdlinePath), cmdline+"\n")
	if image != "" {
		writeFile(t, filepath.Join(root, ImagePath), image)
	}
	return root
}

// quick is Sources(root) with the URL source's waits shortened for tests.
func quick(root string, wait, request time.Duration, log *slog.Logger) []Source {
	ss := Sources(root, log)
	u := ss[1].(URL)
	u.Wait, u.RequestTimeout = wait, request
	ss[1] = u
	return ss
}

func TestURLSourceOrder(t *testing.T) {
	srv, _ := serve(t, http.StatusOK, cfgYAML("url"))
	tests := []struct {
		name       string
		fwcfg      bool
		url        bool
		wantSource string
		wantName   string
	}{
		{name: "fw_cfg beats the command line", fwcfg: true, url: true, wantSource: "fw_cfg", wantName: "fw"},
		{name: "the command line beats the image", url: true, wantSource: URLSourceName, wantName: "url"},
		{name: "no kiln.config: the image", wantSource: "image", wantName: "img"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := ""
			if tt.url {
				url = srv.URL + "/cluster.yaml"
			}
			root := nodeRoot(t, url, cfgYAML("img"))
			if tt.fwcfg {
				writeFile(t, filepath.Join(root, FwCfgPath), cfgYAML("fw"))
			}
			c, err := Load(context.Background(), Sources(root, nil))
			if err != nil {
				t.Fatal(err)
			}
			if c.Source != tt.wantSource || c.Cluster.Name != tt.wantName || len(c.Skipped) != 0 {
				t.Errorf("got source %q name %q skipped %q, want %q %q none", c.Source, c.Cluster.Name, c.Skipped, tt.wantSource, tt.wantName)
			}
		})
	}
}

// TestURLAnswers: what each answer of the server makes of the source, with the image default behind it.
func TestURLAnswers(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		wantName    string // the config used; "" when Load fails
		wantSkipped string // in Config.Skipped
		wantErr     string // exact error, or a part of it after "~"
	}{
		{name: "200: the served config", status: 200, body: cfgYAML("url"), wantName: "url"},
		{name: "404: the image's at once", status: 404, body: "not here", wantName: "img",
			wantSkipped: "cmdline-url: http://SRV/cluster.yaml answered 404 Not Found"},
		{name: "403: refused, never the image's", status: 403, body: "mac not allowed",
			wantErr: "config from cmdline-url: http://SRV/cluster.yaml answered 403 Forbidden: this node's MAC is not allowed (kiln pxe serve --allow-mac 52:54:00:12:34:56)"},
		{name: "500: an error with the server's line", status: 500, body: "boom\nmore",
			wantErr: "config from cmdline-url: http://SRV/cluster.yaml answered 500 Internal Server Error: boom"},
		{name: "401: an error", status: 401, wantErr: "config from cmdline-url: http://SRV/cluster.yaml answered 401 Unauthorized"},
		{name: "invalid served config stops the search", status: 200, body: "cluster: {name: x}\n", wantErr: "~config from cmdline-url: 1:10: cluster.key: required"},
		{name: "too large", status: 200, body: cfgYAML("url") + "#" + strings.Repeat("x", MaxSize), wantErr: "~config from cmdline-url: config is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, n := serve(t, tt.status, tt.body)
			root := nodeRoot(t, srv.URL+"/cluster.yaml", cfgYAML("img"))
			c, err := Load(context.Background(), quick(root, 5*time.Second, time.Second, nil))
			host := strings.TrimPrefix(srv.URL, "http://")
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "SRV", host)
				var ce *Error
				switch {
				case err == nil:
					t.Fatalf("config %q from %s, want error %q", c.Cluster.Name, c.Source, want)
				case !errors.As(err, &ce) || ce.Source != URLSourceName:
					t.Errorf("error %v is not an *Error of %s", err, URLSourceName)
				case strings.HasPrefix(want, "~") && !strings.Contains(err.Error(), want[1:]):
					t.Errorf("error %q, want it to contain %q", err, want[1:])
				case !strings.HasPrefix(want, "~") && err.Error() != want:
					t.Errorf("error\n %q, want\n %q", err, want)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				want := strings.ReplaceAll(tt.wantSkipped, "SRV", host)
				if c.Cluster.Name != tt.wantName || (want == "" && len(c.Skipped) > 0) ||
					(want != "" && (len(c.Skipped) != 1 || c.Skipped[0] != want)) {
					t.Errorf("config %q skipped %q, want %q skipped %q", c.Cluster.Name, c.Skipped, tt.wantName, want)
				}
			}
			if got := n.Load(); got != 1 {
				t.Errorf("%d requests, want 1 (an answer is never retried)", got)
			}
		})
	}
}

// freeAddr is a loopback address nothing listens on (connections are refused).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestURLWaitsForALateServer: the node boots before the laptop's server: connections are refused until it
// listens, and the source keeps trying (logging what it waits for) until it answers.
func TestURLWaitsForALateServer(t *testing.T) {
	addr := freeAddr(t)
	root := nodeRoot(t, "http://"+addr+"/cluster.yaml", cfgYAML("img"))
	late := 1500 * time.Millisecond
	started := make(chan *httptest.Server, 1)
	go func() {
		time.Sleep(late)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(cfgYAML("url")))
		}))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			started <- nil
			return
		}
		srv.Listener = ln
		srv.Start()
		started <- srv
	}()
	var logged bytes.Buffer // written only by Load's own goroutine
	start := time.Now()
	c, err := Load(context.Background(), quick(root, 30*time.Second, time.Second, slog.New(slog.NewTextHandler(&logged, nil))))
	took := time.Since(start)
	srv := <-started
	if srv == nil {
		t.Fatal("could not listen on the reserved address again")
	}
	defer srv.Close()
	if err != nil || c.Source != URLSourceName || c.Cluster.Name != "url" {
		t.Fatalf("Load = %+v, %v; want the served config", c, err)
	}
	if took < late || took > late+5*time.Second {
		t.Errorf("took %s, want between %s and %s", took, late, late+5*time.Second)
	}
	if out := logged.String(); !strings.Contains(out, "waiting for the config server") || !strings.Contains(out, "connection refused") {
		t.Errorf("log while waiting:\n%s", out)
	}
}

// TestURLUnreachableFallsThrough: a server that never comes up: after the bounded wait the image's config
// applies, and the config says why the URL's did not; with no other source, the not-found error says it.
func TestURLUnreachableFallsThrough(t *testing.T) {
	url := "http://" + freeAddr(t) + "/cluster.yaml"
	start := time.Now()
	c, err := Load(context.Background(), quick(nodeRoot(t, url, cfgYAML("img")), 1500*time.Millisecond, time.Second, nil))
	if took := time.Since(start); took < 1500*time.Millisecond || took > 5*time.Second {
		t.Errorf("gave up after %s, want about 1.5 s", took)
	}
	if err != nil || c.Source != "image" {
		t.Fatalf("Load = %+v, %v; want the image's config", c, err)
	}
	if len(c.Skipped) != 1 || !strings.HasPrefix(c.Skipped[0], "cmdline-url: "+url+": no answer for ") ||
		!strings.Contains(c.Skipped[0], "connection refused") {
		t.Errorf("skipped %q", c.Skipped)
	}

	_, err = Load(context.Background(), quick(nodeRoot(t, url, ""), time.Second, time.Second, nil))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "cmdline-url: "+url+": no answer for") {
		t.Errorf("no other source: %v, want ErrNotFound saying why the URL gave none", err)
	}
}

// TestURLRequestTimeout: a server that accepts and never answers counts as not answering: each request ends
// after RequestTimeout and the wait stays bounded.
func TestURLRequestTimeout(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		<-r.Context().Done()
	}))
	defer srv.Close()
	start := time.Now()
	c, err := Load(context.Background(), quick(nodeRoot(t, srv.URL+"/cluster.yaml", cfgYAML("img")), 1500*time.Millisecond, 300*time.Millisecond, nil))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, want about 1.5 s", took)
	}
	if err != nil || c.Source != "image" || len(c.Skipped) != 1 || !strings.Contains(c.Skipped[0], "no answer for") {
		t.Fatalf("Load = %+v, %v; want the image's config with the URL skipped", c, err)
	}
	if n.Load() < 2 {
		t.Errorf("%d requests, want the hung one retried", n.Load())
	}
}

// TestURLCacheForTheBoot: a fetched config is kept (0600: it holds the key) and used while the server is
// gone; a config that does not parse is not kept, so a fixed one is fetched next time.
func TestURLCacheForTheBoot(t *testing.T) {
	var body atomic.Value
	body.Store(cfgYAML("first"))
	var up atomic.Bool
	up.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()
	root := nodeRoot(t, srv.URL+"/cluster.yaml", cfgYAML("img"))
	load := func() (*Config, error) {
		return Load(context.Background(), quick(root, time.Second, time.Second, nil))
	}
	c, err := load()
	if err != nil || c.Cluster.Name != "first" {
		t.Fatalf("first load: %+v %v", c, err)
	}
	fi, err := os.Stat(filepath.Join(root, URLCachePath))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache: %v %v, want mode 0600", fi, err)
	}
	up.Store(false)
	body.Store(cfgYAML("second"))
	if c, err := load(); err != nil || c.Cluster.Name != "first" || c.Source != URLSourceName {
		t.Errorf("server failing: %+v %v, want the kept config", c, err)
	}

	// Another URL (another root's command line) never reads this cache.
	other := nodeRoot(t, srv.URL+"/other.yaml", "")
	writeFile(t, filepath.Join(other, URLCachePath), cacheHeader(srv.URL+"/cluster.yaml")+cfgYAML("first"))
	if _, err := Load(context.Background(), quick(other, time.Second, time.Second, nil)); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("cache of another URL: %v, want the server's 500", err)
	}

	// An invalid config is not kept: once fixed on the server, the next load gets the fix.
	fresh := nodeRoot(t, srv.URL+"/cluster.yaml", "")
	up.Store(true)
	body.Store("cluster: {name: x}\n")
	if _, err := Load(context.Background(), quick(fresh, time.Second, time.Second, nil)); err == nil {
		t.Fatal("invalid config loaded")
	}
	if _, err := os.Stat(filepath.Join(fresh, URLCachePath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("invalid config kept: %v", err)
	}
	body.Store(cfgYAML("fixed"))
	if c, err := Load(context.Background(), quick(fresh, time.Second, time.Second, nil)); err != nil || c.Cluster.Name != "fixed" {
		t.Errorf("after the fix: %+v %v", c, err)
	}
}

// TestURLSSHKeys: the keys of a served config reach sshd, even when its cluster section is not valid (the
// keys are how a person logs in to see what is wrong).
func TestURLSSHKeys(t *testing.T) {
	srv, _ := serve(t, http.StatusOK, "cluster: {name: x}\nssh_authorized_keys: [\"ssh-ed25519 AAAA op@laptop\"]\n")
	root := nodeRoot(t, srv.URL+"/cluster.yaml", "cluster: {name: img}\nssh_authorized_keys: [ssh-ed25519 IMG]\n")
	keys, err := SSHKeys(context.Background(), Sources(root, nil))
	if err != nil || len(keys) != 1 || keys[0] != "ssh-ed25519 AAAA op@laptop" {
		t.Errorf("SSHKeys = %q, %v; want the served key", keys, err)
	}
}

// TestURLSSHKeysServerDown: sshd's lookup is bounded by its own deadline; the server not answering within it
// means no keys from the URL, and the next source's apply.
func TestURLSSHKeysServerDown(t *testing.T) {
	root := nodeRoot(t, "http://"+freeAddr(t)+"/cluster.yaml", "cluster: {name: img}\nssh_authorized_keys: [ssh-ed25519 IMG]\n")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	keys, err := SSHKeys(ctx, Sources(root, nil))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s, want the caller's 1.5 s bound", took)
	}
	if err != nil || len(keys) != 1 || keys[0] != "ssh-ed25519 IMG" {
		t.Errorf("SSHKeys = %q, %v; want the image's key", keys, err)
	}
}

// TestURLCancelled: a caller that stops (the agent shutting down) while the source waits gets an error, not
// "no config here": a lower source's config must not slip through on the way out.
func TestURLCancelled(t *testing.T) {
	root := nodeRoot(t, "http://"+freeAddr(t)+"/cluster.yaml", cfgYAML("img"))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	c, err := Load(ctx, quick(root, time.Minute, time.Second, nil))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Load = %+v, %v; want context.Canceled", c, err)
	}
}

func TestURLBadParameter(t *testing.T) {
	for _, raw := range []string{"ftp://host/cluster.yaml", "cluster.yaml", "http://", "http://%zz/"} {
		root := nodeRoot(t, raw, cfgYAML("img"))
		_, err := Load(context.Background(), quick(root, time.Second, time.Second, nil))
		var ce *Error
		if !errors.As(err, &ce) || ce.Source != URLSourceName || !strings.Contains(err.Error(), "not an http:// or https:// URL") {
			t.Errorf("%s: %v, want an *Error naming the parameter", raw, err)
		}
	}
}

func TestReadCmdline(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "cmdline")
	writeFile(t, p, "boot=kiln quiet kiln.config=\"http://10.0.0.1:8080/cluster.yaml\" kiln.layers=a,b kiln.config=http://x/y\n")
	params, err := readCmdline(p)
	if err != nil {
		t.Fatal(err)
	}
	if params["boot"] != "kiln" || params["kiln.config"] != "http://x/y" || params["kiln.layers"] != "a,b" {
		t.Errorf("params %v", params)
	}
	if _, ok := params["quiet"]; !ok {
		t.Errorf("bare word lost: %v", params)
	}
	if params, err := readCmdline(filepath.Join(root, "missing")); err != nil || len(params) != 0 {
		t.Errorf("missing file: %v %v", params, err)
	}
}

func TestBootIF(t *testing.T) {
	for in, want := range map[string]string{
		"01-52-54-00-12-34-56": "52:54:00:12:34:56",
		"01-AA-BB-CC-DD-EE-FF": "aa:bb:cc:dd:ee:ff",
		"":                     "",
		"52-54-00-12-34-56":    "",
		"01-52-54-00-12-34":    "",
		"01-zz-54-00-12-34-56": "",
	} {
		if got := bootIF(in); got != want {
			t.Errorf("bootIF(%q) = %q, want %q", in, got, want)
		}
	}
}
