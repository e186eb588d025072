// Package healing is the end-to-end proof of self-healing (docs/self-healing.md): lab VMs lose nodes, power,
// disks and links while a writer appends checksummed records to the shared volume, and afterwards every
// acknowledged record must be there, with no split-brain, 3 Ready managers, 3 bricks online, no pending heals
// and exactly one VIP holder. scenarios.go holds the scenarios, each a function of a formed Cluster so that one
// lab can run several in a row (TestChain does; so does TestFormation with KILN_HEALING=1); healing_test.go also
// runs each on its own lab (KILN_E2E=1, KILN_HEALING=1); this file is the writer, the reader and the end-state
// checks.
package healing

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/test/formation"
)

// DataDir is where writers put their logs, on the shared volume.
const DataDir = "/var/data/healing"

// Checksum is the record checksum: the first 16 hex digits of sha256("<seq> <payload>").
func Checksum(seq int, payload string) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(seq) + " " + payload))
	return hex.EncodeToString(sum[:8])
}

// WriterScript appends up to count records "<seq> <payload> <checksum>" to file, one every interval ms, and
// prints "ack <seq>" only after the append and an fsync of the file succeeded: an ack is a write the
// volume confirmed. Failed writes (read-only without quorum, a stalled mount) print "fail <seq>" and the
// writer goes on. The payload is random so a stale or duplicated block cannot pass as a record.
func WriterScript(file string, count, intervalMS int) string {
	return fmt.Sprintf(`set -u; mkdir -p %[1]s; f=%[2]s; i=0
while [ $i -lt %[3]d ]; do
  p=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  s=$(printf '%%s %%s' "$i" "$p" | sha256sum | cut -c1-16)
  if printf '%%s %%s %%s\n' "$i" "$p" "$s" >> "$f" 2>/dev/null && sync "$f" 2>/dev/null; then echo "ack $i"; else echo "fail $i"; fi
  i=$((i+1)); sleep %[4]s
done; echo done`, filepath.Dir(file), file, count, fmt.Sprintf("%d.%03d", intervalMS/1000, intervalMS%1000))
}

// Writer is one stream of checksummed records and the sequence numbers the storage acknowledged: either a
// WriterScript on a node appending to its mount (StartWriter), or the lab host POSTing through the VIP to the
// web service, which stores them on the volume (StartServiceWriter).
type Writer struct {
	// Source is a shell command that prints every record the stream stored, run on any node.
	Source string
	// stop ends the stream; done receives its end.
	stop func()
	mu   sync.Mutex
	acks map[int]bool
	// ackAt is when each ack arrived, in order (storage stalls are the gaps between them).
	ackAt []time.Time
	// fails counts writes the storage refused (expected while a node is lost, never while it is healthy).
	fails int
	// ended is set when the stream stopped by itself (ssh lost, script ended), with why: waits fail at once
	// instead of waiting out their bound for acks that cannot come.
	ended    bool
	endedErr error
	done     chan error
}

func newWriter(source string) *Writer {
	return &Writer{Source: source, acks: map[int]bool{}, done: make(chan error, 1)}
}

// writerAliveCountMax is the writer connection's keepalive tolerance (ServerAliveCountMax, 5 s apart): a
// minute, twice the lab's, so that a writer rides out a node busy healing rather than ending the scenario.
const writerAliveCountMax = 12

// StartWriter starts a writer on n, on an ssh connection of its own for its whole run.
func StartWriter(ctx context.Context, n *lab.Node, name string, count, intervalMS int) (*Writer, error) {
	file := DataDir + "/" + name + ".log"
	w := newWriter("cat " + file)
	ctx, cancel := context.WithCancel(ctx)
	w.stop = cancel
	pr, pw := io.Pipe()
	ended := make(chan error, 1)
	go func() {
		res, err := n.ExecWith(ctx, lab.ExecOptions{Stdout: pw, Dedicated: true, AliveCountMax: writerAliveCountMax},
			"sh", "-c", WriterScript(file, count, intervalMS))
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
		}
		if err != nil {
			err = fmt.Errorf("writer on %s: %w", n.Name(), err)
		}
		pw.Close()
		ended <- err
	}()
	go func() {
		rerr := w.read(pr)
		if rerr != nil {
			cancel()
		}
		pr.Close() // a write still in flight returns at once
		err := errors.Join(rerr, <-ended)
		w.mu.Lock()
		w.ended, w.endedErr = true, err
		w.mu.Unlock()
		w.done <- err
	}()
	return w, nil
}

