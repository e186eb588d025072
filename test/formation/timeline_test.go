package formation

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadSamples(t *testing.T) {
	boot := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lines := strings.Join([]string{
		"30.00\t0\t0\t",
		`31.50	0	0	{  "node_id": "a",  "phase": "discovering",  "expected": 3,  "members": [{"id":"a","alive":true},{"id":"b","alive":true}],  "swarm": {"state": "waiting"}}`,
		`40.25	0	0	{  "phase": "forming",  "expected": 3,  "members": [{"id":"a","alive":true},{"id":"b","alive":true},{"id":"c","alive":true}],  "swarm": {"state": "active"}}`,
		`52.00	1	1	{  "phase": "ready",  "expected": 3,  "members": [{"id":"a","alive":true},{"id":"b","alive":true},{"id":"c","alive":true}],  "swarm": {"state": "active"}}`,
		`53.00	1	1	{  "phase": "ready",  "expected": 3,  "members": []}`,
	}, "\n") + "\n"
	tl := Timeline{}
	if err := readSamples(strings.NewReader(lines), boot, tl, nil); err != nil {
		t.Fatal(err)
	}
	want := Timeline{
		MilestoneDiscovered: boot.Add(40250 * time.Millisecond),
		MilestoneSwarm:      boot.Add(40250 * time.Millisecond),
		MilestoneMounted:    boot.Add(52 * time.Second),
		MilestoneVIP:        boot.Add(52 * time.Second),
		MilestoneFormed:     boot.Add(52 * time.Second),
	}
	for _, m := range Milestones {
		if !tl[m].Equal(want[m]) {
			t.Errorf("%s at %v, want %v", m, tl[m], want[m])
		}
	}
	// done stops reading at the first sample that satisfies it.
	tl = Timeline{}
	stopAtSwarm := func(tl Timeline) bool { _, ok := tl[MilestoneSwarm]; return ok }
	if err := readSamples(strings.NewReader(lines), boot, tl, stopAtSwarm); err != nil {
		t.Fatal(err)
	}
	if _, ok := tl[MilestoneFormed]; ok {
		t.Error("read past done")
	}
	if err := readSamples(strings.NewReader("garbage\n"), boot, Timeline{}, nil); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestSamplerScript(t *testing.T) {
	s := SamplerScript(netip.MustParseAddr("10.77.0.254"), 1, 10)
	for _, want := range []string{"' inet 10.77.0.254/'", "/run/kiln/status.json", "-lt 10", "sleep 1", "%s\\t%s\\t%s\\t%s\\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if !slices.Equal(Milestones, []string{"discovered", "swarm", "mounted", "vip", "formed"}) {
		t.Errorf("milestone order %v", Milestones)
	}
}
