package formation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/lab"
)

// Exec runs argv on n and returns its trimmed stdout; a non-zero exit is an error carrying the stderr tail.
func Exec(ctx context.Context, n *lab.Node, argv ...string) (string, error) {
	res, err := n.Exec(ctx, argv...)
	if err != nil {
		return "", fmt.Errorf("%s: %q: %w", n.Name(), argv, err)
	}
	if res.ExitCode != 0 {
		return strings.TrimSpace(string(res.Stdout)), fmt.Errorf("%s: %q: exit %d: %s", n.Name(), argv, res.ExitCode, strings.TrimSpace(res.Stderr))
	}
	return strings.TrimSpace(string(res.Stdout)), nil
}

// AgentStatus is n's `kiln-firstboot status --json`.
func AgentStatus(ctx context.Context, n *lab.Node) (*status.Status, error) {
	out, err := Exec(ctx, n, "kiln-firstboot", "status", "--json")
	if err != nil {
		return nil, err
	}
	var s status.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("%s: kiln-firstboot status --json: %w in %q", n.Name(), err, out)
	}
	return &s, nil
}

// Formed reports whether a node's agent says its cluster is formed: swarm, volume and VIP as desired.
func Formed(s *status.Status) bool { return s != nil && s.Phase == status.PhaseReady }

// pollCallTimeout bounds one observation: a single call that hangs (docker's CLI waits without limit on a
// manager busy with raft) must cost one observation, not the whole wait.
const pollCallTimeout = time.Minute

// Poll calls cond every interval until it reports done or ctx ends. Each call gets at most pollCallTimeout.
// cond's details (what it saw) are kept for the error when ctx ends first: the last few different ones, each
// with when it was first seen, so a failure shows how the wait went and not only the call that the deadline
// cut short. An error from cond ends the poll at once, so cond reports transient failures (a node not
// answering yet) as detail, not as an error.
func Poll(ctx context.Context, every time.Duration, what string, cond func(ctx context.Context) (done bool, detail string, err error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	var seen []string
	last := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, pollCallTimeout)
		done, d, err := cond(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if done {
			return nil
		}
		if d != last {
			last = d
			seen = append(seen, fmt.Sprintf("+%s: %s", time.Since(start).Round(time.Second), d))
			if len(seen) > pollHistory {
				seen = seen[1:]
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; last seen (first seen at):\n%s", what, ctx.Err(), strings.Join(seen, "\n"))
		case <-t.C:
		}
	}
}

// pollHistory is how many different details a failed Poll reports.
const pollHistory = 6

// Statuses reads every node's agent status concurrently. A node that does not answer yet has a nil status and
// its error in errs (booting nodes are normal while waiting).
func Statuses(ctx context.Context, nodes []*lab.Node) (sts map[string]*status.Status, errs map[string]error) {
	sts, errs = map[string]*status.Status{}, map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := AgentStatus(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			sts[n.Name()] = s
			if err != nil {
				errs[n.Name()] = err
			}
		}()
	}
	wg.Wait()
	return sts, errs
}

// Summary is one line per node: phase, members alive, swarm, gluster, VIP holder, last error.
func Summary(nodes []*lab.Node, sts map[string]*status.Status, errs map[string]error) string {
	var b strings.Builder
	for _, n := range nodes {
		s := sts[n.Name()]
		if s == nil {
			fmt.Fprintf(&b, "\n  %s: no status: %v", n.Name(), errs[n.Name()])
			continue
		}
		alive := 0
		for _, m := range s.Members {
			if m.Alive {
				alive++
			}
		}
		fmt.Fprintf(&b, "\n  %s (%s): phase %s, members %d/%d, swarm %q, gluster %q, vip holder %q",
			n.Name(), s.Hostname, s.Phase, alive, s.Expected, s.Swarm.State, s.Gluster.State, s.VIPHolder)
		if s.LastError != "" {
			fmt.Fprintf(&b, ", last error %q", s.LastError)
		}
	}
	return b.String()
}

// WaitFormed polls every node's agent status until all report formed, bounded by ctx. It returns the time each
// node was first seen formed (the resolution is the poll interval plus an ssh round trip).
func WaitFormed(ctx context.Context, nodes []*lab.Node, every time.Duration) (map[string]time.Time, error) {
	seen := map[string]time.Time{}
	err := Poll(ctx, every, "wait formed", func(ctx context.Context) (bool, string, error) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		sts, errs := Statuses(pctx, nodes)
		now := time.Now()
		for name, s := range sts {
			if _, ok := seen[name]; !ok && Formed(s) {
				seen[name] = now
			}
		}
		all := true
		for _, n := range nodes {
			if !Formed(sts[n.Name()]) {
				all = false
			}
		}
		return all, Summary(nodes, sts, errs), nil
	})
	return seen, err
}