// serviceTimeout bounds one POST through the VIP: longer than a healthy answer under TCG, short enough that
// a stalled request shows as a stall rather than hiding the next ones.
const serviceTimeout = 3 * time.Second

// StartServiceWriter POSTs a record every intervalMS to the web service's /records/name through the VIP (web.Do)
// from inside namespace ns (the
// lab's: the lab host), as a client of the cluster would; a 204 (the web task fsynced it to the volume) is an
// ack, anything else a failure. The web service must run (formation.CreateWebService); each task keeps its
// own file, so Source reads them all.
func StartServiceWriter(ctx context.Context, ns string, vip netip.Addr, web formation.Web, name string, intervalMS int) *Writer {
	w := newWriter(fmt.Sprintf("cat %s/%s.*.log", formation.WebDataDir, name))
	ctx, cancel := context.WithCancel(ctx)
	w.stop = cancel
	go func() {
		tick := time.NewTicker(time.Duration(intervalMS) * time.Millisecond)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			payload := randomPayload()
			code, _, err := web.Do(ctx, ns, vip, http.MethodPost, "/records/"+name,
				fmt.Sprintf("%d %s %s", seq, payload, Checksum(seq, payload)), serviceTimeout)
			w.record(seq, err == nil && code == http.StatusNoContent)
			select {
			case <-ctx.Done():
				w.done <- nil
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// randomPayload is 12 random bytes in hex, like WriterScript's, so a stale block cannot pass as a record.
func randomPayload() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (w *Writer) record(seq int, acked bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if acked {
		w.acks[seq] = true
		w.ackAt = append(w.ackAt, time.Now())
	} else {
		w.fails++
	}
}

func (w *Writer) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		seq, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		switch f[0] {
		case "ack":
			w.record(seq, true)
		case "fail":
			w.record(seq, false)
		}
	}
	return sc.Err()
}

// Acked returns how many records were acknowledged so far and how many writes failed.
func (w *Writer) Acked() (acked, failed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks), w.fails
}

// AckedSince is how many writes were acknowledged after t.
func (w *Writer) AckedSince(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.ackAt {
		if at.After(t) {
			n++
		}
	}
	return n
}

// LongestStall is the longest time without an acknowledged write from since until until (the writer's
// interval included): the gap that contains the fault is the storage stall a client saw.
func (w *Writer) LongestStall(since, until time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return LongestGap(w.ackAt, since, until)
}

// LongestGap is the longest interval within [since, until] not containing any of the (sorted) instants.
func LongestGap(at []time.Time, since, until time.Time) time.Duration {
	longest, prev := time.Duration(0), since
	for _, t := range at {
		if t.Before(since) {
			continue
		}
		if t.After(until) {
			break
		}
		longest = max(longest, t.Sub(prev))
		prev = t
	}
	return max(longest, until.Sub(prev))
}

// WaitAcked waits until at least n more records than before were acknowledged (the volume takes writes).
func (w *Writer) WaitAcked(ctx context.Context, more int) error {
	base, _ := w.Acked()
	return formation.Poll(ctx, time.Second, "writer acknowledges writes", func(context.Context) (bool, string, error) {
		a, f := w.Acked()
		if a >= base+more {
			return true, "", nil
		}
		w.mu.Lock()
		ended, err := w.ended, w.endedErr
		w.mu.Unlock()
		if ended {
			return false, "", fmt.Errorf("writer ended after %d acked, %d failed: %v", a, f, err)
		}
		return false, fmt.Sprintf("%d acked, %d failed", a, f), nil
	})
}

// Stop ends the writer and waits for it; it returns the acknowledged sequence numbers.
func (w *Writer) Stop() map[int]bool {
	w.stop()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int]bool, len(w.acks))
	for k := range w.acks {
		out[k] = true
	}
	return out
}

var recordLine = regexp.MustCompile(`^([0-9]+) ([0-9a-f]{24}) ([0-9a-f]{16})$`)

