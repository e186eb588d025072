package recovery

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
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
			epoch, err := Run(context.Background(), f.node(), slog.New(slog.DiscardHandler))
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
