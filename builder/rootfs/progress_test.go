package rootfs

import (
	"os"
	"strings"
	"testing"
)

// Fed a real `mmdebstrap --verbose` log (testdata: the apt variant with two extra packages), the bar moves only
// forward, passes through every step with the counts apt announced, and ends at the customize hook's start.
func TestInstallProgress(t *testing.T) {
	b, err := os.ReadFile("testdata/mmdebstrap-verbose.txt")
	if err != nil {
		t.Fatal(err)
	}
	var p installProgress
	var msgs []string
	last, updates := 0.0, 0
	for _, l := range strings.Split(string(b), "\n") {
		if !p.line(l) {
			continue
		}
		updates++
		if p.frac < last {
			t.Fatalf("bar went back from %.3f to %.3f at %q", last, p.frac, l)
		}
		last = p.frac
		msgs = append(msgs, p.msg)
	}
	for _, want := range []string{
		"package index",
		"essential packages: downloaded 89/89",
		"essential packages: unpacked 89, configured 89 of 89",
		"packages: downloaded 4, unpacked 4, configured 4 of 4",
		"cleaning up",
	} {
		found := false
		for _, m := range msgs {
			found = found || m == want
		}
		if !found {
			t.Errorf("no progress message %q", want)
		}
	}
	if last != 0.86 || updates < 100 {
		t.Errorf("ended at %.3f after %d updates; want 0.86 and one update per package step", last, updates)
	}
}
