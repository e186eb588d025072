package gluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
)

// fakeGlusterd plays glusterd for the CLI: a pool, one volume, and a log of what was run.
type fakeGlusterd struct {
	mu      sync.Mutex // the reconciler asks peers' views concurrently
	peers   []string
	created bool
	started bool
	opts    map[string]string
	ran     []string
	// failCreates makes that many `volume create` calls fail the way a marked brick does.
	failCreates int
	// unmeshedViews makes that many other members' peer lists (--remote-host) miss the other followers, as
	// right after the probes, before the followers have connected to each other.
	unmeshedViews int
	// hangViews are members whose peer list (--remote-host) never comes: the call blocks until its context
	// ends, as a remote CLI call can until the CLI's own 120 s timeout.
	hangViews map[string]bool
	// down are peers listed as disconnected.
	down map[string]bool
	// volID and bricks (host:path) are shown in `volume info` when set.
	volID  string
	bricks []string
}

func (f *fakeGlusterd) run(ctx context.Context, args ...string) ([]byte, error) {
	if len(args) > 0 && args[0] == "--xml" {
		args = args[1:]
	}
	if host, remote := strings.CutPrefix(args[0], "--remote-host="); remote && f.hangViews[host] {
		f.mu.Lock()
		f.ran = append(f.ran, strings.Join(args, " "))
		f.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, strings.Join(args, " "))
	ok := `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/></cliOutput>`
	peers := f.peers
	if host, remote := strings.CutPrefix(args[0], "--remote-host="); remote {
		// Another member's own view: the pool is fully meshed, and this glusterd is the coordinator 10.77.0.11.
		args = args[1:]
		peers = []string{"10.77.0.11"}
		for _, p := range f.peers {
			if p != host && f.unmeshedViews <= 0 {
				peers = append(peers, p)
			}
		}
		f.unmeshedViews--
	}
	switch {
	case args[0] == "peer" && args[1] == "status":
		var b strings.Builder
		b.WriteString(`<cliOutput><opRet>0</opRet><peerStatus>`)
		for _, p := range peers {
			connected := "1"
			if f.down[p] {
				connected = "0"
			}
			b.WriteString(`<peer><hostname>` + p + `</hostname><connected>` + connected + `</connected><stateStr>Peer in Cluster</stateStr></peer>`)
		}
		b.WriteString(`</peerStatus></cliOutput>`)
		return []byte(b.String()), nil
	case args[0] == "peer" && args[1] == "probe":
		f.peers = append(f.peers, args[2])
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "info":
		if !f.created {
			return []byte(`<cliOutput><opRet>-1</opRet><opErrno>30806</opErrno><opErrstr>Volume does not exist</opErrstr></cliOutput>`), nil
		}
		return f.volumeInfo(), nil
	case args[0] == "volume" && args[1] == "create" && f.failCreates > 0:
		f.failCreates--
		return []byte(`<cliOutput><opRet>-1</opRet><opErrno>30800</opErrno><opErrstr>Staging failed on 10.77.0.13. Error: /var/lib/kiln/bricks/data/brick is already part of a volume</opErrstr></cliOutput>`), nil
	case args[0] == "volume" && args[1] == "create":
		f.created, f.opts = true, map[string]string{}
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "set":
		for i := 3; args[2] == "data" && i+1 < len(args); i += 2 {
			f.opts[args[i]] = args[i+1]
		}
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "heal" && len(args) == 4 && args[3] == "info":
		return []byte(`<cliOutput><opRet>0</opRet><healInfo><bricks><brick><name>10.77.0.11:/b</name><status>Connected</status><numberOfEntries>0</numberOfEntries></brick></bricks></healInfo></cliOutput>`), nil
	case args[0] == "volume" && args[1] == "heal":
		// Text mode: a launch prints a line and exits 0.
		return []byte("Launching heal operation on volume data has been successful\n"), nil
	case args[0] == "volume" && args[1] == "replace-brick":
		if i := slices.Index(f.bricks, args[3]); i >= 0 {
			f.bricks[i] = args[4]
		}
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "start":
		f.started = true
		return []byte(ok), nil
	}
	return nil, errors.New("fake glusterd: unexpected " + strings.Join(args, " "))
}

// volumeInfo is `volume info data` for the created volume.
func (f *fakeGlusterd) volumeInfo() []byte {
	status := "Created"
	if f.started {
		status = "Started"
	}
	var b strings.Builder
	b.WriteString(`<cliOutput><opRet>0</opRet><volInfo><volumes><volume><name>data</name><id>` + f.volID + `</id><statusStr>` + status + `</statusStr><typeStr>Replicate</typeStr><replicaCount>3</replicaCount><bricks>`)
	for _, br := range f.bricks {
		b.WriteString(`<brick><name>` + br + `</name></brick>`)
	}
	b.WriteString(`</bricks><options>`)
	for k, v := range f.opts {
		b.WriteString(`<option><name>` + k + `</name><value>` + v + `</value></option>`)
	}
	b.WriteString(`</options></volume></volumes></volInfo></cliOutput>`)
	return []byte(b.String())
}

type fakeSystemd struct {
	active    map[string]bool
	calls     []string
	ctxCancel context.CancelFunc
}

// newFakeSystemd is a node's systemd with glusterd running, as the image starts it before the agent.
func newFakeSystemd() *fakeSystemd { return &fakeSystemd{active: map[string]bool{GlusterdUnit: true}} }

// Stop stops a unit; with ctxCancel set it also cancels the caller's context, as a shutdown arriving right
// after the stop would.
func (f *fakeSystemd) Stop(_ context.Context, u string) error {
	f.calls, f.active[u] = append(f.calls, "stop "+u), false
	if f.ctxCancel != nil {
		f.ctxCancel()
	}
	return nil
}

func (f *fakeSystemd) DaemonReload(context.Context) error {
	f.calls = append(f.calls, "daemon-reload")
	return nil
}
func (f *fakeSystemd) Start(_ context.Context, u string) error {
	f.calls, f.active[u] = append(f.calls, "start "+u), true
	return nil
}
func (f *fakeSystemd) ReloadOrRestart(_ context.Context, u string) error { return nil }
func (f *fakeSystemd) ActiveState(_ context.Context, u string) (string, error) {
	if f.active[u] {
		return "active", nil
	}
	return "inactive", nil
}
