#!/usr/bin/env bash
# The test command of README.md: installs what the tests build guests with
# (the wasm32-wasip2 target; componentize-py and ComponentizeJS at pinned
# versions, for the Python and JavaScript SDKs), then runs every test: the
# SDKs' own unit tests, then the Rust workspace's (which build the Python
# and JavaScript examples and hostile tools and run them in the host).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1
npm ci --prefix guest-sdk/js --no-audit --no-fund --loglevel=error

python3 -m unittest discover -s guest-sdk/python/tests -t guest-sdk/python
node --test guest-sdk/js/test/
cargo test --workspace --locked
