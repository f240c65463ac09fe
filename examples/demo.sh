#!/usr/bin/env bash
# The cofferdam demo: builds the example tools and two hostile test tools,
# loads them into the embedded default host (the `cofferdam` CLI), calls them,
# and shows what the sandbox allows and stops. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
echo "== building the tools (wasm32-wasip2 components) and the cofferdam CLI"
# Without debug info, as tools ship: loading hashes the component, so size matters.
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --target wasm32-wasip2 -p hello -p grep -p notes -p weather -p booking -p monitor -p loop-forever -p fs-escape
cargo build -p cofferdam
tools=target/wasm32-wasip2/release
cofferdam=target/debug/cofferdam
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export COFFERDAM_DATA_DIR="$work/data"

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}" || echo "(exit code $?)"; }

step "what a tool says about itself" $cofferdam inspect $tools/hello.wasm
step "a typed call (inspect compiled the component; this run loads its authenticated artifact)" \
  $cofferdam run $tools/hello.wasm --input '{"name":"Ada","excitement":3}'
step "another call: every run gets a fresh sandboxed instance" \
  $cofferdam run $tools/hello.wasm --input '{"name":"Grace"}'
step "bad input is the caller's fault: exit code 1, class invalid-input" \
  $cofferdam run $tools/hello.wasm --input '{"name":""}'

mkdir -p "$work/docs" "$work/notes"
printf 'A cofferdam keeps the river out.\nWork goes on below the waterline.\n' > "$work/docs/intro.md"
step "a read-only mount: grep sees /data and nothing else" \
  $cofferdam run $tools/grep.wasm --mount "$work/docs:/data" --input '{"pattern":"waterline"}'
step "a read-write mount: a side-effecting tool saves a note" \
  $cofferdam run $tools/notes.wasm --mount "$work/notes:/notes:rw" --input '{"title":"todo","body":"inspect the dam"}'
echo "host file $work/notes/todo.md now holds: $(cat "$work/notes/todo.md")"

printf 'top secret\n' > "$work/secret.txt"
ln -s "$work/secret.txt" "$work/docs/link"
step "a hostile tool walks ../ out of its mount: denied" \
  $cofferdam run $tools/fs_escape.wasm --mount "$work/docs:/data" --input '{"op":"read","path":"/data/../secret.txt"}'
step "it follows a symlink planted to point outside: denied" \
  $cofferdam run $tools/fs_escape.wasm --mount "$work/docs:/data" --input '{"op":"read","path":"/data/link"}'
step "it writes to the read-only mount: denied" \
  $cofferdam run $tools/fs_escape.wasm --mount "$work/docs:/data" --input '{"op":"write","path":"/data/x","contents":"x"}'
# A local "weather API" (python3's static file server) for the HTTP example.
mkdir -p "$work/api"
printf '{"city":"Lisbon","summary":"sunny","temperature_c":21.5}' > "$work/api/forecast"
port=$((18000 + $$ % 1000))
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/api" >/dev/null 2>&1 &
api=$!
trap 'kill $api 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
cat > "$work/weather.toml" <<TOML
component = "$PWD/$tools/weather.wasm"
[env]
WEATHER_BASE_URL = "http://127.0.0.1:$port"
[http]
allow = ["http://127.0.0.1:$port", "http://169.254.169.254"]
allow_private = ["127.0.0.1/32"]
TOML
step "outbound HTTP to an allowlisted origin" \
  $cofferdam run --manifest "$work/weather.toml" --input '{"city":"Lisbon"}'
sed -i "s|^WEATHER_BASE_URL = .*|WEATHER_BASE_URL = \"http://169.254.169.254\"|" "$work/weather.toml"
step "the same tool pointed at the cloud metadata address: refused, no connection made" \
  $cofferdam run --manifest "$work/weather.toml" --input '{"city":"Lisbon"}' --attempts 1

step "a tool that never returns is stopped by fuel (exit code 3)" \
  $cofferdam run $tools/loop_forever.wasm --fuel 200000000
step "or by the wall-clock deadline when fuel is plentiful" \
  $cofferdam run $tools/loop_forever.wasm --fuel 100000000000 --timeout 300ms --json

