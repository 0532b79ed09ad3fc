#!/usr/bin/env bash
# A real OpenID Connect provider on loopback for the SSO tests and for trying SSO by
# hand: Dex (built by tools/dex-bin/build.sh) over TLS with a CA generated per start,
# in-memory storage, static users and the public client `jumpstarter-cli` that the
# 0.9.0 `jmp login` uses (password grant through the `local` connector, refresh
# tokens, the authorization-code flow with any http://localhost:<port>/… redirect).
# Dex is stopped by the PID this script recorded (never by name).
#
#   tools/oidc-testenv.sh start   # (re)start; prints the path of the env file on its last line
#   tools/oidc-testenv.sh stop    # stops Dex
#   tools/oidc-testenv.sh status  # exit 0 when the discovery document answers
#
# The env file (KEY=VALUE lines, mode 600) holds OIDC_ISSUER, OIDC_CA_FILE,
# OIDC_CLIENT_ID, OIDC_USERNAME, OIDC_PASSWORD (user alice) and OIDC_USERNAME_2,
# OIDC_PASSWORD_2 (user bob); passwords are random per start. The login name of the
# password grant is the user's email (Dex's password database is keyed by email):
# alice@example.com, bob@example.com. Try it with
#   . "$(tools/oidc-testenv.sh start | tail -n 1)"
#   SSL_CERT_FILE=$OIDC_CA_FILE jmp login --issuer "$OIDC_ISSUER" \
#     --username "$OIDC_USERNAME" --password "$OIDC_PASSWORD" …
#
# Access tokens are JWTs (RS256) with iss, sub, aud (= the client id), exp, iat, at_hash
# and, for scope `profile`, name and preferred_username (both the user name, e.g.
# "alice"); scope `email` adds email (alice@example.com) and email_verified, scope
# `groups` adds groups (["jumpstarter-users"]).
#
# Env:
#   DEX_BIN         the dex binary (default: built or reused by tools/dex-bin/build.sh)
#   OIDC_DIR        state directory (default: <repo>/target/oidc-testenv)
#   OIDC_TOKEN_TTL  lifetime of ID and access tokens, a Go duration (default: 1h)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
dir="${OIDC_DIR:-$repo/target/oidc-testenv}"
ttl="${OIDC_TOKEN_TTL:-1h}"

say() { printf '[oidc-testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FATAL: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A bcrypt hash (the only password hash Dex accepts; cost 10, the lowest Dex accepts at
# login) through the C library's crypt(3) (libxcrypt), with a random salt in bcrypt's
# alphabet: 21 random characters, then one whose 4 unused low bits are zero ("O").
bcrypt_hash() { # password
  local salt
  salt="$(openssl rand -base64 16 | tr '+' '.' | cut -c1-21)O"
  PW="$1" SALT="\$2b\$10\$$salt" perl -e 'my $h = crypt($ENV{PW}, $ENV{SALT}); die "crypt(3) has no bcrypt\n" unless defined $h && $h =~ /^\$2b\$/; print $h'
}

stop() {
  local f="$dir/dex.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

discovery_ok() { # issuer ca
  curl -sf --max-time 2 --cacert "$2" "$1/.well-known/openid-configuration" >/dev/null
}

status() {
  [ -f "$dir/env" ] || return 1
  # shellcheck disable=SC1091
  . "$dir/env"
  discovery_ok "$OIDC_ISSUER" "$OIDC_CA_FILE"
}

start() {
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  stop
  local dex="${DEX_BIN:-}"
  if [ -z "$dex" ]; then dex="$("$repo/tools/dex-bin/build.sh" | tail -n 1)"; fi
  [ -x "$dex" ] || die "no dex binary at $dex (build it with tools/dex-bin/build.sh)"
  mkdir -p "$dir"
  chmod 700 "$dir"
  rm -f "$dir/env"

  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=jumpstarter test OIDC CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') \
      -out server.crt 2>/dev/null
    rm -f server.csr ca.srl
  )

  local port issuer pw1 pw2 hash1 hash2
  port="$(free_port)"
  issuer="https://127.0.0.1:$port/dex"
  pw1="$(openssl rand -hex 12)"
  pw2="$(openssl rand -hex 12)"
  hash1="$(bcrypt_hash "$pw1")"
  hash2="$(bcrypt_hash "$pw2")"
  # JSON is YAML: the config is written as JSON, so no value needs YAML quoting.
  cat > "$dir/config.yaml" <<C
{
  "issuer": "$issuer",
  "storage": {"type": "memory"},
  "web": {"https": "127.0.0.1:$port", "tlsCert": "$dir/server.crt", "tlsKey": "$dir/server.key"},
  "logger": {"level": "info"},
  "expiry": {"idTokens": "$ttl"},
  "oauth2": {
    "grantTypes": ["authorization_code", "refresh_token", "password"],
    "responseTypes": ["code"],
    "skipApprovalScreen": true,
    "passwordConnector": "local"
  },
  "enablePasswordDB": true,
  "staticClients": [
    {"id": "jumpstarter-cli", "name": "Jumpstarter CLI", "public": true}
  ],
  "staticPasswords": [
    {"email": "alice@example.com", "username": "alice", "preferredUsername": "alice",
     "emailVerified": true, "userID": "1d4f7f56-0a51-4d1c-9c57-5a2f1b2c0a01",
     "groups": ["jumpstarter-users"], "hash": "$hash1"},
    {"email": "bob@example.com", "username": "bob", "preferredUsername": "bob",
     "emailVerified": true, "userID": "1d4f7f56-0a51-4d1c-9c57-5a2f1b2c0a02",
     "groups": ["jumpstarter-users"], "hash": "$hash2"}
  ]
}
C
  chmod 600 "$dir/config.yaml"

  say "starting dex on $issuer (token lifetime $ttl)"
  # Dex expands $VARS in parts of its config; nothing here needs it.
  DEX_EXPAND_ENV=false setsid "$dex" serve "$dir/config.yaml" > "$dir/dex.log" 2>&1 < /dev/null &
  echo $! > "$dir/dex.pid"
  local ok=""
  for _ in $(seq 1 100); do
    if discovery_ok "$issuer" "$dir/ca.crt"; then ok=1; break; fi
    kill -0 "$(cat "$dir/dex.pid")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ok" ] || { tail -30 "$dir/dex.log" >&2; stop; die "dex did not serve its discovery document"; }

  cat > "$dir/env" <<E
OIDC_ISSUER=$issuer
OIDC_CA_FILE=$dir/ca.crt
OIDC_CLIENT_ID=jumpstarter-cli
OIDC_USERNAME=alice@example.com
OIDC_PASSWORD=$pw1
OIDC_USERNAME_2=bob@example.com
OIDC_PASSWORD_2=$pw2
OIDC_TOKEN_TTL=$ttl
E
  chmod 600 "$dir/env"
  say "ready: $issuer (CA $dir/ca.crt, log $dir/dex.log)"
  echo "$dir/env"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
