// Package ingress is the ingress stack's reconciler: Traefik v3 as a one-replica swarm service publishing 80
// and 443 on every node (the routing mesh), routing by the swarm labels of user services, redirecting HTTP to
// HTTPS, with ACME (HTTP-01) certificates kept on the gluster volume. It runs only when the cluster config has
// an ingress section, and acts once the swarm is active and the volume mounted (docs/ingress.md).
package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/firstboot/stack"
	"github.com/kiln-project/kiln/firstboot/state"
)

// Name is the reconciler's name in the status.
const Name = "ingress"

// The stack's names. User services join Network to be routed (docs/ingress.md).
const (
	StackName   = "kiln-ingress"
	ServiceName = StackName + "_traefik"
	Network     = StackName
)

// FallbackImage is what runs when the image preloads no Traefik: a registry must then serve it.
const FallbackImage = "traefik:v3.7.13"

// DataSubdir is the stack's directory on the gluster volume: acme.json (the certificates and the ACME
// account, mode 0600) and the private CA bundle. On the shared volume, a Traefik rescheduled onto another
// node after a node loss finds the same certificates and asks the CA for nothing.
const DataSubdir = "kiln/ingress"

// Files in the data directory, and where the container sees it.
const (
	AcmeFile      = "acme.json"
	BundleFile    = "ca-bundle.pem"
	containerData = "/data"
)

// Resolver is the ACME certificate resolver's name in Traefik's configuration; user routers need not name
// it: the websecure entry point applies it to every router.
const Resolver = "kiln"

// Desired is everything the stack's spec depends on.
type Desired struct {
	Image string
	// Binary is the preloaded Traefik's executable on the node (preload.Entry.Binary), bind-mounted at the
	// image's entrypoint; empty for an image that has its own (a registry's).
	Binary string
	Email  string
	CA     string
	// Bundle is the private CA bundle's PEM (nil: none); its hash goes into the spec, so a new bundle
	// redeploys Traefik, which reads it only at start.
	Bundle []byte
	// DataDir is the host directory bind-mounted at /data (on the gluster volume).
	DataDir string
}

// Args are Traefik's static configuration as command-line flags (no file to keep in sync on every node).
func Args(d Desired) []string {
	args := []string{
		"--log.level=INFO",
		// JSON lines: the reconciler reads ACME errors from them for the node's status.
		"--log.format=json",
		"--providers.swarm=true",
		"--providers.swarm.endpoint=unix:///var/run/docker.sock",
		"--providers.swarm.exposedByDefault=false",
		"--providers.swarm.network=" + Network,
		"--entrypoints.web.address=:80",
		"--entrypoints.web.http.redirections.entrypoint.to=websecure",
		"--entrypoints.web.http.redirections.entrypoint.scheme=https",
		"--entrypoints.websecure.address=:443",
		"--entrypoints.websecure.http.tls=true",
		"--entrypoints.websecure.http.tls.certresolver=" + Resolver,
		"--certificatesresolvers." + Resolver + ".acme.email=" + d.Email,
		"--certificatesresolvers." + Resolver + ".acme.caserver=" + d.CA,
		"--certificatesresolvers." + Resolver + ".acme.storage=" + containerData + "/" + AcmeFile,
		"--certificatesresolvers." + Resolver + ".acme.httpchallenge=true",
		"--certificatesresolvers." + Resolver + ".acme.httpchallenge.entrypoint=web",
		"--ping=true",
	}
	if len(d.Bundle) > 0 {
		// The ACME client trusts the private CA's roots in addition to the image's CA bundle (the system
		// pool), for the directory's TLS certificate.
		args = append(args,
			"--certificatesresolvers."+Resolver+".acme.caCertificates="+containerData+"/"+BundleFile,
			"--certificatesresolvers."+Resolver+".acme.caSystemCertPool=true")
	}
	return args
}

