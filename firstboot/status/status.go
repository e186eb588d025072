// Package status is the agent's report of where the node stands, written to /run/kiln/status.json by the agent
// and read by `kiln-firstboot status` (and by the lab over ssh): the one file to look at when a cluster
// doesn't form.
package status

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/internal/files"
)

// DefaultPath is where the agent writes its status (docs/design.md: /run/kiln/ is regenerated every boot).
const DefaultPath = "/run/kiln/status.json"

// Phase is where the agent is in forming or keeping the cluster.
type Phase string

// Phases the agent reports. They are suggestions for the agent loop, not a closed set: readers print
// whatever string they find.
const (
	PhaseStarting    Phase = "starting"     // loading config and identity
	PhaseConfigError Phase = "config-error" // no config or an invalid one: the node waits and changes nothing
	PhaseDiscovering Phase = "discovering"  // looking for peers until a majority of cluster.size is seen
	PhaseForming     Phase = "forming"      // electing an initialiser, creating or joining swarm/gluster
	PhaseReady       Phase = "ready"        // converged: swarm, volume and VIP as desired
	PhaseDegraded    Phase = "degraded"     // formed, but a reconciler fails or members are missing
)

// Status is the content of status.json.
type Status struct {
	// NodeID and Hostname are this node's identity.
	NodeID   string `json:"node_id"`
	Hostname string `json:"hostname"`
	Phase    Phase  `json:"phase"`
	// Cluster is the cluster name from the config; empty while there is none.
	Cluster string `json:"cluster,omitempty"`
	// ConfigSource says which source the config came from (fw_cfg, cmdline-url, esp, image).
	ConfigSource string `json:"config_source,omitempty"`
	// ConfigSkipped says why higher-priority sources that were asked for gave no config (a kiln.config= server
	// that did not answer, or answered 404), so the config came from ConfigSource instead.
	ConfigSkipped []string `json:"config_skipped,omitempty"`
	// ConfigError is why there is no usable config; empty when there is one.
	ConfigError string `json:"config_error,omitempty"`
	// NoBrick says why this node holds no gluster brick ("no brick: /var is in RAM (…)"); empty when it may.
	NoBrick string `json:"no_brick,omitempty"`
	// Election says what the election waits for when members with /var in RAM (which do not vote) are why
	// it cannot decide, or that this node is such a member; empty otherwise and once decided.
	Election string `json:"election,omitempty"`
	// Expected is cluster.size; Members are all known members (self included) sorted by ID.
	Expected int             `json:"expected,omitempty"`
	Members  []member.Member `json:"members"`
	Swarm    Component       `json:"swarm"`
	Gluster  Component       `json:"gluster"`
	// VIP is the floating address (prefix form); VIPHolder the hostname of the node holding it, empty if none
	// or unknown.
	VIP       string `json:"vip,omitempty"`
	VIPHolder string `json:"vip_holder,omitempty"`
	// Reconcilers holds each reconciler's one-line report by name (state.Report.Status).
	Reconcilers map[string]string `json:"reconcilers,omitempty"`
	// LastError is the most recent error of the agent loop or a reconciler; LastErrorAt when it happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Alert is what needs a human although the agent goes on: a newer epoch this node refused because its
	// swarm holds a live quorum (a forced recovery ran on a node cut off from the majority).
	Alert string `json:"alert,omitempty"`
	// UpdatedAt is when the agent wrote this; a stale time means the agent is stuck or dead.
	UpdatedAt time.Time `json:"updated_at"`
}

// Component is the state of one clustered service on this node.
type Component struct {
	// State is a short word (e.g. "none", "initialised", "joined", "mounted", "error").
	State string `json:"state,omitempty"`
	// Detail is a human-readable line (swarm node id and managers, volume and bricks, the error).
	Detail string `json:"detail,omitempty"`
}

// Write writes s to path atomically (temp file in the same directory, fsync, rename), so a reader never sees
// half a file. It sets UpdatedAt when zero.
func Write(path string, s *Status) error {
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = time.Now().UTC()
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("status: encode: %w", err)
	}
	// World-readable: status holds no secrets (formation tokens never go here) and users run `status`.
	if err := files.Write(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return nil
}

// Read reads the status at path. A missing file wraps fs.ErrNotExist (the agent has not started yet).
func Read(path string) (*Status, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("status: decode %s: %w", path, err)
	}
	return &s, nil
}
