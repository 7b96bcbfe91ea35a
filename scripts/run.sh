#!/usr/bin/env bash
# Sets everything up and runs the gateway on its embedded defaults: the bundled example
# config against the bundled vendor simulators (no vendor account needed). README.md's
# "Trying it" walks through what to do and what the log shows.
#   curl localhost:8080/chime/v1/leads     (in another terminal)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --run   # only what building and running need
bash scripts/build.sh build

run=.run
mkdir -p "$run/ca" "$run/data"
chmod 700 "$run"
# Demo material, made once: a CA and a certificate for the simulators, the store key,
# the admin token and the demo credentials the simulators accept.
if [ ! -f "$run/ca/sim.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$run/ca/ca.key" -out "$run/ca/ca.pem" -subj "/CN=gateway demo CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$run/ca/sim.key" -out "$run/ca/sim.csr" -subj "/CN=vendor simulator" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$run/ca/sim.ext"
  openssl x509 -req -in "$run/ca/sim.csr" -CA "$run/ca/ca.pem" -CAkey "$run/ca/ca.key" \
    -CAcreateserial -days 3650 -out "$run/ca/sim.pem" -extfile "$run/ca/sim.ext" 2>/dev/null
fi
umask 077
[ -f "$run/store.key" ] || openssl rand -base64 32 > "$run/store.key"
[ -f "$run/admin.token" ] || openssl rand -hex 24 > "$run/admin.token"
[ -f "$run/client.secret" ] || openssl rand -hex 16 > "$run/client.secret"
[ -f "$run/demo.token" ] || echo "demo-$(openssl rand -hex 12)" > "$run/demo.token"
[ -f "$run/demo.apikey" ] || echo "key-$(openssl rand -hex 12)" > "$run/demo.apikey"
# The simulators forget every token they issued when they stop, so each run starts from a
# new seed refresh token and an empty demo store (the gateway would otherwise hold a
# refresh token the new simulator never issued).
echo "rt-seed-$(openssl rand -hex 12)" > "$run/demo.refresh"
rm -f "$run/data/tokens.db"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port=18441
for vendor in chime zendesk chip comm100; do
  extra=()
  # Chime's tokens live 60 s and each refresh hands out a new single-use refresh token.
  [ "$vendor" = chime ] && extra=(--token-lifetime 60 --rotate-refresh
                                  --seed-refresh "$(cat "$run/demo.refresh")")
  python3 tests/fakes/vendor_sim.py --vendor "$vendor" --port "$port" \
    --cert "$run/ca/sim.pem" --key "$run/ca/sim.key" \
    --client-id demo-client --client-secret "$(cat "$run/client.secret")" \
    --redirect-uri http://localhost:9090/oauth/callback \
    --seed-token "$(cat "$run/demo.token")" \
    --api-key "agent@acme.example:$(cat "$run/demo.apikey")" "${extra[@]}" > /dev/null &
  pids+=($!)
  port=$((port + 1))
done
# The gateway's first token request goes out at start: the simulators must be listening.
for p in 18441 18442 18443 18444; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2> /dev/null && break
    sleep 0.1
  done
done
echo "vendor simulators on https://127.0.0.1:18441-18444; gateway on http://127.0.0.1:8080" >&2
./build/gateway --config config/gateway.example.yaml --check >&2
./build/gateway --config config/gateway.example.yaml &
pids+=($!)
# An onboarding link for a new Zendesk Chat connection, printed once the admin API answers.
(
  for _ in $(seq 100); do
    curl -sf localhost:9090/healthz > /dev/null && break
    sleep 0.1
  done
  link=$(curl -sf -H "Authorization: Bearer $(cat "$run/admin.token")" \
    -X POST localhost:9090/admin/connections/acme-chat-new/authorize \
    -d '{"integration":"zendesk","vars":{"subdomain":"acme"}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["start_url"])') || exit 0
  printf '\n  Onboarding: open %s in a browser (the simulator\x27s page uses the demo CA in\n  .run/ca/ca.pem: accept its warning), press Allow, and see "connected".\n\n' "$link" >&2
) &
trap 'kill -TERM ${pids[-1]} 2>/dev/null; wait ${pids[-1]}; cleanup; exit 0' INT TERM
wait "${pids[-1]}"
