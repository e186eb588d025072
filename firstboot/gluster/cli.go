package gluster

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/internal/run"
)

// Runner runs `gluster --mode=script args...` and returns stdout; its error may come with stdout too. The
// CLI adds `--xml` in front of args for every command but the heal launches (see Heal).
type Runner func(ctx context.Context, args ...string) ([]byte, error)

// HostRunner runs the host's gluster CLI through internal/run.
func HostRunner(ctx context.Context, args ...string) ([]byte, error) {
	return run.Cmd(ctx, "gluster", append([]string{"--mode=script"}, args...)...)
}

// CLI is the typed gluster command set the reconciler uses: the only place that runs the gluster CLI (script
// mode, XML output where it works).
type CLI struct{ run Runner }

// NewCLI wraps r.
func NewCLI(r Runner) *CLI { return &CLI{run: r} }

// OpError is a failure gluster reported in its XML (it often exits 0 while saying opRet -1).
type OpError struct {
	Errno  int
	Errstr string
}

func (e *OpError) Error() string { return fmt.Sprintf("gluster: errno %d: %s", e.Errno, e.Errstr) }

// errnoVolumeMissing is glusterd's GD_OP_ERRNO for "Volume does not exist" (observed on glusterfs 10.3).
const errnoVolumeMissing = 30806

// Peer is one entry of `peer status`.
type Peer struct {
	UUID      string
	Hostname  string
	Hostnames []string
	Connected bool
	State     string // stateStr, e.g. "Peer in Cluster"
}

// Names are every name the peer is known by.
func (p Peer) Names() []string { return append([]string{p.Hostname}, p.Hostnames...) }

// InCluster reports whether the peer is connected and fully accepted.
func (p Peer) InCluster() bool { return p.Connected && p.State == "Peer in Cluster" }

// Volume is one volume of `volume info`.
type Volume struct {
	Name    string
	ID      string
	Status  string // statusStr: Created, Started, Stopped
	Type    string // typeStr: Replicate, Distribute, …
	Replica int
	Bricks  []string // host:path
	Options map[string]string
}

// HealBrick is one brick of `volume heal <v> info`.
type HealBrick struct {
	Name    string
	Status  string
	Entries int // -1 when gluster printed "-" (brick not connected)
}

type cliOutput struct {
	OpRet    int    `xml:"opRet"`
	OpErrno  int    `xml:"opErrno"`
	OpErrstr string `xml:"opErrstr"`
	Output   string `xml:"output"`
	Peers    []struct {
		UUID      string   `xml:"uuid"`
		Hostname  string   `xml:"hostname"`
		Hostnames []string `xml:"hostnames>hostname"`
		Connected int      `xml:"connected"`
		StateStr  string   `xml:"stateStr"`
	} `xml:"peerStatus>peer"`
	Volumes []struct {
		Name         string `xml:"name"`
		ID           string `xml:"id"`
		StatusStr    string `xml:"statusStr"`
		TypeStr      string `xml:"typeStr"`
		ReplicaCount int    `xml:"replicaCount"`
		Bricks       []struct {
			Name string `xml:"name"`
		} `xml:"bricks>brick"`
		Options []struct {
			Name  string `xml:"name"`
			Value string `xml:"value"`
		} `xml:"options>option"`
	} `xml:"volInfo>volumes>volume"`
	HealBricks []struct {
		Name    string `xml:"name"`
		Status  string `xml:"status"`
		Entries string `xml:"numberOfEntries"`
	} `xml:"healInfo>bricks>brick"`
	StatusVolumes []struct {
		Name  string `xml:"volName"`
		Nodes []struct {
			Hostname string `xml:"hostname"`
			Path     string `xml:"path"`
			PeerID   string `xml:"peerid"`
			Status   int    `xml:"status"`
		} `xml:"node"`
	} `xml:"volStatus>volumes>volume"`
}

// parse decodes gluster's XML and turns opRet != 0 into an *OpError.
func parse(out []byte) (*cliOutput, error) {
	var c cliOutput
	if err := xml.Unmarshal(out, &c); err != nil {
		return nil, fmt.Errorf("gluster: decode XML output: %w", err)
	}
	if c.OpRet != 0 {
		return &c, &OpError{Errno: c.OpErrno, Errstr: strings.TrimSpace(c.OpErrstr)}
	}
	return &c, nil
}

