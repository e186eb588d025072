package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// LetsEncrypt is Let's Encrypt's production ACME directory, ingress.ca's default.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Ingress is the ingress section: the cluster answers HTTP and HTTPS on every node (and the VIP) through
// Traefik, with certificates from an ACME CA (docs/ingress.md).
type Ingress struct {
	// Email is the ACME account's contact address; the CA writes to it about expiring certificates.
	Email string
	// CA is the ACME directory URL; default LetsEncrypt. A private CA (step-ca, Pebble) also needs CABundle.
	CA string
	// CABundle is the PEM of the CAs that sign the ACME directory's TLS certificate, for a private CA: inline
	// PEM, or an absolute path on the node (an overlay file) read when the stack is deployed. Empty: the
	// image's CA bundle only.
	CABundle string
}

// fileIngress is the ingress section on disk.
type fileIngress struct {
	Email    string `yaml:"email"`
	CA       string `yaml:"ca"`
	CABundle string `yaml:"ca_bundle"`
}

// validate returns the section's Ingress, nil when the file has none; every problem goes to bad.
func (f fileIngress) validate(bad func(field, format string, args ...any)) *Ingress {
	if f == (fileIngress{}) {
		return nil
	}
	in := &Ingress{Email: f.Email, CA: f.CA, CABundle: f.CABundle}
	if err := checkEmail(f.Email); err != nil {
		bad("ingress.email", "%v", err)
	}
	if in.CA == "" {
		in.CA = LetsEncrypt
	} else if u, err := url.Parse(in.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("ingress.ca", "%q: want the ACME directory's https:// URL, like %s", in.CA, LetsEncrypt)
	}
	switch b := f.CABundle; {
	case b == "":
	case strings.Contains(b, "-----BEGIN"):
		if _, err := parseBundle([]byte(b)); err != nil {
			bad("ingress.ca_bundle", "%v", err)
		}
	case !filepath.IsAbs(b) || strings.ContainsAny(b, "\n"):
		bad("ingress.ca_bundle", "%q: want PEM certificates (-----BEGIN CERTIFICATE-----…) or an absolute path on the node", b)
	}
	return in
}

// checkEmail accepts a bare address (local@domain): the CA refuses a display name or several addresses, and
// does so only when the account is registered, minutes after formation.
func checkEmail(s string) error {
	if s == "" {
		return fmt.Errorf("required: the ACME account's contact address")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return fmt.Errorf("%q is not an e-mail address (want local@domain, nothing else)", s)
	}
	local, domain, _ := strings.Cut(s, "@")
	if local == "" || domain == "" || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return fmt.Errorf("%q is not an e-mail address (want local@domain, nothing else)", s)
	}
	return nil
}

// Bundle returns the CA bundle's PEM (read from the node when ca_bundle is a path), nil when there is none.
func (in *Ingress) Bundle() ([]byte, error) {
	if in == nil || in.CABundle == "" {
		return nil, nil
	}
	data := []byte(in.CABundle)
	if !strings.Contains(in.CABundle, "-----BEGIN") {
		var err error
		if data, err = os.ReadFile(in.CABundle); err != nil {
			return nil, fmt.Errorf("ingress.ca_bundle: %w", err)
		}
	}
	if _, err := parseBundle(data); err != nil {
		return nil, fmt.Errorf("ingress.ca_bundle %s: %w", in.CABundle, err)
	}
	return data, nil
}

// parseBundle checks that data holds at least one PEM certificate and nothing else.
func parseBundle(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("not PEM after certificate %d", len(certs))
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %s, want CERTIFICATE", len(certs)+1, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
		rest = bytes.TrimSpace(rest)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	return certs, nil
}

// marshal writes the section in the file format; nothing for nil.
func (in *Ingress) marshal(b *bytes.Buffer, q func(any) string) {
	if in == nil {
		return
	}
	fmt.Fprintf(b, "ingress:  # Traefik on 80/443 with ACME certificates (docs/ingress.md)\n")
	fmt.Fprintf(b, "  email: %s  # the ACME account's contact\n", q(in.Email))
	if in.CA != "" && in.CA != LetsEncrypt {
		fmt.Fprintf(b, "  ca: %s  # ACME directory\n", q(in.CA))
	}
	if in.CABundle != "" {
		// A comment after a block scalar would become part of the PEM: it goes on a line of its own.
		fmt.Fprintf(b, "  # ca_bundle: the private CA's roots, PEM or a path on the node\n")
		fmt.Fprintf(b, "  ca_bundle: %s\n", q(in.CABundle))
	}
}