// Diagnose collects what explains a node that did not form: its status JSON, the agent's journal tail and the
// serial console tail. It never fails: what it cannot get, it says.
func Diagnose(ctx context.Context, nodes []*lab.Node) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	out := make([]string, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b strings.Builder
			fmt.Fprintf(&b, "===== %s =====\n", n.Name())
			for _, c := range [][]string{
				{"kiln-firstboot", "status", "--json"},
				{"cat", status.DefaultPath},
				{"journalctl", "-u", "kiln-firstboot", "-n", "100", "--no-pager", "-o", "short-monotonic"},
				{"systemctl", "--failed", "--no-pager"},
			} {
				res, err := n.Exec(ctx, c...)
				fmt.Fprintf(&b, "--- %s (exit %d, err %v)\n%s%s\n", strings.Join(c, " "), res.ExitCode, err, res.Stdout, res.Stderr)
				if errors.Is(err, lab.ErrUnreachable) {
					break
				}
			}
			fmt.Fprintf(&b, "--- serial tail\n%s\n", n.SerialTail(40))
			out[i] = b.String()
		}()
	}
	wg.Wait()
	return strings.Join(out, "")
}

// SwarmInfo is `docker info`'s swarm state ("active", "inactive", …) and cluster id ("" outside a swarm).
func SwarmInfo(ctx context.Context, n *lab.Node) (state, clusterID string, err error) {
	out, err := Exec(ctx, n, "docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{if .Swarm.Cluster}}{{.Swarm.Cluster.ID}}{{end}}")
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return "", "", fmt.Errorf("%s: docker info: empty swarm state", n.Name())
	}
	if len(f) > 1 {
		clusterID = f[1]
	}
	return f[0], clusterID, nil
}

// SwarmNodes is `docker node ls` on n.
func SwarmNodes(ctx context.Context, n *lab.Node) ([]SwarmNode, error) {
	out, err := Exec(ctx, n, "docker", "node", "ls", "--format", SwarmNodeFormat)
	if err != nil {
		return nil, err
	}
	return ParseSwarmNodes(out)
}

// VIPHolders returns the names of the nodes that have vip configured (ip -o addr), in node order.
func VIPHolders(ctx context.Context, nodes []*lab.Node, vip netip.Addr) ([]string, error) {
	held := make([]bool, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := Exec(ctx, n, "ip", "-o", "addr", "show")
			held[i], errs[i] = HoldsAddr(out, vip), err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var names []string
	for i, n := range nodes {
		if held[i] {
			names = append(names, n.Name())
		}
	}
	return names, nil
}

// Addrs returns each node's lab address by name.
func Addrs(nodes []*lab.Node) (map[string]netip.Addr, error) {
	m := map[string]netip.Addr{}
	for _, n := range nodes {
		s, err := n.Address()
		if err != nil {
			return nil, err
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: address %q: %w", n.Name(), s, err)
		}
		m[n.Name()] = a
	}
	return m, nil
}

// ServiceConverged asks n's `docker service ls` whether service name runs all its desired tasks; detail is
// the REPLICAS column (or the error).
func ServiceConverged(ctx context.Context, n *lab.Node, name string) (bool, string) {
	out, err := Exec(ctx, n, "docker", "service", "ls", "--filter", "name="+name, "--format", "{{.Replicas}}")
	if err != nil {
		return false, err.Error() // a slow manager: look again
	}
	running, desired, err := ParseReplicas(out)
	if err != nil {
		return false, err.Error()
	}
	return desired > 0 && running == desired, "replicas " + out
}

// WaitReadyManagers polls every every, bounded by ctx, until each node's `docker node ls` lists exactly the
// hostnames want (sorted), every one a Ready manager. A node's entry reads Down until the dispatcher has its
// heartbeat, so right after formation one view can lag the others.
func WaitReadyManagers(ctx context.Context, nodes []*lab.Node, want []string, every time.Duration) error {
	return Poll(ctx, every, fmt.Sprintf("%d Ready managers in every node's view", len(want)), func(ctx context.Context) (bool, string, error) {
		for _, n := range nodes {
			sn, err := SwarmNodes(ctx, n)
			if err != nil {
				return false, err.Error(), nil
			}
			var ready []string
			for _, s := range sn {
				if s.ReadyManager() {
					ready = append(ready, s.Hostname)
				}
			}
			sort.Strings(ready)
			if len(sn) != len(want) || !slices.Equal(ready, want) {
				return false, fmt.Sprintf("%s: docker node ls %+v: ready managers %v, want exactly %v", n.Name(), sn, ready, want), nil
			}
		}
		return true, "", nil
	})
}
