// Package lab boots N nodes of a built kiln image as qemu VMs on a private network inside a network namespace,
// and breaks them on purpose (power cuts, ACPI shutdowns, partitions, reimages, hardware replacement) for tests.
//
// A lab outlives the process that made it: its state lives in a directory (see DefaultRoot), its VMs and DHCP
// server are daemons, and every operation re-reads the state, so the CLI and Go tests drive the same labs.
package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/lab/dhcp"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/lab/qemu"
	"github.com/kiln-project/kiln/lab/sshpool"
)

// Options describe a lab to bring up.
type Options struct {
	// Name of the lab; default "default". Its namespace is kiln-<Name>.
	Name string
	// Root is the directory holding all labs; default DefaultRoot().
	Root string
	// Image is the raw node image (out/node.raw); required to boot from disk.
	Image string
	// Boot is BootDisk (default) or BootPXE.
	Boot string
	// PXEDir is a build's OUT/pxe, served to the nodes by `kiln pxe serve`; required to boot from the network
	// (with ClusterConfig: netbooted nodes read their config from that server, not from fw_cfg).
	PXEDir string
	// Firmware is qemu.FirmwareUEFI (default, OVMF) or qemu.FirmwareBIOS (SeaBIOS, legacy PXE); BIOS only
	// netboots: the disk image boots on UEFI.
	Firmware qemu.Firmware
	// KilnBin is the kiln binary that runs `kiln pxe serve` for a netbooted lab; default: this executable.
	KilnBin string
	// Nodes is how many nodes to boot; default 3.
	Nodes int
	// MemoryMiB per node; default 1536 (3 nodes fit twice over in 24 GiB next to builds).
	MemoryMiB int
	// CPUs per node; default 1 (TCG on a 2-core host: more vCPUs than cores only adds contention).
	CPUs int
	// DiskGiB is each node disk's virtual size; default 8.
	DiskGiB int
	// DataDiskGiB, when set, gives every node a second, blank disk of that size: the agent puts its gluster
	// brick there (firstboot/brickdisk). It is the machine's, like MAC and UUID: reimage keeps it, replace
	// brings a new blank one.
	DataDiskGiB int
	// ClusterConfig is the content of a cluster config file (docs/design.md); its cluster section reaches every
	// node through fw_cfg. Optional: without it nodes get only the lab's SSH key.
	ClusterConfig []byte
	// EC2 makes every node an EC2 instance to its own firmware (qemu.Spec.EC2InstanceID): SMBIOS says Amazon
	// EC2 and the asset tag holds the node's instance id (Node.InstanceID). Its nodes get no fw_cfg config
	// at all, as on EC2: they read it, SSH keys included, from user-data, which the caller serves as IMDS
	// inside the lab's namespace (BeforeStart). Disk boot only; ClusterConfig must be nil.
	EC2 bool
	// BeforeStart, if set, runs once the lab's network is up (namespace, bridge, DHCP, the lab's SSH key)
	// and before any node starts: the place to serve what nodes ask for at boot from inside the namespace.
	// An error fails Up.
	BeforeStart func(ctx context.Context, l *Lab) error
	// Accel forces an accelerator; "" probes KVM (bounded) and falls back to TCG.
	Accel qemu.Accel
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Name == "" {
		o.Name = "default"
	}
	if o.Root == "" {
		o.Root = DefaultRoot()
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1536
	}
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	if o.DiskGiB == 0 {
		o.DiskGiB = 8
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Boot == "" {
		o.Boot = BootDisk
	}
	if o.Firmware == "" {
		o.Firmware = qemu.FirmwareUEFI
	}
	if o.KilnBin == "" && o.Boot == BootPXE {
		o.KilnBin, _ = os.Executable()
	}
}

// Validate reports every problem with o at once (after defaults).
func (o Options) Validate() error {
	var errs []error
	if err := ValidName(o.Name); err != nil {
		errs = append(errs, err)
	}
	switch o.Boot {
	case BootDisk:
		if o.Image == "" {
			errs = append(errs, errors.New("image: not set"))
		} else if fi, err := os.Stat(o.Image); err != nil {
			errs = append(errs, fmt.Errorf("image: %w", err))
		} else if !fi.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("image: %s is not a regular file", o.Image))
		}
		if o.Firmware == qemu.FirmwareBIOS {
			errs = append(errs, errors.New("firmware: bios boots only --boot pxe (the disk image boots on UEFI)"))
		}
	case BootPXE:
		if err := checkPXEDir(o.PXEDir); err != nil {
			errs = append(errs, err)
		}
		if o.ClusterConfig == nil {
			errs = append(errs, errors.New("config: boot pxe needs a cluster config: netbooted nodes read it from kiln pxe serve"))
		}
		if o.EC2 {
			errs = append(errs, errors.New("ec2: disk boot only (an EC2 instance boots its volume)"))
		}
		if o.KilnBin == "" {
			errs = append(errs, errors.New("kiln binary: not set (it runs kiln pxe serve)"))
		}
	default:
		errs = append(errs, fmt.Errorf("boot: unknown %q (disk, pxe)", o.Boot))
	}
	switch o.Firmware {
	case qemu.FirmwareUEFI, qemu.FirmwareBIOS:
	default:
		errs = append(errs, fmt.Errorf("firmware: unknown %q (uefi, bios)", o.Firmware))
	}
	if o.Nodes < 1 || o.Nodes > maxHardware {
		errs = append(errs, fmt.Errorf("nodes: %d not in 1..%d", o.Nodes, maxHardware))
	}
	if o.MemoryMiB < 256 {
		errs = append(errs, fmt.Errorf("memory: %d MiB is below 256", o.MemoryMiB))
	}
	if o.CPUs < 1 {
		errs = append(errs, fmt.Errorf("cpus: %d is below 1", o.CPUs))
	}
	if o.DiskGiB < 1 {
		errs = append(errs, fmt.Errorf("disk: %d GiB is below 1", o.DiskGiB))
	}
	if o.DataDiskGiB < 0 {
		errs = append(errs, fmt.Errorf("data-disk: %d GiB is negative", o.DataDiskGiB))
	}
	switch o.Accel {
	case "", qemu.AccelTCG, qemu.AccelKVM:
	default:
		errs = append(errs, fmt.Errorf("accel: unknown %q", o.Accel))
	}
	if o.EC2 && o.ClusterConfig != nil {
		errs = append(errs, errors.New("config: an EC2 lab's nodes read their config from user-data (IMDS), not fw_cfg"))
	}
	if o.ClusterConfig != nil {
		if _, err := nodeConfig(o.ClusterConfig, ""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Lab is a handle on one lab's directory. Safe for concurrent use: state changes are serialised by a mutex
// in-process and by a file lock between processes.
type Lab struct {
	name string
	dir  string
	log  *slog.Logger

	mu sync.Mutex // guards read-modify-write of state.json within this process

	sshMu    sync.Mutex
	sshConns *sshpool.Pool // made on the first command (sshPool); guarded by sshMu
}

// Name is the lab's name.
func (l *Lab) Name() string { return l.name }

// Dir is the lab's state directory.
func (l *Lab) Dir() string { return l.dir }

// KeyPath is the lab's own ssh private key, which every node accepts for root (ssh -i).
func (l *Lab) KeyPath() string { return l.keyPath() }

// Namespace is the lab's network namespace.
func (l *Lab) Namespace() string { return Namespace(l.name) }

// Open returns a handle on an existing lab.
func Open(root, name string, log *slog.Logger) (*Lab, error) {
	if root == "" {
		root = DefaultRoot()
	}
	if log == nil {
		log = slog.Default()
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	l := &Lab{name: name, dir: filepath.Join(root, name), log: log.With("lab", name)}
	if _, err := loadState(l.dir); err != nil {
		return nil, err
	}
	return l, nil
}

// Up creates the lab's network, DHCP server and nodes, and starts every node. It does not wait for boots
// (see WaitBooted). On error the lab is left for Down to clean up.
func Up(ctx context.Context, o Options) (*Lab, error) {
	o.defaults()
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	var image, pxeDir, kilnBin string
	var err error
	if o.Boot == BootDisk {
		if image, err = filepath.Abs(o.Image); err != nil {
			return nil, err
		}
	} else {
		if pxeDir, err = filepath.Abs(o.PXEDir); err != nil {
			return nil, err
		}
		if kilnBin, err = filepath.Abs(o.KilnBin); err != nil {
			return nil, err
		}
	}
	l := &Lab{name: o.Name, dir: filepath.Join(o.Root, o.Name), log: o.Logger.With("lab", o.Name)}
	if _, err := os.Stat(statePath(l.dir)); err == nil {
		return nil, fmt.Errorf("lab up: lab %q already exists in %s (kiln lab down --name %s first)", o.Name, l.dir, o.Name)
	}
	if netns.Exists(l.Namespace()) {
		return nil, fmt.Errorf("lab up: namespace %s already exists (kiln lab down --name %s removes it)", l.Namespace(), o.Name)
	}
	// The longest socket path we will create must fit a unix socket address.
	if p := filepath.Join(l.dir, fmt.Sprintf("node%d", maxHardware), "qmp.sock"); len(p) > 107 {
		return nil, fmt.Errorf("lab up: state directory %s too long for unix socket paths", l.dir)
	}

	accel := o.Accel
	if accel == "" {
		ok, why := qemu.ProbeKVM(ctx, qemu.DefaultOVMFCode, qemu.DefaultOVMFVars, qemu.ProbeTimeout)
		accel = qemu.AccelTCG
		if ok {
			accel = qemu.AccelKVM
		}
		l.log.Info("accelerator probed", "accel", accel, "reason", why)
	}

	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	st := State{Version: stateVersion, Name: o.Name, Image: image, Boot: o.Boot, PXEDir: pxeDir, Firmware: o.Firmware,
		KilnBin: kilnBin, MemoryMiB: o.MemoryMiB, CPUs: o.CPUs, EC2: o.EC2,
		DiskGiB: o.DiskGiB, DataDiskGiB: o.DataDiskGiB, Accel: accel, NextHardware: 1, CreatedAt: time.Now().UTC()}
	for i := 1; i <= o.Nodes; i++ {
		st.Nodes = append(st.Nodes, newNode(o.Name, i, st.NextHardware))
		st.NextHardware++
	}
	// Written before any resource exists: from here on, Down knows what to remove.
	if err := saveState(l.dir, st); err != nil {
		return nil, err
	}
	if o.ClusterConfig != nil {
		if err := os.WriteFile(l.clusterConfigPath(), o.ClusterConfig, 0o600); err != nil {
			return l, fmt.Errorf("lab up: %w", err)
		}
	}
	if err := l.genKey(); err != nil {
		return l, err
	}
	if err := netns.Create(ctx, l.Namespace(), Bridge, HostCIDR); err != nil {
		return l, fmt.Errorf("lab up: %w", err)
	}
	if _, err := dhcp.Start(ctx, l.Namespace(), l.dhcpConfig(), dhcpHosts(st)); err != nil {
		return l, fmt.Errorf("lab up: %w", err)
	}
	l.log.Info("network up", "netns", l.Namespace(), "bridge", Bridge, "host", HostCIDR)
	if st.Boot == BootPXE {
		if err := l.startPXE(ctx, st); err != nil {
			return l, fmt.Errorf("lab up: %w", err)
		}
	}
	if o.BeforeStart != nil {
		if err := o.BeforeStart(ctx, l); err != nil {
			return l, fmt.Errorf("lab up: before the nodes start: %w", err)
		}
	}
	for i := range st.Nodes {
		n := st.Nodes[i]
		if err := l.provision(ctx, st, n, true); err != nil {
			return l, fmt.Errorf("lab up: %w", err)
		}
		if err := l.update(func(s *State) error {
			ns, err := s.node(n.Name)
			if err != nil {
				return err
			}
			return l.startLocked(ctx, s, ns)
		}); err != nil {
			return l, fmt.Errorf("lab up: %w", err)
		}
	}
	return l, nil
}

// Down removes lab name under root entirely: VMs, DHCP server, namespace (with bridge and taps), files.
// Idempotent, and works on whatever a crashed Up left behind.
func Down(ctx context.Context, root, name string) error {
	if root == "" {
		root = DefaultRoot()
	}
	if err := ValidName(name); err != nil {
		return err
	}
	dir := filepath.Join(root, name)
	ns := Namespace(name)
	// This process's connections to the nodes first: they hold sockets in the namespace.
	pools.closeAll(dir)
	var errs []error
	// Pid files are looked up by glob, not from state.json: a crash may have left a node not yet recorded.
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "node*", "qemu.pid"))
	for _, pf := range pidFiles {
		if err := qemu.Kill(ctx, pf); err != nil {
			errs = append(errs, err)
		}
	}
	if err := (&Lab{name: name, dir: dir}).stopPXE(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := dhcp.Stop(ctx, dhcpConfigFor(dir)); err != nil {
		errs = append(errs, err)
	}
	// Anything else still living in the namespace is ours (we made the namespace): end it by pid.
	if pids, err := netns.Pids(ctx, ns); err != nil {
		errs = append(errs, err)
	} else if err := killAndWait(ctx, pids); err != nil {
		errs = append(errs, err)
	}
	if err := netns.Delete(ctx, ns); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("lab down: %w", err))
	}
	return errors.Join(errs...)
}

