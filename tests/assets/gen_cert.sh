#!/usr/bin/env bash
# gen_cert.sh DIR
#
# Creates a self-signed (CA-less) certificate + key for "localhost" in
#   DIR/cert.pem  (also the file clients trust: --ca / --cacert / NODE_EXTRA_CA_CERTS)
#   DIR/key.pem
# SAN: DNS:localhost, IP:127.0.0.1. EC P-256, valid 2 days.
#
# Idempotent: if both files exist, the cert is valid for at least another hour
# and the key matches it, nothing is done. Safe to call from parallel tests
# (flock on DIR/.gen_cert.lock, files are written to temp names and renamed).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
cert="$dir/cert.pem"
key="$dir/key.pem"

exec 9>"$dir/.gen_cert.lock"
flock 9 2>/dev/null || true   # flock(1) is in util-linux; best effort

valid() {
    [ -s "$cert" ] && [ -s "$key" ] || return 1
    openssl x509 -in "$cert" -noout -checkend 3600 >/dev/null 2>&1 || return 1
    local a b
    a=$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null) || return 1
    b=$(openssl pkey -in "$key" -pubout 2>/dev/null) || return 1
    [ "$a" = "$b" ]
}

if valid; then
    exit 0
fi

tmpc=$(mktemp "$dir/.cert.XXXXXX")
tmpk=$(mktemp "$dir/.key.XXXXXX")
trap 'rm -f "$tmpc" "$tmpk"' EXIT

openssl req -x509 -nodes \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$tmpk" -out "$tmpc" -days 2 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "extendedKeyUsage=serverAuth" \
    >/dev/null 2>&1

chmod 600 "$tmpk"
chmod 644 "$tmpc"
mv -f "$tmpk" "$key"
mv -f "$tmpc" "$cert"
