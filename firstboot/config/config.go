// Package config loads, validates and generates the cluster/node config (docs/design.md "Node configuration
// sources"): a small strict YAML file that tells a node which cluster it belongs to and how to find its peers.
package config

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/kiln-project/kiln/internal/yamlstrict"
	"gopkg.in/yaml.v3"
)

// DefaultSize is the expected member count when the config leaves cluster.size out: the smallest cluster whose
// replica-3 volume and swarm managers survive the loss of one node.
const DefaultSize = 3

// KeySize is the length in bytes of the cluster key; 32 bytes is the key size of the ciphers membership uses.
const KeySize = 32

// Config is one node's view of its cluster.
type Config struct {
	Cluster Cluster
	// SSHAuthorizedKeys are added to root's keys at boot (through `kiln-firstboot ssh-keys`); empty means none.
	SSHAuthorizedKeys []string
	// Source names where the config came from ("fw_cfg", "cmdline-url", "esp", "image"); empty for a config
	// not loaded from a Source (parsed or generated).
	Source string
	// Skipped says why sources before Source that were asked for gave no config (a kiln.config= server that
	// did not answer): the node runs on a lower-priority config, and its status says why.
	Skipped []string
	// Ingress is the ingress section: Traefik on 80/443 with ACME certificates (docs/ingress.md); nil when
	// the config has none, and then the node runs no ingress stack.
	Ingress *Ingress
	// Sources is the sources section: how the node looks for its config. Only the image default's is read
	// (config.IMDS); elsewhere it is accepted and has no effect, since the config was already found.
	Sources SourceOptions
	// AWS is the aws section: where the EC2 API is (its zero value: the region's public endpoint).
	AWS AWS
}

// SourceOptions is the sources section.
type SourceOptions struct {
	// AWSIMDS asks EC2's instance metadata for user-data also where the firmware does not say EC2 (a
	// hypervisor that hides it, the lab's fake IMDS). Default false: off EC2 nothing is asked.
	AWSIMDS bool
}

// Discovery is the cluster.discovery section: where peers are found besides LAN beacons and static peers.
type Discovery struct {
	// AWSTag finds peers on EC2: the private addresses of the running instances carrying this tag (listed
	// with DescribeInstances through the instance role, again while the cluster runs, so a replacement
	// instance is found without a config change). The zero value: not used.
	AWSTag Tag
}

// Tag is an EC2 tag, written KEY=VALUE in the file.
type Tag struct{ Key, Value string }

// IsZero reports whether no tag is set.
func (t Tag) IsZero() bool { return t.Key == "" }

func (t Tag) String() string {
	if t.IsZero() {
		return ""
	}
	return t.Key + "=" + t.Value
}

// Cluster is the cluster section.
type Cluster struct {
	// Name identifies the cluster: [a-z0-9-]{1,32}. Nodes ignore peers announcing another name.
	Name string
	// Key authenticates and encrypts everything nodes say to each other. Whoever holds it can join.
	Key Key
	// AcceptKeys are further keys this node accepts but never sends with: the middle of a key rotation
	// (docs/security.md, `kiln cluster rotate-key`). At most MaxAcceptKeys.
	AcceptKeys []Key
	// Size is the number of members the cluster expects (≥ 1, default 3): formation waits for a majority of it.
	Size int
	// VIP is the floating address and its prefix length; the zero Prefix means no VIP.
	VIP netip.Prefix
	// Interface is the cluster interface name; empty means "the interface with the default route, else the
	// first with carrier" (decided by the agent, not here).
	Interface string
	// Peers are static peer addresses for networks without multicast (AWS); empty means discover.
	Peers []netip.Addr
	// Discovery finds peers in a cloud's inventory (EC2 tags).
	Discovery Discovery
	// VIPAWS makes the VIP's holder also assign the VIP to its EC2 network interface as a secondary private
	// address (AssignPrivateIpAddresses, reassignment allowed), so the VPC delivers the VIP's traffic to it.
	// Default: on when both cluster.vip and cluster.discovery.aws_tag are set.
	VIPAWS bool
	// ReplaceAfter is how long a member must be gone before an alive newcomer takes its place (swarm
	// manager seat, gluster brick); default DefaultReplaceAfter. Shorter means faster repair but a slow
	// reboot may be mistaken for a loss (the node then rejoins as an extra).
	ReplaceAfter time.Duration
}

// DefaultReplaceAfter is cluster.replaceAfter when the config leaves it out: long enough for any reboot
// (firmware, fsck, a TCG VM) to finish, short enough that a dead disk is repaired the same hour.
const DefaultReplaceAfter = 10 * time.Minute

