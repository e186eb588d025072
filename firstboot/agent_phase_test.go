package firstboot

import (
	"testing"

	"github.com/kiln-project/kiln/firstboot/election"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/status"
)

// A node whose reconcilers all returned without error is still forming while one of them waits for something
// (state.Report.Pending): a follower whose gluster volume another node has not created yet must not report ready.
// Once it was ready, the same wait reads as degraded.
func TestPhaseWaitsForPendingReconcilers(t *testing.T) {
	a := &agent{el: election.New("a1", 3, election.Persistent{}, election.Config{})}
	members := []member.Member{{ID: "a1", Alive: true}, {ID: "b2", Alive: true}, {ID: "c3", Alive: true}}
	formed := func() *state.State {
		return &state.State{
			Inputs:   state.Inputs{Expected: 3, Formation: &state.Formation{SwarmID: "s", Initialiser: "b2"}},
			Observed: state.Observed{Members: members},
		}
	}
	ok := []result{{name: "swarm"}, {name: "gluster"}}

	s := formed()
	s.Wait("gluster", "forming: 2 peers, volume not started")
	if got := a.phase(s, ok); got != status.PhaseForming {
		t.Fatalf("gluster waiting for its volume: phase %s, want %s", got, status.PhaseForming)
	}
	if s.Status["gluster"] != "forming: 2 peers, volume not started" {
		t.Errorf("status line %q: Wait must also set it", s.Status["gluster"])
	}
	if got := a.phase(formed(), ok); got != status.PhaseReady {
		t.Fatalf("nothing pending: phase %s, want %s", got, status.PhaseReady)
	}
	s = formed()
	s.Wait("swarm", "worker x, awaiting promotion to manager")
	if got := a.phase(s, ok); got != status.PhaseDegraded {
		t.Fatalf("waiting after having been ready: phase %s, want %s", got, status.PhaseDegraded)
	}
}
