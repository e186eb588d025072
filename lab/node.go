package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/kiln-project/kiln/lab/dhcp"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/lab/qemu"
)

// StopTimeout bounds an ACPI shutdown when the caller's context has no deadline: a Debian node powers off in
// well under a minute even under TCG, so longer means the guest ignored the button.
const StopTimeout = 3 * time.Minute

// Node is a handle on one node of a lab, by name. Its hardware and address can change (Replace); every method
// reads the current state.
type Node struct {
	lab  *Lab
	name string
}

// Name is the node's lab name (node1, node2, …).
func (n *Node) Name() string { return n.name }

// Node returns the handle of the named node, or an error naming the known ones.
func (l *Lab) Node(name string) (*Node, error) {
	st, err := l.State()
	if err != nil {
		return nil, err
	}
	if _, err := st.node(name); err != nil {
		return nil, err
	}
	return &Node{lab: l, name: name}, nil
}

// Nodes returns handles of all nodes, in index order.
func (l *Lab) Nodes() ([]*Node, error) {
	st, err := l.State()
	if err != nil {
		return nil, err
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Index < st.Nodes[j].Index })
	var ns []*Node
	for _, n := range st.Nodes {
		ns = append(ns, &Node{lab: l, name: n.Name})
	}
	return ns, nil
}

// State is the node's current recorded state.
func (n *Node) State() (NodeState, error) {
	st, err := n.lab.State()
	if err != nil {
		return NodeState{}, err
	}
	ns, err := st.node(n.name)
	if err != nil {
		return NodeState{}, err
	}
	return *ns, nil
}

// Address is the node's current IPv4 address.
func (n *Node) Address() (string, error) {
	s, err := n.State()
	return s.Address, err
}

// InstanceID is the node's EC2 instance id in an EC2 lab (Options.EC2), "" in any other.
func (n *Node) InstanceID() (string, error) {
	st, err := n.lab.State()
	if err != nil {
		return "", err
	}
	ns, err := st.node(n.name)
	if err != nil || !st.EC2 {
		return "", err
	}
	return InstanceID(st.Name, ns.Hardware), nil
}

// SerialLog is the path of the node's serial console log (appended across boots).
func (n *Node) SerialLog() string { return n.lab.serialLog(NodeState{Name: n.name}) }

// Running reports whether the node's qemu process is alive.
func (n *Node) Running() bool {
	_, ok := qemu.Running(n.lab.pidFile(NodeState{Name: n.name}))
	return ok
}

// Start powers the node on. Starting a running node is an error.
func (n *Node) Start(ctx context.Context) error {
	return n.lab.update(func(st *State) error {
		ns, err := st.node(n.name)
		if err != nil {
			return err
		}
		return n.lab.startLocked(ctx, st, ns)
	})
}

// startLocked starts ns's qemu; the caller holds the state locks.
func (l *Lab) startLocked(ctx context.Context, st *State, ns *NodeState) error {
	if pid, ok := qemu.Running(l.pidFile(*ns)); ok {
		return fmt.Errorf("node %s: already running (pid %d)", ns.Name, pid)
	}
	ns.SerialOffset = 0
	if fi, err := os.Stat(l.serialLog(*ns)); err == nil {
		ns.SerialOffset = fi.Size()
	}
	ns.StartedAt = time.Now().UTC()
	pid, err := qemu.Start(ctx, l.Namespace(), l.spec(*st, *ns))
	if err != nil {
		return fmt.Errorf("node %s: %w", ns.Name, err)
	}
	l.log.Info("node started", "node", ns.Name, "pid", pid, "mac", ns.MAC, "address", ns.Address, "accel", st.Accel)
	return nil
}

// Kill is a hard power-off: qemu gets SIGKILL, the guest no chance to flush. Killing an off node is a no-op.
func (n *Node) Kill(ctx context.Context) error {
	if err := qemu.Kill(ctx, n.lab.pidFile(NodeState{Name: n.name})); err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	n.forgetSSH()
	n.lab.log.Info("node killed", "node", n.name)
	return nil
}

func (n *Node) forgetSSH() {
	if s, err := n.State(); err == nil {
		n.lab.forgetSSH(s.Address)
	}
}

// Stop presses the ACPI power button and waits (bounded by ctx, else StopTimeout) until the VM has powered off.
func (n *Node) Stop(ctx context.Context) error {
	ns := NodeState{Name: n.name}
	if !n.Running() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, StopTimeout)
		defer cancel()
	}
	if err := qemu.Powerdown(ctx, n.lab.qmpSocket(ns)); err != nil {
		return fmt.Errorf("node %s: stop: %w", n.name, err)
	}
	if err := qemu.WaitExit(ctx, n.lab.pidFile(ns)); err != nil {
		return fmt.Errorf("node %s: stop: guest did not power off: %w", n.name, err)
	}
	n.forgetSSH()
	n.lab.log.Info("node stopped", "node", n.name)
	return nil
}

