package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/layers"
	"github.com/kiln-project/kiln/cloud/aws/publish"
	"github.com/kiln-project/kiln/firstboot/clusterhealth"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/internal/version"
	"github.com/kiln-project/kiln/lab"
)

// snake is the JSON naming rule of docs/cli.md.
var snake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// dataKeys hold maps whose keys are data (stage input names, reconciler names), not field names.
var dataKeys = map[string]bool{"inputs": true, "reconcilers": true}

// checkSnake fails for every object key in v that breaks the naming rule.
func checkSnake(t *testing.T, name string, v any, path string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			if !snake.MatchString(k) {
				t.Errorf("%s: %s.%s is not snake_case (docs/cli.md)", name, path, k)
			}
			if !dataKeys[k] {
				checkSnake(t, name, sub, path+"."+k)
			}
		}
	case []any:
		for _, sub := range x {
			checkSnake(t, name, sub, path+"[]")
		}
	}
}

// jsonGolden compares v's JSON with testdata/json/<name>.golden and checks its field names.
func jsonGolden(t *testing.T, name string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	checkSnake(t, name, generic, "")
	compareGolden(t, filepath.Join("testdata", "json", name+".golden"), string(b)+"\n")
}

// TestJSONShapes pins every JSON document kiln writes for others to read (docs/cli.md lists them), each filled
// with every field, so a renamed or added field shows up here and in the docs' example.
func TestJSONShapes(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	v := version.Info{Version: "v0.3.0", Commit: "0123456789abcdef0123456789abcdef01234567", CommitTime: "2026-01-02T03:04:05Z", Go: "go1.26.8"}
	jsonGolden(t, "build-manifest", builder.Manifest{Name: "node", Spec: "images/node.yaml", SourceDateEpoch: 1686355200,
		Kiln: v, Key: "5f0c…", Artifacts: []builder.Artifact{{File: "node.raw", Format: "raw", SHA256: "ab12…", Size: 2147483648, Allocated: 412090368}},
		Packages: []builder.Package{{Name: "systemd", Version: "252.38-1~deb12u1"}},
		Images: []builder.PreloadedImage{{Name: "kiln/traefik:v3.7.13", Source: "traefik", Version: "v3.7.13", Digest: "sha256:7d41…",
			File: "traefik-v3.7.13.tar", SHA256: "c0ff…", Size: 118489600}},
		Stages: []builder.StageManifest{{Name: "packages", Key: "9c1e…", Inputs: map[string]string{"suite": "bookworm"},
			CacheHit: false, Why: "no cache entry", Duration: cache.Duration(312500 * time.Millisecond), BuildDuration: cache.Duration(312500 * time.Millisecond)}}})
	jsonGolden(t, "image-info", layers.ImageInfo{Name: "node", Suite: "bookworm", Architecture: "amd64", Built: "2023-06-10T00:00:00Z",
		NodeInputs: "77aa…", BaseSHA256: "e3b0…", Kiln: v, Agent: &v})
	jsonGolden(t, "version", v)
	jsonGolden(t, "agent-status", status.Status{NodeID: "4c4c4544004d", Hostname: "kiln-1a2b3c4d", Phase: status.PhaseDegraded,
		Cluster: "garage", ConfigSource: "cmdline-url", ConfigSkipped: []string{"fw_cfg: none"}, ConfigError: "",
		NoBrick: "no brick: /var is in RAM (no local disk)", Election: "waiting for 1 more voter", Expected: 3,
		Members: []member.Member{{ID: "4c4c4544004d", Hostname: "kiln-1a2b3c4d", Addr: netip.MustParseAddr("10.77.0.11"), Alive: true,
			DownSince: when, SwarmNode: "y8k3…", GlusterEpoch: "1", NoBrick: true, StateInRAM: true}},
		Swarm: status.Component{State: "joined", Detail: "manager, 3 managers"}, Gluster: status.Component{State: "mounted", Detail: "data: 3 bricks"},
		VIP: "10.77.0.100/24", VIPHolder: "kiln-1a2b3c4d", Reconcilers: map[string]string{"vrrp": "backup"},
		LastError: "gluster: peer probe 10.77.0.13: timeout", LastErrorAt: when, UpdatedAt: when})
	jsonGolden(t, "lab-status", []lab.NodeStatus{{Name: "node1", Index: 1, Power: "running", Address: "10.77.0.11",
		MAC: "52:54:00:12:34:56", UUID: "8d0c…", Booted: true, Partition: "peers", Agent: json.RawMessage(`{"phase": "ready"}`),
		AgentError: "kiln-firstboot status: exit 1: no status at /run/kiln/status.json"}})
	jsonGolden(t, "cluster-status", clusterhealth.Report{Cluster: "garage", Node: "kiln-1a2b3c4d", At: when, Healthy: false,
		Problems: []string{"member kiln-5e6f7a8b (10.77.0.12) is down since 2026-01-02T03:04:05Z"}, Phase: status.PhaseDegraded,
		StatusAge: "3s", Expected: 3,
		Members: []clusterhealth.Member{{ID: "4c4c4544004d", Hostname: "kiln-1a2b3c4d", Addr: "10.77.0.11", Alive: true, DownSince: when}},
		Swarm: clusterhealth.Swarm{Leader: "kiln-1a2b3c4d", Nodes: []clusterhealth.SwarmNode{{Hostname: "kiln-1a2b3c4d", Addr: "10.77.0.11",
			Role: "manager", State: "ready", Reachability: "reachable", Leader: true}}, Error: "rpc error"},
		Volume: clusterhealth.Volume{Name: "data", Bricks: []clusterhealth.Brick{{Host: "10.77.0.11", Path: "/var/lib/kiln/bricks/data",
			Online: true, PendingHeals: 2}}, Error: "heal info: timeout"},
		VIP: "10.77.0.100/24", VIPHolder: "kiln-1a2b3c4d", Reconcilers: map[string]string{"vrrp": "backup"},
		LastError: "gluster: peer probe 10.77.0.13: timeout", LastErrorAt: when})
	jsonGolden(t, "publish-aws", publish.Result{ImageID: "ami-0123456789abcdef0", Name: "kiln-node", SnapshotID: "snap-0123456789abcdef0",
		Build: "5f0c…", Region: "eu-west-1", Reused: false, Blocks: 1250, Sent: 826, Skipped: 424, SkippedBytes: 222298112, Seconds: 5.3})
	jsonGolden(t, "lab-list", []lab.Summary{{Name: "default", Boot: "disk", Image: "/work/out/node.raw", Nodes: []string{"node1"},
		Running: []string{"node1"}, CreatedAt: when, Error: "lab: state version 2, this kiln reads 1"}})
}

