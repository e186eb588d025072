package rootfs

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// mmdebstrap --verbose runs apt twice, and each run says how many packages it installs before it starts:
//
//	I: downloading packages with apt...          the essential set: "N newly installed", then "Get:k …"
//	I: installing essential packages...          dpkg: "Unpacking p …", "Setting up p …"
//	I: installing remaining packages inside …    the rest: "M newly installed", "Get:", "Unpacking", "Setting up"
//	I: cleaning package lists and apt cache...   then the customize hook (initrd, kiln's files)
//
// installProgress turns those lines into the stage's fraction: each step has a window of the bar, and within
// it the count of packages done against the count apt announced. The bar only moves forward.
type installProgress struct {
	step              int // index into installSteps
	total             int // packages the current apt run installs
	got, unpacked, up int
	frac              float64
	msg               string
}

// installSteps are the windows, in order. The remaining packages are most of a node's (docker, gluster, the
// kernel), so their steps get most of the bar.
var installSteps = []struct {
	marker     string // the mmdebstrap "I:" line that starts the step
	from, to   float64
	what       string
	essentials bool
}{
	{"I: running apt-get update", 0.05, 0.08, "package index", false},
	{"I: downloading packages with apt", 0.08, 0.16, "essential packages", true},
	{"I: installing essential packages", 0.16, 0.28, "essential packages", true},
	{"I: installing remaining packages", 0.28, 0.86, "packages", false},
	{"I: cleaning package lists", 0.86, 0.88, "cleaning up", false},
}

var newlyInstalled = regexp.MustCompile(`^\d+ upgraded, (\d+) newly installed`)

// line reads one line of mmdebstrap's output and reports whether the fraction or message changed.
func (p *installProgress) line(l string) bool {
	for i, st := range installSteps {
		if i >= p.step && strings.HasPrefix(l, st.marker) {
			if i == p.step && p.msg != "" {
				return false
			}
			p.step = i
			if !st.essentials || i == 1 {
				p.total, p.got, p.unpacked, p.up = 0, 0, 0, 0
			}
			if i == 2 { // dpkg installs what the download step fetched: the same count
				p.unpacked, p.up = 0, 0
			}
			return p.set(st.from, st.what)
		}
	}
	if p.step == 4 && strings.HasPrefix(l, "I: ") {
		return false
	}
	switch {
	case newlyInstalled.MatchString(l):
		n, _ := strconv.Atoi(newlyInstalled.FindStringSubmatch(l)[1])
		p.total = n
		return false
	case strings.HasPrefix(l, "Get:"):
		p.got++
	case strings.HasPrefix(l, "Unpacking "):
		p.unpacked++
	case strings.HasPrefix(l, "Setting up "):
		p.up++
	default:
		return false
	}
	st := installSteps[p.step]
	if p.total == 0 {
		return false
	}
	// Within a step that downloads and installs (the remaining packages) the three counts share the window;
	// the essential set downloads in one step and installs in the next.
	var done float64
	var what string
	switch p.step {
	case 1:
		done, what = float64(p.got)/float64(p.total), fmt.Sprintf("essential packages: downloaded %d/%d", p.got, p.total)
	case 2:
		done = float64(p.unpacked+p.up) / float64(2*p.total)
		what = fmt.Sprintf("essential packages: unpacked %d, configured %d of %d", p.unpacked, p.up, p.total)
	case 3:
		done = (0.25*float64(p.got) + 0.35*float64(p.unpacked) + 0.40*float64(p.up)) / float64(p.total)
		what = fmt.Sprintf("packages: downloaded %d, unpacked %d, configured %d of %d", p.got, p.unpacked, p.up, p.total)
	default:
		return false
	}
	return p.set(st.from+(st.to-st.from)*min(done, 1), what)
}

// set moves the bar forward (never back) and sets the message; it reports whether anything changed.
func (p *installProgress) set(frac float64, msg string) bool {
	frac = max(frac, p.frac)
	if frac == p.frac && msg == p.msg {
		return false
	}
	p.frac, p.msg = frac, msg
	return true
}
