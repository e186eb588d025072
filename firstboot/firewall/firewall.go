package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
)

// NFT runs the nft binary with stdin (nil for none) and returns its stdout. HostNFT is the real one; tests run
// nft inside a network namespace of their own.
type NFT func(ctx context.Context, stdin []byte, args ...string) ([]byte, error)

// HostNFT runs /usr/sbin/nft through internal/run.
func HostNFT(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	return run.CmdIn(ctx, stdin, "nft", args...)
}

// Options configure the firewall reconciler beyond what State carries.
type Options struct {
	// DiscoveryPorts are the agent's membership ports (TCP and UDP), opened to the local subnet and StaticPeers.
	DiscoveryPorts []uint16
	// StaticPeers are the config's cluster.peers (clouds without multicast): they may announce themselves even
	// when they are outside the local subnet.
	StaticPeers []netip.Addr
	// ScriptPath, if set, is where the applied script is also written for humans (/run/kiln/firewall.nft).
	ScriptPath string
	// PersistPath, if set, is where the applied script is kept for the next boot (firewall.PersistPath).
	PersistPath string
}

// Reconciler keeps table inet kiln equal to Render(rules from State).
type Reconciler struct {
	nft  NFT
	opts Options
	log  *slog.Logger
}

// New returns the firewall reconciler.
func New(nft NFT, opts Options, log *slog.Logger) *Reconciler {
	return &Reconciler{nft: nft, opts: opts, log: log}
}

// Name implements state.Reconciler.
func (r *Reconciler) Name() string { return "firewall" }

// RulesFor derives the rules from the agent state: the member addresses (state.PeerAddrs), the local subnet
// and static peers.
func (r *Reconciler) RulesFor(s *state.State) Rules {
	// Members of the formation record that discovery has not seen again yet (just after a boot) are in:
	// blocking them would stall swarm, gluster and VRRP until membership converges. Departed members are out.
	rules := Rules{DiscoveryPorts: r.opts.DiscoveryPorts, Members: s.PeerAddrs()}
	if s.Subnet.IsValid() {
		rules.Discovery = append(rules.Discovery, s.Subnet)
	}
	for _, a := range r.opts.StaticPeers {
		if a.IsValid() {
			rules.Discovery = append(rules.Discovery, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return rules
}

// Reconcile observes which ruleset is loaded (by the table comment), and replaces the table only if it differs.
// A flushed ruleset or a missing table reads as "nothing loaded" and is repaired on the next pass.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	script := Render(r.RulesFor(s))
	want := MarkerOf(script)
	have, err := r.Loaded(ctx)
	if err != nil {
		return false, err
	}
	s.Set("firewall", "table inet kiln "+want)
	if have == want {
		return false, nil
	}
	if err := r.Apply(ctx, script); err != nil {
		return false, err
	}
	r.log.Info("firewall: replaced table", "table", Table, "marker", want, "previous", have)
	return true, nil
}

// Loaded returns the marker of the loaded table inet kiln, or "" when there is none.
func (r *Reconciler) Loaded(ctx context.Context) (string, error) {
	out, err := r.nft(ctx, nil, "list", "table", "inet", "kiln")
	if err != nil {
		var re *run.Error
		// nft says "No such file or directory" (ENOENT) for a missing table.
		if errors.As(err, &re) && strings.Contains(re.Stderr, "No such file or directory") {
			return "", nil
		}
		return "", fmt.Errorf("firewall: list table %s: %w", Table, err)
	}
	return ParseMarker(out), nil
}

// Apply loads script in one `nft -f -` transaction and verifies the table now carries the script's marker.
func (r *Reconciler) Apply(ctx context.Context, script string) error {
	if _, err := r.nft(ctx, []byte(script), "-f", "-"); err != nil {
		return fmt.Errorf("firewall: load table %s: %w", Table, err)
	}
	have, err := r.Loaded(ctx)
	if err != nil {
		return err
	}
	if want := MarkerOf(script); have != want {
		return fmt.Errorf("firewall: table %s carries %q after load, want %q", Table, have, want)
	}
	for _, p := range []string{r.opts.ScriptPath, r.opts.PersistPath} {
		if p == "" {
			continue
		}
		if err := files.Write(p, []byte(script), 0o644); err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
	}
	return nil
}

// MarkerOf extracts the marker Render put into script.
func MarkerOf(script string) string { return ParseMarker([]byte(script)) }

// ParseMarker finds the table comment in `nft list table inet kiln` output (or a rendered script): the first
// `comment "kiln sha256:…"` line. Anything else yields "" (treated as "not ours, replace it").
func ParseMarker(out []byte) string {
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, `comment "`)
		if !ok {
			continue
		}
		v, ok := strings.CutSuffix(rest, `"`)
		if !ok || !strings.HasPrefix(v, "kiln sha256:") || strings.ContainsAny(v, "\"\\") {
			return ""
		}
		return v
	}
	return ""
}
