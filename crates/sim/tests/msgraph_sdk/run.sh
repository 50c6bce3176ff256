#!/usr/bin/env bash
# Drives `usersync sim` with Microsoft's Graph SDK for Python (check.py).
#
#   crates/sim/tests/msgraph_sdk/run.sh [USERSYNC_BINARY] [check.py options]
#
# USERSYNC_BINARY defaults to target/debug/usersync; this script builds
# nothing (run `cargo build -p usersync` first). It keeps a venv in
# target/msgraph-sdk-venv (or $CARGO_TARGET_DIR/msgraph-sdk-venv), installs
# requirements.txt into it from PyPI the first time or when the file changes,
# and reuses it otherwise. PYTHON picks the interpreter (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/msgraph-sdk-venv"
python="${PYTHON:-python3}"

binary="${1:-$root/target/debug/usersync}"
[ $# -gt 0 ] && shift
if [ ! -x "$binary" ]; then
    echo "run.sh: no usersync binary at $binary (cargo build -p usersync)" >&2
    exit 2
fi

stamp="$venv/.requirements.sha256"
want="$( (sha256sum "$here/requirements.txt"; "$python" --version) 2>&1 | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt"
    echo "$want" >"$stamp"
fi

exec "$venv/bin/python" "$here/check.py" "$binary" "$@"
