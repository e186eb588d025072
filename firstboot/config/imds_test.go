package config

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/cloud/aws/awsfake"
)

func TestOnEC2(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  bool
	}{
		{"nitro", map[string]string{"sys_vendor": "Amazon EC2\n", "board_vendor": "Amazon EC2\n"}, true},
		{"nitro board only", map[string]string{"board_vendor": "Amazon EC2\n"}, true},
		{"xen with an ec2 uuid", map[string]string{"sys_vendor": "Xen\n", "product_uuid": "EC2E1916-9099-7CAF-FD21-012345ABCDEF\n"}, true},
		{"xen elsewhere", map[string]string{"sys_vendor": "Xen\n", "product_uuid": "4c4c4544-0000-1010-8000-b1c04f4d4e32\n"}, false},
		{"qemu with an ec2-looking uuid", map[string]string{"sys_vendor": "QEMU\n", "product_uuid": "ec2aaaaa-0000-0000-0000-000000000000\n"}, false},
		{"garage pc", map[string]string{"sys_vendor": "LENOVO\n"}, false},
		{"no dmi", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				writeFile(t, filepath.Join(root, dmiDir, name), content)
			}
			if got, why := OnEC2(root); got != tc.want {
				t.Fatalf("OnEC2 = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

// imdsEnv is a node root and a fake IMDS serving one instance.
type imdsEnv struct {
	root string
	fake *awsfake.Fake
	url  string
}

func newIMDSEnv(t *testing.T, ec2 bool, userData string) *imdsEnv {
	t.Helper()
	e := &imdsEnv{root: t.TempDir(), fake: awsfake.New()}
	if ec2 {
		writeFile(t, filepath.Join(e.root, dmiDir, "sys_vendor"), "Amazon EC2\n")
	}
	in := awsfake.Instance{ID: "i-0123456789abcdef0", State: "running", LocalIPv4: "10.0.1.11"}
	if userData != "" {
		in.UserData = []byte(userData)
	}
	e.fake.AddInstance(in)
	srv := httptest.NewServer(e.fake)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

func (e *imdsEnv) sources() []Source {
	return []Source{
		IMDS{Root: e.root, Endpoint: e.url, Cache: filepath.Join(e.root, IMDSCachePath), Image: filepath.Join(e.root, ImagePath)},
		File{SourceName: "image", Path: filepath.Join(e.root, ImagePath)},
	}
}

func TestIMDSUserData(t *testing.T) {
	e := newIMDSEnv(t, true, cfgYAML("aws"))
	c, err := Load(context.Background(), e.sources())
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != IMDSSourceName || c.Cluster.Name != "aws" {
		t.Fatalf("config %q from %s, want aws from %s", c.Cluster.Name, c.Source, IMDSSourceName)
	}
	if e.fake.Calls("imds:token") != 1 || e.fake.Calls("imds:user-data") != 1 {
		t.Fatalf("token %d, user-data %d requests", e.fake.Calls("imds:token"), e.fake.Calls("imds:user-data"))
	}
	st, err := os.Stat(filepath.Join(e.root, IMDSCachePath))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cache: %v %v", st, err)
	}
	// The rest of the boot reads the kept copy: an agent restart does not depend on IMDS.
	if c, err := Load(context.Background(), e.sources()); err != nil || c.Cluster.Name != "aws" || e.fake.Calls("imds:user-data") != 1 {
		t.Fatalf("second load: %v, %v, %d requests", c, err, e.fake.Calls("imds:user-data"))
	}
}

func TestIMDSNotOnEC2IsNotAsked(t *testing.T) {
	e := newIMDSEnv(t, false, cfgYAML("aws"))
	writeFile(t, filepath.Join(e.root, ImagePath), cfgYAML("image"))
	c, err := Load(context.Background(), e.sources())
	if err != nil || c.Source != "image" || len(c.Skipped) != 0 {
		t.Fatalf("config %+v, %v: want the image's, nothing skipped", c, err)
	}
	if n := e.fake.Calls("imds:token"); n != 0 {
		t.Fatalf("%d IMDS requests from a machine that is not on EC2", n)
	}
}

func TestIMDSAskedByTheImage(t *testing.T) {
	e := newIMDSEnv(t, false, cfgYAML("aws"))
	writeFile(t, filepath.Join(e.root, ImagePath), "sources:\n  aws_imds: true\n")
	c, err := Load(context.Background(), e.sources())
	if err != nil || c.Source != IMDSSourceName || c.Cluster.Name != "aws" {
		t.Fatalf("config %+v, %v", c, err)
	}
	if !imageAsksIMDS(filepath.Join(e.root, ImagePath)) {
		t.Fatal("the image's sources.aws_imds not seen")
	}
}

func TestIMDSNoUserData(t *testing.T) {
	e := newIMDSEnv(t, true, "")
	writeFile(t, filepath.Join(e.root, ImagePath), cfgYAML("image"))
	c, err := Load(context.Background(), e.sources())
	if err != nil || c.Source != "image" {
		t.Fatalf("config %+v, %v: want the image's", c, err)
	}
	if len(c.Skipped) != 1 || !strings.Contains(c.Skipped[0], "aws-imds: the instance has no user-data") {
		t.Fatalf("skipped %q", c.Skipped)
	}
}

func TestIMDSBrokenUserDataIsAnError(t *testing.T) {
	e := newIMDSEnv(t, true, "#!/bin/sh\necho hello\n")
	writeFile(t, filepath.Join(e.root, ImagePath), cfgYAML("image"))
	_, err := Load(context.Background(), e.sources())
	var ce *Error
	if !errors.As(err, &ce) || ce.Source != IMDSSourceName {
		t.Fatalf("err %v: want a config error from %s", err, IMDSSourceName)
	}
}

// TestIMDSNoAnswer: on EC2 with IMDS unreachable, the source gives up within its bounds and the next source
// applies, with the reason in Skipped.
func TestIMDSNoAnswer(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, dmiDir, "sys_vendor"), "Amazon EC2\n")
	writeFile(t, filepath.Join(root, ImagePath), cfgYAML("image"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: refused
	start := time.Now()
	c, err := Load(context.Background(), []Source{IMDS{Root: root, Endpoint: "http://" + addr}, File{SourceName: "image", Path: filepath.Join(root, ImagePath)}})
	if err != nil || c.Source != "image" || len(c.Skipped) != 1 || !strings.Contains(c.Skipped[0], "no answer") {
		t.Fatalf("config %+v, %v", c, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %s", d)
	}
	if _, err := (IMDS{Root: t.TempDir()}).Load(context.Background()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("off EC2: %v", err)
	}
}

func TestParseAWSFields(t *testing.T) {
	base := "cluster:\n  name: aws\n  key: " + goodKey + "\n"
	for _, tc := range []struct {
		extra   string
		tag     Tag
		vipAWS  bool
		imds    bool
		problem string
	}{
		{extra: "  vip: 10.0.1.100/24\n  discovery:\n    aws_tag: kiln-cluster=prod\n", tag: Tag{"kiln-cluster", "prod"}, vipAWS: true},
		{extra: "  discovery:\n    aws_tag: kiln-cluster=prod\n", tag: Tag{"kiln-cluster", "prod"}},
		{extra: "  vip: 10.0.1.100/24\n  discovery:\n    aws_tag: kiln=\n  vip_aws: false\n", tag: Tag{"kiln", ""}},
		{extra: "  vip: 10.0.1.100/24\n  vip_aws: true\n", vipAWS: true},
		{extra: "  vip_aws: true\n", problem: "cluster.vip_aws: true needs cluster.vip"},
		{extra: "  discovery:\n    aws_tag: prod\n", problem: "cluster.discovery.aws_tag: \"prod\": want KEY=VALUE"},
		{extra: "  discovery:\n    aws_tag: aws:cloudformation:stack-name=x\n", problem: "not aws:"},
		{extra: "  discovery:\n    multicast: true\n", problem: "5:5: cluster.discovery: unknown field \"multicast\""},
		{extra: "sources:\n  aws_imds: true\n", imds: true},
	} {
		c, err := Parse([]byte(base + tc.extra))
		if tc.problem != "" {
			if err == nil || !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("%q: err %v, want %q", tc.extra, err, tc.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.extra, err)
			continue
		}
		if c.Cluster.Discovery.AWSTag != tc.tag || c.Cluster.VIPAWS != tc.vipAWS || c.Sources.AWSIMDS != tc.imds {
			t.Errorf("%q: tag %v, vip_aws %v, aws_imds %v", tc.extra, c.Cluster.Discovery.AWSTag, c.Cluster.VIPAWS, c.Sources.AWSIMDS)
		}
		// The printed config reads back as the same config.
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil || back.Cluster.Discovery != c.Cluster.Discovery || back.Cluster.VIPAWS != c.Cluster.VIPAWS || back.Sources != c.Sources {
			t.Errorf("%q: marshalled\n%s\nreads back as %+v, %v", tc.extra, out, back, err)
		}
	}
}

func TestParseAWSEndpoint(t *testing.T) {
	base := "cluster:\n  name: aws\n  key: " + goodKey + "\n  vip: 10.0.1.100/24\n  discovery:\n    aws_tag: kiln-cluster=prod\n"
	for _, tc := range []struct {
		in      string
		want    string
		problem string
	}{
		{in: base + "aws:\n  endpoint: https://vpce-0a1b2c3d-abcd.ec2.eu-central-1.vpce.amazonaws.com\n",
			want: "https://vpce-0a1b2c3d-abcd.ec2.eu-central-1.vpce.amazonaws.com"},
		{in: base + "aws:\n  endpoint: https://EC2.eu-central-1.amazonaws.com/\n", want: "https://ec2.eu-central-1.amazonaws.com"},
		{in: base + "aws:\n  endpoint: http://10.77.0.1:8773\n", want: "http://10.77.0.1:8773"},
		{in: base + "aws: {}\n"},
		{in: "cluster:\n  name: aws\n  key: " + goodKey + "\n  vip: 10.0.1.100/24\n  vip_aws: true\naws:\n  endpoint: https://ec2.internal\n",
			want: "https://ec2.internal"},
		{in: base + "aws:\n  endpoint: ec2.eu-central-1.amazonaws.com\n", problem: "8:13: aws.endpoint: \"ec2.eu-central-1.amazonaws.com\": want the EC2 API's http(s):// URL"},
		{in: base + "aws:\n  endpoint: ftp://ec2.internal\n", problem: "aws.endpoint: \"ftp://ec2.internal\": want the EC2 API's http(s):// URL"},
		{in: base + "aws:\n  endpoint: https://\n", problem: "want the EC2 API's http(s):// URL"},
		{in: base + "aws:\n  endpoint: https://key:secret@ec2.internal\n", problem: "aws.endpoint: \"https://key:secret@ec2.internal\": no user:password"},
		{in: base + "aws:\n  endpoint: https://ec2.internal/api\n", problem: "want scheme and host only"},
		{in: base + "aws:\n  endpoint: https://ec2.internal/?Action=x\n", problem: "want scheme and host only"},
		{in: base + "aws:\n  endpoint: [https://ec2.internal]\n", problem: "aws.endpoint: want a string"},
		{in: base + "aws:\n  endpiont: https://ec2.internal\n", problem: "did you mean \"endpoint\""},
		{in: "cluster:\n  name: aws\n  key: " + goodKey + "\naws:\n  endpoint: https://ec2.internal\n",
			problem: "aws.endpoint: set, but nothing in this config calls EC2"},
		{in: "cluster:\n  name: aws\n  key: " + goodKey + "\n  vip: 10.0.1.100/24\n  discovery:\n    aws_tag: nope\naws:\n  endpoint: https://ec2.internal\n",
			problem: "cluster.discovery.aws_tag"},
	} {
		c, err := Parse([]byte(tc.in))
		if tc.problem != "" {
			if err == nil || !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.problem)
			}
			if err != nil && strings.Contains(tc.problem, "aws_tag") && strings.Contains(err.Error(), "aws.endpoint") {
				t.Errorf("%q: a bad aws_tag also blames the endpoint: %v", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if c.AWS.Endpoint != tc.want {
			t.Errorf("%q: endpoint %q, want %q", tc.in, c.AWS.Endpoint, tc.want)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if back, err := Parse(out); err != nil || back.AWS != c.AWS {
			t.Errorf("%q: marshalled\n%s\nreads back as %+v, %v", tc.in, out, back, err)
		}
	}
}