// ParsePeers decodes `peer status` (or `pool list`) output.
func ParsePeers(out []byte) ([]Peer, error) {
	c, err := parse(out)
	if err != nil {
		return nil, err
	}
	var ps []Peer
	for _, p := range c.Peers {
		ps = append(ps, Peer{UUID: p.UUID, Hostname: p.Hostname, Hostnames: p.Hostnames, Connected: p.Connected == 1, State: p.StateStr})
	}
	return ps, nil
}

// ParseVolumeInfo decodes `volume info <name>`; a missing volume is (nil, nil).
func ParseVolumeInfo(out []byte) (*Volume, error) {
	c, err := parse(out)
	var oe *OpError
	if errors.As(err, &oe) && (oe.Errno == errnoVolumeMissing || strings.Contains(oe.Errstr, "does not exist")) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(c.Volumes) == 0 {
		return nil, nil
	}
	v := c.Volumes[0]
	vol := &Volume{Name: v.Name, ID: v.ID, Status: v.StatusStr, Type: v.TypeStr, Replica: v.ReplicaCount, Options: map[string]string{}}
	for _, b := range v.Bricks {
		vol.Bricks = append(vol.Bricks, b.Name)
	}
	for _, o := range v.Options {
		vol.Options[o.Name] = o.Value
	}
	return vol, nil
}

// ParseHealInfo decodes `volume heal <v> info`.
func ParseHealInfo(out []byte) ([]HealBrick, error) {
	c, err := parse(out)
	if err != nil {
		return nil, err
	}
	var bs []HealBrick
	for _, b := range c.HealBricks {
		n := -1
		fmt.Sscan(strings.TrimSpace(b.Entries), &n)
		bs = append(bs, HealBrick{Name: b.Name, Status: b.Status, Entries: n})
	}
	return bs, nil
}

