package compose

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/stack"
)

const app = `services:
  web:
    image: nginx:1.27
    command: ["nginx", "-g", "daemon off;"]
    environment:
      MODE: prod
    networks: [default, kiln-ingress]
    volumes:
      - /var/data/app/html:/usr/share/nginx/html:ro
      - cache:/var/cache/nginx
    deploy:
      replicas: 2
      labels:
        traefik.enable: "true"
        traefik.http.routers.app.rule: Host(` + "`app.example.org`" + `)
        traefik.http.services.app.loadbalancer.server.port: "80"
      placement:
        constraints: [node.role == manager]
      restart_policy:
        condition: on-failure
        delay: 5s
  metrics:
    image: prom/node-exporter:v1.8.2
    ports:
      - "9100:9100"
    deploy:
      mode: global
networks:
  kiln-ingress:
    external: true
volumes:
  cache: {}
`

func TestLoadConvert(t *testing.T) {
	p, err := Load(context.Background(), "app", "stacks/app.yaml", []byte(app))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Convert(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.NetworkNames, ",") != "app_default" || s.Networks[0].Driver != "overlay" {
		t.Errorf("networks %v %+v: want app_default only (kiln-ingress is external), overlay", s.NetworkNames, s.Networks)
	}
	if len(s.Services) != 2 || s.Services[0].Name != "app_metrics" || s.Services[1].Name != "app_web" {
		t.Fatalf("services = %d, names %s %s", len(s.Services), s.Services[0].Name, s.Services[1].Name)
	}
	web := s.Services[1]
	if web.Labels["traefik.http.routers.app.rule"] != "Host(`app.example.org`)" || web.Labels[stack.StackLabel] != "app" || web.Labels[stack.HashLabel] == "" {
		t.Errorf("web labels = %v", web.Labels)
	}
	if *web.Mode.Replicated.Replicas != 2 || web.TaskTemplate.Placement.Constraints[0] != "node.role == manager" {
		t.Errorf("web mode %+v placement %+v", web.Mode, web.TaskTemplate.Placement)
	}
	c := web.TaskTemplate.ContainerSpec
	if c.Image != "nginx:1.27" || strings.Join(c.Args, " ") != "nginx -g daemon off;" || strings.Join(c.Env, ",") != "MODE=prod" {
		t.Errorf("web container = %+v", c)
	}
	if len(c.Mounts) != 2 || c.Mounts[0] != (mount.Mount{Type: mount.TypeBind, Source: "/var/data/app/html", Target: "/usr/share/nginx/html", ReadOnly: true}) ||
		c.Mounts[1].Type != mount.TypeVolume || c.Mounts[1].Source != "app_cache" {
		t.Errorf("web mounts = %+v", c.Mounts)
	}
	var nets []string
	for _, n := range web.TaskTemplate.Networks {
		nets = append(nets, n.Target)
	}
	if strings.Join(nets, ",") != "app_default,kiln-ingress" {
		t.Errorf("web networks = %v", nets)
	}
	if rp := web.TaskTemplate.RestartPolicy; rp.Condition != swarm.RestartPolicyConditionOnFailure || rp.Delay.Seconds() != 5 {
		t.Errorf("restart policy = %+v", rp)
	}
	m := s.Services[0]
	if m.Mode.Global == nil || len(m.EndpointSpec.Ports) != 1 || m.EndpointSpec.Ports[0].PublishedPort != 9100 || m.EndpointSpec.Ports[0].PublishMode != swarm.PortConfigPublishModeIngress {
		t.Errorf("metrics mode %+v ports %+v", m.Mode, m.EndpointSpec.Ports)
	}
	// The same file gives the same stack: hashes are stable, so an unchanged file never redeploys.
	p2, _ := Load(context.Background(), "app", "stacks/app.yaml", []byte(app))
	s2, _ := Convert(p2)
	if s2.Services[1].Labels[stack.HashLabel] != web.Labels[stack.HashLabel] {
		t.Error("two loads of one file hash differently")
	}
}

// TestLoadErrors: a file that is not valid compose, or leaves the subset, fails with its file and line.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"yaml syntax", "services:\n  web:\n    image: [a\n", "app.yaml:2: did not find expected"},
		{"unsupported attribute", "services:\n  web:\n    image: nginx\n    build: .\n", "app.yaml:4: services.web.build: not in the compose subset"},
		{"unsupported deploy attribute", "services:\n  web:\n    image: nginx\n    deploy:\n      resources:\n        limits: {cpus: '0.5'}\n", "app.yaml:5: services.web.deploy.resources: not in the compose subset"},
		{"schema", "services:\n  web:\n    image: nginx\n    ports: {a: b}\n", "app.yaml:4: "},
		{"typo", "services:\n  web:\n    imgae: nginx\n", "app.yaml:3: "},
		{"no image", "services:\n  web:\n    command: [x]\n", `app.yaml:2: service "web" has neither an image`},
		{"relative bind", "services:\n  web:\n    image: nginx\n    volumes: [./html:/html]\n", "bind source"},
		{"port range", "services:\n  web:\n    image: nginx\n    ports: ['8000-8001:80-81']\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(context.Background(), "app", "stacks/app.yaml", []byte(tc.file))
			if err == nil {
				if tc.want == "" {
					return // compose-go expands it; fine either way
				}
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "stacks/app.yaml") {
				t.Errorf("error %q, want it to start with the file and contain %q", err, tc.want)
			}
		})
	}
	if _, err := Load(context.Background(), "Bad Name", "x.yaml", []byte(app)); err == nil || !strings.Contains(err.Error(), "stack name") {
		t.Errorf("bad stack name: %v", err)
	}
}
