package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// statusProbeTimeout bounds the ssh round trip of one node's status: a new connection's handshake may take
// up to sshConnectTimeout on a loaded TCG guest, then the agent's status command runs.
const statusProbeTimeout = sshConnectTimeout*time.Second + 10*time.Second

// NodeStatus is what `kiln lab status` shows for a node.
type NodeStatus struct {
	Name    string `json:"name"`
	Index   int    `json:"index"`
	Power   string `json:"power"`
	Address string `json:"address"`
	MAC     string `json:"mac"`
	UUID    string `json:"uuid"`
	// Booted reports whether the node answered ssh.
	Booted    bool   `json:"booted"`
	Partition string `json:"partition,omitempty"`
	// Agent is the output of `kiln-firstboot status --json` on the node; nil when the node is down, the agent
	// absent, or its output not JSON (AgentError says which).
	Agent      json.RawMessage `json:"agent,omitempty"`
	AgentError string          `json:"agent_error,omitempty"`
}

// Status observes every node concurrently.
func (l *Lab) Status(ctx context.Context) ([]NodeStatus, error) {
	st, err := l.State()
	if err != nil {
		return nil, err
	}
	out := make([]NodeStatus, len(st.Nodes))
	var wg sync.WaitGroup
	for i, ns := range st.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := &Node{lab: l, name: ns.Name}
			s := NodeStatus{Name: ns.Name, Index: ns.Index, Address: ns.Address, MAC: ns.MAC, UUID: ns.UUID,
				Partition: ns.Partition, Power: n.Power(ctx)}
			if s.Power == "running" {
				l.probeAgent(ctx, ns.Address, &s)
			}
			out[i] = s
		}()
	}
	wg.Wait()
	return out, nil
}

// probeAgent asks the node's agent for its status; any answer over ssh means the node booted.
func (l *Lab) probeAgent(ctx context.Context, addr string, s *NodeStatus) {
	ctx, cancel := context.WithTimeout(ctx, statusProbeTimeout)
	defer cancel()
	res, err := l.exec(ctx, addr, ExecOptions{}, "kiln-firstboot", "status", "--json")
	switch {
	case errors.Is(err, ErrUnreachable):
		// Refused or timed out: not booted yet, or cut off. The error's last words say which.
		s.AgentError = err.Error()
		return
	case err != nil:
		s.AgentError = err.Error()
		return
	case res.ExitCode == 127:
		s.Booted, s.AgentError = true, "kiln-firstboot not installed"
	case res.ExitCode != 0:
		s.Booted, s.AgentError = true, fmt.Sprintf("kiln-firstboot status: exit %d: %s", res.ExitCode, strings.TrimSpace(res.Stderr))
	case !json.Valid(res.Stdout):
		s.Booted, s.AgentError = true, "kiln-firstboot status: output is not JSON"
	default:
		s.Booted, s.Agent = true, json.RawMessage(res.Stdout)
	}
}
