// Package clusterhealth is one node's answer for the whole cluster: the agent's membership, the swarm's managers
// and leader as the swarm reports them, the volume's bricks and pending heals as glusterd reports them, the VIP
// holder and the reconcilers' last errors, with a verdict (`kiln-firstboot status --cluster`, which `kiln cluster
// status --ssh` runs). Assess is pure: what is unhealthy is decided in one place, from the report alone.
package clusterhealth

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/status"
)

// StatusFresh is the oldest agent status the report trusts: the agent writes it every pass.
const StatusFresh = 2 * time.Minute

// Report is the cluster as one node sees it. JSON names follow docs/cli.md (snake_case).
type Report struct {
	Cluster  string    `json:"cluster"`
	Node     string    `json:"node"` // the answering node's hostname
	At       time.Time `json:"at"`
	Healthy  bool      `json:"healthy"`
	Problems []string  `json:"problems"`

	Phase       status.Phase      `json:"phase"`
	StatusAge   string            `json:"status_age"`
	Expected    int               `json:"expected"`
	Members     []Member          `json:"members"`
	Swarm       Swarm             `json:"swarm"`
	Volume      Volume            `json:"volume"`
	VIP         string            `json:"vip,omitempty"`
	VIPHolder   string            `json:"vip_holder,omitempty"`
	Reconcilers map[string]string `json:"reconcilers,omitempty"`
	LastError   string            `json:"last_error,omitempty"`
	LastErrorAt time.Time         `json:"last_error_at,omitzero"`

	statusAge time.Duration
}

// Member is one member as the answering node's agent sees it.
type Member struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname"`
	Addr      string    `json:"addr"`
	Alive     bool      `json:"alive"`
	DownSince time.Time `json:"down_since,omitzero"`
}

// Swarm is the swarm's node list (from a manager; empty with Error set when it has no leader or this node is
// not a manager).
type Swarm struct {
	Leader string      `json:"leader,omitempty"`
	Nodes  []SwarmNode `json:"nodes"`
	Error  string      `json:"error,omitempty"`
}

// SwarmNode is one entry of the swarm's node list.
type SwarmNode struct {
	Hostname     string `json:"hostname"`
	Addr         string `json:"addr"`
	Role         string `json:"role"`
	State        string `json:"state"`                  // ready, down, unknown
	Reachability string `json:"reachability,omitempty"` // managers: reachable, unreachable
	Leader       bool   `json:"leader,omitempty"`
}

// Volume is the gluster volume's bricks.
type Volume struct {
	Name   string  `json:"name"`
	Bricks []Brick `json:"bricks"`
	Error  string  `json:"error,omitempty"`
}

// Brick is one brick with its pending heal entries (-1: its brick process is not connected).
type Brick struct {
	Host         string `json:"host"`
	Path         string `json:"path"`
	Online       bool   `json:"online"`
	PendingHeals int    `json:"pending_heals"`
}

// NodeLister is the swarm call the report needs (*client.Client has it).
type NodeLister interface {
	NodeList(ctx context.Context, opts swarm.NodeListOptions) ([]swarm.Node, error)
}

// VolumeReader is the gluster calls the report needs (*gluster.CLI has them).
type VolumeReader interface {
	VolumeStatus(ctx context.Context, name string) ([]gluster.Process, error)
	HealInfo(ctx context.Context, name string) ([]gluster.HealBrick, error)
}

// Collect builds the report from the agent's status st, the swarm and the volume, and assesses it. A part
// that does not answer is reported with its error, never fatal: an unhealthy cluster is what this is for.
func Collect(ctx context.Context, st *status.Status, docker NodeLister, vol VolumeReader, now time.Time) *Report {
	r := &Report{Cluster: st.Cluster, Node: st.Hostname, At: now.UTC(), Phase: st.Phase, Expected: st.Expected,
		VIP: st.VIP, VIPHolder: st.VIPHolder, Reconcilers: st.Reconcilers, LastError: st.LastError, LastErrorAt: st.LastErrorAt,
		statusAge: now.Sub(st.UpdatedAt)}
	r.StatusAge = r.statusAge.Round(time.Second).String()
	for _, m := range st.Members {
		r.Members = append(r.Members, Member{ID: m.ID, Hostname: m.Hostname, Addr: m.Addr.String(), Alive: m.Alive, DownSince: m.DownSince})
	}
	r.Swarm = collectSwarm(ctx, docker)
	r.Volume = collectVolume(ctx, vol)
	Assess(r)
	return r
}

func collectSwarm(ctx context.Context, docker NodeLister) Swarm {
	var s Swarm
	nodes, err := docker.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		s.Error = err.Error()
		return s
	}
	for _, n := range nodes {
		sn := SwarmNode{Hostname: n.Description.Hostname, Addr: n.Status.Addr, Role: string(n.Spec.Role), State: string(n.Status.State)}
		if ms := n.ManagerStatus; ms != nil {
			sn.Reachability, sn.Leader = string(ms.Reachability), ms.Leader
			if ms.Leader {
				s.Leader = sn.Hostname
			}
		}
		s.Nodes = append(s.Nodes, sn)
	}
	slices.SortFunc(s.Nodes, func(a, b SwarmNode) int { return cmp.Compare(a.Hostname, b.Hostname) })
	return s
}

