package httpd

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/pxe/internal/pxetest"
	"github.com/kiln-project/kiln/pxe/neigh"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

func TestRewrite(t *testing.T) {
	script := pxetest.Script("aa", "bb")
	got, err := Rewrite([]byte(script), "http://10.77.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(got), "\n")
	if lines[0] != "#!ipxe" || lines[1] != "set kiln-url http://10.77.0.1:8080/" {
		t.Errorf("first lines %q", lines[:2])
	}
	if strings.Join(append(lines[:1:1], lines[2:]...), "\n") != script {
		t.Error("the rest of the script changed")
	}
	if got, err := Rewrite([]byte("#!ipxe\r\nboot\r\n"), "http://h/"); err != nil || string(got) != "#!ipxe\r\nset kiln-url http://h/\nboot\r\n" {
		t.Errorf("CRLF script: %q, %v", got, err)
	}
	if got, err := Rewrite([]byte("#!ipxe"), "http://h/"); err != nil || string(got) != "#!ipxe\nset kiln-url http://h/\n" {
		t.Errorf("one-line script: %q, %v", got, err)
	}
	for _, bad := range []string{"", "#!/bin/sh\nboot\n", " #!ipxe\n", "#!ipxe2\n"} {
		if _, err := Rewrite([]byte(bad), "http://h/"); err == nil {
			t.Errorf("%q rewritten: not an iPXE script", bad)
		}
	}
}

func TestAllow(t *testing.T) {
	a, err := ParseAllow([]string{"52:54:00:AA:bb:01", "52-54-00-aa-bb-02", " 52:54:00:aa:bb:03 "}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mac  string
		want bool
	}{
		{"52:54:00:aa:bb:01", true},
		{"52:54:00:aa:bb:02", true},
		{"52:54:00:aa:bb:03", true},
		{"52:54:00:aa:bb:04", false},
		{"", false}, // no neighbour entry
	} {
		var m net.HardwareAddr
		if tt.mac != "" {
			m, _ = net.ParseMAC(tt.mac)
		}
		if got := a.Permits(m); got != tt.want {
			t.Errorf("Permits(%q) = %v, want %v", tt.mac, got, tt.want)
		}
	}
	if a.Empty() || a.Any() || a.Len() != 3 {
		t.Errorf("Empty %v Any %v Len %d", a.Empty(), a.Any(), a.Len())
	}
	any, _ := ParseAllow(nil, true)
	if !any.Permits(nil) || any.Empty() {
		t.Error("--allow-any refuses a peer without a neighbour entry")
	}
	none, _ := ParseAllow(nil, false)
	if none.Permits(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}) || !none.Empty() {
		t.Error("no rule permits")
	}
	for _, bad := range []string{"52:54:00:aa:bb", "nonsense", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"} {
		if _, err := ParseAllow([]string{bad}, false); err == nil || !strings.Contains(err.Error(), "--allow-mac") {
			t.Errorf("--allow-mac %q: %v", bad, err)
		}
	}
}

