package ingress

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/dockerarchive"
	"github.com/kiln-project/kiln/internal/testenv"
)

// TestIngressRealSwarm deploys the ingress stack into a one-node swarm of a private dockerd (in its own
// network namespace: the host dockerd's swarm state is never touched) and checks the reconcile contract:
// created once, a pass with nothing to do changes nothing, a changed config updates the service in place, a
// deleted service comes back. The image is a stand-in tagged like the preloaded Traefik, or the real one
// when KILN_TRAEFIK_ARCHIVE names the images stage's archive. Whether Traefik serves is the lab's to prove:
// this dockerd runs without iptables, so the routing mesh (and a task publishing ports) cannot work here.
func TestIngressRealSwarm(t *testing.T) {
	testenv.NeedDocker(t)
	base, err := os.MkdirTemp("", "kig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	h := testenv.LAN(t, "kig", netip.MustParsePrefix("10.99.7.0/24"), 1)[0]
	docker := testenv.Dockerd(t, h.NS, filepath.Join(base, "d"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := docker.SwarmInit(ctx, swarm.InitRequest{ListenAddr: h.Addr.String() + ":2377", AdvertiseAddr: h.Addr.String()}); err != nil {
		t.Fatal(err)
	}

	images := filepath.Join(base, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := os.Getenv("KILN_TRAEFIK_ARCHIVE")
	if archive == "" {
		archive = filepath.Join(images, "traefik.tar")
		if _, err := dockerarchive.WriteSingleLayer(archive, "kiln/traefik:v3.7.13", dockerarchive.Config{Entrypoint: []string{"/traefik"}},
			[]dockerarchive.File{{Path: "traefik", Mode: 0o755, Data: []byte("#!/bin/false\n")}}, time.Unix(1686355200, 0)); err != nil {
			t.Fatal(err)
		}
	}
	imgs, err := dockerarchive.Inspect(archive)
	if err != nil {
		t.Fatal(err)
	}
	ix, _ := json.Marshal(preload.Index{Images: []preload.Entry{{Name: imgs[0].Tags[0], Source: preload.SourceTraefik,
		Version: "v3.7.13", Digest: imgs[0].ID, File: filepath.Base(archive)}}})
	if err := os.WriteFile(filepath.Join(images, preload.IndexFile), ix, 0o644); err != nil {
		t.Fatal(err)
	}
	if archive != filepath.Join(images, filepath.Base(archive)) {
		if err := os.Symlink(archive, filepath.Join(images, filepath.Base(archive))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := preload.Load(ctx, docker, images, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	cfg := &config.Ingress{Email: "ops@example.org", CA: config.LetsEncrypt}
	data := filepath.Join(base, "vol")
	r := New(docker, cfg, data, func() (bool, error) { return true, nil }, images, slog.New(slog.DiscardHandler))
	pass := func(wantChanged bool) *state.State {
		t.Helper()
		s := &state.State{}
		s.Swarm.Active, s.Swarm.Leader = true, true // the one-node swarm's manager leads
		changed, err := r.Reconcile(ctx, s)
		if err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if changed != wantChanged {
			t.Fatalf("reconcile changed = %v, want %v (status %q, pending %q)", changed, wantChanged, s.Status[Name], s.Pending[Name])
		}
		return s
	}
	inspect := func() swarm.Service {
		t.Helper()
		svc, _, err := docker.ServiceInspectWithRaw(ctx, ServiceName, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}

	start := time.Now()
	pass(true)
	t.Logf("first deploy: %s", time.Since(start).Round(time.Millisecond))
	svc := inspect()
	if *svc.Spec.Mode.Replicated.Replicas != 1 || svc.Spec.TaskTemplate.ContainerSpec.Image != "kiln/traefik:v3.7.13" {
		t.Errorf("service: replicas %d image %s", *svc.Spec.Mode.Replicated.Replicas, svc.Spec.TaskTemplate.ContainerSpec.Image)
	}
	// The spec's ports: the allocated ones (Endpoint) follow asynchronously and need the routing mesh.
	if p := svc.Spec.EndpointSpec.Ports; len(p) != 2 || p[0].PublishedPort != 80 || p[1].PublishedPort != 443 || p[0].PublishMode != swarm.PortConfigPublishModeIngress {
		t.Errorf("published ports = %+v", p)
	}
	if net, err := docker.NetworkInspect(ctx, Network, networkInspectOptions()); err != nil || net.Driver != "overlay" || !net.Attachable {
		t.Errorf("network %s: %+v, %v", Network, net, err)
	}
	if st, err := os.Stat(filepath.Join(data, DataSubdir, AcmeFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("acme.json: %v", err)
	}

	pass(false) // converged: nothing to change (the swarm's own allocator may still bump the version)

	cfg.CA = "https://ca.lab.test/dir"
	pass(true)
	after := inspect()
	if after.ID != svc.ID || !strings.Contains(strings.Join(after.Spec.TaskTemplate.ContainerSpec.Args, " "), "caserver=https://ca.lab.test/dir") {
		t.Errorf("changed CA: id %s (was %s), args %v", after.ID, svc.ID, after.Spec.TaskTemplate.ContainerSpec.Args)
	}

	if err := docker.ServiceRemove(ctx, ServiceName); err != nil {
		t.Fatal(err)
	}
	pass(true)
	if back := inspect(); back.ID == svc.ID {
		t.Error("the deleted service was not created again")
	}
	pass(false)
}