func collectVolume(ctx context.Context, vol VolumeReader) Volume {
	v := Volume{Name: gluster.VolumeName}
	ps, err := vol.VolumeStatus(ctx, gluster.VolumeName)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	heal := map[string]int{}
	hs, herr := vol.HealInfo(ctx, gluster.VolumeName)
	for _, h := range hs {
		heal[h.Name] = h.Entries
	}
	for _, p := range ps {
		if p.Host == gluster.SelfHealDaemon {
			continue
		}
		b := Brick{Host: p.Host, Path: p.Path, Online: p.Online, PendingHeals: -1}
		if n, ok := heal[p.Host+":"+p.Path]; ok {
			b.PendingHeals = n
		}
		v.Bricks = append(v.Bricks, b)
	}
	if herr != nil {
		v.Error = "heal info: " + herr.Error()
	}
	return v
}

// Assess sets r.Problems (in the order an operator would look: agent, members, swarm, volume, VIP) and
// r.Healthy: every expected member alive, a swarm leader with every node ready and every manager reachable,
// every brick online with nothing left to heal, one VIP holder, and an agent that reports ready.
func Assess(r *Report) {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if r.statusAge > StatusFresh {
		add("the agent on %s last reported %s ago: it is stuck or not running", r.Node, r.StatusAge)
	}
	if r.Phase != status.PhaseReady {
		add("%s is %s, not ready", r.Node, r.Phase)
	}
	alive := 0
	for _, m := range r.Members {
		if m.Alive {
			alive++
			continue
		}
		since := ""
		if !m.DownSince.IsZero() {
			since = " since " + m.DownSince.UTC().Format(time.RFC3339)
		}
		add("member %s (%s) is down%s", cmp.Or(m.Hostname, m.ID), m.Addr, since)
	}
	if alive < r.Expected {
		add("%d of %d members alive", alive, r.Expected)
	}
	switch {
	case r.Swarm.Error != "":
		add("swarm: %s", r.Swarm.Error)
	case r.Swarm.Leader == "":
		add("swarm: no leader")
	}
	for _, n := range r.Swarm.Nodes {
		if n.State != string(swarm.NodeStateReady) {
			add("swarm: %s (%s) is %s", n.Hostname, n.Role, n.State)
		}
		if n.Role == string(swarm.NodeRoleManager) && n.Reachability != string(swarm.ReachabilityReachable) {
			add("swarm: manager %s is %s", n.Hostname, cmp.Or(n.Reachability, "unknown"))
		}
	}
	if r.Volume.Error != "" {
		add("volume %s: %s", r.Volume.Name, r.Volume.Error)
	}
	if r.Volume.Error == "" && len(r.Volume.Bricks) == 0 {
		add("volume %s: no bricks", r.Volume.Name)
	}
	for _, b := range r.Volume.Bricks {
		switch {
		case !b.Online:
			add("volume %s: brick %s:%s is offline", r.Volume.Name, b.Host, b.Path)
		case b.PendingHeals > 0:
			add("volume %s: brick %s:%s has %d entries to heal", r.Volume.Name, b.Host, b.Path, b.PendingHeals)
		case b.PendingHeals < 0:
			add("volume %s: brick %s:%s: heal state unknown", r.Volume.Name, b.Host, b.Path)
		}
	}
	if r.VIP != "" && r.VIPHolder == "" {
		add("no node holds the VIP %s", r.VIP)
	}
	r.Problems, r.Healthy = p, len(p) == 0
	if r.Problems == nil {
		r.Problems = []string{}
	}
}

// Format writes r for a terminal: the verdict, the problems, then each part.
func Format(r *Report) string {
	var b strings.Builder
	verdict := "healthy"
	if !r.Healthy {
		verdict = fmt.Sprintf("NOT healthy (%d problems)", len(r.Problems))
	}
	fmt.Fprintf(&b, "cluster %s, as %s sees it: %s\n", r.Cluster, r.Node, verdict)
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  ! %s\n", p)
	}
	fmt.Fprintf(&b, "members (%d expected):\n", r.Expected)
	for _, m := range r.Members {
		state := "alive"
		if !m.Alive {
			state = "down"
		}
		fmt.Fprintf(&b, "  %-20s %-15s %s\n", cmp.Or(m.Hostname, m.ID), m.Addr, state)
	}
	fmt.Fprintf(&b, "swarm (leader %s):\n", cmp.Or(r.Swarm.Leader, "none"))
	for _, n := range r.Swarm.Nodes {
		fmt.Fprintf(&b, "  %-20s %-15s %-8s %-6s %s\n", n.Hostname, n.Addr, n.Role, n.State, n.Reachability)
	}
	fmt.Fprintf(&b, "volume %s:\n", r.Volume.Name)
	for _, br := range r.Volume.Bricks {
		online := "online"
		if !br.Online {
			online = "offline"
		}
		fmt.Fprintf(&b, "  %s:%s %s, %d to heal\n", br.Host, br.Path, online, br.PendingHeals)
	}
	fmt.Fprintf(&b, "vip %s on %s\n", cmp.Or(r.VIP, "(none)"), cmp.Or(r.VIPHolder, "nobody"))
	if r.LastError != "" {
		fmt.Fprintf(&b, "last error on %s: %s (%s)\n", r.Node, r.LastError, r.LastErrorAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}