// serve runs the handler on a real loopback listener. Loopback peers have no neighbour entry, so the MAC rules
// see what a peer without one gets.
func serve(t *testing.T, config []byte, allow Allow) (*httptest.Server, *pxedir.Dir, string, *bytes.Buffer, *[]Fetch) {
	t.Helper()
	path := pxetest.Dir(t, nil)
	dir, err := pxedir.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	nt, err := neigh.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nt.Close)
	var logs bytes.Buffer
	var mu sync.Mutex
	var fetches []Fetch
	h := &Handler{Dir: dir, Config: config, Allow: allow, Neigh: nt, ConfigTime: time.Now(),
		Log: slog.New(slog.NewTextHandler(&syncWriter{w: &logs, mu: &mu}, nil)),
		Observe: func(f Fetch) {
			mu.Lock()
			fetches = append(fetches, f)
			mu.Unlock()
		}}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s, dir, path, &logs, &fetches
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func get(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestServeFiles(t *testing.T) {
	s, _, path, _, fetches := serve(t, nil, Allow{})
	resp, body := get(t, "GET", s.URL+"/boot.ipxe")
	want, _ := Rewrite(pxetest.Read(t, path, pxedir.Script), s.URL+"/")
	if resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Errorf("boot.ipxe: %d %q", resp.StatusCode, body)
	}
	base := pxetest.Read(t, path, pxedir.Base)
	resp, body = get(t, "GET", s.URL+"/base.squashfs?sha256=ignored")
	if resp.StatusCode != 200 || !bytes.Equal(body, base) || resp.ContentLength != int64(len(base)) {
		t.Errorf("base.squashfs: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = get(t, "GET", s.URL+"/base.squashfs", "Range", "bytes=1000000-1999999")
	if resp.StatusCode != 206 || !bytes.Equal(body, base[1000000:2000000]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000000-1999999/%d", len(base)) {
		t.Errorf("range: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
	}
	resp, body = get(t, "GET", s.URL+"/vmlinuz", "Range", fmt.Sprintf("bytes=%d-", pxetest.Sizes[pxedir.Kernel]-10))
	if resp.StatusCode != 206 || len(body) != 10 {
		t.Errorf("tail range: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = get(t, "HEAD", s.URL+"/initrd.img")
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(pxetest.Sizes[pxedir.Initrd]) {
		t.Errorf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	for _, p := range []string{"/pxe.json", "/", "/../pxe.json", "/%2e%2e/pxe.json", "/..%2fpxe.json", "//etc/passwd", "/cluster.yaml"} {
		req, _ := http.NewRequest("GET", s.URL, nil)
		req.URL.Opaque = p // sent as written, not cleaned by the client
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, "POST", s.URL+"/vmlinuz"); resp.StatusCode != 405 {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	f := (*fetches)[1]
	if f.File != pxedir.Base || f.Status != 200 || f.Bytes != int64(len(base)) || f.Size != int64(len(base)) || f.MAC != nil {
		t.Errorf("observed %+v", f)
	}
	if f := (*fetches)[2]; f.Status != 206 || f.Bytes != 1000000 {
		t.Errorf("observed range %+v", f)
	}
}

func TestServeConfig(t *testing.T) {
	cfg := []byte("cluster:\n  name: t\n")
	t.Run("allowed MACs: a peer without a neighbour entry is refused", func(t *testing.T) {
		allow, _ := ParseAllow([]string{"52:54:00:00:00:01"}, false)
		s, _, _, logs, _ := serve(t, cfg, allow)
		if resp, _ := get(t, "GET", s.URL+"/cluster.yaml"); resp.StatusCode != 403 {
			t.Errorf("%d, want 403", resp.StatusCode)
		}
		if !strings.Contains(logs.String(), "cluster config refused") || !strings.Contains(logs.String(), "mac=unknown ip=127.0.0.1") {
			t.Errorf("no refusal line naming the MAC and IP:\n%s", logs)
		}
	})
	t.Run("allow any", func(t *testing.T) {
		allow, _ := ParseAllow(nil, true)
		s, _, _, _, _ := serve(t, cfg, allow)
		resp, body := get(t, "GET", s.URL+"/cluster.yaml")
		if resp.StatusCode != 200 || !bytes.Equal(body, cfg) || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("no config", func(t *testing.T) {
		allow, _ := ParseAllow(nil, true)
		s, _, _, _, _ := serve(t, nil, allow)
		if resp, _ := get(t, "GET", s.URL+"/cluster.yaml"); resp.StatusCode != 404 {
			t.Errorf("%d, want 404", resp.StatusCode)
		}
	})
}

// BenchmarkConcurrentClients is HTTP throughput to 3 clients fetching the base layer at once over loopback.
func BenchmarkConcurrentClients(b *testing.B) {
	path := pxetest.Dir(b, nil)
	dir, err := pxedir.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer dir.Close()
	nt, err := neigh.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer nt.Close()
	s := httptest.NewServer(&Handler{Dir: dir, Neigh: nt, Log: slog.New(slog.DiscardHandler)})
	defer s.Close()
	const clients = 3
	f, _ := dir.File(pxedir.Base)
	b.SetBytes(clients * f.Size)
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Get(s.URL + "/base.squashfs")
				if err != nil {
					errs <- err
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && n != f.Size {
					err = fmt.Errorf("%d bytes, want %d", n, f.Size)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