// MinReplaceAfter keeps a typo like "10s" from replacing nodes that merely rebooted: failure detection alone
// takes 4 s and a reboot at least tens of seconds.
const MinReplaceAfter = 30 * time.Second

// Key is the cluster key.
type Key [KeySize]byte

// MaxAcceptKeys bounds cluster.accept_keys: every received packet that fails the first key is tried with each.
const MaxAcceptKeys = 2

// String returns the key in the file's encoding (standard base64).
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// namePattern is the cluster name syntax: it ends up in hostnames, volume names and log lines, so it stays
// DNS-label-safe and short.
var namePattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// Sections are the file's top-level keys (those of file), for tools that pass a config on without decoding
// it (kiln lab).
var Sections = []string{"cluster", "ssh_authorized_keys", "ingress", "install", "sources", "aws"}

// file is the on-disk shape, decoded strictly (internal/yamlstrict). Pointers tell "absent" from "zero".
type file struct {
	// Ingress is optional: absent (or empty), the node runs no ingress stack.
	Ingress           fileIngress `yaml:"ingress"`
	Cluster           fileCluster `yaml:"cluster"`
	SSHAuthorizedKeys []string    `yaml:"ssh_authorized_keys"`
	// Install is read by the ISO installer (ParseInstall), accepted and ignored here.
	Install fileInstall `yaml:"install"`
	Sources fileSources `yaml:"sources"`
	AWS     fileAWS     `yaml:"aws"`
}

type fileSources struct {
	AWSIMDS bool `yaml:"aws_imds"`
}

type fileDiscovery struct {
	// AWSTag is KEY=VALUE.
	AWSTag string `yaml:"aws_tag"`
}

type fileCluster struct {
	Name       string        `yaml:"name"`
	Key        string        `yaml:"key"`
	AcceptKeys []string      `yaml:"accept_keys"`
	Size       *int          `yaml:"size"`
	VIP        string        `yaml:"vip"`
	Interface  string        `yaml:"interface"`
	Peers      []string      `yaml:"peers"`
	Discovery  fileDiscovery `yaml:"discovery"`
	VIPAWS     *bool         `yaml:"vip_aws"`
	// ReplaceAfter is a Go duration ("10m", "90s").
	ReplaceAfter string `yaml:"replaceAfter"`
}

// Parse decodes and validates a config file. Unknown keys are errors; every problem is reported with its
// field path (errors.Join of all of them), so one round of editing fixes a file.
func Parse(data []byte) (*Config, error) { return ParseFile("", data) }

// ParseFile is Parse for a file with a name (a path, a URL, "fw_cfg"): every problem is reported as
// name:line:col: field: message, the form editors jump to, with "did you mean" for a misspelt key.
func ParseFile(name string, data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config is %d bytes, more than the %d allowed", len(data), MaxSize)
	}
	var f file
	pos, err := yamlstrict.Decode(name, data, &f)
	if err != nil {
		return nil, err
	}
	return f.validate(name, pos)
}