// Down removes this lab (see the package-level Down).
func (l *Lab) Down(ctx context.Context) error {
	return Down(ctx, filepath.Dir(l.dir), l.name)
}

func killAndWait(ctx context.Context, pids []int) error {
	// Never ourselves: a thread of ours may be visiting the namespace (netns.Do).
	pids = slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() })
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		alive := 0
		for _, p := range pids {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); err == nil && len(b) > 0 {
				alive++
			}
		}
		if alive == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab down: %d processes in namespace survive SIGKILL: %w", alive, ctx.Err())
		case <-t.C:
		}
	}
}

// update runs fn on the current state under both locks and saves the result if fn succeeds.
func (l *Lab) update(fn func(*State) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlock, err := l.flock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(l.dir)
	if err != nil {
		return err
	}
	ferr := fn(&st)
	// Saved even when fn failed half-way: a resource fn created before failing must stay known to Down.
	if err := saveState(l.dir, st); err != nil {
		return errors.Join(ferr, err)
	}
	return ferr
}

// State returns a copy of the lab's current state.
func (l *Lab) State() (State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlock, err := l.flock()
	if err != nil {
		return State{}, err
	}
	defer unlock()
	return loadState(l.dir)
}

func (l *Lab) flock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(l.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab %s: lock: %w", l.name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab %s: lock: %w", l.name, err)
	}
	return func() { f.Close() }, nil
}