// Verify checks the log's content against the acknowledged records: every acked sequence number must be
// present with a valid checksum. Lines of unacknowledged writes may be missing or torn (a write that failed
// half-way); a line that parses but has a wrong checksum is corruption and always an error.
func Verify(content string, acked map[int]bool) (lost []int, corrupt []string) {
	have := map[int]bool{}
	for line := range strings.Lines(content) {
		line = strings.TrimRight(line, "\n")
		m := recordLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		seq, _ := strconv.Atoi(m[1])
		if Checksum(seq, m[2]) != m[3] {
			corrupt = append(corrupt, line)
			continue
		}
		have[seq] = true
	}
	for seq := range acked {
		if !have[seq] {
			lost = append(lost, seq)
		}
	}
	return lost, corrupt
}

var healEntries = regexp.MustCompile(`(?m)^Number of entries(?: in split-brain)?: *([0-9]+|-)`)

// CountEntries sums the "Number of entries…: N" lines of `gluster volume heal data info [split-brain]`;
// unknown reports a brick that answered "-" (not connected).
func CountEntries(out string) (total int, unknown bool) {
	for _, m := range healEntries.FindAllStringSubmatch(out, -1) {
		if m[1] == "-" {
			unknown = true
			continue
		}
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total, unknown
}

// Healed is the end state every scenario must reach: on node `from`, 3 Ready managers and no other swarm
// entries; 3 bricks online; no pending heal and no split-brain entries; exactly one VIP holder among nodes;
// and on every node the agent reports ready and /var/data is the gluster mount. It returns a description of
// what is still missing ("" when healed).
//
// The per-node part: glusterd can have every brick online and no heal pending while a restarted node's agent
// is still in its first pass, with its /var/data the bare directory; records read there would be missing.
func Healed(ctx context.Context, from *lab.Node, nodes []*lab.Node, vip string) (string, error) {
	var missing []string
	for _, n := range nodes {
		st, err := formation.AgentStatus(ctx, n)
		if err != nil {
			return "", err
		}
		if !formation.Formed(st) {
			missing = append(missing, fmt.Sprintf("%s agent %s", n.Name(), st.Phase))
		}
		// findmnt exits 1 with no output when /var/data is not a mount point.
		if fs, _ := formation.Exec(ctx, n, "findmnt", "-n", "-o", "FSTYPE", "/var/data"); fs != "fuse.glusterfs" {
			missing = append(missing, fmt.Sprintf("%s /var/data is %q, not the gluster mount", n.Name(), fs))
		}
	}
	sns, err := formation.SwarmNodes(ctx, from)
	if err != nil {
		return "", err
	}
	ready := 0
	for _, n := range sns {
		if n.ReadyManager() {
			ready++
		} else {
			missing = append(missing, fmt.Sprintf("swarm entry %s (%s) %s %q", n.ID, n.Hostname, n.Status, n.ManagerStatus))
		}
	}
	if ready != 3 {
		missing = append(missing, fmt.Sprintf("%d ready managers", ready))
	}
	out, err := formation.Exec(ctx, from, "gluster", "--mode=script", "volume", "status", "data", "--xml")
	if err != nil {
		return "", err
	}
	bricks, err := formation.ParseVolumeStatusXML([]byte(out))
	if err != nil {
		return "", err
	}
	online := 0
	for _, b := range bricks {
		if b.Online {
			online++
		}
	}
	if online != 3 || len(bricks) != 3 {
		missing = append(missing, fmt.Sprintf("%d of %d bricks online", online, len(bricks)))
	}
	out, err = formation.Exec(ctx, from, "gluster", "--mode=script", "volume", "heal", "data", "info")
	if err != nil {
		return "", err
	}
	if n, unknown := CountEntries(out); n != 0 || unknown {
		missing = append(missing, fmt.Sprintf("%d entries pending heal (brick unknown: %v)", n, unknown))
	}
	out, err = formation.Exec(ctx, from, "gluster", "--mode=script", "volume", "heal", "data", "info", "split-brain")
	if err != nil {
		return "", err
	}
	if n, _ := CountEntries(out); n != 0 {
		missing = append(missing, fmt.Sprintf("%d split-brain entries", n))
	}
	holders, err := formation.VIPHolders(ctx, nodes, netip.MustParseAddr(vip))
	if err != nil {
		return "", err
	}
	if len(holders) != 1 {
		missing = append(missing, fmt.Sprintf("VIP holders %v", holders))
	}
	return strings.Join(missing, "; "), nil
}
