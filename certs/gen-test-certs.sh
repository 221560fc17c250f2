#!/usr/bin/env bash
# Generates TEST-ONLY certificates and keys for todoapp into DIR (default
# ./test-certs). Never use them outside tests: the private keys are meant to
# be thrown around (VM tests put them in the Nix store).
#
#   certs/gen-test-certs.sh DIR
#
# Files:
#   ca.crt, ca.key                    public CA: signs the gateway's certificate
#   gateway.crt, gateway.key          SANs gateway, localhost, 127.0.0.1, ::1
#   internal-ca.crt, internal-ca.key  internal CA: backends and gateway client
#   user.crt, user.key                SANs user, backend, localhost, 127.0.0.1, ::1
#   todo.crt, todo.key                SANs todo, backend, localhost, 127.0.0.1, ::1
#   gateway-client.crt, .key          client certificate of the gateway
#   jwt-ed25519.key, jwt-ed25519.pub  Ed25519 signing key (PKCS#8 / SPKI PEM)
#
# EXTRA_SANS (e.g. "DNS:db,IP:192.168.1.2") is added to every server
# certificate. Needs only bash and openssl (>= 1.1.1).
set -euo pipefail

out=${1:-test-certs}
days=${DAYS:-3650}
extra=${EXTRA_SANS:+,$EXTRA_SANS}
mkdir -p "$out"
cd "$out"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

ca() { # name common-name
  key "$1"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
}

leaf() { # name ca common-name extendedKeyUsage [subjectAltName]
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$3"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$4"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [[ -z "${5:-}" ]] || echo "subjectAltName=$5"
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "todoapp test public CA"
ca internal-ca "todoapp test internal CA"
leaf gateway ca gateway serverAuth "DNS:gateway,DNS:localhost,IP:127.0.0.1,IP:::1$extra"
leaf user internal-ca user serverAuth "DNS:user,DNS:backend,DNS:localhost,IP:127.0.0.1,IP:::1$extra"
leaf todo internal-ca todo serverAuth "DNS:todo,DNS:backend,DNS:localhost,IP:127.0.0.1,IP:::1$extra"
leaf gateway-client internal-ca gateway clientAuth
openssl genpkey -algorithm ED25519 -out jwt-ed25519.key
openssl pkey -in jwt-ed25519.key -pubout -out jwt-ed25519.pub

# Certificates are public; keys stay private to whoever runs this.
chmod 0644 ./*.crt jwt-ed25519.pub
for c in gateway user todo gateway-client; do
  openssl verify -CAfile "$([[ $c == gateway ]] && echo ca || echo internal-ca).crt" "$c.crt" >/dev/null
done
echo "test certificates written to $(pwd)"
