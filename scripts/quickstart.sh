#!/usr/bin/env bash
# The main job on a fresh machine: set up, train quick models if the model root has none,
# start Redis if none answers, serve them through the gateway (embedded backend), classify a
# sample text over gRPC and HTTP, then keep serving until Ctrl-C.
#   NEWSCLF_MODEL_ROOT   model root (default ./models)
#   NEWSCLF_CORPUS       Reuters-21578 folder or reuters21578.tar.gz (default ../shared/data/reuters21578)
#   QUICKSTART_EXIT=1    stop the gateway after the sample calls instead of serving on
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python

export NEWSCLF_MODEL_ROOT=${NEWSCLF_MODEL_ROOT:-$PWD/models}
CORPUS=${NEWSCLF_CORPUS:-$PWD/../shared/data/reuters21578}
export NEWSCLF_HOST=${NEWSCLF_HOST:-127.0.0.1}
export NEWSCLF_GRPC_PORT=${NEWSCLF_GRPC_PORT:-8600}
export NEWSCLF_HTTP_PORT=${NEWSCLF_HTTP_PORT:-8080}
export NEWSCLF_REDIS_URL=${NEWSCLF_REDIS_URL:-redis://127.0.0.1:6379/0}

if ! redis-cli -u "$NEWSCLF_REDIS_URL" ping >/dev/null 2>&1; then
  echo "quickstart: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

if [ -z "$(find "$NEWSCLF_MODEL_ROOT" -name saved_model.pb -print -quit 2>/dev/null)" ]; then
  echo "quickstart: no models in $NEWSCLF_MODEL_ROOT; training the four variants, ngram, hybrids and ensemble with the quick preset"
  "$PY" -m training train --variant all --preset quick --corpus "$CORPUS" --model-root "$NEWSCLF_MODEL_ROOT"
fi

echo "quickstart: starting the gateway (gRPC :$NEWSCLF_GRPC_PORT, HTTP :$NEWSCLF_HTTP_PORT)"
"$PY" -m service serve &
GATEWAY=$!
trap 'kill -TERM $GATEWAY 2>/dev/null; wait $GATEWAY 2>/dev/null' EXIT
for _ in $(seq 1 120); do
  if "$PY" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:$NEWSCLF_HTTP_PORT/readyz', timeout=1).status != 200)" 2>/dev/null; then break; fi
  kill -0 $GATEWAY 2>/dev/null || { echo "quickstart: the gateway exited" >&2; exit 1; }
  sleep 1
done

SAMPLE="Wheat and corn exports rose sharply as the U.S. Agriculture Department raised its grain forecast."
# ngram: the n-gram model, trained in well under a minute and the most accurate quick model on
# its own (docs/benchmarks.md); after a `default` training the served default is named in README.md.
MODEL=ngram
echo "quickstart: classifying with $MODEL over gRPC: $SAMPLE"
"$PY" -m service.client classify --transport grpc --address "127.0.0.1:$NEWSCLF_GRPC_PORT" --model "$MODEL" --top-k 3 "$SAMPLE"
echo "quickstart: classifying over HTTP"
"$PY" -m service.client classify --transport http --address "http://127.0.0.1:$NEWSCLF_HTTP_PORT" --model "$MODEL" --top-k 3 "$SAMPLE"

if [ "${QUICKSTART_EXIT:-0}" = 1 ]; then exit 0; fi
echo "quickstart: serving; try: curl -s localhost:$NEWSCLF_HTTP_PORT/v1/models  (Ctrl-C stops)"
wait $GATEWAY
