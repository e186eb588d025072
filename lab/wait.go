package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/lab/qemu"
)

// bootPoll is the pause between two boot probes. Each probe is an ssh attempt bounded by sshConnectTimeout.
const bootPoll = 2 * time.Second

// WaitBooted waits until the node answers ssh (the lab key logged in and ran `true`), bounded by ctx. It fails
// early, with the serial log tail, if the VM dies meanwhile. It returns the time since the node was started.
func (n *Node) WaitBooted(ctx context.Context) (time.Duration, error) {
	t := time.NewTicker(bootPoll)
	defer t.Stop()
	lastErr := "none yet"
	for {
		s, err := n.State()
		if err != nil {
			return 0, err
		}
		if !n.Running() {
			return 0, fmt.Errorf("node %s: VM not running while waiting for boot; serial tail:\n%s", n.name, n.SerialTail(20))
		}
		_, err = n.lab.exec(ctx, s.Address, ExecOptions{}, "true")
		if err == nil {
			d := time.Since(s.StartedAt)
			n.lab.log.Info("node booted", "node", n.name, "address", s.Address, "after", d.Round(time.Second))
			return d, nil
		}
		if !errors.Is(err, ErrUnreachable) && ctx.Err() == nil {
			return 0, err
		}
		lastErr = err.Error()
		select {
		case <-ctx.Done():
			// The last ssh error tells a node that never got its address (no route to host) from one that
			// rejects the lab key (permission denied); the DHCP log says whether it asked for one.
			return 0, fmt.Errorf("node %s: not booted (no ssh at %s): %w; last ssh error: %s; DHCP log for %s:\n%s\nserial tail:\n%s",
				n.name, s.Address, ctx.Err(), lastErr, s.MAC, n.DHCPLog(10), n.SerialTail(20))
		case <-t.C:
		}
	}
}

// WaitBooted waits for every node concurrently; it returns each node's boot time by name.
func (l *Lab) WaitBooted(ctx context.Context) (map[string]time.Duration, error) {
	nodes, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	times := make(map[string]time.Duration)
	var mu sync.Mutex // guards times
	err = forEach(nodes, func(n *Node) error {
		d, err := n.WaitBooted(ctx)
		mu.Lock()
		times[n.name] = d
		mu.Unlock()
		return err
	})
	return times, err
}

// DHCPLog is the last lines of the lab's dnsmasq log that name the node's current MAC ("" if none), for
// failure reports.
func (n *Node) DHCPLog(lines int) string {
	s, err := n.State()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(n.lab.dhcpConfig().LogFile())
	if err != nil {
		return ""
	}
	mac := strings.ToLower(s.MAC) // dnsmasq logs MACs in lower case
	var hits []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, mac) {
			hits = append(hits, l)
		}
	}
	if len(hits) > lines {
		hits = hits[len(hits)-lines:]
	}
	return strings.Join(hits, "\n")
}

// SerialTail is the last lines of the node's serial log (or why there is none), for failure reports.
func (n *Node) SerialTail(lines int) string { return files.Tail(n.SerialLog(), lines) }

// Power is the node's power state: "off" without a qemu process, else qemu's run state ("running", "paused",
// "shutdown", …), or "unknown" if QMP does not answer.
func (n *Node) Power(ctx context.Context) string {
	if !n.Running() {
		return "off"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := qemu.Status(ctx, n.lab.qmpSocket(NodeState{Name: n.name}))
	if err != nil {
		return "unknown"
	}
	return st
}

// WaitSerial waits until marker appears in the node's serial console output of its current boot (the log is
// appended across boots; only what came after the last start counts), bounded by ctx.
func (n *Node) WaitSerial(ctx context.Context, marker string) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		s, err := n.State()
		if err != nil {
			return err
		}
		if b, err := os.ReadFile(n.SerialLog()); err == nil && int64(len(b)) >= s.SerialOffset &&
			bytes.Contains(b[s.SerialOffset:], []byte(marker)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: no %q on the serial console: %w", n.name, marker, ctx.Err())
		case <-t.C:
		}
	}
}
