package testenv

// GlusterTLSLinks is a shell snippet for a private mount namespace in which a real glusterd runs as on a node:
// it hides the host's OpenSSL directory behind a tmpfs holding Debian's links (configuration and system CAs)
// and the image's links from glusterfs' fixed TLS paths into /var/lib/kiln/tls (overlays/base/usr/lib/ssl,
// package glustertls), so the agent's certificates are the ones glusterd loads.
const GlusterTLSLinks = `mount -t tmpfs kiln-ssl /usr/lib/ssl
ln -s /etc/ssl/openssl.cnf /usr/lib/ssl/openssl.cnf
ln -s /etc/ssl/certs /usr/lib/ssl/certs
ln -s /etc/ssl/private /usr/lib/ssl/private
ln -s /etc/ssl/certs/ca-certificates.crt /usr/lib/ssl/cert.pem
for f in pem key ca; do ln -s /var/lib/kiln/tls/glusterfs.$f /usr/lib/ssl/glusterfs.$f; done
`
