package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/firstboot/stack"
	"github.com/kiln-project/kiln/firstboot/state"
)

func desired() Desired {
	return Desired{Image: "kiln/traefik:v3.7.13", Email: "ops@example.org", CA: config.LetsEncrypt, DataDir: "/var/data/kiln/ingress"}
}

func TestServiceSpec(t *testing.T) {
	s := ServiceSpec(desired())
	if s.Name != ServiceName || *s.Mode.Replicated.Replicas != 1 {
		t.Errorf("name %s replicas %d: want %s, exactly 1 (one writer of acme.json)", s.Name, *s.Mode.Replicated.Replicas, ServiceName)
	}
	if s.UpdateConfig.Order != swarm.UpdateOrderStopFirst {
		t.Errorf("update order %s: two replicas during an update would both write acme.json", s.UpdateConfig.Order)
	}
	for _, p := range s.EndpointSpec.Ports {
		if p.PublishMode != swarm.PortConfigPublishModeIngress || p.PublishedPort != p.TargetPort {
			t.Errorf("port %+v: want %d published in ingress mode on every node", p, p.TargetPort)
		}
	}
	if len(s.EndpointSpec.Ports) != 2 || s.EndpointSpec.Ports[0].PublishedPort != 80 || s.EndpointSpec.Ports[1].PublishedPort != 443 {
		t.Errorf("ports = %+v", s.EndpointSpec.Ports)
	}
	args := strings.Join(s.TaskTemplate.ContainerSpec.Args, " ")
	for _, w := range []string{
		"--providers.swarm=true", "--providers.swarm.exposedByDefault=false", "--providers.swarm.network=kiln-ingress",
		"--entrypoints.web.http.redirections.entrypoint.to=websecure", "--entrypoints.web.http.redirections.entrypoint.scheme=https",
		"--entrypoints.websecure.http.tls.certresolver=kiln", "--certificatesresolvers.kiln.acme.email=ops@example.org",
		"--certificatesresolvers.kiln.acme.caserver=" + config.LetsEncrypt, "--certificatesresolvers.kiln.acme.storage=/data/acme.json",
		"--certificatesresolvers.kiln.acme.httpchallenge.entrypoint=web",
	} {
		if !strings.Contains(args, w) {
			t.Errorf("args lack %s", w)
		}
	}
	var mounts []string
	for _, m := range s.TaskTemplate.ContainerSpec.Mounts {
		mounts = append(mounts, m.Source+":"+m.Target)
	}
	if !slices.Contains(mounts, "/var/data/kiln/ingress:/data") || !slices.Contains(mounts, "/var/run/docker.sock:/var/run/docker.sock") || len(mounts) != 2 {
		t.Errorf("mounts = %v", mounts)
	}
	withBin := desired()
	withBin.Binary = "/usr/lib/kiln/images/traefik-v3.7.13"
	m := ServiceSpec(withBin).TaskTemplate.ContainerSpec.Mounts
	if last := m[len(m)-1]; len(m) != 3 || last.Source != withBin.Binary || last.Target != "/usr/local/bin/traefik" || !last.ReadOnly {
		t.Errorf("mounts with the preloaded binary = %+v", m)
	}
	if strings.Contains(args, "caCertificates") {
		t.Errorf("args without a bundle name one: %s", args)
	}
	d := desired()
	d.Bundle = []byte("pem")
	args = strings.Join(ServiceSpec(d).TaskTemplate.ContainerSpec.Args, " ")
	for _, w := range []string{"--certificatesresolvers.kiln.acme.caCertificates=/data/ca-bundle.pem", "--certificatesresolvers.kiln.acme.caSystemCertPool=true"} {
		if !strings.Contains(args, w) {
			t.Errorf("args with a bundle lack %s", w)
		}
	}
}

// TestStackHash: what the config changes changes the hash (a redeploy); nothing else does.
func TestStackHash(t *testing.T) {
	hash := func(d Desired) string { return StackSpec(d).Services[0].Labels[stack.HashLabel] }
	base := hash(desired())
	if base == "" || hash(desired()) != base {
		t.Fatal("hash missing or unstable")
	}
	for name, change := range map[string]func(*Desired){
		"email":  func(d *Desired) { d.Email = "other@example.org" },
		"ca":     func(d *Desired) { d.CA = "https://ca.lab.test/dir" },
		"bundle": func(d *Desired) { d.Bundle = []byte("pem") },
		"image":  func(d *Desired) { d.Image = "kiln/traefik:v3.7.14" },
		"binary": func(d *Desired) { d.Binary = "/usr/lib/kiln/images/traefik-v3.7.14" },
	} {
		d := desired()
		change(&d)
		if hash(d) == base {
			t.Errorf("changing %s keeps the hash: no redeploy", name)
		}
	}
}

