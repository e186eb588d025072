package stack

import (
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
)

func svc(name, image string, replicas uint64) swarm.ServiceSpec {
	return swarm.ServiceSpec{Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: image}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}}}
}

func running(spec swarm.ServiceSpec, id string) swarm.Service {
	return swarm.Service{ID: id, Spec: spec, Meta: swarm.Meta{Version: swarm.Version{Index: 7}}}
}

func TestWithHash(t *testing.T) {
	a := WithHash("s", svc("s_web", "nginx:1", 1))
	b := WithHash("s", svc("s_web", "nginx:1", 1))
	c := WithHash("s", svc("s_web", "nginx:2", 1))
	if a.Labels[HashLabel] == "" || a.Labels[HashLabel] != b.Labels[HashLabel] || a.Labels[HashLabel] == c.Labels[HashLabel] {
		t.Errorf("hashes: %q %q %q", a.Labels[HashLabel], b.Labels[HashLabel], c.Labels[HashLabel])
	}
	if a.Labels[StackLabel] != "s" || a.Labels[ManagedLabel] != "true" {
		t.Errorf("labels = %v", a.Labels)
	}
	// Hashing a hashed spec again gives the same hash: the label itself is not hashed.
	if again := WithHash("s", a); again.Labels[HashLabel] != a.Labels[HashLabel] {
		t.Error("WithHash is not idempotent")
	}
}

func TestPlan(t *testing.T) {
	web := WithHash("s", svc("s_web", "nginx:1", 1))
	web2 := WithHash("s", svc("s_web", "nginx:2", 1))
	db := WithHash("s", svc("s_db", "postgres:16", 1))
	scaled := web
	three := uint64(3)
	scaled.Mode = swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &three}}
	want := Spec{Name: "s", NetworkNames: []string{"s_default"}, Networks: []network.CreateOptions{{Driver: "overlay"}},
		Services: []swarm.ServiceSpec{web}}
	net := network.Summary{Name: "s_default"}
	for _, tc := range []struct {
		name string
		obs  Observed
		want []ActionKind
	}{
		{"nothing yet", Observed{}, []ActionKind{CreateNetwork, CreateService}},
		{"converged", Observed{Services: []swarm.Service{running(web, "1")}, Networks: []network.Summary{net}}, nil},
		{"deleted service comes back", Observed{Networks: []network.Summary{net}}, []ActionKind{CreateService}},
		{"changed spec", Observed{Services: []swarm.Service{running(web2, "1")}, Networks: []network.Summary{net}}, []ActionKind{UpdateService}},
		{"scaled by hand", Observed{Services: []swarm.Service{running(scaled, "1")}, Networks: []network.Summary{net}}, []ActionKind{UpdateService}},
		{"dropped from the stack", Observed{Services: []swarm.Service{running(web, "1"), running(db, "2")}, Networks: []network.Summary{net}}, []ActionKind{RemoveService}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.obs, want)
			if len(got) != len(tc.want) {
				t.Fatalf("plan = %+v, want %v", got, tc.want)
			}
			for i, a := range got {
				if a.Kind != tc.want[i] {
					t.Errorf("action %d = %s %s, want %s", i, a.Kind, a.Name, tc.want[i])
				}
				if a.Kind == UpdateService && (a.ID != "1" || a.Version.Index != 7) {
					t.Errorf("update without the observed id and version: %+v", a)
				}
				if a.Kind == CreateNetwork && (a.Network.Labels[StackLabel] != "s" || a.Network.Labels[ManagedLabel] != "true") {
					t.Errorf("network without kiln's labels: %+v", a.Network.Labels)
				}
			}
		})
	}
}