// call runs args and decodes the XML, preferring gluster's own error text over the exit status.
func (g *CLI) call(ctx context.Context, args ...string) ([]byte, error) {
	out, err := g.xml(ctx, args...)
	if err != nil {
		if _, perr := parse(out); perr != nil {
			var oe *OpError
			if errors.As(perr, &oe) {
				return out, fmt.Errorf("gluster %s: %w", strings.Join(args, " "), oe)
			}
		}
		return out, fmt.Errorf("gluster %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// xml runs args in XML output mode.
func (g *CLI) xml(ctx context.Context, args ...string) ([]byte, error) {
	return g.run(ctx, append([]string{"--xml"}, args...)...)
}

// op runs a command whose output carries nothing but success or failure.
func (g *CLI) op(ctx context.Context, args ...string) error {
	out, err := g.call(ctx, args...)
	if err != nil {
		return err
	}
	if _, err := parse(out); err != nil {
		return fmt.Errorf("gluster %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// Peers returns the peers this node knows (itself excluded).
func (g *CLI) Peers(ctx context.Context) ([]Peer, error) { return g.peers(ctx) }

// PeersOf returns the peers host's glusterd knows, asked over the network (`--remote-host`: glusterd's port
// 24007, which the firewall opens to members only). Read-only; glusterd serves it to remote CLIs.
func (g *CLI) PeersOf(ctx context.Context, host string) ([]Peer, error) {
	return g.peers(ctx, "--remote-host="+host)
}

func (g *CLI) peers(ctx context.Context, flags ...string) ([]Peer, error) {
	args := append(flags, "peer", "status")
	out, err := g.call(ctx, args...)
	if err != nil {
		return nil, err
	}
	ps, err := ParsePeers(out)
	if err != nil {
		return nil, fmt.Errorf("gluster %s: %w", strings.Join(args, " "), err)
	}
	return ps, nil
}

// Probe adds host to the trusted pool (a no-op for a known peer or this node).
func (g *CLI) Probe(ctx context.Context, host string) error { return g.op(ctx, "peer", "probe", host) }

// VolumeInfo returns the volume, or nil when it does not exist.
func (g *CLI) VolumeInfo(ctx context.Context, name string) (*Volume, error) {
	out, err := g.xml(ctx, "volume", "info", name)
	// gluster may exit non-zero for a missing volume while printing valid XML saying so: the XML decides.
	v, perr := ParseVolumeInfo(out)
	if perr == nil {
		return v, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gluster volume info %s: %w", name, err)
	}
	return nil, fmt.Errorf("gluster volume info %s: %w", name, perr)
}

// Create creates a volume with the given replica count over bricks (host:path). No `force`: the bricks live on
// the state partition (/var), and gluster's refusal to put a brick on the root filesystem is a check worth
// keeping (it fires when the state partition is missing).
func (g *CLI) Create(ctx context.Context, name string, replica int, bricks []string) error {
	args := []string{"volume", "create", name}
	if replica > 1 {
		args = append(args, "replica", fmt.Sprint(replica))
	}
	return g.op(ctx, append(args, bricks...)...)
}

// Set sets volume options in one transaction; volume "all" sets cluster-wide ones.
func (g *CLI) Set(ctx context.Context, volume string, opts ...Option) error {
	args := []string{"volume", "set", volume}
	for _, o := range opts {
		args = append(args, o.Key, o.Value)
	}
	return g.op(ctx, args...)
}

// Start starts the volume.
func (g *CLI) Start(ctx context.Context, name string) error {
	return g.op(ctx, "volume", "start", name)
}

// HealInfo returns per-brick pending heal counts.
func (g *CLI) HealInfo(ctx context.Context, name string) ([]HealBrick, error) {
	out, err := g.call(ctx, "volume", "heal", name, "info")
	if err != nil {
		return nil, err
	}
	bs, err := ParseHealInfo(out)
	if err != nil {
		return nil, fmt.Errorf("gluster volume heal %s info: %w", name, err)
	}
	return bs, nil
}

// Heal launches a heal of volume name: an index heal of the pending entries, or with full a crawl of every
// brick. It runs in text mode: glusterfs 10.3 prints nothing and exits 1 for `--xml volume heal <v> [full]`
// even when the launch worked (a FULL crawl shows in `heal <v> statistics` afterwards), so XML
// mode cannot tell a launch from a refusal. In text mode exit status 0 is a launch.
func (g *CLI) Heal(ctx context.Context, name string, full bool) error {
	args := []string{"volume", "heal", name}
	if full {
		args = append(args, "full")
	}
	out, err := g.run(ctx, args...)
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return fmt.Errorf("gluster %s: %s: %w", strings.Join(args, " "), msg, err)
		}
		return fmt.Errorf("gluster %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// Process is one line of `volume status <v>`: a brick (Host, Path) or a daemon such as the self-heal daemon
// (Host "Self-heal Daemon", Path the node it runs on, "localhost" for this one).
type Process struct {
	Host   string
	Path   string
	PeerID string
	Online bool
}

// SelfHealDaemon is the Host `volume status` gives the self-heal daemons.
const SelfHealDaemon = "Self-heal Daemon"

// ParseVolumeStatus decodes volume name's part of `volume status` output.
func ParseVolumeStatus(out []byte, name string) ([]Process, error) {
	c, err := parse(out)
	if err != nil {
		return nil, err
	}
	var ps []Process
	for _, v := range c.StatusVolumes {
		if v.Name != name {
			continue
		}
		for _, n := range v.Nodes {
			ps = append(ps, Process{Host: n.Hostname, Path: n.Path, PeerID: n.PeerID, Online: n.Status == 1})
		}
	}
	return ps, nil
}

// VolumeStatus returns the bricks and daemons of volume name with whether each is online.
func (g *CLI) VolumeStatus(ctx context.Context, name string) ([]Process, error) {
	out, err := g.call(ctx, "volume", "status", name)
	if err != nil {
		return nil, err
	}
	ps, err := ParseVolumeStatus(out, name)
	if err != nil {
		return nil, fmt.Errorf("gluster volume status %s: %w", name, err)
	}
	return ps, nil
}