func TestLastACMEError(t *testing.T) {
	log := `{"level":"info","time":"2026-12-03T15:00:00Z","message":"Configuration loaded from flags."}
not json at all
{"level":"error","providerName":"kiln.acme","ACME CA":"https://ca/dir","routerName":"app@swarm","rule":"Host(` + "`app.test`" + `)","error":"unable to generate a certificate for the domains [app.test]: acme: error: 400 :: urn:ietf:params:acme:error:connection :: Connection refused","time":"2026-12-03T15:01:00Z","message":"Unable to obtain ACME certificate for domains"}
{"level":"error","providerName":"kiln.acme","error":"get directory at 'https://ca/dir': dial tcp: lookup ca: no such host","time":"2026-12-03T15:02:00Z","message":"Building ACME client"}
{"level":"error","providerName":"swarm","error":"unrelated","time":"2026-12-03T15:03:00Z","message":"Provider error"}
`
	got := LastACMEError([]byte(log))
	want := "Building ACME client: get directory at 'https://ca/dir': dial tcp: lookup ca: no such host (2026-12-03T15:02:00Z)"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if LastACMEError([]byte(`{"level":"info","message":"fine"}`)) != "" {
		t.Error("an info line reported as an ACME error")
	}
}

// fakeDocker is a swarm of one manager: services and networks in maps, logs from a string.
type fakeDocker struct {
	images   map[string]string // name → id
	services map[string]swarm.Service
	networks map[string]network.Summary
	calls    []string
}

func newFake() *fakeDocker {
	return &fakeDocker{images: map[string]string{}, services: map[string]swarm.Service{}, networks: map[string]network.Summary{}}
}

func (f *fakeDocker) ServiceList(context.Context, swarm.ServiceListOptions) ([]swarm.Service, error) {
	var out []swarm.Service
	for _, s := range f.services {
		s.ServiceStatus = &swarm.ServiceStatus{RunningTasks: 1, DesiredTasks: 1}
		out = append(out, s)
	}
	return out, nil
}
func (f *fakeDocker) ServiceCreate(_ context.Context, s swarm.ServiceSpec, _ swarm.ServiceCreateOptions) (swarm.ServiceCreateResponse, error) {
	f.calls = append(f.calls, "create "+s.Name)
	f.services[s.Name] = swarm.Service{ID: "id-" + s.Name, Spec: s}
	return swarm.ServiceCreateResponse{ID: "id-" + s.Name}, nil
}
func (f *fakeDocker) ServiceUpdate(_ context.Context, id string, _ swarm.Version, s swarm.ServiceSpec, _ swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error) {
	f.calls = append(f.calls, "update "+s.Name)
	f.services[s.Name] = swarm.Service{ID: id, Spec: s}
	return swarm.ServiceUpdateResponse{}, nil
}
func (f *fakeDocker) ServiceRemove(_ context.Context, id string) error {
	f.calls = append(f.calls, "remove "+id)
	return nil
}
func (f *fakeDocker) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	var out []network.Summary
	for _, n := range f.networks {
		out = append(out, n)
	}
	return out, nil
}
func (f *fakeDocker) NetworkCreate(_ context.Context, name string, _ network.CreateOptions) (network.CreateResponse, error) {
	f.calls = append(f.calls, "network "+name)
	f.networks[name] = network.Summary{Name: name}
	return network.CreateResponse{}, nil
}
func (f *fakeDocker) Ping(context.Context) (types.Ping, error) { return types.Ping{}, nil }
func (f *fakeDocker) ImageInspect(_ context.Context, name string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if id, ok := f.images[name]; ok {
		return image.InspectResponse{ID: id}, nil
	}
	return image.InspectResponse{}, cerrdefs.ErrNotFound
}
func (f *fakeDocker) ImageLoad(context.Context, io.Reader, ...client.ImageLoadOption) (image.LoadResponse, error) {
	return image.LoadResponse{}, errors.New("not here")
}
func (f *fakeDocker) ServiceLogs(context.Context, string, container.LogsOptions) (io.ReadCloser, error) {
	return nil, errors.New("no logs in the fake")
}

