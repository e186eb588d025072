package ingress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// LogsAPI reads a service's logs through the swarm (from whichever node runs its task).
type LogsAPI interface {
	ServiceLogs(ctx context.Context, serviceID string, options container.LogsOptions) (io.ReadCloser, error)
}

// Reading Traefik's log costs a round trip to the node running it: once a minute is enough for a status
// line, and ACME retries are minutes apart anyway.
const (
	acmeCheckEvery = time.Minute
	// acmeWindow is how far back an error still counts: Traefik logs a failure at every try and nothing at
	// INFO when a certificate is obtained, so an old error must age out.
	acmeWindow  = time.Hour
	logsTimeout = 10 * time.Second
)

// acmeStatus keeps the last verdict between passes (losing it costs one more log read).
type acmeStatus struct {
	at   time.Time
	last string
}

// why returns the newest ACME error in the last hour of Traefik's log, "" when there is none.
func (a *acmeStatus) why(ctx context.Context, docker LogsAPI, serviceID string) string {
	if time.Since(a.at) < acmeCheckEvery {
		return a.last
	}
	a.at = time.Now()
	ctx, cancel := context.WithTimeout(ctx, logsTimeout)
	defer cancel()
	rc, err := docker.ServiceLogs(ctx, serviceID, container.LogsOptions{ShowStdout: true, ShowStderr: true,
		Since: time.Now().Add(-acmeWindow).Format(time.RFC3339), Tail: "500"})
	if err != nil {
		a.last = "" // no verdict without the log; the service line says whether Traefik runs
		return a.last
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil && out.Len() == 0 {
		a.last = ""
		return a.last
	}
	a.last = LastACMEError(out.Bytes())
	return a.last
}

// LastACMEError finds the newest ACME error or warning in Traefik's JSON log lines and says it in one line:
// the message, the domains' rule and the CA's answer. Pure.
func LastACMEError(log []byte) string {
	var last string
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		level, _ := e["level"].(string)
		msg, _ := e["message"].(string)
		provider, _ := e["providerName"].(string)
		if level != "error" && level != "warn" {
			continue
		}
		if !strings.Contains(provider, ".acme") && !strings.Contains(strings.ToLower(msg), "acme") {
			continue
		}
		line := msg
		if rule, _ := e["rule"].(string); rule != "" {
			line += " " + rule
		}
		if er, _ := e["error"].(string); er != "" {
			line += ": " + er
		}
		line = strings.Join(strings.Fields(line), " ")
		if len(line) > 300 {
			line = line[:300] + "…"
		}
		if t, _ := e["time"].(string); t != "" {
			line = fmt.Sprintf("%s (%s)", line, t)
		}
		last = line
	}
	return last
}
