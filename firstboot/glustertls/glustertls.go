// Package glustertls makes and keeps the TLS material GlusterFS uses between members: the cluster's storage CA
// (made once by the initialiser, carried in the formation record) and each node's own key and certificate,
// issued by that CA with the node id as common name (what the volume's auth.ssl-allow names).
//
// glusterd, the bricks and the FUSE client read fixed paths: glusterfs.{pem,key,ca} in OpenSSL's directory
// (SSLDir) for TLS, and /var/lib/glusterd/secure-access to encrypt management traffic too. The image's root
// is read-only, so those three are symlinks into Dir on the state partition, where Ensure writes.
package glustertls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-project/kiln/internal/files"
)

// Paths on a node (Ensure prefixes them with its root).
const (
	// Dir holds this node's storage TLS files; the image links SSLDir/glusterfs.* here.
	Dir = "/var/lib/kiln/tls"
	// SSLDir is where glusterfs looks for its certificate, key and CA: OpenSSL's directory as Debian builds
	// it (not /etc/ssl; checked against glusterd's log, "could not load our cert at /usr/lib/ssl/glusterfs.pem").
	SSLDir = "/usr/lib/ssl"
	// CAFile is the storage CA's certificate (the only one glusterd trusts), CertFile this node's
	// certificate, KeyFile its private key (0600).
	CAFile   = Dir + "/glusterfs.ca"
	CertFile = Dir + "/glusterfs.pem"
	KeyFile  = Dir + "/glusterfs.key"
	// SecureAccessFile switches glusterd's management connections (port 24007: probes, volfile fetches,
	// brick sign-in) to TLS; glusterd and every gluster client read it when they start.
	SecureAccessFile = "/var/lib/glusterd/secure-access"
)

// CA is a storage CA as the formation record carries it: PEM certificate and PEM private key. The key is
// secret: the record travels only encrypted with the cluster key and is stored 0600.
type CA struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// notBefore is the start of every certificate's validity. Nodes boot without a trusted clock (no RTC battery,
// no NTP before the network is up), and a certificate "not yet valid" on a peer whose clock is behind would
// cut storage off; a fixed date in the past removes that failure. notAfter is RFC 5280's "no well-defined
// expiration": the CA lives as long as the cluster, and a node's certificate as long as its install (a
// reimage issues a new one).
var (
	notBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// NewCA makes a storage CA for cluster (named in its subject, so an operator can tell clusters' CAs apart).
// ECDSA P-256: OpenSSL in every glusterfs build handles it, and keys are small enough for a gossiped record.
func NewCA(cluster string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("storage CA: key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kiln storage CA " + cluster},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("storage CA: certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), Key: string(keyPEM)}, nil
}

// parse returns the CA's certificate and key, checking that they belong together.
func (ca *CA) parse() (*x509.Certificate, crypto.Signer, error) {
	cert, err := parseCert([]byte(ca.Cert))
	if err != nil {
		return nil, nil, fmt.Errorf("storage CA: %w", err)
	}
	if !cert.IsCA {
		return nil, nil, errors.New("storage CA: certificate is not a CA")
	}
	key, err := parseKey([]byte(ca.Key))
	if err != nil {
		return nil, nil, fmt.Errorf("storage CA: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, errors.New("storage CA: key does not match certificate")
	}
	return cert, key, nil
}

// Valid reports whether ca is a usable CA (certificate and matching key), for records heard from others.
func (ca *CA) Valid() error {
	_, _, err := ca.parse()
	return err
}

// Ensure makes root's TLS files match ca and nodeID: the CA certificate, a node key (kept when it exists
// and parses) and a certificate for it issued by ca with common name nodeID. It reports whether it wrote
// anything: glusterd reads them when it starts, so the caller restarts it then. Each file is replaced atomically, the key before the certificate that names it, so a crash
// leaves at worst a certificate that does not match its key, which the next call replaces.
func Ensure(root string, ca *CA, nodeID string) (changed bool, err error) {
	if nodeID == "" {
		return false, errors.New("storage TLS: no node id")
	}
	caCert, caKey, err := ca.parse()
	if err != nil {
		return false, err
	}
	path := func(p string) string { return filepath.Join(root, p) }

	key, wrote, err := ensureKey(path(KeyFile))
	if err != nil {
		return false, err
	}
	changed = wrote
	if wrote || !certFits(path(CertFile), caCert, key, nodeID) {
		certPEM, err := issue(caCert, caKey, key.Public(), nodeID)
		if err != nil {
			return changed, err
		}
		if err := files.Write(path(CertFile), certPEM, 0o644); err != nil {
			return changed, fmt.Errorf("storage TLS: %w", err)
		}
		changed = true
	}
	if cur, err := os.ReadFile(path(CAFile)); err != nil || !bytes.Equal(cur, []byte(ca.Cert)) {
		if err := files.Write(path(CAFile), []byte(ca.Cert), 0o644); err != nil {
			return changed, fmt.Errorf("storage TLS: %w", err)
		}
		changed = true
	}
	return changed, nil
}

// Enabled reports whether root's glusterd starts with management TLS (the secure-access switch is there).
func Enabled(root string) bool {
	_, err := os.Stat(filepath.Join(root, SecureAccessFile))
	return err == nil
}

// Enable writes the secure-access switch. Empty: its presence is the switch, and glusterd's default
// certificate depth (1) fits a chain of CA and node. Before glusterd starts (the image's ExecStartPre) or while
// it is stopped, so a glusterd never runs plaintext with the switch on disk, which would make Enabled lie
// until its next restart. glusterd reads the certificate files for each new connection, so they may come
// later, with the formation record: until then this glusterd talks to nobody.
func Enable(root string) error {
	if err := files.Write(filepath.Join(root, SecureAccessFile), nil, 0o644); err != nil {
		return fmt.Errorf("storage TLS: %w", err)
	}
	return nil
}

// Disable removes the secure-access switch (before glusterd starts, or while it is stopped): a member of a
// cluster formed without a storage CA speaks plaintext like its peers.
func Disable(root string) error {
	if err := os.Remove(filepath.Join(root, SecureAccessFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage TLS: %w", err)
	}
	return nil
}

// ensureKey returns the node key at path, making and writing a new one when it is missing or unreadable.
func ensureKey(path string) (crypto.Signer, bool, error) {
	if b, err := os.ReadFile(path); err == nil {
		if key, err := parseKey(b); err == nil {
			return key, false, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("storage TLS: node key: %w", err)
	}
	b, err := encodeKey(key)
	if err != nil {
		return nil, false, err
	}
	if err := files.Write(path, b, 0o600); err != nil {
		return nil, false, fmt.Errorf("storage TLS: %w", err)
	}
	return key, true, nil
}

// certFits reports whether path holds a certificate for key, named nodeID and issued by ca.
func certFits(path string, ca *x509.Certificate, key crypto.Signer, nodeID string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	cert, err := parseCert(b)
	if err != nil {
		return false
	}
	return cert.Subject.CommonName == nodeID && publicKeysEqual(cert.PublicKey, key.Public()) &&
		cert.CheckSignatureFrom(ca) == nil
}

// issue makes a certificate for pub named nodeID, for both ends of a connection: every node is a server
// (glusterd, bricks) and a client (probes, mounts, self-heal).
func issue(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, nodeID string) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("storage TLS: certificate for %s: %w", nodeID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("storage TLS: serial: %w", err)
	}
	return serial, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("storage TLS: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