// TestLabList runs `kiln lab list` and completion of lab and node names on a state directory with two labs.
func TestLabList(t *testing.T) {
	root := t.TempDir()
	for name, nodes := range map[string]string{"demo": `[{"name":"node1","index":1},{"name":"node2","index":2}]`, "pxe": `[]`} {
		st := `{"version":1,"name":"` + name + `","image":"/img/node.raw","nodes":` + nodes + `,"created_at":"2026-01-02T03:04:05Z"}`
		if name == "pxe" {
			st = `{"version":1,"name":"pxe","boot":"pxe","nodes":[],"created_at":"2026-01-02T03:04:05Z"}`
		}
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name, "state.json"), []byte(st), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "not-a-lab"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"lab-list-json", []string{"lab", "list", "--json", "--root", root}},
		{"lab-status-nosuch-json", []string{"lab", "status", "--json", "--name", "nosuch", "--root", root}},
		{"lab-status-nosuch", []string{"lab", "status", "--name", "nosuch", "--root", root}},
		{"complete-lab-name", []string{"__complete", "lab", "status", "--root", root, "--name", ""}},
		{"complete-node", []string{"__complete", "lab", "logs", "--root", root, "--name", "demo", ""}},
		{"complete-rebuild", []string{"__complete", "build", "--rebuild", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := cliRun(t, c.args...)
			golden(t, "lab/"+c.name, stdout, stderr, code, c.args, regexp.QuoteMeta(root), "$$ROOT")
		})
	}
}