// ServiceSpec is the Traefik service as the stack wants it (before stack.WithHash). Pure.
func ServiceSpec(d Desired) swarm.ServiceSpec {
	one := uint64(1)
	labels := map[string]string{}
	if len(d.Bundle) > 0 {
		// Traefik reads the bundle at start only: its hash in the spec redeploys it when the bundle changes.
		sum := sha256.Sum256(d.Bundle)
		labels["kiln.ingress.ca-bundle"] = hex.EncodeToString(sum[:])
	}
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: ServiceName, Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:  d.Image,
				Args:   Args(d),
				Mounts: mounts(d),
			},
			Placement: &swarm.Placement{Constraints: []string{"node.role == manager"}},
			// Restarted wherever swarm puts it; a crash loop waits 5 s between tries. ACME retries follow
			// Traefik's own backoff within one process, so no loop of ours ever asks the CA.
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: ptr(5 * time.Second)},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: Network}},
		},
		// One replica: acme.json has exactly one writer. stop-first: an update never runs two.
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
		UpdateConfig: &swarm.UpdateConfig{Parallelism: 1, Order: swarm.UpdateOrderStopFirst, FailureAction: swarm.UpdateFailureActionContinue},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP, Ports: []swarm.PortConfig{
			{Name: "web", Protocol: swarm.PortConfigProtocolTCP, TargetPort: 80, PublishedPort: 80, PublishMode: swarm.PortConfigPublishModeIngress},
			{Name: "websecure", Protocol: swarm.PortConfigProtocolTCP, TargetPort: 443, PublishedPort: 443, PublishMode: swarm.PortConfigPublishModeIngress},
		}},
	}
}

// StackSpec is the whole ingress stack: its overlay network (attachable, so user services and `docker run
// --network` containers can join) and Traefik. Pure.
func StackSpec(d Desired) stack.Spec {
	return stack.Spec{
		Name:         StackName,
		NetworkNames: []string{Network},
		Networks:     []network.CreateOptions{{Driver: "overlay", Attachable: true}},
		Services:     []swarm.ServiceSpec{stack.WithHash(StackName, ServiceSpec(d))},
	}
}

func mounts(d Desired) []mount.Mount {
	m := []mount.Mount{
		// The swarm provider reads services and their labels from a manager's API.
		{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock", ReadOnly: true},
		{Type: mount.TypeBind, Source: d.DataDir, Target: containerData},
	}
	if d.Binary != "" {
		m = append(m, mount.Mount{Type: mount.TypeBind, Source: d.Binary, Target: preload.TraefikEntrypoint, ReadOnly: true})
	}
	return m
}

func ptr[T any](v T) *T { return &v }

// DockerAPI is what the reconciler needs from dockerd.
type DockerAPI interface {
	stack.DockerAPI
	preload.DockerAPI
	LogsAPI
}

// Reconciler deploys and keeps the ingress stack.
type Reconciler struct {
	docker DockerAPI
	cfg    *config.Ingress
	// mountPoint is the gluster volume's mount point; mounted reports whether it is mounted now.
	mountPoint string
	mounted    func() (bool, error)
	// images is the preloaded images' directory (preload.Dir).
	images string
	log    *slog.Logger
	acme   acmeStatus
}

// New returns the reconciler for cfg (non-nil: a node without an ingress section has no reconciler).
func New(docker DockerAPI, cfg *config.Ingress, mountPoint string, mounted func() (bool, error), images string, log *slog.Logger) *Reconciler {
	return &Reconciler{docker: docker, cfg: cfg, mountPoint: mountPoint, mounted: mounted, images: images, log: log}
}

// Name implements state.Reconciler.
func (*Reconciler) Name() string { return Name }

// Reconcile implements state.Reconciler: once the swarm is active and the volume mounted, the swarm leader
// makes the stack match the config; every manager reports the service's state and why ACME fails, if it does.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	leader, goOn, err := stack.Ready(s, Name, r.mountPoint, r.mounted)
	if err != nil || !goOn {
		return false, err
	}
	obs, err := stack.Observe(ctx, r.docker, StackName)
	if err != nil {
		if !leader {
			// A worker has no swarm API; the managers deploy and report.
			s.Set(Name, "deployed by the swarm leader")
			return false, nil
		}
		return false, fmt.Errorf("ingress: %w", err)
	}
	changed := false
	if leader {
		var wait errWaitImage
		if changed, err = r.deploy(ctx, obs); errors.As(err, &wait) {
			s.Wait(Name, wait.Error())
			return false, nil
		} else if err != nil {
			return changed, err
		}
		if changed {
			if obs, err = stack.Observe(ctx, r.docker, StackName); err != nil {
				return changed, fmt.Errorf("ingress: %w", err)
			}
		}
	}
	line := stack.Summary(obs)
	if len(obs.Services) > 0 {
		if why := r.acme.why(ctx, r.docker, obs.Services[0].ID); why != "" {
			line += "; ACME failing: " + why
		}
	}
	s.Set(Name, line)
	return changed, nil
}

