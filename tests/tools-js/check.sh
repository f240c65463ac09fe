#!/usr/bin/env bash
# Builds the JavaScript test tools and the json-transform example with
# cofferdam-js, then runs each hostile case through the cofferdam CLI and
# checks the exact error class. Hermetic: a temp data dir, and a loopback
# HTTP server it starts itself.
#
#   npm ci --prefix guest-sdk/js
#   tests/tools-js/check.sh [path/to/cofferdam]   # default: target/debug/cofferdam
set -euo pipefail
cd "$(dirname "$0")/../.."
cofferdam=$(realpath "${1:-target/debug/cofferdam}")
work=$(mktemp -d)
trap 'kill ${server:-} 2>/dev/null || true; rm -rf "$work"' EXIT
export COFFERDAM_DATA_DIR="$work/data"

for tool in spin escape membomb raiser fetch tally; do
  node guest-sdk/js/bin/cofferdam-js.mjs build "tests/tools-js/$tool.js" -o "$work/$tool.wasm"
done
node guest-sdk/js/bin/cofferdam-js.mjs build examples/json-transform/tool.js -o "$work/json-transform.wasm"

failures=0
# expect NAME CLASS ARGS...: runs `cofferdam run ARGS --json` and checks the
# outcome's class (`ok` for success).
expect() {
  local name=$1 want=$2
  shift 2
  local out got
  out=$("$cofferdam" run "$@" --json 2>/dev/null || true)
  got=$(printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("ok" if d.get("ok") else d["error"]["class"])' 2>/dev/null || echo "unparsable")
  if [[ $got == "$want" ]]; then
    echo "ok   $name: $got"
  else
    echo "FAIL $name: want $want, got $got"
    printf '%s\n' "$out" | head -20
    failures=$((failures + 1))
  fi
}

t=$work
expect "json-transform selects" ok "$t/json-transform.wasm" \
  --input '{"data":{"users":[{"first_name":"Ada"}]},"select":".users[*]","keyCase":"camel"}'
expect "json-transform: input not matching the schema" invalid-input "$t/json-transform.wasm" --input '{"datum":1}'

expect "spin stopped by fuel" out-of-fuel "$t/spin.wasm" --fuel 200000000
expect "spin stopped by the deadline" deadline-exceeded "$t/spin.wasm" --fuel 100000000000 --timeout 1s
expect "spin asleep in the host stopped by the deadline" deadline-exceeded "$t/spin.wasm" \
  --input '{"mode":"sleep"}' --timeout 500ms --attempts 1
expect "membomb stopped at the memory cap" memory-limit "$t/membomb.wasm"
expect "membomb stopped at a lower cap" memory-limit "$t/membomb.wasm" --memory-mib 32
expect "the host still serves calls" ok "$t/raiser.wasm" --input '{"kind":"ok"}'

for case in invalid-input:invalid-input transient:transient rate-limited:rate-limited permanent:permanent \
  plain-error:permanent type-error:permanent string:permanent object:permanent async-reject:transient; do
  expect "raiser ${case%%:*}" "${case##*:}" "$t/raiser.wasm" --attempts 1 --input "{\"kind\":\"${case%%:*}\"}"
done

mkdir -p "$work/mount"
printf 'export const inside = 1;\n' > "$work/mount/inside.js"
printf 'export const secret = 1;\n' > "$work/secret.js"
# No filesystem API: fetch('file://') is refused and returns; the module
# loader's read at run time hits ComponentizeJS's trapping filesystem stub.
reached=$("$cofferdam" run "$t/escape.wasm" --mount "$work/mount:/data" \
  --input '{"paths":["/etc/passwd","/data/../secret.js","/data/inside.js"],"vectors":["fetch"]}' 2>/dev/null |
  python3 -c 'import json,sys; print(sum(r["fetch"]["reached"] for r in json.load(sys.stdin)["results"]))')
if [[ $reached == 0 ]]; then echo "ok   escape: fetch file:// reaches nothing"; else echo "FAIL escape: fetch file:// reached $reached file(s)"; failures=$((failures + 1)); fi
expect "escape: runtime import outside the mount traps" trap "$t/escape.wasm" --mount "$work/mount:/data" \
  --input '{"paths":["/data/../secret.js"],"vectors":["import"]}'
expect "escape: runtime import inside the mount traps too" trap "$t/escape.wasm" --mount "$work/mount:/data" \
  --input '{"paths":["/data/inside.js"],"vectors":["import"]}'

port=$((20000 + $$ % 1000))
mkdir -p "$work/www/status"
printf '{"hello":"world"}' > "$work/www/hello"
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
server=$!
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
cat > "$work/fetch.toml" <<TOML
component = "$t/fetch.wasm"
[http]
allow = ["http://127.0.0.1:$port"]
allow_private = ["127.0.0.1/32"]
TOML
expect "fetch an allowed origin" ok --manifest "$work/fetch.toml" --input "{\"url\":\"http://127.0.0.1:$port/hello\"}"
expect "fetch: 404 is invalid-input" invalid-input --manifest "$work/fetch.toml" --attempts 1 \
  --input "{\"url\":\"http://127.0.0.1:$port/missing\"}"
# StarlingMonkey reports a refusal like any network error: transient.
expect "fetch an origin outside the allowlist: refused" transient --manifest "$work/fetch.toml" --attempts 1 \
  --input '{"url":"http://169.254.169.254/latest"}'
expect "fetch a file:// URL" permanent --manifest "$work/fetch.toml" --attempts 1 --input '{"url":"file:///etc/passwd"}'

cat > "$work/tally.toml" <<TOML
component = "$t/tally.wasm"
[state]
bucket = "tally"
TOML
expect "state: first write" ok --manifest "$work/tally.toml" --input '{"item":"a"}'
expect "state: a failed attempt's writes are dropped" transient --manifest "$work/tally.toml" --attempts 1 \
  --input '{"item":"b","failAfterWrite":true}'
runs=$("$cofferdam" run --manifest "$work/tally.toml" --input '{"item":"c"}' 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"])')
if [[ $runs == 2 ]]; then echo "ok   state: counter is 2 after a, (failed b), c"; else echo "FAIL state: counter is $runs, want 2"; failures=$((failures + 1)); fi
expect "state without a grant" permanent "$t/tally.wasm" --input '{"item":"x"}'

if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all JS tool checks passed"
