package stacks

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/compose"
	"github.com/kiln-project/kiln/firstboot/stack"
	"github.com/kiln-project/kiln/firstboot/state"
)

// fakeSwarm is one manager's swarm API: services and networks in maps, label filters honoured.
type fakeSwarm struct {
	services map[string]swarm.Service
	networks map[string]map[string]string // name → labels
	// attached names networks whose removal fails while their tasks are still going away.
	attached map[string]bool
	calls    []string
}

func newFake() *fakeSwarm {
	return &fakeSwarm{services: map[string]swarm.Service{}, networks: map[string]map[string]string{}, attached: map[string]bool{}}
}

// matches applies the label filters ("key" or "key=value") the way dockerd does.
func matches(f filters.Args, labels map[string]string) bool {
	for _, l := range f.Get("label") {
		k, v, hasValue := strings.Cut(l, "=")
		got, ok := labels[k]
		if !ok || hasValue && got != v {
			return false
		}
	}
	return true
}

func (f *fakeSwarm) ServiceList(_ context.Context, o swarm.ServiceListOptions) ([]swarm.Service, error) {
	var out []swarm.Service
	for _, s := range f.services {
		if matches(o.Filters, s.Spec.Labels) {
			out = append(out, s)
		}
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
func (f *fakeSwarm) NetworkList(_ context.Context, o network.ListOptions) ([]network.Summary, error) {
	var out []network.Summary
	for n, labels := range f.networks {
		if matches(o.Filters, labels) {
			out = append(out, network.Summary{ID: n, Name: n, Labels: labels})
		}
	}
	return out, nil
}
func (f *fakeSwarm) NetworkCreate(_ context.Context, name string, o network.CreateOptions) (network.CreateResponse, error) {
	f.calls = append(f.calls, "network "+name)
	f.networks[name] = o.Labels
	return network.CreateResponse{}, nil
}
func (f *fakeSwarm) NetworkRemove(_ context.Context, id string) error {
	f.calls = append(f.calls, "rm network "+id)
	if f.attached[id] {
		delete(f.attached, id) // the tasks are gone by the next try
		return fmt.Errorf("error while removing network: network %s id %s has active endpoints", id, id)
	}
	delete(f.networks, id)
	return nil
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
	docker := newFake()
	r := New(docker, files, "/var/data", func() (bool, error) { return true, nil }, slog.New(slog.DiscardHandler))
	pass := func() (*state.State, bool) {
		t.Helper()
		s := &state.State{}
		s.Swarm.Active, s.Swarm.Leader = true, true
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

// TestRemoveDropped: a user stack the image no longer has is removed, services first, then its networks once
// swarm lets them go; kiln's own stacks and stacks deployed by hand are never touched; an image without any
// stack still sweeps (as leader, at most once a minute while nothing is being removed) and says nothing.
func TestRemoveDropped(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	app := write("app", "services:\n  web:\n    image: nginx:1.27\n")
	old := write("old", "services:\n  api:\n    image: api:1\n  worker:\n    image: api:1\n")
	docker := newFake()
	log := slog.New(slog.DiscardHandler)
	clock := time.Unix(1_000_000, 0)
	pass := func(r *Reconciler) (*state.State, bool) {
		t.Helper()
		r.now = func() time.Time { return clock }
		s := &state.State{}
		s.Swarm.Active, s.Swarm.Leader = true, true
		changed, err := r.Reconcile(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		return s, changed
	}
	// An earlier image deployed app and old; beside them, kiln's ingress stack and a stack deployed by hand.
	pass(New(docker, map[string]string{"app": app, "old": old}, "/var/data", func() (bool, error) { return true, nil }, log))
	docker.services["kiln-ingress_traefik"] = swarm.Service{ID: "kiln-ingress_traefik", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{
		Name: "kiln-ingress_traefik", Labels: map[string]string{stack.StackLabel: "kiln-ingress", stack.ManagedLabel: "true"}}}}
	docker.networks["kiln-ingress"] = map[string]string{stack.StackLabel: "kiln-ingress", stack.ManagedLabel: "true"}
	docker.services["mine_web"] = swarm.Service{ID: "mine_web", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{
		Name: "mine_web", Labels: map[string]string{stack.StackLabel: "mine"}}}}
	docker.networks["mine_default"] = map[string]string{stack.StackLabel: "mine"}
	docker.attached["old_default"] = true

	// The new image has only app.
	r := New(docker, map[string]string{"app": app}, "/var/data", func() (bool, error) { return true, nil }, log)
	docker.calls = nil
	s, changed := pass(r)
	if got := strings.Join(docker.calls, ","); !changed || got != "remove old_api,remove old_worker" {
		t.Fatalf("first pass: changed %v, calls %s; want old's services removed, its network left for later", changed, got)
	}
	if s.Status[Name] != "app: app_web; old: removing" || len(s.Pending) != 0 {
		t.Errorf("status %q pending %v", s.Status[Name], s.Pending)
	}
	docker.calls = nil
	if _, changed := pass(r); changed || strings.Join(docker.calls, ",") != "rm network old_default" {
		t.Errorf("second pass (network still in use): %v %v", changed, docker.calls)
	}
	docker.calls = nil
	s, changed = pass(r)
	if !changed || strings.Join(docker.calls, ",") != "rm network old_default" || s.Status[Name] != "app: app_web" {
		t.Errorf("third pass: %v %v %q", changed, docker.calls, s.Status[Name])
	}
	for _, keep := range []string{"app_web", "kiln-ingress_traefik", "mine_web"} {
		if _, ok := docker.services[keep]; !ok {
			t.Errorf("%s removed", keep)
		}
	}
	for _, keep := range []string{"app_default", "kiln-ingress", "mine_default"} {
		if _, ok := docker.networks[keep]; !ok {
			t.Errorf("network %s removed", keep)
		}
	}
	docker.calls = nil
	if _, changed := pass(r); changed || len(docker.calls) != 0 {
		t.Errorf("converged: %v %v", changed, docker.calls)
	}

	// An image without stacks: app goes too; then a minute passes between sweeps.
	none := New(docker, nil, "/var/data", func() (bool, error) { return true, nil }, log)
	docker.calls = nil
	if s, changed := pass(none); !changed || strings.Join(docker.calls, ",") != "remove app_web" || s.Status[Name] != "app: removing" || len(s.Pending) != 0 {
		t.Errorf("no stacks: %v %v %q", changed, docker.calls, s.Status[Name])
	}
	docker.calls = nil
	if s, changed := pass(none); !changed || strings.Join(docker.calls, ",") != "rm network app_default" || len(s.Status) != 0 {
		t.Errorf("no stacks, second pass: %v %v %v", changed, docker.calls, s.Status)
	}
	docker.calls = nil
	clock = clock.Add(sweepEvery / 2)
	pass(none)
	clock = clock.Add(sweepEvery)
	if s, changed := pass(none); changed || len(docker.calls) != 0 || len(s.Status) != 0 {
		t.Errorf("nothing left: %v %v %v", changed, docker.calls, s.Status)
	}
}

func TestPlanSweep(t *testing.T) {
	user := func(name string) map[string]string {
		return map[string]string{stack.StackLabel: name, stack.ManagedLabel: "true", compose.UserStackLabel: "true"}
	}
	svc := func(name string, labels map[string]string) swarm.Service {
		return swarm.Service{ID: name, Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: name, Labels: labels}}}
	}
	p := PlanSweep(map[string]string{"keep": "f"},
		[]swarm.Service{svc("keep_a", user("keep")), svc("gone_b", user("gone")), svc("gone_a", user("gone")),
			svc("kiln-ingress_traefik", map[string]string{stack.StackLabel: "kiln-ingress", stack.ManagedLabel: "true"})},
		[]network.Summary{{Name: "gone_default", Labels: user("gone")}, {Name: "idle_default", Labels: user("idle")}, {Name: "keep_default", Labels: user("keep")}})
	var names []string
	for _, s := range p.Services {
		names = append(names, s.Spec.Name)
	}
	for _, n := range p.Networks {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, ","); got != "gone_a,gone_b,gone_default,idle_default" || !p.Busy["gone"] || p.Busy["idle"] {
		t.Errorf("sweep %s busy %v", got, p.Busy)
	}
}
