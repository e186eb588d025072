package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/ignite"
)

const key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func put(t *testing.T, root, p, content string) {
	t.Helper()
	p = filepath.Join(root, p)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestAuthorizedKeys(t *testing.T) {
	ign := `{"ignition":{"version":"3.3.0"},"passwd":{"users":[
	  {"name":"root","sshAuthorizedKeys":["ssh-ed25519 IGNROOT","ssh-ed25519 SHARED"]},
	  {"name":"core","sshAuthorizedKeys":["ssh-ed25519 CORE1","ssh-ed25519 CORE2\nevil"]}]},
	  "storage":{"disks":[{"device":"/dev/vda"}]}}`
	cfg := "cluster: {name: lab, key: " + key + "}\nssh_authorized_keys: [ssh-ed25519 LAB, ssh-ed25519 SHARED]\n"
	tests := []struct {
		name     string
		cfg, ign string
		user     string
		want     []string
	}{
		{name: "root gets config then ignition keys, deduplicated", cfg: cfg, ign: ign, user: "root",
			want: []string{"ssh-ed25519 LAB", "ssh-ed25519 SHARED", "ssh-ed25519 IGNROOT"}},
		{name: "user from ignition; multi-line key dropped; unsupported fields don't matter", cfg: cfg, ign: ign, user: "core",
			want: []string{"ssh-ed25519 CORE1"}},
		{name: "unknown user", cfg: cfg, ign: ign, user: "mallory"},
		{name: "invalid cluster section: its keys and ignition keys are still served", cfg: "cluster: {name: BAD}\nssh_authorized_keys: [ssh-ed25519 LAB]\n", ign: ign, user: "root",
			want: []string{"ssh-ed25519 LAB", "ssh-ed25519 IGNROOT", "ssh-ed25519 SHARED"}},
		{name: "keys and no cluster at all (a lab without a cluster config)", cfg: "ssh_authorized_keys: [ssh-ed25519 LAB]\n", user: "root",
			want: []string{"ssh-ed25519 LAB"}},
		{name: "unparseable config: ignition keys only", cfg: "ssh_authorized_keys: [\n", ign: ign, user: "root",
			want: []string{"ssh-ed25519 IGNROOT", "ssh-ed25519 SHARED"}},
		{name: "nothing at all", user: "root"},
		{name: "garbage ignition", cfg: cfg, ign: "{", user: "root", want: []string{"ssh-ed25519 LAB", "ssh-ed25519 SHARED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.cfg != "" {
				put(t, root, config.FwCfgPath, tt.cfg)
			}
			if tt.ign != "" {
				put(t, root, ignite.DefaultPath, tt.ign)
			}
			got := authorizedKeys(context.Background(), root, tt.user, slog.New(slog.DiscardHandler))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("keys %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCommands runs subcommands through cobra the way sshd and systemd run the binary.
func TestCommands(t *testing.T) {
	root := t.TempDir()
	put(t, root, config.ImagePath, "cluster: {name: lab, key: "+key+"}\nssh_authorized_keys: [ssh-ed25519 LAB]\n")
	statusPath := filepath.Join(root, "status.json")
	put(t, root, "status.json", `{"node_id":"abc","hostname":"kiln-x","phase":"ready","members":[],"swarm":{},"gluster":{},"updated_at":"2026-01-01T00:00:00Z"}`)
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{args: []string{"ssh-keys", "--root", root, "root"}, want: "ssh-ed25519 LAB\n"},
		{args: []string{"ssh-keys", "--root", root, "nobody"}, want: ""},
		{args: []string{"status", "--path", statusPath}, want: "phase:"},
		{args: []string{"status", "--json", "--path", statusPath}, want: `"phase": "ready"`},
		{args: []string{"status", "--path", filepath.Join(root, "none.json")}, wantErr: "has not started"},
		{args: []string{"ignite", "--config", filepath.Join(root, "none.ign"), "--root", root}},
		{args: []string{"version"}, want: "kiln-firstboot dev"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:1], " "), func(t *testing.T) {
			out := captureStdout(t, func() error {
				cmd := newRootCmd()
				cmd.SetArgs(tt.args)
				err := cmd.Execute()
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Errorf("err %v, want %q", err, tt.wantErr)
					}
					return nil
				}
				return err
			})
			if !strings.Contains(out, tt.want) || (tt.want == "" && out != "") {
				t.Errorf("%v printed %q, want %q", tt.args, out, tt.want)
			}
		})
	}
}

func captureStdout(t *testing.T, f func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		done <- b.String()
	}()
	ferr := f()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatal(ferr)
	}
	return out
}

func TestRecoverRefusesWithoutForce(t *testing.T) {
	root := newRootCmd()
	root.SetArgs([]string{"recover"})
	root.SetOut(&bytes.Buffer{})
	err := root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--force-new-cluster") {
		t.Fatalf("recover without --force-new-cluster: err = %v", err)
	}
}
