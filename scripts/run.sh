#!/usr/bin/env bash
# The main job, from a fresh clone: set up, train a bundle if none exists, serve it, chat.
#   bash scripts/run.sh
# With no TELEGRAM_TOKEN the bot chats in this terminal; with no REDIS_URL the engine caches in-process.
# Every path and setting can be changed through the environment or a .env file (see .env.example).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -f .env ]; then set -a; . ./.env; set +a; fi
SHARED=${TOPICSPACE_SHARED:-$(cd .. && pwd)/shared}
export MODELS_DIR=${MODELS_DIR:-$PWD/models}
export TRAIN_WEIGHTS=${TRAIN_WEIGHTS:-$SHARED/weights/bvlc_googlenet}
# First run: the quick recipe (one view per photo; a few minutes on 2 cores). TRAIN_ARGS= (empty) trains
# the full recipe instead.
export TRAIN_ARGS=${TRAIN_ARGS---quick}
export ENGINE_PORT=${ENGINE_PORT:-8080}
export ENGINE_URL=${ENGINE_URL:-http://127.0.0.1:$ENGINE_PORT}
mkdir -p var

if [ ! -s "$MODELS_DIR/ACTIVE" ]; then
  if [ -z "${TRAIN_CORPUS:-}" ]; then
    # The demo corpus: Flickr8k's photos as posts in English, Spanish and Catalan (each post shows one
    # caption in one language and carries its photo's captions in all three), like the original's
    # Barcelona posts; plain English Flickr8k when the translations are not there.
    MULTI=$SHARED/data/flickr8k-multilingual/flickr8k_multi30k_es_ca.tsv
    if [ -f "$MULTI" ]; then
      if [ ! -s var/demo-corpus/posts.jsonl ]; then
        mkdir -p var
        python -m train multilingual --src "$MULTI" --flickr8k "$SHARED/data/flickr8k" --out var/demo-corpus \
          --parallel --references all --all-images >/dev/null
      fi
      export TRAIN_CORPUS=$PWD/var/demo-corpus/posts.jsonl TRAIN_FORMAT=jsonl
    else
      export TRAIN_CORPUS=$SHARED/data/flickr8k TRAIN_FORMAT=flickr8k
    fi
  fi
  export TRAIN_FORMAT=${TRAIN_FORMAT:-flickr8k}
  echo "No model bundle in $MODELS_DIR yet: training one on $TRAIN_CORPUS (${TRAIN_ARGS:-full})."
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
  python -m train all --corpus "$TRAIN_CORPUS" --format "$TRAIN_FORMAT" --weights "$TRAIN_WEIGHTS" \
    --models "$MODELS_DIR" $TRAIN_ARGS
fi

ENGINE_LOG=${ENGINE_LOG:-var/engine.log}
echo "Starting the engine on port $ENGINE_PORT (log: $ENGINE_LOG)."
python -m engine --models "$MODELS_DIR" --host 127.0.0.1 --port "$ENGINE_PORT" >"$ENGINE_LOG" 2>&1 &
ENGINE_PID=$!
trap 'kill "$ENGINE_PID" 2>/dev/null || true; wait "$ENGINE_PID" 2>/dev/null || true' EXIT INT TERM
python - <<PY
import sys, time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen("$ENGINE_URL/healthz", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("the engine did not come up: see var/engine.log")
PY
# No token: chat in this terminal, also when the chat is piped in (a transcript, a script).
if [ -z "${TELEGRAM_TOKEN:-}" ]; then python -m bot --chat; else python -m bot; fi
