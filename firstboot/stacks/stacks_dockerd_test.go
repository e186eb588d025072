package stacks

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/testenv"
)

// TestStacksRealSwarm deploys a user stack into a one-node swarm of a private dockerd (its own network
// namespace; the host dockerd is never touched): the routed service carries its deploy labels and joins the
// external kiln-ingress network, a changed file updates it, a deleted service comes back.
func TestStacksRealSwarm(t *testing.T) {
	testenv.NeedDocker(t)
	base, err := os.MkdirTemp("", "kst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	h := testenv.LAN(t, "kst", netip.MustParsePrefix("10.99.6.0/24"), 1)[0]
	docker := testenv.Dockerd(t, h.NS, filepath.Join(base, "d"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := docker.SwarmInit(ctx, swarm.InitRequest{ListenAddr: h.Addr.String() + ":2377", AdvertiseAddr: h.Addr.String()}); err != nil {
		t.Fatal(err)
	}
	// The ingress stack's network, as the ingress reconciler creates it.
	if _, err := docker.NetworkCreate(ctx, "kiln-ingress", network.CreateOptions{Driver: "overlay", Attachable: true}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "app.yaml")
	write := func(image string) {
		t.Helper()
		compose := "services:\n  web:\n    image: " + image + "\n    networks: [default, kiln-ingress]\n" +
			"    deploy:\n      labels:\n        traefik.enable: \"true\"\n        traefik.http.routers.app.rule: Host(`app.test`)\n" +
			"networks:\n  kiln-ingress:\n    external: true\n"
		if err := os.WriteFile(file, []byte(compose), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("example/app:1")
	r := New(docker, map[string]string{"app": file}, "/var/data", func() (bool, error) { return true, nil }, slog.New(slog.DiscardHandler))
	pass := func(wantChanged bool) {
		t.Helper()
		s := &state.State{}
		s.Swarm.Active, s.Swarm.Leader = true, true // the one-node swarm's manager leads
		changed, err := r.Reconcile(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if changed != wantChanged {
			t.Fatalf("changed = %v, want %v (status %q)", changed, wantChanged, s.Status[Name])
		}
	}
	inspect := func() swarm.Service {
		t.Helper()
		svc, _, err := docker.ServiceInspectWithRaw(ctx, "app_web", swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	pass(true)
	svc := inspect()
	if svc.Spec.Labels["traefik.http.routers.app.rule"] != "Host(`app.test`)" || svc.Spec.Labels["com.docker.stack.namespace"] != "app" {
		t.Errorf("labels = %v", svc.Spec.Labels)
	}
	ingress, err := docker.NetworkInspect(ctx, "kiln-ingress", network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	joined := false
	for _, n := range svc.Spec.TaskTemplate.Networks {
		joined = joined || n.Target == ingress.ID || n.Target == "kiln-ingress"
	}
	if !joined {
		t.Errorf("app_web is not on kiln-ingress: %+v", svc.Spec.TaskTemplate.Networks)
	}
	pass(false)
	write("example/app:2")
	pass(true)
	if img := inspect().Spec.TaskTemplate.ContainerSpec.Image; img != "example/app:2" {
		t.Errorf("image after the file changed: %s", img)
	}
	if err := docker.ServiceRemove(ctx, "app_web"); err != nil {
		t.Fatal(err)
	}
	pass(true)
	inspect()
	pass(false)

	// The next image has no stack: app is removed, services first, its network once swarm lets it go; the
	// ingress network (kiln's, not a user stack) stays.
	none := New(docker, nil, "/var/data", func() (bool, error) { return true, nil }, slog.New(slog.DiscardHandler))
	err = pollUntil(ctx, func() (bool, error) {
		s := &state.State{}
		s.Swarm.Active, s.Swarm.Leader = true, true // the one-node swarm's manager leads
		if _, err := none.Reconcile(ctx, s); err != nil {
			return false, err
		}
		svcs, err := docker.ServiceList(ctx, swarm.ServiceListOptions{})
		if err != nil {
			return false, err
		}
		_, err = docker.NetworkInspect(ctx, "app_default", network.InspectOptions{})
		return len(svcs) == 0 && err != nil, nil
	})
	if err != nil {
		t.Fatalf("dropped stack not removed: %v", err)
	}
	if _, err := docker.NetworkInspect(ctx, "kiln-ingress", network.InspectOptions{}); err != nil {
		t.Errorf("kiln-ingress removed with the user stack: %v", err)
	}
}

// pollUntil calls cond every second until it is true, fails, or ctx ends.
func pollUntil(ctx context.Context, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
