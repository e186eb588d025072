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

// GlusterWithoutGeoRep is a shell snippet for a private mount namespace (after its own /run is mounted) that
// hides glusterfs' geo-replication helper gsyncd, as the node image does (images/node.yaml, exclude). Where
// gsyncd exists, glusterd runs it (a Python start-up) two dozen times at every start and the gluster CLI once
// per call, a tenth of a second of CPU each on this host: tests and benchmarks would pay for, and measure,
// work a node never does. The helper's directory becomes a tmpfs of links to everything else in it.
const GlusterWithoutGeoRep = `for lib in /usr/lib/*/glusterfs; do
  [ -e "$lib/gsyncd" ] || continue
  mkdir -p /run/kiln-glusterfs-lib
  mount --bind "$lib" /run/kiln-glusterfs-lib
  mount -t tmpfs kiln-glusterfs-lib "$lib"
  for e in /run/kiln-glusterfs-lib/*; do [ "${e##*/}" = gsyncd ] || ln -s "$e" "$lib/"; done
done
`
