package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func testCAPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestIngress(t *testing.T) {
	base := "cluster:\n  name: a\n  key: " + goodKey + "\n"
	c, err := Parse([]byte(base))
	if err != nil || c.Ingress != nil {
		t.Fatalf("no section: ingress %+v, %v; want nil", c.Ingress, err)
	}
	c, err = Parse([]byte(base + "ingress:\n  email: ops@example.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Ingress == nil || c.Ingress.Email != "ops@example.org" || c.Ingress.CA != LetsEncrypt || c.Ingress.CABundle != "" {
		t.Fatalf("ingress = %+v", c.Ingress)
	}

	ca := testCAPEM(t)
	c, err = Parse([]byte(base + "ingress:\n  email: ops@lab.test\n  ca: https://10.77.0.1:14000/dir\n  ca_bundle: |\n" + indent(ca, "    ")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Ingress.CA != "https://10.77.0.1:14000/dir" || !strings.Contains(c.Ingress.CABundle, "BEGIN CERTIFICATE") {
		t.Fatalf("ingress = %+v", c.Ingress)
	}
	if b, err := c.Ingress.Bundle(); err != nil || string(b) != c.Ingress.CABundle {
		t.Errorf("Bundle() = %q, %v", b, err)
	}
	// Marshal keeps the section, inline PEM included: `kiln cluster rotate-key` and Validate round-trip it.
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("marshalled config does not parse: %v\n%s", err, out)
	}
	if *back.Ingress != *c.Ingress {
		t.Errorf("round trip: %+v, want %+v\n%s", back.Ingress, c.Ingress, out)
	}

	// A bundle given as a path is read when asked for.
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, []byte(ca), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Parse([]byte(base + "ingress:\n  email: ops@example.org\n  ca_bundle: " + path + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.Ingress.Bundle(); err != nil || string(b) != ca {
		t.Errorf("Bundle() from %s = %q, %v", path, b, err)
	}
}

func TestIngressErrors(t *testing.T) {
	base := "cluster:\n  name: a\n  key: " + goodKey + "\n"
	for _, tc := range []struct{ in, want string }{
		{"ingress:\n  ca: https://ca.example/dir\n", "ingress.email: required"},
		{"ingress:\n  email: not-an-address\n", `ingress.email: "not-an-address" is not an e-mail address`},
		{"ingress:\n  email: Ops <ops@example.org>\n", `ingress.email: "Ops <ops@example.org>" is not an e-mail address`},
		{"ingress:\n  email: a@b.org, c@d.org\n", "ingress.email: "},
		{"ingress:\n  email: ops@\n", "ingress.email: "},
		{"ingress:\n  email: ops@example.org\n  ca: http://ca.example/dir\n", `ingress.ca: "http://ca.example/dir": want the ACME directory's https:// URL`},
		{"ingress:\n  email: ops@example.org\n  ca_bundle: ca.pem\n", `ingress.ca_bundle: "ca.pem": want PEM certificates`},
		{"ingress:\n  email: ops@example.org\n  ca_bundle: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"\n", "ingress.ca_bundle: "},
		{"ingress:\n  email: ops@example.org\n  acme: x\n", "6:3: ingress: unknown field \"acme\""},
	} {
		_, err := Parse([]byte(base + tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(prefix + line)
	}
	return b.String()
}

// TestSections: Sections lists exactly the file's top-level keys.
func TestSections(t *testing.T) {
	var tags []string
	ft := reflect.TypeFor[file]()
	for i := range ft.NumField() {
		tag, _, _ := strings.Cut(ft.Field(i).Tag.Get("yaml"), ",")
		tags = append(tags, tag)
	}
	slices.Sort(tags)
	want := slices.Clone(Sections)
	slices.Sort(want)
	if !slices.Equal(tags, want) {
		t.Errorf("Sections %v, the file's keys %v", Sections, tags)
	}
}
