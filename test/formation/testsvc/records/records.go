// Package records is testsvc's HTTP handler: GET answers with the serving host's name, POST /records/NAME
// appends the body as one line to NAME.HOST.log in the data directory and answers 204 only once the line is
// fsynced. Each task writes its own file: appends from several gluster clients to one file are not atomic.
package records

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// MaxRecord bounds a record's size; records are short checksummed lines.
const MaxRecord = 1 << 10

var validName = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// File is the log a task on host keeps for the record stream name.
func File(dir, name, host string) string {
	return filepath.Join(dir, name+"."+host+".log")
}

// Handler serves GET (the host name) and POST /records/{name} (append to File(dir, name, host)).
func Handler(host, dir string) http.Handler {
	var mu sync.Mutex // one append at a time, so lines never interleave within a task's file
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, host)
	})
	mux.HandleFunc("POST /records/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !validName.MatchString(name) {
			http.Error(w, "records: name must match "+validName.String(), http.StatusBadRequest)
			return
		}
		if dir == "" {
			http.Error(w, "records: no data directory (TESTSVC_DATA)", http.StatusServiceUnavailable)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxRecord+1))
		if err != nil {
			http.Error(w, "records: read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		line := strings.TrimSuffix(string(body), "\n")
		if len(body) > MaxRecord || line == "" || strings.ContainsAny(line, "\r\n") {
			http.Error(w, fmt.Sprintf("records: body must be one line of at most %d bytes", MaxRecord), http.StatusBadRequest)
			return
		}
		mu.Lock()
		err = appendSync(File(dir, name, host), line+"\n")
		mu.Unlock()
		if err != nil {
			// 503: the volume refused (no quorum, stalled mount); the client counts the record as not written.
			http.Error(w, "records: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// appendSync writes s in one write and fsyncs it: a success means the volume acknowledged the record.
func appendSync(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return fmt.Errorf("append %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}