func (f *file) validate(name string, pos yamlstrict.Positions) (*Config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, pos.At(name, field, fmt.Sprintf(format, args...)))
	}
	c := &Config{SSHAuthorizedKeys: f.SSHAuthorizedKeys}
	fc := f.Cluster

	switch {
	case fc.Name == "":
		bad("cluster.name", "required")
	case !namePattern.MatchString(fc.Name):
		bad("cluster.name", "%q does not match [a-z0-9-]{1,32}", fc.Name)
	default:
		c.Cluster.Name = fc.Name
	}

	if fc.Key == "" {
		bad("cluster.key", "required (base64 of %d random bytes; `kiln cluster new` makes one)", KeySize)
	} else if k, err := base64.StdEncoding.DecodeString(fc.Key); err != nil {
		bad("cluster.key", "not standard base64: %v", err)
	} else if len(k) != KeySize {
		bad("cluster.key", "decodes to %d bytes, want %d", len(k), KeySize)
	} else {
		copy(c.Cluster.Key[:], k)
	}

	if len(fc.AcceptKeys) > MaxAcceptKeys {
		bad("cluster.accept_keys", "%d keys, at most %d (a rotation needs one)", len(fc.AcceptKeys), MaxAcceptKeys)
	}
	for i, ak := range fc.AcceptKeys {
		field := fmt.Sprintf("cluster.accept_keys[%d]", i)
		k, err := base64.StdEncoding.DecodeString(ak)
		switch {
		case err != nil:
			bad(field, "not standard base64: %v", err)
		case len(k) != KeySize:
			bad(field, "decodes to %d bytes, want %d", len(k), KeySize)
		case Key(k) == c.Cluster.Key:
			bad(field, "is cluster.key itself")
		default:
			c.Cluster.AcceptKeys = append(c.Cluster.AcceptKeys, Key(k))
		}
	}

	c.Cluster.Size = DefaultSize
	if fc.Size != nil {
		if *fc.Size < 1 {
			bad("cluster.size", "%d: must be at least 1", *fc.Size)
		}
		c.Cluster.Size = *fc.Size
	}

	if fc.VIP != "" {
		if p, err := ParseVIP(fc.VIP); err != nil {
			bad("cluster.vip", "%v", err)
		} else {
			c.Cluster.VIP = p
		}
	}

	// Interface names follow the kernel's rules (IFNAMSIZ 16 incl. NUL, no '/', no whitespace).
	if i := fc.Interface; i != "" {
		if len(i) > 15 || strings.ContainsAny(i, "/: \t\n") || i == "." || i == ".." {
			bad("cluster.interface", "%q is not a valid interface name", i)
		}
		c.Cluster.Interface = i
	}

	for n, s := range fc.Peers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			bad(fmt.Sprintf("cluster.peers[%d]", n), "want an IP address: %v", err)
			continue
		}
		c.Cluster.Peers = append(c.Cluster.Peers, a.Unmap())
	}

	if t := fc.Discovery.AWSTag; t != "" {
		k, v, ok := strings.Cut(t, "=")
		switch {
		case !ok || k == "":
			bad("cluster.discovery.aws_tag", "%q: want KEY=VALUE, like kiln-cluster=garage", t)
		case len(k) > 128 || len(v) > 256 || strings.HasPrefix(strings.ToLower(k), "aws:"):
			bad("cluster.discovery.aws_tag", "%q: EC2 tag keys are 1..128 characters and not aws:…, values at most 256", t)
		default:
			c.Cluster.Discovery.AWSTag = Tag{Key: k, Value: v}
		}
	}
	c.Cluster.VIPAWS = fc.VIP != "" && fc.Discovery.AWSTag != ""
	if fc.VIPAWS != nil {
		if *fc.VIPAWS && fc.VIP == "" {
			bad("cluster.vip_aws", "true needs cluster.vip: there is no VIP to assign")
		}
		c.Cluster.VIPAWS = *fc.VIPAWS
	}
	c.Sources.AWSIMDS = f.Sources.AWSIMDS
	c.AWS = f.AWS.validate(c.Cluster.VIPAWS || fc.Discovery.AWSTag != "", bad)

	c.Cluster.ReplaceAfter = DefaultReplaceAfter
	if fc.ReplaceAfter != "" {
		d, err := time.ParseDuration(fc.ReplaceAfter)
		switch {
		case err != nil:
			bad("cluster.replaceAfter", "want a duration like 10m or 90s: %v", err)
		case d < MinReplaceAfter:
			bad("cluster.replaceAfter", "%s: must be at least %s (a rebooting node is not a lost one)", d, MinReplaceAfter)
		default:
			c.Cluster.ReplaceAfter = d
		}
	}

	c.Ingress = f.Ingress.validate(bad)

	for n, k := range f.SSHAuthorizedKeys {
		// A key is one line of authorized_keys; a newline would let one entry smuggle in a second line.
		if strings.TrimSpace(k) == "" || strings.ContainsAny(k, "\r\n") {
			bad(fmt.Sprintf("ssh_authorized_keys[%d]", n), "must be one non-empty authorized_keys line")
		}
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// ParseVIP parses a floating address as the config takes it: an IPv4 host address with its LAN's prefix
// length. The error is in the user's terms and names the value, so `kiln cluster new` and the config file
// say the same thing.
func ParseVIP(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, fmt.Errorf("%s: want an address with its prefix length, e.g. %s/24", s, a)
		}
		return netip.Prefix{}, fmt.Errorf("%s: want an IPv4 address with its prefix length, e.g. 192.168.1.250/24", s)
	}
	a := p.Addr()
	if !a.Is4() {
		// VRRP version 3 itself carries IPv6, but vrrp.Render writes one IPv4 instance.
		return netip.Prefix{}, fmt.Errorf("%s: only IPv4 VIPs are supported (kiln renders one IPv4 VRRP version 3 instance)", s)
	}
	if p.Bits() == 0 || p.Bits() == 32 {
		return netip.Prefix{}, fmt.Errorf("%s: the prefix length must be the LAN's (1 to 31), not /%d", s, p.Bits())
	}
	if p.Bits() <= 30 { // a /31 has no network or broadcast address (RFC 3021): both are hosts
		network := p.Masked()
		switch a {
		case network.Addr():
			return netip.Prefix{}, fmt.Errorf("%s: %s is the network address of %s, not a host address; pick one between %s and %s",
				s, a, network, network.Addr().Next(), broadcast(network).Prev())
		case broadcast(network):
			return netip.Prefix{}, fmt.Errorf("%s: %s is the broadcast address of %s, not a host address; pick one between %s and %s",
				s, a, network, network.Addr().Next(), broadcast(network).Prev())
		}
	}
	return p, nil
}

