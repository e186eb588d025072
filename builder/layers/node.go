package layers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/version"
)

// NodeImage is the node stage's output file.
const NodeImage = "node.squashfs"

// Paths inside a node (docs/design.md, "Paths inside a node").
const (
	AgentPath         = "usr/bin/kiln-firstboot"
	IgnitionPath      = "usr/lib/kiln/user.ign"
	ClusterConfigPath = "usr/lib/kiln/cluster.yaml"
	ImageInfoPath     = "usr/lib/kiln/image.json"
	// StacksDir holds the spec's compose files as <stack name>.yaml (firstboot/stacks reads them).
	StacksDir = "usr/lib/kiln/stacks"
)

// AgentName is the agent's file name next to the kiln executable, the default when the spec names none.
const AgentName = "kiln-firstboot"

// ImageInfo is /usr/lib/kiln/image.json: what a running node can tell about the image it booted.
type ImageInfo struct {
	Name         string `json:"name"`
	Suite        string `json:"suite"`
	Architecture string `json:"architecture"`
	// Built is SOURCE_DATE_EPOCH, RFC 3339: the date recorded everywhere in the image, not the build's wall clock.
	Built string `json:"built"`
	// NodeInputs is the sha256 of the node stage's inputs (agent, overlays, configs).
	NodeInputs string `json:"node_inputs"`
	// BaseSHA256 identifies the base layer this node layer was built for.
	BaseSHA256 string `json:"base_sha256"`
	// Kiln is the kiln that built the image, as in manifest.json; Agent is the baked agent's own record
	// (read from the binary; the same commit when both came from one `make build`; nil for an agent that is
	// not a Go binary, as in tests).
	Kiln  version.Info  `json:"kiln"`
	Agent *version.Info `json:"agent,omitempty"`
}

// Node is the stage that assembles the node layer from the spec's overlays, the agent and its configs.
// It never reads the package tree, so changing an overlay rebuilds only this stage and those after it.
type Node struct {
	spec *spec.Spec
}

// NewNode returns the node stage for s.
func NewNode(s *spec.Spec) builder.Stage { return &Node{spec: s} }

// Name implements builder.Stage.
func (*Node) Name() string { return "node" }

// Needs implements builder.Needer: the base layer (its digest goes into the node layer) and the preloaded
// images' tree.
func (*Node) Needs() []string { return []string{"base", "images"} }

// agentPath is the agent binary to bake in.
func (n *Node) agentPath() (string, error) {
	if n.spec.Agent != "" {
		return n.spec.Path(n.spec.Agent), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate the kiln executable: %w", err)
	}
	return filepath.Join(filepath.Dir(exe), AgentName), nil
}

// Inputs implements builder.Stage: content hashes of everything that goes in the layer.
func (n *Node) Inputs(ctx context.Context) (map[string]string, error) {
	in := map[string]string{"name": n.spec.Name}
	agent, err := n.agentPath()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	// The image records the kiln that built it (image.json), so a new kiln is a new node layer.
	in["kiln"] = version.Get().String()
	if in["agent"], err = cache.HashFile(agent); err != nil {
		return nil, fmt.Errorf("node: agent (build it with `go build ./cmd/kiln-firstboot`, or set agent: in the spec): %w", err)
	}
	for i, o := range n.spec.Overlays {
		h, err := hashTree(n.spec.Path(o))
		if err != nil {
			return nil, fmt.Errorf("node: overlay %s: %w", o, err)
		}
		in[fmt.Sprintf("overlay.%03d", i)] = o + " " + h
	}
	ign, err := n.spec.Ignition()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	in["ignition"] = hashBytes(ign)
	if n.spec.ClusterConfig != "" {
		if in["clusterConfig"], err = cache.HashFile(n.spec.Path(n.spec.ClusterConfig)); err != nil {
			return nil, fmt.Errorf("node: cluster config: %w", err)
		}
	}
	for _, st := range n.spec.Stacks {
		if in["stack."+st.Name], err = cache.HashFile(n.spec.Path(st.File)); err != nil {
			return nil, fmt.Errorf("node: stack %s: %w", st.Name, err)
		}
	}
	if in["mksquashfs"], err = mksquashfsVersion(ctx); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	d := n.spec.Distribution
	in["suite"], in["architecture"] = d.Suite, d.Architecture
	return in, nil
}

