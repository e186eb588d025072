package formation

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// SwarmNodeFormat is the `docker node ls --format` template ParseSwarmNodes reads.
const SwarmNodeFormat = "{{.ID}}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"

// SwarmNode is one row of `docker node ls`.
type SwarmNode struct {
	ID, Hostname, Status, Availability string
	// ManagerStatus is "Leader", "Reachable" or "Unreachable" for managers, "" for workers.
	ManagerStatus string
}

// ReadyManager reports whether the node is a manager that is Ready and reachable.
func (n SwarmNode) ReadyManager() bool {
	return n.Status == "Ready" && (n.ManagerStatus == "Leader" || n.ManagerStatus == "Reachable")
}

// ParseSwarmNodes parses `docker node ls --format SwarmNodeFormat`.
func ParseSwarmNodes(out string) ([]SwarmNode, error) {
	var ns []SwarmNode
	for _, line := range nonEmptyLines(out) {
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("docker node ls: want 5 tab-separated fields, got %q", line)
		}
		ns = append(ns, SwarmNode{ID: f[0], Hostname: f[1], Status: f[2], Availability: f[3], ManagerStatus: f[4]})
	}
	return ns, nil
}

// VolumeInfo is what the proof needs from `gluster volume info <v>`.
type VolumeInfo struct {
	Name, Type, Status string
	// Bricks are "host:/path" in brick order.
	Bricks []string
	// Options are the options set on the volume ("Options Reconfigured").
	Options map[string]string
}

var brickLine = regexp.MustCompile(`^Brick[0-9]+:\s+(\S+)`)

// ParseVolumeInfo parses the plain output of `gluster volume info <v>` (one volume).
func ParseVolumeInfo(out string) (VolumeInfo, error) {
	var v VolumeInfo
	inOptions := false
	for _, line := range nonEmptyLines(out) {
		line = strings.TrimSpace(line)
		if m := brickLine.FindStringSubmatch(line); m != nil {
			v.Bricks = append(v.Bricks, m[1])
			continue
		}
		if line == "Options Reconfigured:" {
			inOptions, v.Options = true, map[string]string{}
			continue
		}
		k, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if inOptions {
			v.Options[k] = strings.TrimSpace(val)
			continue
		}
		switch k {
		case "Volume Name":
			if v.Name != "" {
				return VolumeInfo{}, fmt.Errorf("gluster volume info: more than one volume (%s, %s)", v.Name, strings.TrimSpace(val))
			}
			v.Name = strings.TrimSpace(val)
		case "Type":
			v.Type = strings.TrimSpace(val)
		case "Status":
			v.Status = strings.TrimSpace(val)
		}
	}
	if v.Name == "" {
		return VolumeInfo{}, fmt.Errorf("gluster volume info: no volume in output %q", out)
	}
	return v, nil
}

// BrickStatus is one brick's line of `gluster volume status <v> --xml`.
type BrickStatus struct {
	Host, Path string
	Online     bool
	Port       string
}

// ParseVolumeStatusXML parses `gluster volume status <v> --xml` and returns the bricks only (not the self-heal
// daemon and other processes, whose path is not absolute).
func ParseVolumeStatusXML(out []byte) ([]BrickStatus, error) {
	var doc struct {
		OpRet   int    `xml:"opRet"`
		OpErrno int    `xml:"opErrno"`
		OpErr   string `xml:"opErrstr"`
		Volumes []struct {
			Name  string `xml:"volName"`
			Nodes []struct {
				Hostname string `xml:"hostname"`
				Path     string `xml:"path"`
				Status   int    `xml:"status"`
				Port     string `xml:"port"`
			} `xml:"node"`
		} `xml:"volStatus>volumes>volume"`
	}
	if err := xml.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("gluster volume status xml: %w", err)
	}
	if doc.OpRet != 0 {
		return nil, fmt.Errorf("gluster volume status: opRet %d errno %d: %s", doc.OpRet, doc.OpErrno, doc.OpErr)
	}
	var bs []BrickStatus
	for _, v := range doc.Volumes {
		for _, n := range v.Nodes {
			if !strings.HasPrefix(n.Path, "/") {
				continue
			}
			bs = append(bs, BrickStatus{Host: n.Hostname, Path: n.Path, Online: n.Status == 1, Port: n.Port})
		}
	}
	return bs, nil
}

// ParsePoolList returns the peer UUIDs of `gluster pool list` (the local node included, as "localhost").
func ParsePoolList(out string) (map[string]string, error) {
	peers := map[string]string{}
	for i, line := range nonEmptyLines(out) {
		f := strings.Fields(line)
		if i == 0 && len(f) > 0 && f[0] == "UUID" {
			continue
		}
		if len(f) < 3 || len(f[0]) != 36 {
			return nil, fmt.Errorf("gluster pool list: unexpected line %q", line)
		}
		peers[f[0]] = f[1]
	}
	return peers, nil
}

// ParseGlusterdUUID reads the UUID= line of /var/lib/glusterd/glusterd.info.
func ParseGlusterdUUID(info string) (string, error) {
	for _, line := range nonEmptyLines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "UUID="); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("glusterd.info: no UUID line")
}

// HoldsAddr reports whether `ip -o addr show` output has addr configured (any interface, any prefix).
func HoldsAddr(ipOut string, addr netip.Addr) bool {
	for _, line := range nonEmptyLines(ipOut) {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" && f[i] != "inet6" {
				continue
			}
			if p, err := netip.ParsePrefix(f[i+1]); err == nil && p.Addr() == addr {
				return true
			}
		}
	}
	return false
}

// KeepalivedPeers returns the addresses in the unicast_peer blocks of a keepalived.conf.
func KeepalivedPeers(conf string) ([]netip.Addr, error) {
	var peers []netip.Addr
	in := false
	sc := bufio.NewScanner(strings.NewReader(conf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexAny(line, "#!"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		switch {
		case !in && strings.HasPrefix(line, "unicast_peer") && strings.HasSuffix(line, "{"):
			in = true
		case in && line == "}":
			in = false
		case in && line != "":
			a, err := netip.ParseAddr(strings.Fields(line)[0])
			if err != nil {
				return nil, fmt.Errorf("keepalived.conf: unicast_peer entry %q: %w", line, err)
			}
			peers = append(peers, a)
		}
	}
	return peers, sc.Err()
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return out
}

// ParseReplicas reads the REPLICAS column of `docker service ls` ("2/3", or "3/3 (max 1 per node)" when the
// service has a per-node limit) into running and desired task counts.
func ParseReplicas(s string) (running, desired int, err error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, 0, fmt.Errorf("replicas %q: empty", s)
	}
	r, d, ok := strings.Cut(f[0], "/")
	if !ok {
		return 0, 0, fmt.Errorf("replicas %q: want running/desired", s)
	}
	if running, err = strconv.Atoi(r); err != nil {
		return 0, 0, fmt.Errorf("replicas %q: %w", s, err)
	}
	if desired, err = strconv.Atoi(d); err != nil {
		return 0, 0, fmt.Errorf("replicas %q: %w", s, err)
	}
	return running, desired, nil
}