echo
echo "== tools in Python and JavaScript: the same WIT world, built with the guest SDKs"
python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1
npm ci --prefix guest-sdk/js --no-audit --no-fund --loglevel=error
PYTHONPATH=guest-sdk/python/src python3 -m cofferdam_guest build examples/csv-summary/csv_summary.py -o "$work/csv_summary.wasm"
node guest-sdk/js/bin/cofferdam-js.mjs build examples/json-transform/tool.js -o "$work/json_transform.wasm"
step "a Python tool (a dataclass in, its JSON Schema from the type hints) summarizes a CSV on a read-only mount" \
  $cofferdam run "$work/csv_summary.wasm" --mount examples/csv-summary/sample:/data --input '{"path":"cities.csv"}'
step "a JavaScript tool (its schema from the SDK's builder) reshapes JSON" \
  $cofferdam run "$work/json_transform.wasm" --input '{"data":{"users":[{"first_name":"Ada"},{"first_name":"Grace"}]},"select":".users[*]","keyCase":"camel"}'
step "the Python tool is contained like any other: a path outside its mount is refused" \
  $cofferdam run "$work/csv_summary.wasm" --mount examples/csv-summary/sample:/data --input '{"path":"../../secret.txt"}'

# A webhook receiver that checks the HMAC signature of what it is sent.
export OPS_WEBHOOK_SECRET="demo-secret-$$-$RANDOM$RANDOM"
hook_port=$((19000 + $$ % 1000))
python3 examples/webhook_receiver.py "$hook_port" "$work/webhook.log" &
hook=$!
trap 'kill $api $hook 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$hook_port) 2>/dev/null && break; sleep 0.1; done
cat > "$work/cofferdam.toml" <<TOML
allowed_roots = ["$work", "$PWD/examples/csv-summary/sample"]
[notify.ops-webhook]
url = "http://127.0.0.1:$hook_port/cofferdam"
secret_env = "OPS_WEBHOOK_SECRET"
allow_private = ["127.0.0.1/32"]
[prices]
default = "0.002 USD"
[tools.hello]
component = "$PWD/$tools/hello.wasm"
[tools.notes]
component = "$PWD/$tools/notes.wasm"
[[tools.notes.mounts]]
host = "$work/notes"
guest = "/notes"
mode = "rw"
[tools.monitor]
component = "$PWD/$tools/monitor.wasm"
[tools.monitor.state]
bucket = "monitor"
scope = "owner"
[tools.csv_summary]
component = "$work/csv_summary.wasm"
[[tools.csv_summary.mounts]]
host = "$PWD/examples/csv-summary/sample"
guest = "/data"
[tools.json-transform]
component = "$work/json_transform.wasm"
[tools.booking]
component = "$PWD/$tools/booking.wasm"
[[tools.booking.mounts]]
host = "$work/ledger"
guest = "/ledger"
mode = "rw"
TOML
mkdir -p "$work/ledger"
mcp_session() {
  python3 - "$cofferdam" "$work/cofferdam.toml" <<'PY'
import json, subprocess, sys
server = subprocess.Popen([sys.argv[1], "serve", "--config", sys.argv[2]],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def rpc(id, method, params=None):
    message = {"jsonrpc": "2.0", "method": method}
    if id is not None: message["id"] = id
    if params is not None: message["params"] = params
    server.stdin.write(json.dumps(message) + "\n"); server.stdin.flush()
    return json.loads(server.stdout.readline())["result"] if id is not None else None
rpc(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                      "clientInfo": {"name": "demo", "version": "1"}})
rpc(None, "notifications/initialized")
print("tools/list ->", [t["name"] for t in rpc(2, "tools/list")["tools"]])
call = {"name": "notes", "arguments": {"title": "mcp", "body": "saved over MCP"},
        "_meta": {"idempotencyKey": "demo-1"}}
for id in (3, 4):
    r = rpc(id, "tools/call", call)
    print("tools/call notes ->", r["content"][0]["text"], "| replayed:", r["_meta"]["replayed"])
r = rpc(6, "tools/call", {"name": "csv_summary", "arguments": {"path": "cities.csv"}})
print("tools/call csv_summary (Python) ->", r["structuredContent"]["rows"], "rows")
r = rpc(7, "tools/call", {"name": "json-transform", "arguments": {"data": {"a": [1, 2]}, "select": ".a[1]"}})
print("tools/call json-transform (JavaScript) ->", r["content"][0]["text"])
r = rpc(5, "tools/call", {"name": "hello", "arguments": {"name": ""}})
print("tools/call hello with bad input -> isError:", r["isError"], "| class:", r["structuredContent"]["error"]["class"])
server.stdin.close(); server.wait()
PY
}
step "an MCP client (JSON-RPC over stdio) lists the tools and makes one keyed call twice" mcp_session
echo "host file $work/notes/mcp.md holds the note once: $(cat "$work/notes/mcp.md")"