// deploy prepares the data directory and applies the stack's plan; only the leader runs it.
func (r *Reconciler) deploy(ctx context.Context, obs stack.Observed) (bool, error) {
	d, err := r.desired(ctx)
	if err != nil {
		return false, err
	}
	if err := prepareData(d); err != nil {
		return false, err
	}
	plan := stack.Plan(obs, StackSpec(d))
	for _, a := range plan {
		r.log.Info("ingress: "+string(a.Kind), "name", a.Name, "why", a.Why, "image", d.Image)
	}
	if err := stack.Apply(ctx, r.docker, plan); err != nil {
		return false, fmt.Errorf("ingress: %w", err)
	}
	return len(plan) > 0, nil
}

// desired gathers the spec's inputs: the preloaded Traefik (else FallbackImage), the config, the bundle.
func (r *Reconciler) desired(ctx context.Context) (Desired, error) {
	d := Desired{Image: FallbackImage, Email: r.cfg.Email, CA: r.cfg.CA, DataDir: filepath.Join(r.mountPoint, DataSubdir)}
	ix, err := preload.ReadIndex(r.images)
	if err != nil {
		return d, fmt.Errorf("ingress: %w", err)
	}
	if e, ok := ix.Find(preload.SourceTraefik); ok {
		present, err := preload.Present(ctx, r.docker, e)
		if err != nil {
			return d, fmt.Errorf("ingress: %w", err)
		}
		if !present {
			// kiln-preload.service loads it at boot; deploying before would start a task that cannot run here.
			return d, errWaitImage{e.Name}
		}
		d.Image = e.Name
		if e.Binary != "" {
			d.Binary = filepath.Join(r.images, e.Binary)
		}
	}
	if d.Bundle, err = r.cfg.Bundle(); err != nil {
		return d, fmt.Errorf("ingress: %w", err)
	}
	return d, nil
}

type errWaitImage struct{ image string }

func (e errWaitImage) Error() string {
	return "ingress: " + e.image + " is not loaded yet (kiln-preload.service)"
}

// prepareData makes the data directory on the volume, acme.json with the mode Traefik insists on (it
// refuses a file others can read), and the CA bundle.
func prepareData(d Desired) error {
	if err := os.MkdirAll(d.DataDir, 0o700); err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	acme := filepath.Join(d.DataDir, AcmeFile)
	st, err := os.Stat(acme)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f, err := os.OpenFile(acme, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil && !errors.Is(err, fs.ErrExist) { // another node's create won: fine
			return fmt.Errorf("ingress: %w", err)
		}
		if f != nil {
			f.Close()
		}
	case err != nil:
		return fmt.Errorf("ingress: %w", err)
	case st.Mode().Perm() != 0o600:
		if err := os.Chmod(acme, 0o600); err != nil {
			return fmt.Errorf("ingress: %w", err)
		}
	}
	bundle := filepath.Join(d.DataDir, BundleFile)
	if len(d.Bundle) == 0 {
		return nil
	}
	if old, err := os.ReadFile(bundle); err == nil && string(old) == string(d.Bundle) {
		return nil
	}
	tmp := bundle + ".tmp"
	if err := os.WriteFile(tmp, d.Bundle, 0o644); err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	if err := os.Rename(tmp, bundle); err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	return nil
}

// MountedFunc reports whether path is a mount point of a glusterfs (FUSE) filesystem, from
// /proc/self/mountinfo: the volume, not the empty directory under it.
func MountedFunc(path string) func() (bool, error) {
	return func() (bool, error) {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return false, err
		}
		for line := range strings.Lines(string(b)) {
			pre, post, ok := strings.Cut(line, " - ")
			f := strings.Fields(pre)
			if !ok || len(f) < 5 || f[4] != path {
				continue
			}
			if fs := strings.Fields(post); len(fs) > 0 && strings.HasPrefix(fs[0], "fuse.glusterfs") {
				return true, nil
			}
		}
		return false, nil
	}
}