// Paths inside the lab directory.
func (l *Lab) nodeDir(n NodeState) string      { return filepath.Join(l.dir, n.Name) }
func (l *Lab) keyPath() string                 { return filepath.Join(l.dir, "id_ed25519") }
func (l *Lab) clusterConfigPath() string       { return filepath.Join(l.dir, "cluster.yaml") }
func (l *Lab) dhcpConfig() dhcp.Config         { return dhcpConfigFor(l.dir) }
func (l *Lab) pidFile(n NodeState) string      { return filepath.Join(l.nodeDir(n), "qemu.pid") }
func (l *Lab) qmpSocket(n NodeState) string    { return filepath.Join(l.nodeDir(n), "qmp.sock") }
func (l *Lab) serialLog(n NodeState) string    { return filepath.Join(l.nodeDir(n), "serial.log") }
func (l *Lab) diskPath(n NodeState) string     { return filepath.Join(l.nodeDir(n), "disk.qcow2") }
func (l *Lab) dataDiskPath(n NodeState) string { return filepath.Join(l.nodeDir(n), "data.qcow2") }
func (l *Lab) varsPath(n NodeState) string     { return filepath.Join(l.nodeDir(n), "OVMF_VARS.fd") }
func (l *Lab) configPath(n NodeState) string {
	return filepath.Join(l.nodeDir(n), "config.yaml")
}