func TestReconcile(t *testing.T) {
	root := t.TempDir()
	images := filepath.Join(root, "images")
	os.MkdirAll(images, 0o755)
	ix, _ := json.Marshal(preload.Index{Images: []preload.Entry{{Name: "kiln/traefik:v3.7.13", Source: preload.SourceTraefik, Version: "v3.7.13", Digest: "sha256:aa", File: "t.tar", Binary: "traefik-v3.7.13"}}})
	os.WriteFile(filepath.Join(images, preload.IndexFile), ix, 0o644)
	mounted := false
	docker := newFake()
	cfg := &config.Ingress{Email: "ops@example.org", CA: config.LetsEncrypt}
	r := New(docker, cfg, filepath.Join(root, "data"), func() (bool, error) { return mounted, nil }, images, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	leader := true // what the swarm reconciler observed before this pass
	pass := func(active bool) (*state.State, bool) {
		t.Helper()
		s := &state.State{}
		s.Swarm.Active, s.Swarm.Leader = active, active && leader
		changed, err := r.Reconcile(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		return s, changed
	}

	if s, changed := pass(false); changed || s.Pending[Name] != "waiting for the swarm" {
		t.Errorf("no swarm: changed %v, pending %q", changed, s.Pending[Name])
	}
	if s, changed := pass(true); changed || !strings.Contains(s.Pending[Name], "waiting for the volume") {
		t.Errorf("no volume: changed %v, pending %q", changed, s.Pending[Name])
	}
	mounted = true
	if s, changed := pass(true); changed || !strings.Contains(s.Pending[Name], "not loaded yet") {
		t.Errorf("image not loaded: changed %v, pending %q", changed, s.Pending[Name])
	}
	docker.images["kiln/traefik:v3.7.13"] = "sha256:aa"
	s, changed := pass(true)
	if !changed || strings.Join(docker.calls, ",") != "network kiln-ingress,create kiln-ingress_traefik" {
		t.Fatalf("first deploy: changed %v, calls %v", changed, docker.calls)
	}
	if s.Status[Name] != "kiln-ingress_traefik 1/1" || len(s.Pending) != 0 {
		t.Errorf("status %q pending %v", s.Status[Name], s.Pending)
	}
	if got := docker.services[ServiceName].Spec.TaskTemplate.ContainerSpec.Image; got != "kiln/traefik:v3.7.13" {
		t.Errorf("image %s, want the preloaded one", got)
	}
	if m := docker.services[ServiceName].Spec.TaskTemplate.ContainerSpec.Mounts; m[len(m)-1].Source != filepath.Join(images, "traefik-v3.7.13") {
		t.Errorf("mounts %+v, want the preloaded binary from %s", m, images)
	}
	st, err := os.Stat(filepath.Join(root, "data", DataSubdir, AcmeFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("acme.json: %v, mode %v; want 0600", err, st.Mode().Perm())
	}

	docker.calls = nil
	if _, changed := pass(true); changed || len(docker.calls) != 0 {
		t.Errorf("converged pass: changed %v, calls %v", changed, docker.calls)
	}
	cfg.Email = "new@example.org"
	if _, changed := pass(true); !changed || strings.Join(docker.calls, ",") != "update kiln-ingress_traefik" {
		t.Errorf("changed email: changed %v, calls %v", changed, docker.calls)
	}
	delete(docker.services, ServiceName)
	docker.calls = nil
	if _, changed := pass(true); !changed || strings.Join(docker.calls, ",") != "create kiln-ingress_traefik" {
		t.Errorf("deleted service: changed %v, calls %v", changed, docker.calls)
	}
	// A manager that is not the leader never acts, and still reports.
	leader = false
	delete(docker.services, ServiceName)
	docker.calls = nil
	if s, changed := pass(true); changed || len(docker.calls) != 0 || s.Status[Name] != "no service" {
		t.Errorf("follower: changed %v, calls %v, status %q", changed, docker.calls, s.Status[Name])
	}
}

func networkInspectOptions() network.InspectOptions { return network.InspectOptions{} }