// Run implements builder.Stage.
func (n *Node) Run(ctx context.Context, env *builder.Env, dir string) error {
	inputs, err := n.Inputs(ctx)
	if err != nil {
		return err
	}
	stage := filepath.Join(dir, ".stage")
	defer os.RemoveAll(stage)
	if err := os.Mkdir(stage, 0o755); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	env.Progress(0, "overlays")
	for _, o := range n.spec.Overlays {
		if err := copyTree(ctx, n.spec.Path(o), stage); err != nil {
			return fmt.Errorf("node: overlay %s: %w", o, err)
		}
	}
	// The images stage's tree (preloaded image archives, their index and boot unit) is empty without preload.
	if imgs := env.Outputs["images"]; imgs != "" {
		if tree := filepath.Join(imgs, "tree"); dirExists(tree) {
			env.Progress(0.1, "preloaded images")
			if err := copyTree(ctx, tree, stage); err != nil {
				return fmt.Errorf("node: preloaded images: %w", err)
			}
		}
	}
	agent, err := n.agentPath()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := copyFile(ctx, agent, filepath.Join(stage, AgentPath), 0o755); err != nil {
		return fmt.Errorf("node: agent: %w", err)
	}
	ign, err := n.spec.Ignition()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := writeFile(filepath.Join(stage, IgnitionPath), ign); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if n.spec.ClusterConfig != "" {
		// 0600: it holds the cluster key. Everything that reads it (the agent, ssh-keys for sshd) runs as root.
		if err := copyFile(ctx, n.spec.Path(n.spec.ClusterConfig), filepath.Join(stage, ClusterConfigPath), 0o600); err != nil {
			return fmt.Errorf("node: cluster config: %w", err)
		}
	}
	for _, st := range n.spec.Stacks {
		if err := copyFile(ctx, n.spec.Path(st.File), filepath.Join(stage, StacksDir, st.Name+".yaml"), 0o644); err != nil {
			return fmt.Errorf("node: stack %s: %w", st.Name, err)
		}
	}
	baseSum, err := os.ReadFile(filepath.Join(env.Outputs["base"], BaseDigest))
	if err != nil {
		return fmt.Errorf("node: base layer digest: %w", err)
	}
	info := ImageInfo{
		Name:         n.spec.Name,
		Suite:        n.spec.Distribution.Suite,
		Architecture: n.spec.Distribution.Architecture,
		Built:        time.Unix(env.SourceDateEpoch, 0).UTC().Format(time.RFC3339),
		NodeInputs:   hashInputs(inputs),
		BaseSHA256:   strings.TrimSpace(string(baseSum)),
		Kiln:         version.Get(),
	}
	if v, err := version.ReadFile(agent); err == nil {
		info.Agent = &v
	} else {
		env.Log.Warn("the agent records no Go build information; image.json names no agent version", "agent", agent, "err", err)
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("node: image.json: %w", err)
	}
	if err := writeFile(filepath.Join(stage, ImageInfoPath), append(data, '\n')); err != nil {
		return fmt.Errorf("node: %w", err)
	}

	env.Progress(0.5, "mksquashfs")
	// The node layer is small (the agent dominates): zstd at the base layer's level, owners and times fixed.
	o := (&Base{spec: n.spec}).options(env.SourceDateEpoch)
	o.AllRoot, o.Excludes = true, nil
	if err := mksquashfs(ctx, stage, filepath.Join(dir, NodeImage), o); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	env.Progress(1, "done")
	return nil
}

// copyTree copies src over dst: directories merge, files and symlinks replace. Modes are normalised (0755 for
// directories and files with any execute bit, else 0644) so the layer does not depend on the checkout's umask.
func copyTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.RemoveAll(target); err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(ctx, p, target, normalMode(info.Mode()))
		default:
			return fmt.Errorf("%s: only directories, regular files and symlinks can go in an overlay", p)
		}
	})
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func normalMode(m fs.FileMode) fs.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// hashTree hashes a directory tree as copyTree sees it: paths, kinds, normalised modes, contents, link targets.
func hashTree(root string) (string, error) {
	st, err := os.Stat(root)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory", root)
	}
	h := sha256.New()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			fmt.Fprintf(h, "d %s\x00", rel)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "l %s\x00%s\x00", rel, link)
		case info.Mode().IsRegular():
			fh, err := cache.HashFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "f %s\x00%o\x00%s\x00", rel, normalMode(info.Mode()), fh)
		default:
			return fmt.Errorf("%s: only directories, regular files and symlinks can go in an overlay", p)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

func hashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hashInputs hashes an input map in key order.
func hashInputs(in map[string]string) string {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\x00", k, in[k])
	}
	return hashBytes([]byte(b.String()))
}

// copyFile copies src to dst with mode, replacing dst, creating dst's parent directories.
func copyFile(ctx context.Context, src, dst string, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return files.Copy(ctx, dst, src, mode)
}
