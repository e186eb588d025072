package ignite

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	butane "github.com/coreos/butane/config"
	"github.com/coreos/butane/config/common"
)

// butaneSpec is what an image spec's Butane file looks like; translating it with Butane (as the builder does)
// tests ignite against real Butane output, gzip-compressed inline data included.
const butaneSpec = `variant: fcos
version: 1.4.0
passwd:
  groups:
    - name: ops
  users:
    - name: core
      groups: [sudo, ops]
      ssh_authorized_keys: ["ssh-ed25519 AAAAcore core@lab"]
    - name: svc
      uid: 1500
      shell: /usr/sbin/nologin
      gecos: Service account
    - name: root
      ssh_authorized_keys: ["ssh-ed25519 AAAAroot root@lab"]
storage:
  directories:
    - path: /var/lib/app
      mode: 0750
      user: {name: svc}
      group: {name: svc}
  files:
    - path: /etc/motd
      overwrite: true
      contents:
        inline: "` + "welcome to kiln, welcome to kiln, welcome to kiln, welcome to kiln, welcome to kiln\\n" + `"
    - path: /home/core/.config/app.conf
      mode: 0600
      user: {name: core}
      contents:
        inline: "k=v\n"
    - path: /usr/local/bin/hello
      mode: 0755
      contents:
        inline: "#!/bin/sh\necho hi\n"
  links:
    - path: /etc/app/current
      target: /var/lib/app
systemd:
  units:
    - name: hello.service
      enabled: true
      contents: |
        [Service]
        ExecStart=/usr/local/bin/hello
        [Install]
        WantedBy=multi-user.target
      dropins:
        - name: 10-env.conf
          contents: "[Service]\nEnvironment=A=1\n"
    - name: apt-daily.timer
      mask: true
    - name: ssh.service
      enabled: false
`

func translate(t *testing.T, spec string) []byte {
	t.Helper()
	out, rpt, err := butane.TranslateBytes([]byte(spec), common.TranslateBytesOptions{})
	if err != nil || len(rpt.Entries) > 0 {
		t.Fatalf("butane: %v %s", err, rpt.String())
	}
	return out
}

// baseRoot is a root like the image's: Debian's account files, skel, /home → var/home.
func baseRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/passwd":       "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n",
		"etc/shadow":       "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n",
		"etc/group":        "root:x:0:\nsudo:x:27:\nshadow:x:42:\ndocker:x:998:\n",
		"etc/gshadow":      "root:*::\nsudo:*::\nshadow:*::\ndocker:!::\n",
		"etc/skel/.bashrc": "# bashrc\n",
		"etc/motd":         "debian\n",
	}
	for p, c := range files {
		mustWrite(t, filepath.Join(root, p), c)
	}
	os.Chmod(filepath.Join(root, "etc/shadow"), 0o640)
	os.MkdirAll(filepath.Join(root, "var"), 0o755)
	if err := os.Symlink("/var/home", filepath.Join(root, "home")); err != nil {
		t.Fatal(err)
	}
	return root
}

func mustWrite(t *testing.T, p, c string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type fakeSystemd struct{ calls []string }

func (f *fakeSystemd) Reload(context.Context) error { f.calls = append(f.calls, "reload"); return nil }
func (f *fakeSystemd) Enable(_ context.Context, u []string) error {
	f.calls = append(f.calls, "enable "+strings.Join(u, ","))
	return nil
}
func (f *fakeSystemd) Disable(_ context.Context, u []string) error {
	f.calls = append(f.calls, "disable "+strings.Join(u, ","))
	return nil
}
func (f *fakeSystemd) Start(_ context.Context, u string) error {
	f.calls = append(f.calls, "start "+u)
	return nil
}
func (f *fakeSystemd) Stop(_ context.Context, u string) error {
	f.calls = append(f.calls, "stop "+u)
	return nil
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: ignite chowns files to the users it creates")
	}
}