func dhcpConfigFor(dir string) dhcp.Config {
	_, subnet, _ := net.ParseCIDR(Subnet)
	host, _ := netns.HostAddr(HostCIDR)
	return dhcp.Config{Interface: Bridge, Subnet: subnet, Router: host, Dir: dir}
}

func dhcpHosts(st State) []dhcp.Host {
	var hs []dhcp.Host
	for _, n := range st.Nodes {
		hs = append(hs, dhcp.Host{MAC: n.MAC, IP: net.ParseIP(n.Address)})
	}
	return hs
}

// spec is the qemu Spec of node n.
func (l *Lab) spec(st State, n NodeState) qemu.Spec {
	data := ""
	if st.DataDiskGiB > 0 {
		data = l.dataDiskPath(n)
	}
	s := qemu.Spec{DataDisk: data,
		Name: fmt.Sprintf("kiln-%s-%s", l.name, n.Name), MemoryMiB: st.MemoryMiB, CPUs: st.CPUs, Accel: st.Accel,
		Firmware: st.Firmware, OVMFCode: qemu.DefaultOVMFCode, OVMFVars: l.varsPath(n), Disk: l.diskPath(n),
		MAC: n.MAC, Tap: n.Tap, UUID: n.UUID,
		SerialLog: l.serialLog(n), QMPSocket: l.qmpSocket(n), PidFile: l.pidFile(n), ConfigFile: l.configPath(n),
	}
	if st.Firmware == qemu.FirmwareBIOS {
		s.OVMFCode, s.OVMFVars = "", ""
	}
	if st.Boot == BootPXE {
		// A netbooted node gets its config from the server (kiln.config=), as in a garage: no fw_cfg.
		s.NetBoot, s.ConfigFile = true, ""
	}
	if st.EC2 {
		// An instance gets its config from user-data: no fw_cfg.
		s.EC2InstanceID, s.ConfigFile = InstanceID(st.Name, n.Hardware), ""
	}
	return s
}

