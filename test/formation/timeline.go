package formation

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/lab"
)

// Milestones of one node's formation, in the order they normally happen.
const (
	MilestoneDiscovered = "discovered" // its agent sees every expected member alive
	MilestoneSwarm      = "swarm"      // its agent reports the swarm active here
	MilestoneMounted    = "mounted"    // /var/data is a mount point
	MilestoneVIP        = "vip"        // it holds the VIP
	MilestoneFormed     = "formed"     // its agent reports phase ready
)

// Milestones in table order.
var Milestones = []string{MilestoneDiscovered, MilestoneSwarm, MilestoneMounted, MilestoneVIP, MilestoneFormed}

// Sample is one observation by the in-guest sampler.
type Sample struct {
	// Uptime is the guest's uptime when it looked.
	Uptime  time.Duration
	Mounted bool
	HasVIP  bool
	// Status is the agent's status.json then (nil when absent or unreadable).
	Status *status.Status
}

// Reached returns the milestones this sample shows.
func (s Sample) Reached() []string {
	var ms []string
	if st := s.Status; st != nil {
		alive := 0
		for _, m := range st.Members {
			if m.Alive {
				alive++
			}
		}
		if st.Expected > 0 && alive >= st.Expected {
			ms = append(ms, MilestoneDiscovered)
		}
		if st.Swarm.State == "active" {
			ms = append(ms, MilestoneSwarm)
		}
		if Formed(st) {
			ms = append(ms, MilestoneFormed)
		}
	}
	if s.Mounted {
		ms = append(ms, MilestoneMounted)
	}
	if s.HasVIP {
		ms = append(ms, MilestoneVIP)
	}
	return ms
}

// ParseSample parses one line of SamplerScript's output: uptime, mounted, vip, status JSON (may be empty),
// tab-separated.
func ParseSample(line string) (Sample, error) {
	f := strings.SplitN(line, "\t", 4)
	if len(f) != 4 {
		return Sample{}, fmt.Errorf("sample: want 4 tab-separated fields in %q", line)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return Sample{}, fmt.Errorf("sample: uptime %q: %w", f[0], err)
	}
	s := Sample{Uptime: time.Duration(up * float64(time.Second)), Mounted: f[1] == "1", HasVIP: f[2] == "1"}
	if js := strings.TrimSpace(f[3]); js != "" {
		var st status.Status
		// A status.json being replaced is never half-written (atomic rename), so a decode error is a real one;
		// it is still only one sample: keep the rest of it.
		if err := json.Unmarshal([]byte(js), &st); err == nil {
			s.Status = &st
		}
	}
	return s, nil
}

// SamplerScript is the shell loop that runs in a guest and prints one Sample line every interval (seconds),
// at most count times. One ssh session for the whole run: a fresh ssh handshake per sample would cost a TCG
// guest more CPU than everything it samples.
func SamplerScript(vip netip.Addr, interval, count int) string {
	return fmt.Sprintf(`i=0
while [ $i -lt %d ]; do
  read up idle < /proc/uptime
  m=0; mountpoint -q /var/data && m=1
  v=0; ip -o addr show | grep -q ' inet %s/' && v=1
  s=$( { tr -d '\n' < %s; } 2>/dev/null)
  printf '%%s\t%%s\t%%s\t%%s\n' "$up" "$m" "$v" "$s" || exit 0
  i=$((i+1))
  sleep %d
done`, count, vip, status.DefaultPath, interval)
}

// Timeline is when one node first reached each milestone, on the host's clock.
type Timeline map[string]time.Time

// SampleNode streams SamplerScript's samples from n until ctx ends or the script does, recording in tl (guest
// uptimes mapped to host time through boot, the host instant of guest uptime 0). It returns when the stream
// ends. The stream has an ssh connection of its own for its whole run (lab.ExecOptions.Dedicated).
func SampleNode(ctx context.Context, n *lab.Node, vip netip.Addr, boot time.Time, tl Timeline, done func(Timeline) bool) error {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	pr, pw := io.Pipe()
	ended := make(chan error, 1)
	go func() {
		res, err := n.ExecWith(sctx, lab.ExecOptions{Stdout: pw, Dedicated: true}, "sh", "-c", SamplerScript(vip, 1, 3600))
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
		}
		pw.Close() // the reader sees EOF; how the stream ended comes through ended
		ended <- err
	}()
	err := readSamples(pr, boot, tl, done)
	if err != nil || (done != nil && done(tl)) {
		stop() // ends the session; the guest loop ends on its next write
	}
	pr.Close() // a write still in flight returns at once
	werr := <-ended
	if err != nil {
		return fmt.Errorf("%s: sampler: %w", n.Name(), err)
	}
	if ctx.Err() == nil && werr != nil && (done == nil || !done(tl)) {
		return fmt.Errorf("%s: sampler: %w", n.Name(), werr)
	}
	return nil
}

func readSamples(r io.Reader, boot time.Time, tl Timeline, done func(Timeline) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s, err := ParseSample(sc.Text())
		if err != nil {
			return err
		}
		at := boot.Add(s.Uptime)
		for _, m := range s.Reached() {
			if _, ok := tl[m]; !ok {
				tl[m] = at
			}
		}
		if done != nil && done(tl) {
			return nil
		}
	}
	return sc.Err()
}

// GuestBoot is the host instant of n's guest uptime 0 (see UnitActiveAt for the method and its error).
func GuestBoot(ctx context.Context, n *lab.Node) (time.Time, error) {
	before := time.Now()
	out, err := Exec(ctx, n, "cat", "/proc/uptime")
	after := time.Now()
	if err != nil {
		return time.Time{}, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return time.Time{}, fmt.Errorf("%s: /proc/uptime: %q", n.Name(), out)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: /proc/uptime %q: %w", n.Name(), out, err)
	}
	return GuestToHost(before, after, up, 0), nil
}