// broadcast is the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// New generates a fresh config with a random key (for `kiln cluster new`).
func New(name string) (*Config, error) {
	c := &Config{Cluster: Cluster{Name: name, Size: DefaultSize, ReplaceAfter: DefaultReplaceAfter}}
	if _, err := rand.Read(c.Cluster.Key[:]); err != nil {
		return nil, fmt.Errorf("config: random key: %w", err)
	}
	return c, nil
}

// Validate checks a config built in code (flags) the way Parse checks a file.
func (c *Config) Validate() error {
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	_, err = Parse(data)
	return err
}

// Marshal renders the config in the documented file format, comments included, so a printed config explains
// itself to whoever edits it next.
func (c *Config) Marshal() ([]byte, error) {
	var b bytes.Buffer
	q := func(v any) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			panic(err) // strings and ints always marshal
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	vip := ""
	if c.Cluster.VIP.IsValid() {
		vip = c.Cluster.VIP.String()
	}
	peers := make([]string, 0, len(c.Cluster.Peers))
	for _, p := range c.Cluster.Peers {
		peers = append(peers, p.String())
	}
	keys := c.SSHAuthorizedKeys
	if keys == nil {
		keys = []string{}
	}
	fmt.Fprintf(&b, "cluster:\n")
	fmt.Fprintf(&b, "  name: %s  # [a-z0-9-]{1,32}\n", q(c.Cluster.Name))
	fmt.Fprintf(&b, "  key: %s  # secret: whoever has it can join\n", q(c.Cluster.Key.String()))
	if len(c.Cluster.AcceptKeys) > 0 {
		ak := make([]string, 0, len(c.Cluster.AcceptKeys))
		for _, k := range c.Cluster.AcceptKeys {
			ak = append(ak, k.String())
		}
		fmt.Fprintf(&b, "  accept_keys: %s  # also accepted, never sent with: a key rotation under way\n", flow(ak))
	}
	fmt.Fprintf(&b, "  size: %d  # expected members\n", c.Cluster.Size)
	if vip == "" {
		fmt.Fprintf(&b, "  # vip: the floating address/prefix the cluster answers on from whichever node is healthy, e.g.\n")
		fmt.Fprintf(&b, "  # 192.168.1.250/24. Empty: no VIP; clients reach the cluster at a node's own address.\n")
		fmt.Fprintf(&b, "  vip: \"\"\n")
	} else {
		fmt.Fprintf(&b, "  vip: %s  # floating address/prefix, held by one healthy node (VRRP version 3)\n", q(vip))
	}
	fmt.Fprintf(&b, "  interface: %s  # empty: the default-route interface, else the first with carrier\n", q(c.Cluster.Interface))
	fmt.Fprintf(&b, "  peers: %s  # static peer addresses (no multicast, e.g. AWS)\n", flow(peers))
	if t := c.Cluster.Discovery.AWSTag; !t.IsZero() {
		fmt.Fprintf(&b, "  discovery:\n    aws_tag: %s  # peers: running EC2 instances with this tag\n", q(t.String()))
	}
	if def := c.Cluster.VIP.IsValid() && !c.Cluster.Discovery.AWSTag.IsZero(); c.Cluster.VIPAWS != def {
		fmt.Fprintf(&b, "  vip_aws: %t  # assign the VIP to the holder's EC2 network interface\n", c.Cluster.VIPAWS)
	}
	if ra := c.Cluster.ReplaceAfter; ra != 0 && ra != DefaultReplaceAfter {
		fmt.Fprintf(&b, "  replaceAfter: %s  # a member gone this long is replaced by an alive newcomer\n", q(ra.String()))
	}
	fmt.Fprintf(&b, "ssh_authorized_keys: %s  # added to root's keys\n", flow(keys))
	c.Ingress.marshal(&b, q)
	if c.Sources.AWSIMDS {
		fmt.Fprintf(&b, "sources:\n  aws_imds: true  # ask EC2 user-data even where the firmware does not say EC2\n")
	}
	if c.AWS.Endpoint != "" {
		fmt.Fprintf(&b, "aws:\n  endpoint: %s  # the EC2 API (a VPC interface endpoint); default: the region's\n", q(c.AWS.Endpoint))
	}
	return b.Bytes(), nil
}

// flow renders a list as a one-line flow sequence. JSON strings are valid YAML and, unlike plain scalars,
// stay intact when they contain flow indicators (", [ ] { }"), which key comments may.
func flow(items []string) string {
	out, _ := json.Marshal(items) // []string always marshals
	return string(out)
}
