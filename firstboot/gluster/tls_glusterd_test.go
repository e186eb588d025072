package gluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/run"
)

func newCA(tb testing.TB) *glustertls.CA {
	tb.Helper()
	ca, err := glustertls.NewCA("test")
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

// clientTLS is what a FUSE client on a node's network address presents to the volume.
type clientTLS struct {
	// dir replaces the node's /var/lib/kiln/tls (its key, certificate and CA); "" keeps the node's own.
	dir string
	// plaintext hides the secure-access switch: the client speaks plaintext to glusterd.
	plaintext bool
}

// readThrough mounts the volume from node n's namespaces as a client with tls, reads file and unmounts. It
// runs in a mount namespace of its own (nested in the node's), so the node's files and mounts stay as they
// are. The mount may succeed and the read fail: glusterd hands out the volfile, the bricks refuse the client.
func readThrough(t *testing.T, n *gnode, tls clientTLS, file string) (string, error) {
	t.Helper()
	mnt, err := os.MkdirTemp(n.dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	script := "set -e\nmount --make-rprivate /\n"
	if tls.dir != "" {
		script += fmt.Sprintf("mount --bind %s /var/lib/kiln/tls\n", tls.dir)
	}
	if tls.plaintext {
		script += "mount -t tmpfs kglplain /var/lib/glusterd\n"
	}
	script += fmt.Sprintf(`trap 'umount -l %[1]s 2>/dev/null || true' EXIT
mount -t glusterfs -o log-file=%[2]s/client.log %[3]s:/%[4]s %[1]s
cat %[1]s/%[5]s
`, mnt, n.dir, n.m.Addr, VolumeName, file)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(n.pid), "-n", "-m", "unshare", "--mount", "sh", "-c", script)
	return string(out), err
}

// lastLine is the end of a failed command's error: what the mount said.
func lastLine(err error) string {
	if err == nil {
		return "no error"
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	return lines[len(lines)-1]
}

// issueDir writes a key and certificate named id from ca into a fresh directory, laid out as the node's TLS
// directory.
func issueDir(t *testing.T, ca *glustertls.CA, id string) string {
	t.Helper()
	root := t.TempDir()
	if _, err := glustertls.Ensure(root, ca, id); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, glustertls.Dir)
}

// TestStorageTLSRealGlusterd: three real glusterds form the volume with the storage CA in the record. Every
// node switches TLS on before it is probed; the volume carries TLS on its I/O path and lets in the members'
// node ids. Then, from a member's own address, which auth.allow lets in, only a client with a member's
// certificate reads the volume: a plaintext client, a certificate from another CA and one from the right CA
// for a name that is not a member are refused. A departed member is dropped from the list (its certificate
// no longer reads) and comes back in when it is seen alive again.
func TestStorageTLSRealGlusterd(t *testing.T) {
	needGlusterd(t)
	ns := newGlusterLAN(t, true)
	ca := newCA(t)
	formConcurrently(t, ns, nil, ca)
	checkFormed(t, ns)
	ctx := context.Background()

	for _, n := range ns {
		if !glustertls.Enabled(n.dir) {
			t.Errorf("%s: secure-access not switched on", n.m.ID)
		}
	}
	cli := NewCLI(ns[0].runner)
	vol, err := cli.VolumeInfo(ctx, VolumeName)
	if err != nil || vol == nil {
		t.Fatalf("volume info: %+v %v", vol, err)
	}
	for k, want := range map[string]string{"client.ssl": "on", "server.ssl": "on", SSLAllow: "a,b,c"} {
		if vol.Options[k] != want {
			t.Errorf("volume option %s = %q, want %q", k, vol.Options[k], want)
		}
	}

	// The harness reads the file with the node's own certificate (the positive control for every refusal).
	if got, err := readThrough(t, ns[0], clientTLS{}, "check"); err != nil || got != "formed\n" {
		t.Fatalf("member client: %q, %v; want the file", got, err)
	}
	for name, tls := range map[string]clientTLS{
		"plaintext client":            {plaintext: true},
		"certificate of another CA":   {dir: issueDir(t, newCA(t), "a")},
		"certificate of a non-member": {dir: issueDir(t, ca, "stranger")},
	} {
		got, err := readThrough(t, ns[0], tls, "check")
		if err == nil || strings.Contains(got, "formed") {
			t.Errorf("%s read the volume: %q, %v", name, got, err)
		}
		t.Logf("%s: refused: %s", name, lastLine(err))
	}

	// c departs: the coordinator drops its name, and c's certificate no longer reads through a member.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	coord := New(NewCLI(ns[0].runner), nodeSystemd{t, ns[0]}, ns[0].dir, log)
	ms := []member.Member{ns[0].m, ns[1].m, ns[2].m}
	for i := range ms {
		ms[i].StorageTLS, ms[i].GlusterEpoch = true, "0"
	}
	f := &state.Formation{Initialiser: "a", StorageCA: ca}
	pass := func() {
		t.Helper()
		s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: f, ReplaceAfter: time.Hour},
			Observed: state.Observed{Self: ms[0], Members: slices.Clone(ms)}, Swarm: state.SwarmOutput{Active: true}}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if _, err := coord.Reconcile(cctx, s); err != nil {
			t.Fatalf("coordinator pass: %v", err)
		}
	}
	allow := func() string {
		v, err := cli.VolumeInfo(ctx, VolumeName)
		if err != nil || v == nil {
			t.Fatalf("volume info: %v", err)
		}
		return v.Options[SSLAllow]
	}
	ms[2].Alive, ms[2].Departed = false, true
	pass()
	if got := allow(); got != "a,b" {
		t.Fatalf("after c departed: %s = %q, want a,b", SSLAllow, got)
	}
	cDir := filepath.Join(ns[2].dir, glustertls.Dir)
	got, err := readThrough(t, ns[1], clientTLS{dir: cDir}, "check")
	if err == nil || strings.Contains(got, "formed") {
		t.Errorf("departed member's certificate read the volume: %q, %v", got, err)
	}
	t.Logf("departed member's certificate: refused: %s", lastLine(err))
	ms[2].Alive, ms[2].Departed = true, false
	pass()
	if got := allow(); got != "a,b,c" {
		t.Fatalf("after c came back: %s = %q, want a,b,c", SSLAllow, got)
	}
}
