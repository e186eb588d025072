package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Format writes s for a human: the few lines that say whether the cluster formed and, if not, why.
// now is used for the age of the report, which tells a stuck agent from a busy one.
func Format(w io.Writer, s *Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
	p("node", "%s (%s)", s.Hostname, s.NodeID)
	p("phase", "%s", s.Phase)
	if s.ConfigError != "" {
		p("config error", "%s", s.ConfigError)
	} else {
		p("cluster", "%s (config from %s)", orDash(s.Cluster), orDash(s.ConfigSource))
	}
	for _, skipped := range s.ConfigSkipped {
		p("config skipped", "%s", skipped)
	}
	alive := 0
	for _, m := range s.Members {
		if m.Alive {
			alive++
		}
	}
	p("members", "%d alive / %d known / %d expected", alive, len(s.Members), s.Expected)
	for _, m := range s.Members {
		state := "alive"
		if !m.Alive {
			state = "DOWN"
		}
		addr := "-"
		if m.Addr.IsValid() {
			addr = m.Addr.String()
		}
		if m.NoBrick {
			state += ", no brick"
		}
		fmt.Fprintf(tw, "\t  %s\t%s\t%s\n", m.Hostname, addr, state)
	}
	if s.Election != "" {
		p("election", "%s", s.Election)
	}
	p("swarm", "%s", component(s.Swarm))
	p("gluster", "%s", component(s.Gluster))
	if s.NoBrick != "" {
		p("brick", "%s", s.NoBrick)
	}
	p("vip", "%s held by %s", orDash(s.VIP), orDash(s.VIPHolder))
	if s.Alert != "" {
		p("ALERT", "%s", s.Alert)
	}
	if s.LastError != "" {
		at := ""
		if !s.LastErrorAt.IsZero() {
			at = fmt.Sprintf(" (%s ago)", now.Sub(s.LastErrorAt).Round(time.Second))
		}
		p("last error", "%s%s", s.LastError, at)
	}
	p("updated", "%s ago", now.Sub(s.UpdatedAt).Round(time.Second))
	return tw.Flush()
}

// Summary is s on one line, for tables (kiln lab status): phase, hostname, members alive of expected,
// swarm and gluster states, VIP holder, and the last error if any.
func (s *Status) Summary() string {
	alive := 0
	for _, m := range s.Members {
		if m.Alive {
			alive++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s members=%d/%d swarm=%s gluster=%s", s.Phase, s.Hostname, alive, s.Expected,
		orDash(s.Swarm.State), orDash(s.Gluster.State))
	if s.VIPHolder != "" {
		fmt.Fprintf(&b, " vip@%s", s.VIPHolder)
	}
	switch {
	case s.ConfigError != "":
		fmt.Fprintf(&b, " config: %s", s.ConfigError)
	case s.Alert != "":
		fmt.Fprintf(&b, " ALERT: %s", s.Alert)
	case s.LastError != "":
		fmt.Fprintf(&b, " last error: %s", s.LastError)
	}
	return b.String()
}

func component(c Component) string {
	return strings.TrimSpace(orDash(c.State) + " " + c.Detail)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