step "a durable task (examples/trip/trip.toml): reserve a flight, reserve a hotel, charge the card" \
  $cofferdam tasks run examples/trip/trip.toml --config "$work/cofferdam.toml"
step "run it again: finished steps replay from the journal, nothing is booked twice" \
  $cofferdam tasks run examples/trip/trip.toml --config "$work/cofferdam.toml"
step "a declined card: the charge fails for good, so the hotel and then the flight are cancelled" \
  $cofferdam tasks run examples/trip/trip-declined.toml --config "$work/cofferdam.toml"
echo "the booking ledger ($work/ledger/ledger.jsonl):"
cat "$work/ledger/ledger.jsonl"
step "what needs a human (an unknown outcome would be listed here)" $cofferdam escalations list

# Schedules run on the calendar; a simulated clock (--clock-file) spares the demo a wait until 09:00.
echo "2026-11-26T07:59:00Z" > "$work/now"
step "a daily background run at 09:00 Berlin time, with its own budget" \
  $cofferdam --clock-file "$work/now" schedules create morning-digest --config "$work/cofferdam.toml" \
    --owner ops --cron "0 9 * * *" --zone Europe/Berlin --tool hello --input '{"name":"morning"}' --budget 500
step "a price monitor at the same hour: it remembers what it saw, and a webhook hears each run" \
  $cofferdam --clock-file "$work/now" schedules create price-watch --config "$work/cofferdam.toml" \
    --owner ops --cron "0 9 * * *" --zone Europe/Berlin --tool monitor --notify ops-webhook \
    --input '{"prices":{"widget":1200,"gadget":800}}'
step "every five minutes is refused: background runs are at least 60 minutes apart" \
  $cofferdam --clock-file "$work/now" schedules create chatty --config "$work/cofferdam.toml" \
    --owner ops --cron "*/5 * * * *" --tool hello
serve_until_the_slot_runs() {
  $cofferdam --clock-file "$work/now" serve --config "$work/cofferdam.toml" --http 127.0.0.1:0 --tick-every 100ms &
  local server=$!
  echo "clock moves to 09:00:01 Berlin time"; echo "2026-11-26T08:00:01Z" > "$work/now"
  for _ in $(seq 100); do
    $cofferdam schedules history morning-digest --json | grep -q '"succeeded"' &&
      $cofferdam schedules history price-watch --json | grep -q '"succeeded"' && break
    sleep 0.1
  done
  echo "clock moves to the next day, 09:00:01 Berlin time"; echo "2026-11-27T08:00:01Z" > "$work/now"
  for _ in $(seq 100); do
    [ "$($cofferdam schedules history price-watch --json | grep -c '"succeeded"')" -ge 2 ] &&
      [ "$(cat "$work/webhook.log" 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  kill -TERM $server; wait $server
}
step "cofferdam serve runs the scheduler; each day's 09:00 slot fires once" serve_until_the_slot_runs
step "its history, with the cost of each run" $cofferdam --clock-file "$work/now" schedules history morning-digest
step "the monitor ran twice and remembered between runs (its counter and what it saw)" \
  $cofferdam state list monitor --scope owner:ops
step "  runs" $cofferdam state get monitor runs --scope owner:ops
step "  prices" $cofferdam state get monitor prices --scope owner:ops
step "the webhook received each run's result, signed (HMAC checked by the receiver)" cat "$work/webhook.log"
step "the notifications as the host recorded them" $cofferdam schedules notifications
echo
echo "== done: every call above ran in a fresh sandboxed instance"
