package glustertls

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCert(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A node's certificate chains to the storage CA for both server and client use, names the node, and Ensure
// writes nothing a second time; the key is private.
func TestEnsureIssuesOnceAndChains(t *testing.T) {
	ca, err := NewCA("lab")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	changed, err := Ensure(root, ca, "kiln-0a1b2c3d")
	if err != nil || !changed {
		t.Fatalf("first Ensure = %v, %v; want a change", changed, err)
	}
	if Enabled(root) {
		t.Fatal("Ensure wrote the secure-access switch; only Enable may")
	}
	if err := Enable(root); err != nil || !Enabled(root) {
		t.Fatalf("Enable: %v, enabled %v", err, Enabled(root))
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(ca.Cert))
	cert := readCert(t, filepath.Join(root, CertFile))
	if cert.Subject.CommonName != "kiln-0a1b2c3d" {
		t.Fatalf("common name %q", cert.Subject.CommonName)
	}
	for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
			t.Fatalf("certificate does not verify for %v: %v", use, err)
		}
	}
	fi, err := os.Stat(filepath.Join(root, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(root, CAFile)); string(b) != ca.Cert {
		t.Fatal("CA file differs from the CA")
	}

	changed, err = Ensure(root, ca, "kiln-0a1b2c3d")
	if err != nil || changed {
		t.Fatalf("second Ensure = %v, %v; want no change", changed, err)
	}
}

// What Ensure replaces: a certificate for another name or from another CA, and a key that no longer parses
// (then the certificate goes with it).
func TestEnsureReplaces(t *testing.T) {
	ca, _ := NewCA("lab")
	other, _ := NewCA("other")
	root := t.TempDir()
	if _, err := Ensure(root, ca, "a"); err != nil {
		t.Fatal(err)
	}
	serial := readCert(t, filepath.Join(root, CertFile)).SerialNumber

	if changed, err := Ensure(root, ca, "b"); err != nil || !changed {
		t.Fatalf("renamed node: Ensure = %v, %v", changed, err)
	}
	if cn := readCert(t, filepath.Join(root, CertFile)).Subject.CommonName; cn != "b" {
		t.Fatalf("common name %q after rename", cn)
	}

	if changed, err := Ensure(root, other, "b"); err != nil || !changed {
		t.Fatalf("new CA: Ensure = %v, %v", changed, err)
	}
	if err := readCert(t, filepath.Join(root, CertFile)).CheckSignatureFrom(readCert(t, filepath.Join(root, CAFile))); err != nil {
		t.Fatalf("after a CA change the certificate is not from the new CA: %v", err)
	}

	if err := os.WriteFile(filepath.Join(root, KeyFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := Ensure(root, other, "b"); err != nil || !changed {
		t.Fatalf("broken key: Ensure = %v, %v", changed, err)
	}
	b, _ := os.ReadFile(filepath.Join(root, KeyFile))
	key, err := parseKey(b)
	if err != nil {
		t.Fatalf("key not replaced: %v", err)
	}
	cert := readCert(t, filepath.Join(root, CertFile))
	if !publicKeysEqual(cert.PublicKey, key.Public()) || cert.SerialNumber.Cmp(serial) == 0 {
		t.Fatal("certificate not reissued for the new key")
	}
}

// A record's CA is checked before use: a key from another CA, a leaf posing as CA, and garbage are refused,
// and Ensure writes nothing for them.
func TestCAValid(t *testing.T) {
	a, _ := NewCA("a")
	b, _ := NewCA("b")
	if err := a.Valid(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if _, err := Ensure(root, a, "n1"); err != nil {
		t.Fatal(err)
	}
	leaf, _ := os.ReadFile(filepath.Join(root, CertFile))
	leafKey, _ := os.ReadFile(filepath.Join(root, KeyFile))
	for name, ca := range map[string]*CA{
		"mismatched key": {Cert: a.Cert, Key: b.Key},
		"leaf as CA":     {Cert: string(leaf), Key: string(leafKey)},
		"garbage":        {Cert: "x", Key: "y"},
	} {
		if err := ca.Valid(); err == nil {
			t.Errorf("%s: Valid accepted it", name)
		}
		empty := t.TempDir()
		if _, err := Ensure(empty, ca, "n1"); err == nil {
			t.Errorf("%s: Ensure accepted it", name)
		}
		if entries, _ := os.ReadDir(empty); len(entries) != 0 {
			t.Errorf("%s: Ensure wrote %d entries", name, len(entries))
		}
	}
}
