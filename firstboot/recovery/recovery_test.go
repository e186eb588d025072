package recovery

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/status"
)

// fakeNode records the steps a recovery takes, in order.
type fakeNode struct {
	info      swarm.Info
	leaderErr error
	failAt    string
	steps     []string
}

func (f *fakeNode) node() Node {
	step := func(name string) error {
		f.steps = append(f.steps, name)
		if f.failAt == name {
			return errors.New(name + " broke")
		}
		return nil
	}
	return Node{
		Status:      func() (*status.Status, error) { return survivorStatus(time.Now()), nil },
		SwarmInfo:   func(context.Context) (swarm.Info, error) { return f.info, nil },
		LeaderCheck: func(context.Context) error { return f.leaderErr },
		StopAgent:   func(context.Context) error { return step("stop-agent") },
		StartAgent:  func(context.Context) error { return step("start-agent") },
		ForceSwarm: func(_ context.Context, self netip.Addr) (string, error) {
			return self.String() + ":2377", step("force-swarm")
		},
		ShrinkVolume: func(context.Context, netip.Addr) error { return step("shrink-volume") },
		NewEpoch: func(listen string, _ time.Time) (int, error) {
			if listen != "10.0.0.1:2377" {
				return 0, errors.New("wrong listen address " + listen)
			}
			return 2, step("new-epoch")
		},
	}
}

var leaderless = swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true, NodeAddr: "10.0.0.1"}

func TestRecover(t *testing.T) {
	noLeader := errors.New("rpc error: The swarm does not have a leader")
	tests := []struct {
		name      string
		info      swarm.Info
		leaderErr error
		failAt    string
		wantErr   error
		wantSteps []string
	}{
		{name: "survivor of a lost majority: the whole sequence, agent started again", info: leaderless, leaderErr: noLeader,
			wantSteps: []string{"stop-agent", "force-swarm", "shrink-volume", "new-epoch", "start-agent"}},
		{name: "the swarm still has a leader: refuse, touch nothing", info: leaderless, wantErr: ErrQuorumHolds},
		{name: "a worker: refuse, touch nothing", info: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, NodeAddr: "10.0.0.1"},
			leaderErr: noLeader, wantErr: ErrNotManager},
		{name: "not in a swarm: refuse, touch nothing", info: swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive},
			leaderErr: noLeader, wantErr: ErrNotManager},
		{name: "the volume cannot shrink: no new epoch, but the agent runs again", info: leaderless, leaderErr: noLeader,
			failAt: "shrink-volume", wantSteps: []string{"stop-agent", "force-swarm", "shrink-volume", "start-agent"}},
		{name: "the agent does not stop: nothing else happens", info: leaderless, leaderErr: noLeader,
			failAt: "stop-agent", wantSteps: []string{"stop-agent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeNode{info: tt.info, leaderErr: tt.leaderErr, failAt: tt.failAt}
			epoch, err := Run(context.Background(), f.node(), []string{"kiln-b", "c3"}, slog.New(slog.DiscardHandler))
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			case tt.failAt != "" && (err == nil || epoch != 0):
				t.Fatalf("epoch %d, err %v: want the failure of %s", epoch, err, tt.failAt)
			case tt.wantErr == nil && tt.failAt == "" && (err != nil || epoch != 2):
				t.Fatalf("epoch %d, err %v: want epoch 2", epoch, err)
			}
			if !slices.Equal(f.steps, tt.wantSteps) {
				t.Fatalf("steps %v, want %v", f.steps, tt.wantSteps)
			}
		})
	}
}

// survivorStatus is the agent's status on a1 at now: b2 and c3 went down 20 minutes earlier.
func survivorStatus(now time.Time) *status.Status {
	gone := now.Add(-20 * time.Minute)
	return &status.Status{NodeID: "a1", UpdatedAt: now.Add(-5 * time.Second), Members: []member.Member{
		{ID: "a1", Hostname: "kiln-a", Alive: true},
		{ID: "b2", Hostname: "kiln-b", DownSince: gone},
		{ID: "c3", Hostname: "kiln-c", DownSince: gone},
	}}
}

// recover removes every other member for good, so it takes exactly the members the operator names, and
// only once this node's agent has not seen them for member.LostFor.
func TestCheckLost(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		edit    func(*status.Status)
		lost    []string
		wantErr string
	}{
		{name: "both named, by hostname and by id", lost: []string{"kiln-b", "c3"}},
		{name: "none named", wantErr: "name the lost nodes with --lost"},
		{name: "one not named", lost: []string{"b2"}, wantErr: "kiln-c (c3, down) is not named: recover would remove it too"},
		{name: "a stranger named", lost: []string{"b2", "c3", "kiln-z"}, wantErr: "kiln-z is not a member this node knows"},
		{name: "this node named", lost: []string{"b2", "c3", "a1"}, wantErr: "a1 is this node"},
		{name: "a named node is alive (cut off from us, not lost)", lost: []string{"b2", "c3"},
			edit: func(s *status.Status) { s.Members[1].Alive, s.Members[1].DownSince = true, time.Time{} }, wantErr: "kiln-b (b2) is alive"},
		{name: "a named node was seen 2 minutes ago", lost: []string{"b2", "c3"},
			edit: func(s *status.Status) { s.Members[2].DownSince = now.Add(-2 * time.Minute) }, wantErr: "kiln-c (c3) was seen 2m0s ago"},
		{name: "down since before this agent started (never seen this run)", lost: []string{"b2", "c3"},
			edit: func(s *status.Status) { s.Members[2].DownSince = time.Time{} }},
		{name: "the agent is not reporting", lost: []string{"b2", "c3"},
			edit: func(s *status.Status) { s.UpdatedAt = now.Add(-10 * time.Minute) }, wantErr: "status is 10m0s old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := survivorStatus(now)
			if tt.edit != nil {
				tt.edit(st)
			}
			err := CheckLost(st, tt.lost, now)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("CheckLost = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if err := CheckLost(nil, []string{"b2"}, now); err == nil || !strings.Contains(err.Error(), "no agent status") {
		t.Errorf("no status: %v", err)
	}
}
