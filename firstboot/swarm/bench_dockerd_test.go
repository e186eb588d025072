package swarm

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// BenchmarkFormationRealDockerd is swarm formation at native speed: three fresh real dockerds in network
// namespaces (as in TestSwarmFormationRealDockerd). The initialiser's reconciler runs `swarm init` and
// announces; then the two others join at the same time, as two agents would once the record reaches them,
// each verified Ready as a manager from the node list. It reports init-s (init until the record can be
// announced), join-s (the slower join, verified) and formed-s (both), the swarm half of what
// docs/measurements.md times in TCG guests.
//
// One formation per run (make bench-form-native: -benchtime 1x -count N): each needs fresh dockerds.
func BenchmarkFormationRealDockerd(b *testing.B) {
	needDocker(b)
	if b.N > 1 {
		b.Fatalf("b.N = %d: run with -benchtime 1x (each formation needs fresh dockerds)", b.N)
	}
	b.StopTimer()
	nodes := newLAN(b, 3)
	members := []member.Member{nodes[0].m, nodes[1].m, nodes[2].m}
	recs := make([]*Reconciler, 3)
	for i, n := range nodes {
		recs[i] = NewWithOptions(n.cli, quiet(), testOptions())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	b.StartTimer()
	start := time.Now()
	s := &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: true}, Observed: state.Observed{Self: nodes[0].m, Members: members}}
	if _, err := recs[0].Reconcile(ctx, s); err != nil || s.Swarm.Announce == nil {
		b.Fatalf("init: announce %+v, err %v", s.Swarm.Announce, err)
	}
	f := s.Swarm.Announce
	initTook := time.Since(start)
	joinTook := make([]time.Duration, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := 1; i < 3; i++ {
		wg.Go(func() {
			js := time.Now()
			s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: f}, Observed: state.Observed{Self: nodes[i].m, Members: members}}
			if _, errs[i] = recs[i].Reconcile(ctx, s); errs[i] == nil && s.Swarm.Active {
				joinTook[i] = time.Since(js)
			}
		})
	}
	wg.Wait()
	formed := time.Since(start)
	b.StopTimer()
	for i := 1; i < 3; i++ {
		if joinTook[i] == 0 {
			b.Fatalf("%s did not join: %v", nodes[i].m.ID, errs[i])
		}
	}
	// Not timed: three Ready managers, as the initialiser's node list shows them.
	for _, n := range nodes {
		e := nodeByAddr(b, nodes[0].cli, n.m.Addr)
		if e.Spec.Role != swarm.NodeRoleManager || e.Status.State != swarm.NodeStateReady {
			b.Fatalf("%s: role %s state %s", n.m.ID, e.Spec.Role, e.Status.State)
		}
	}
	b.ReportMetric(initTook.Seconds(), "init-s")
	b.ReportMetric(slices.Max(joinTook).Seconds(), "join-s")
	b.ReportMetric(formed.Seconds(), "formed-s")
}