func TestApply(t *testing.T) {
	needRoot(t)
	cfg, notes, err := Parse(translate(t, butaneSpec))
	if err != nil {
		t.Fatal(err, notes)
	}
	root := baseRoot(t)
	sd := &fakeSystemd{}
	if err := Apply(context.Background(), cfg, Options{Root: root, Systemd: sd}); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	passwd := read(t, filepath.Join(root, "etc/passwd"))
	for _, want := range []string{
		"root:x:0:0:root:/root:/bin/bash\n",
		"core:x:1000:1001::/var/home/core:/bin/bash\n",
		"svc:x:1500:1500:Service account:/var/home/svc:/usr/sbin/nologin\n",
	} {
		if !strings.Contains(passwd, want) {
			t.Errorf("passwd lacks %q:\n%s", want, passwd)
		}
	}
	shadow := read(t, filepath.Join(root, "etc/shadow"))
	if !strings.Contains(shadow, "core:!:") || !strings.Contains(shadow, "root:*:19000") {
		t.Errorf("shadow:\n%s", shadow)
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/shadow")); fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow mode %v, want the original 0640", fi.Mode().Perm())
	}
	group := read(t, filepath.Join(root, "etc/group"))
	for _, want := range []string{"sudo:x:27:core\n", "ops:x:1000:core\n", "core:x:1001:\n", "svc:x:1500:\n"} {
		if !strings.Contains(group, want) {
			t.Errorf("group lacks %q:\n%s", want, group)
		}
	}
	// core's private group: gid 1000 was taken by ops (declared first), so core gets the next free one.
	if !strings.Contains(passwd, "core:x:1000:1001:") {
		t.Errorf("core's primary group should be its own group 1001:\n%s", passwd)
	}
	if gs := read(t, filepath.Join(root, "etc/gshadow")); !strings.Contains(gs, "sudo:*::core\n") || !strings.Contains(gs, "core:!::\n") {
		t.Errorf("gshadow:\n%s", gs)
	}

	home := filepath.Join(root, "var/home/core")
	fi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	if uid, _ := ids(fi); uid != 1000 || fi.Mode().Perm() != 0o700 {
		t.Errorf("home owner %d mode %v", uid, fi.Mode().Perm())
	}
	if read(t, filepath.Join(home, ".bashrc")) != "# bashrc\n" {
		t.Error("skel not copied")
	}
	conf := filepath.Join(home, ".config/app.conf")
	if read(t, conf) != "k=v\n" {
		t.Error("app.conf content")
	}
	if fi, _ := os.Stat(conf); fi.Mode().Perm() != 0o600 {
		t.Errorf("app.conf mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(conf); func() int { u, _ := ids(fi); return u }() != 1000 {
		t.Error("app.conf not owned by core")
	}
	if got := read(t, filepath.Join(root, "etc/motd")); !strings.HasPrefix(got, "welcome to kiln") {
		t.Errorf("motd (gzip inline, overwrite) = %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(root, "usr/local/bin/hello")); fi.Mode().Perm() != 0o755 {
		t.Errorf("hello mode %v", fi.Mode())
	}
	fi, _ = os.Stat(filepath.Join(root, "var/lib/app"))
	if uid, gid := ids(fi); uid != 1500 || gid != 1500 || fi.Mode().Perm() != 0o750 {
		t.Errorf("/var/lib/app %d:%d %v", uid, gid, fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(root, "etc/app/current")); l != "/var/lib/app" {
		t.Errorf("link -> %q", l)
	}

	unit := filepath.Join(root, "etc/systemd/system")
	if !strings.Contains(read(t, filepath.Join(unit, "hello.service")), "ExecStart=/usr/local/bin/hello") {
		t.Error("unit not written")
	}
	if read(t, filepath.Join(unit, "hello.service.d/10-env.conf")) != "[Service]\nEnvironment=A=1\n" {
		t.Error("drop-in not written")
	}
	if l, _ := os.Readlink(filepath.Join(unit, "apt-daily.timer")); l != "/dev/null" {
		t.Error("mask not a /dev/null link")
	}
	wantCalls := []string{"reload", "enable hello.service", "start hello.service", "stop apt-daily.timer", "disable ssh.service", "stop ssh.service"}
	if !reflect.DeepEqual(sd.calls, wantCalls) {
		t.Errorf("systemd calls %q, want %q", sd.calls, wantCalls)
	}

	// Second run in the same boot: nothing changes, no reload.
	before := snapshot(t, root)
	sd.calls = nil
	if err := Apply(context.Background(), cfg, Options{Root: root, Systemd: sd}); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
		t.Errorf("second Apply changed the tree:\nbefore %v\nafter  %v", before, after)
	}
	if len(sd.calls) > 0 && sd.calls[0] == "reload" {
		t.Errorf("second Apply reloaded systemd: %q", sd.calls)
	}

	// Next boot: /etc is back to the image's, /var kept. svc has a fixed uid; core gets its uid back from its home.
	fresh := baseRoot(t)
	for _, f := range []string{"etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"} {
		mustWrite(t, filepath.Join(root, f), read(t, filepath.Join(fresh, f)))
	}
	if err := Apply(context.Background(), cfg, Options{Root: root, Systemd: sd}); err != nil {
		t.Fatalf("next-boot Apply: %v", err)
	}
	if p := read(t, filepath.Join(root, "etc/passwd")); !strings.Contains(p, "core:x:1000:") {
		t.Errorf("core changed uid across boots:\n%s", p)
	}
}

func TestUIDFromExistingHome(t *testing.T) {
	needRoot(t)
	root := baseRoot(t)
	home := filepath.Join(root, "var/home/core")
	os.MkdirAll(home, 0o700)
	os.Chown(home, 1234, 1234)
	cfg, _, err := Parse([]byte(`{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(context.Background(), cfg, Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	if p := read(t, filepath.Join(root, "etc/passwd")); !strings.Contains(p, "core:x:1234:1234:") {
		t.Errorf("uid not taken from the existing home:\n%s", p)
	}
}

func TestApplyErrorsNameFieldsAndContinue(t *testing.T) {
	needRoot(t)
	root := baseRoot(t)
	cfg, _, err := Parse([]byte(`{"ignition":{"version":"3.3.0"},
	  "passwd":{"users":[{"name":"core","groups":["nosuchgroup"]}]},
	  "storage":{"files":[
	    {"path":"/etc/motd","contents":{"source":"data:,other"}},
	    {"path":"/etc/ok","contents":{"source":"data:,fine"}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	err = Apply(context.Background(), cfg, Options{Root: root})
	for _, want := range []string{"passwd.users[0].groups", "nosuchgroup", "storage.files[0] (/etc/motd)", "overwrite is false"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if read(t, filepath.Join(root, "etc/ok")) != "fine" || read(t, filepath.Join(root, "etc/motd")) != "debian\n" {
		t.Error("a failing item stopped the others, or overwrite=false replaced a file")
	}
	if !strings.Contains(read(t, filepath.Join(root, "etc/passwd")), "core:") {
		t.Error("user not created despite the unknown group")
	}
}

func TestParseRejectsUnsupported(t *testing.T) {
	tests := []struct {
		name string
		json string
		want []string
	}{
		{"disks and homeDir", `{"ignition":{"version":"3.3.0"},"storage":{"disks":[{"device":"/dev/vda"}]},"passwd":{"users":[{"name":"a","homeDir":"/x"}]}}`,
			[]string{"passwd.users[0].homeDir", "storage.disks[0].device"}},
		{"unknown key", `{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"a","sshKeys":["x"]}]}}`,
			[]string{"passwd.users[0].sshKeys"}},
		{"remote source and append", `{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","append":[{"source":"data:,x"}],"contents":{"source":"data:,x","verification":{"hash":"sha512-00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}}}]}}`,
			[]string{"storage.files[0].append[0].source", "storage.files[0].contents.verification.hash"}},
		{"kernel arguments and merge", `{"ignition":{"version":"3.3.0","config":{"merge":[{"source":"https://x/y.ign"}]}},"kernelArguments":{"shouldExist":["quiet"]}}`,
			[]string{"ignition.config.merge[0].source", "kernelArguments.shouldExist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.json))
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want *UnsupportedError", err)
			}
			if !reflect.DeepEqual(ue.Fields, tt.want) {
				t.Errorf("fields %q, want %q", ue.Fields, tt.want)
			}
		})
	}
	if _, _, err := Parse([]byte(`{"ignition":{"version":"3.4.0"}}`)); err == nil {
		t.Error("spec 3.4 accepted")
	}
	if _, _, err := Parse([]byte(`{"ignition":{"version":"3.1.0"},"passwd":{"users":[{"name":"a"}]}}`)); err != nil {
		t.Errorf("spec 3.1 rejected: %v", err)
	}
	if _, _, err := Parse([]byte(`{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"rel"}]}}`)); err == nil || !strings.Contains(err.Error(), "path not absolute") {
		t.Errorf("Ignition validation not applied: %v", err)
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "var/home"), 0o755)
	os.Symlink("/var/home", filepath.Join(root, "home"))
	os.Symlink("../var", filepath.Join(root, "rel"))
	os.Symlink("/loop2", filepath.Join(root, "loop1"))
	os.Symlink("/loop1", filepath.Join(root, "loop2"))
	tests := []struct{ in, want, err string }{
		{in: "/home/core/.bashrc", want: "var/home/core/.bashrc"},
		{in: "/rel/home/x", want: "var/home/x"},
		{in: "/../../etc/passwd", want: "etc/passwd"},
		{in: "/home", want: "home"}, // the last element is not followed
		{in: "/loop1/x", err: "too many levels"},
		{in: "relative", err: "not absolute"},
	}
	for _, tt := range tests {
		got, err := resolveIn(root, tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != filepath.Join(root, tt.want) {
			t.Errorf("%s → %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

// snapshot lists every path under root with its mode, owner and content.
func snapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(p)
		u, g := ids(fi)
		s := p + " " + fi.Mode().String() + " " + itoa(u) + ":" + itoa(g)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s += " " + string(b)
		}
		out = append(out, s)
		return nil
	})
	sort.Strings(out)
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
