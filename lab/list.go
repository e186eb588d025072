package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Summary is one lab as `kiln lab list` shows it (JSON names per docs/cli.md).
type Summary struct {
	Name string `json:"name"`
	// Boot is BootDisk or BootPXE.
	Boot string `json:"boot"`
	// Image is the raw image the nodes' disks overlay (disk boot); empty for a netbooted lab.
	Image string `json:"image,omitempty"`
	// Nodes are the node names in index order; Running those whose qemu is alive.
	Nodes     []string  `json:"nodes"`
	Running   []string  `json:"running"`
	CreatedAt time.Time `json:"created_at"`
	// Error says why the lab's state could not be read (a lab from an incompatible kiln); the other fields
	// are then empty but the name, so `kiln lab down --name` can still be pointed at it.
	Error string `json:"error,omitempty"`
}

// List summarises every lab under root ("": DefaultRoot), by name. A missing root is no labs.
func List(root string) ([]Summary, error) {
	if root == "" {
		root = DefaultRoot()
	}
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return []Summary{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list %s: %w", root, err)
	}
	out := []Summary{}
	for _, e := range entries {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if _, err := os.Stat(statePath(dir)); err != nil {
			continue // not a lab (or one whose creation never wrote its state)
		}
		s := Summary{Name: e.Name(), Nodes: []string{}, Running: []string{}}
		st, err := loadState(dir)
		if err != nil {
			s.Error = err.Error()
			out = append(out, s)
			continue
		}
		l := &Lab{name: st.Name, dir: dir}
		s.Boot, s.Image, s.CreatedAt = st.Boot, st.Image, st.CreatedAt
		if s.Boot == "" {
			s.Boot = BootDisk
		}
		for _, ns := range st.Nodes {
			s.Nodes = append(s.Nodes, ns.Name)
			if (&Node{lab: l, name: ns.Name}).Running() {
				s.Running = append(s.Running, ns.Name)
			}
		}
		out = append(out, s)
	}
	return out, nil // sorted: os.ReadDir sorts by name
}
