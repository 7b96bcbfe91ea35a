#!/usr/bin/env bash
# Sets everything up and runs the gateway on its embedded defaults: the bundled example
# config against the bundled vendor simulators (no vendor account needed).
#   curl localhost:8080/chime/v1/leads     (in another terminal)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
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

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port=18441
for vendor in chime zendesk chip comm100; do
  python3 tests/fakes/vendor_sim.py --vendor "$vendor" --port "$port" \
    --cert "$run/ca/sim.pem" --key "$run/ca/sim.key" \
    --client-id demo-client --client-secret "$(cat "$run/client.secret")" \
    --redirect-uri http://localhost:9090/oauth/callback \
    --seed-token "$(cat "$run/demo.token")" \
    --api-key "agent@acme.example:$(cat "$run/demo.apikey")" > /dev/null &
  pids+=($!)
  port=$((port + 1))
done
echo "vendor simulators on https://127.0.0.1:18441-18444; gateway on http://127.0.0.1:8080" >&2
./build/gateway --config config/gateway.example.yaml --check >&2
./build/gateway --config config/gateway.example.yaml &
pids+=($!)
trap 'kill -TERM ${pids[-1]} 2>/dev/null; wait ${pids[-1]}; cleanup; exit 0' INT TERM
wait "${pids[-1]}"