// Reimage is the same hardware with a fresh disk from the image: the node is killed, its disk recreated (its
// state partition, /var, is gone) and it is started again. MAC, UUID, address, firmware variables and the data
// disk stay. A netbooted node's disk becomes blank again: it netboots as a machine whose state disk was wiped.
func (n *Node) Reimage(ctx context.Context) error {
	if err := n.Kill(ctx); err != nil {
		return err
	}
	return n.lab.update(func(st *State) error {
		ns, err := st.node(n.name)
		if err != nil {
			return err
		}
		if err := n.lab.freshDisk(ctx, *st, *ns); err != nil {
			return err
		}
		n.lab.log.Info("node reimaged", "node", n.name)
		return n.lab.startLocked(ctx, st, ns)
	})
}

// Replace swaps the node's machine for a new one: new MAC, UUID, address, firmware variables and a fresh disk.
// The node keeps its lab name, index and tap (its place on the switch).
func (n *Node) Replace(ctx context.Context) error {
	if err := n.Kill(ctx); err != nil {
		return err
	}
	return n.lab.update(func(st *State) error {
		ns, err := st.node(n.name)
		if err != nil {
			return err
		}
		if st.NextHardware > maxHardware {
			return fmt.Errorf("node %s: replace: all %d hardware serials used", n.name, maxHardware)
		}
		fresh := newNode(st.Name, ns.Index, st.NextHardware)
		st.NextHardware++
		fresh.Partition = ns.Partition
		old := *ns
		*ns = fresh
		if err := dhcp.Reload(n.lab.dhcpConfig(), dhcpHosts(*st)); err != nil {
			return err
		}
		if st.Boot == BootPXE {
			if err := n.lab.startPXE(ctx, *st); err != nil {
				return err
			}
		}
		if err := n.lab.provision(ctx, *st, *ns, true); err != nil {
			return err
		}
		n.lab.log.Info("node replaced", "node", n.name, "old_mac", old.MAC, "mac", ns.MAC, "address", ns.Address)
		return n.lab.startLocked(ctx, st, ns)
	})
}

// Partition cuts the node's link: from everyone (lab host included), or with peersOnly only from the other nodes.
func (n *Node) Partition(ctx context.Context, peersOnly bool) error {
	mode := PartitionFull
	if peersOnly {
		mode = PartitionPeers
	}
	return n.setPartition(ctx, mode)
}

// Heal restores the node's link.
func (n *Node) Heal(ctx context.Context) error { return n.setPartition(ctx, "") }

func (n *Node) setPartition(ctx context.Context, mode string) error {
	return n.lab.update(func(st *State) error {
		ns, err := st.node(n.name)
		if err != nil {
			return err
		}
		ns.Partition = mode
		if err := netns.ApplyCuts(ctx, n.lab.Namespace(), cuts(*st)); err != nil {
			return err
		}
		if mode == PartitionFull {
			n.lab.forgetSSH(ns.Address)
		}
		n.lab.log.Info("node partition", "node", n.name, "mode", mode)
		return nil
	})
}

func cuts(st State) []netns.Cut {
	var cs []netns.Cut
	for _, n := range st.Nodes {
		if n.Partition != "" {
			cs = append(cs, netns.Cut{Tap: n.Tap, PeersOnly: n.Partition == PartitionPeers})
		}
	}
	return cs
}

// PowerCut kills every node at once.
func (l *Lab) PowerCut(ctx context.Context) error {
	nodes, err := l.Nodes()
	if err != nil {
		return err
	}
	return forEach(nodes, func(n *Node) error { return n.Kill(ctx) })
}

// Add provisions and starts one more node on new hardware; it returns its handle.
func (l *Lab) Add(ctx context.Context) (*Node, error) {
	var name string
	err := l.update(func(st *State) error {
		if st.NextHardware > maxHardware {
			return fmt.Errorf("lab %s: add: all %d hardware serials used", l.name, maxHardware)
		}
		idx := 0
		for _, n := range st.Nodes {
			idx = max(idx, n.Index)
		}
		st.Nodes = append(st.Nodes, newNode(st.Name, idx+1, st.NextHardware))
		st.NextHardware++
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = l.update(func(st *State) error {
		ns := &st.Nodes[len(st.Nodes)-1]
		name = ns.Name
		if err := dhcp.Reload(l.dhcpConfig(), dhcpHosts(*st)); err != nil {
			return err
		}
		if st.Boot == BootPXE {
			if err := l.startPXE(ctx, *st); err != nil {
				return err
			}
		}
		if err := l.provision(ctx, *st, *ns, true); err != nil {
			return err
		}
		return l.startLocked(ctx, st, ns)
	})
	if err != nil {
		return nil, fmt.Errorf("lab %s: add: %w", l.name, err)
	}
	return &Node{lab: l, name: name}, nil
}

// forEach runs fn on every node concurrently and joins the errors.
func forEach(nodes []*Node, fn func(*Node) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
