package clusterhealth

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/status"
)

type fakeSwarm struct {
	nodes []swarm.Node
	err   error
}

func (f fakeSwarm) NodeList(context.Context, swarm.NodeListOptions) ([]swarm.Node, error) {
	return f.nodes, f.err
}

type fakeVolume struct {
	procs []gluster.Process
	heals []gluster.HealBrick
}

func (f fakeVolume) VolumeStatus(context.Context, string) ([]gluster.Process, error) {
	return f.procs, nil
}
func (f fakeVolume) HealInfo(context.Context, string) ([]gluster.HealBrick, error) {
	return f.heals, nil
}

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func healthy() (*status.Status, fakeSwarm, fakeVolume) {
	st := &status.Status{Cluster: "garage", Hostname: "kiln-a", Phase: status.PhaseReady, Expected: 3, VIP: "10.77.0.100/24",
		VIPHolder: "kiln-b", UpdatedAt: now.Add(-3 * time.Second)}
	var sw fakeSwarm
	var vol fakeVolume
	for i, h := range []string{"kiln-a", "kiln-b", "kiln-c"} {
		addr := netip.AddrFrom4([4]byte{10, 77, 0, byte(11 + i)})
		st.Members = append(st.Members, member.Member{ID: h, Hostname: h, Addr: addr, Alive: true})
		sw.nodes = append(sw.nodes, swarm.Node{Description: swarm.NodeDescription{Hostname: h},
			Spec:          swarm.NodeSpec{Role: swarm.NodeRoleManager},
			Status:        swarm.NodeStatus{State: swarm.NodeStateReady, Addr: addr.String()},
			ManagerStatus: &swarm.ManagerStatus{Reachability: swarm.ReachabilityReachable, Leader: i == 0}})
		vol.procs = append(vol.procs, gluster.Process{Host: addr.String(), Path: "/var/lib/kiln/bricks/data", Online: true})
		vol.heals = append(vol.heals, gluster.HealBrick{Name: addr.String() + ":/var/lib/kiln/bricks/data", Entries: 0})
	}
	vol.procs = append(vol.procs, gluster.Process{Host: gluster.SelfHealDaemon, Path: "localhost", Online: true})
	return st, sw, vol
}

// The verdict and every problem, as an operator reads them: each case breaks one thing of a healthy cluster.
func TestCollectAndAssess(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(*status.Status, *fakeSwarm, *fakeVolume)
		want    []string
	}{
		{name: "healthy", breakIt: func(*status.Status, *fakeSwarm, *fakeVolume) {}},
		{name: "a node down", breakIt: func(st *status.Status, sw *fakeSwarm, vol *fakeVolume) {
			st.Phase = status.PhaseDegraded
			st.Members[2].Alive, st.Members[2].DownSince = false, now.Add(-time.Minute)
			sw.nodes[2].Status.State = swarm.NodeStateDown
			sw.nodes[2].ManagerStatus.Reachability = swarm.ReachabilityUnreachable
			vol.procs[2].Online = false
			vol.heals[0].Entries = 7
			vol.heals[2].Entries = -1
		}, want: []string{
			"kiln-a is degraded, not ready",
			"member kiln-c (10.77.0.13) is down since 2026-12-03T11:59:00Z",
			"2 of 3 members alive",
			"swarm: kiln-c (manager) is down",
			"swarm: manager kiln-c is unreachable",
			"volume data: brick 10.77.0.11:/var/lib/kiln/bricks/data has 7 entries to heal",
			"volume data: brick 10.77.0.13:/var/lib/kiln/bricks/data is offline",
		}},
		{name: "no leader, no VIP, stale agent", breakIt: func(st *status.Status, sw *fakeSwarm, _ *fakeVolume) {
			st.UpdatedAt, st.VIPHolder = now.Add(-5*time.Minute), ""
			sw.err = errors.New("rpc error: The swarm does not have a leader")
		}, want: []string{
			"the agent on kiln-a last reported 5m0s ago: it is stuck or not running",
			"swarm: rpc error: The swarm does not have a leader",
			"no node holds the VIP 10.77.0.100/24",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, sw, vol := healthy()
			tt.breakIt(st, &sw, &vol)
			r := Collect(context.Background(), st, sw, vol, now)
			if !slices.Equal(r.Problems, append([]string{}, tt.want...)) || r.Healthy != (len(tt.want) == 0) {
				t.Fatalf("healthy %v, problems:\n%s\nwant:\n%s", r.Healthy, strings.Join(r.Problems, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(r.Volume.Bricks) != 3 || r.Swarm.Leader == "" && sw.err == nil {
				t.Errorf("bricks %v leader %q: the self-heal daemon is no brick, and the leader is named", r.Volume.Bricks, r.Swarm.Leader)
			}
			if out := Format(r); !strings.Contains(out, "cluster garage, as kiln-a sees it") {
				t.Errorf("Format:\n%s", out)
			}
		})
	}
}
