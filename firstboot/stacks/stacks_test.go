package stacks

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"

	"github.com/kiln-project/kiln/firstboot/state"
)

type fakeSwarm struct {
	services map[string]swarm.Service
	networks map[string]bool
	calls    []string
}

func (f *fakeSwarm) Info(context.Context) (system.Info, error) {
	return system.Info{Swarm: swarm.Info{NodeID: "n", LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true}}, nil
}
func (f *fakeSwarm) NodeInspectWithRaw(context.Context, string) (swarm.Node, []byte, error) {
	return swarm.Node{ManagerStatus: &swarm.ManagerStatus{Leader: true}}, nil, nil
}
func (f *fakeSwarm) ServiceList(context.Context, swarm.ServiceListOptions) ([]swarm.Service, error) {
	var out []swarm.Service
	for _, s := range f.services {
		out = append(out, s)
	}
	return out, nil
}
func (f *fakeSwarm) ServiceCreate(_ context.Context, s swarm.ServiceSpec, _ swarm.ServiceCreateOptions) (swarm.ServiceCreateResponse, error) {
	f.calls = append(f.calls, "create "+s.Name)
	f.services[s.Name] = swarm.Service{ID: s.Name, Spec: s}
	return swarm.ServiceCreateResponse{}, nil
}
func (f *fakeSwarm) ServiceUpdate(_ context.Context, id string, _ swarm.Version, s swarm.ServiceSpec, _ swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error) {
	f.calls = append(f.calls, "update "+s.Name)
	f.services[s.Name] = swarm.Service{ID: id, Spec: s}
	return swarm.ServiceUpdateResponse{}, nil
}
func (f *fakeSwarm) ServiceRemove(_ context.Context, id string) error {
	f.calls = append(f.calls, "remove "+id)
	delete(f.services, id)
	return nil
}
func (f *fakeSwarm) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	var out []network.Summary
	for n := range f.networks {
		out = append(out, network.Summary{Name: n})
	}
	return out, nil
}
func (f *fakeSwarm) NetworkCreate(_ context.Context, name string, _ network.CreateOptions) (network.CreateResponse, error) {
	f.calls = append(f.calls, "network "+name)
	f.networks[name] = true
	return network.CreateResponse{}, nil
}

func TestReconcile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "app.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("services:\n  web:\n    image: nginx:1.27\n  db:\n    image: postgres:16\n")
	files, err := Files(dir)
	if err != nil || len(files) != 1 || files["app"] != file {
		t.Fatalf("Files = %v, %v", files, err)
	}
	docker := &fakeSwarm{services: map[string]swarm.Service{}, networks: map[string]bool{}}
	r := New(docker, files, "/var/data", func() (bool, error) { return true, nil }, slog.New(slog.DiscardHandler))
	pass := func() (*state.State, bool) {
		t.Helper()
		s := &state.State{}
		s.Swarm.Active = true
		changed, err := r.Reconcile(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		return s, changed
	}
	if _, changed := pass(); !changed || strings.Join(docker.calls, ",") != "network app_default,create app_db,create app_web" {
		t.Fatalf("first pass: %v %v", changed, docker.calls)
	}
	docker.calls = nil
	if s, changed := pass(); changed || len(docker.calls) != 0 || s.Status[Name] != "app: app_db, app_web" {
		t.Errorf("converged: %v %v %q", changed, docker.calls, s.Status[Name])
	}
	write("services:\n  web:\n    image: nginx:1.28\n")
	if _, changed := pass(); !changed || strings.Join(docker.calls, ",") != "update app_web,remove app_db" {
		t.Errorf("changed file: %v %v", changed, docker.calls)
	}
	if _, err := Files(filepath.Join(dir, "none")); err != nil {
		t.Errorf("no directory: %v", err)
	}
}
