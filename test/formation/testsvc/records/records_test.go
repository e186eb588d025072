package records

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(Handler("node-a", dir))
	defer srv.Close()

	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, rec := range []string{"0 aa 11", "1 bb 22\n"} {
		if code := post("/records/loss", rec); code != http.StatusNoContent {
			t.Fatalf("POST %q: %d, want 204", rec, code)
		}
	}
	got, err := os.ReadFile(File(dir, "loss", "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "0 aa 11\n1 bb 22\n" {
		t.Errorf("file %q, want the two records, one per line", got)
	}

	for _, c := range []struct{ path, body string }{
		{"/records/Bad_Name", "0 aa 11"},
		{"/records/x", "two\nlines"},
		{"/records/x", ""},
		{"/records/x", strings.Repeat("a", MaxRecord+1)},
	} {
		if code := post(c.path, c.body); code != http.StatusBadRequest {
			t.Errorf("POST %s %q: %d, want 400", c.path, c.body, code)
		}
	}

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != "node-a" {
		t.Errorf("GET /: %q, want the host name", b)
	}
}

func TestHandlerWithoutDataDir(t *testing.T) {
	srv := httptest.NewServer(Handler("node-a", ""))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/records/x", "text/plain", strings.NewReader("0 aa 11"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST without a data dir: %d, want 503", resp.StatusCode)
	}
}
