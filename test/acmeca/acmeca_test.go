package acmeca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/config"
)

// TestIngressSection: the section the proofs give nodes survives the config file's round trip, bundle
// included, and the bundle is the CA of the listener certificate New wrote.
func TestIngressSection(t *testing.T) {
	dir := t.TempDir()
	host := netip.MustParseAddr("10.77.0.1")
	ca, err := New(dir, host)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.New("proof")
	if err != nil {
		t.Fatal(err)
	}
	c.Cluster.Size = 3
	c.Ingress = ca.Ingress()
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if back.Ingress == nil || back.Ingress.CA != "https://10.77.0.1:14000/dir" || back.Ingress.Email != "ops@kiln.test" {
		t.Fatalf("ingress after the round trip: %+v", back.Ingress)
	}
	bundle, err := back.Ingress.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatalf("bundle %q", bundle)
	}
	leafPEM, err := os.ReadFile(filepath.Join(dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(leafPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host.String()}); err != nil {
		t.Errorf("listener certificate against the bundle: %v", err)
	}
}

// TestVerifyAndStore: VerifyChain accepts a chain to the given root for the name only; StoredCert finds a
// domain's certificate in Traefik's acme.json layout.
func TestVerifyAndStore(t *testing.T) {
	root, rootKey := cert(t, nil, nil, "root", true)
	inter, interKey := cert(t, root, rootKey, "intermediate", true)
	leaf, _ := cert(t, inter, interKey, "app.test", false)
	other, _ := cert(t, nil, nil, "TRAEFIK DEFAULT CERT", false)

	if err := (TLSAnswer{Chain: []*x509.Certificate{leaf, inter}}).VerifyChain(root, "app.test"); err != nil {
		t.Errorf("valid chain: %v", err)
	}
	if (TLSAnswer{Chain: []*x509.Certificate{leaf, inter}}).VerifyChain(root, "other.test") == nil {
		t.Error("chain accepted for another name")
	}
	if (TLSAnswer{Chain: []*x509.Certificate{other}}).VerifyChain(root, "app.test") == nil {
		t.Error("self-signed certificate accepted")
	}
	if (TLSAnswer{}).VerifyChain(root, "app.test") == nil {
		t.Error("no certificate accepted")
	}

	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw})...)
	store, _ := json.Marshal(map[string]any{"kiln": map[string]any{
		"Account":      map[string]any{"Email": "ops@kiln.test"},
		"Certificates": []map[string]any{{"domain": map[string]any{"main": "app.test"}, "certificate": chain, "key": []byte("k"), "Store": "default"}},
	}})
	got, err := StoredCert(store, "kiln", "app.test")
	if err != nil || SerialHex(got) != SerialHex(leaf) {
		t.Errorf("StoredCert = %s, %v; want %s", Describe(got), err, Describe(leaf))
	}
	if _, err := StoredCert(store, "kiln", "blocked.test"); err == nil {
		t.Error("a certificate found for a domain acme.json does not hold")
	}
}

func cert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.DNSNames = []string{cn}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, signKey := parent, parentKey
	if parent == nil {
		signer, signKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