// provision creates node n's tap, disk, firmware variables and config file. With fresh, the disk and variables
// are made anew even if present.
func (l *Lab) provision(ctx context.Context, st State, n NodeState, fresh bool) error {
	if err := os.MkdirAll(l.nodeDir(n), 0o700); err != nil {
		return err
	}
	if err := netns.AddTap(l.Namespace(), n.Tap, Bridge); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	// A netbooted node reads its config from kiln pxe serve (startPXE writes that one), an EC2 one from
	// user-data: no fw_cfg file.
	if st.Boot != BootPXE && !st.EC2 {
		if err := l.writeNodeConfig(n); err != nil {
			return err
		}
	}
	if _, err := os.Stat(l.varsPath(n)); st.Firmware != qemu.FirmwareBIOS && (fresh || err != nil) {
		if err := qemu.CopyVars(qemu.DefaultOVMFVars, l.varsPath(n)); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if _, err := os.Stat(l.diskPath(n)); fresh || err != nil {
		if err := l.freshDisk(ctx, st, n); err != nil {
			return err
		}
	}
	if _, err := os.Stat(l.dataDiskPath(n)); st.DataDiskGiB > 0 && (fresh || err != nil) {
		if err := os.Remove(l.dataDiskPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := qemu.CreateBlankDisk(ctx, l.dataDiskPath(n), st.DataDiskGiB); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

func (l *Lab) freshDisk(ctx context.Context, st State, n NodeState) error {
	if err := os.Remove(l.diskPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if st.Boot == BootPXE {
		// A netbooted machine's disk starts blank: its initramfs makes the state partition on it.
		if err := qemu.CreateBlankDisk(ctx, l.diskPath(n), st.DiskGiB); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		return nil
	}
	if err := qemu.CreateDisk(ctx, st.Image, l.diskPath(n), st.DiskGiB); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

func (l *Lab) writeNodeConfig(n NodeState) error {
	pub, err := os.ReadFile(l.keyPath() + ".pub")
	if err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	cluster, err := os.ReadFile(l.clusterConfigPath())
	if errors.Is(err, os.ErrNotExist) {
		cluster, err = nil, nil
	}
	if err != nil {
		return err
	}
	b, err := nodeConfig(cluster, string(pub))
	if err != nil {
		return err
	}
	return os.WriteFile(l.configPath(n), b, 0o600)
}
