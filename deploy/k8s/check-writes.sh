#!/usr/bin/env bash
# Which paths does a worker write? The pods run with a read-only root filesystem and only /data/cache
# (METAREC_DATA_DIR, also --data-dir) and /tmp writable. This runs a real worker under strace on the embedded
# broker (start, 3,000 ML-100K events, SIGTERM drain) with HOME, the working directory and TMPDIR in empty
# scratch directories, and prints every path it opened for writing, created, renamed or removed outside
# METAREC_DATA_DIR (/dev and /proc aside), failed attempts included. Expected: no path before the worker's last line.
#   bash deploy/k8s/check-writes.sh CHECKPOINT_DIR      # needs strace; from the repository root
set -euo pipefail
ckpt=$(realpath "${1:?usage: $0 CHECKPOINT_DIR}")
py=${PYTHON:-.venv/bin/python}; py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"  # absolute, symlink kept (venv)
repo=$(pwd); scratch=$(mktemp -d); port=${PORT:-19593}; http=${HTTP_PORT:-18766}
mkdir -p "$scratch"/{home,cwd,data,tmp}
export PYTHONPATH="$repo" PYTHONDONTWRITEBYTECODE=1 HOME="$scratch/home" TMPDIR="$scratch/tmp" \
       METAREC_DATA_DIR="$scratch/data"
cd "$scratch/cwd"
"$py" -m stream broker --port "$port" > "$scratch/broker.log" 2>&1 & broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
sleep 3
strace -f -qq -o "$scratch/strace" -e trace=openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat \
  "$py" -m stream worker --bootstrap "127.0.0.1:$port" --checkpoint "$ckpt" --group writes --input writes-in \
  --output writes-out --metrics-port "$http" --session-timeout 3 --item-state shared > "$scratch/worker.log" 2>&1 &
tracer=$!
for _ in $(seq 90); do curl -sf "http://127.0.0.1:$http/readyz" > /dev/null && break; sleep 2; done
curl -sf "http://127.0.0.1:$http/readyz" > /dev/null || { echo "worker not ready after 180 s: $scratch/worker.log" >&2; exit 1; }
"$py" -m stream replay --dataset ml-100k --bootstrap "127.0.0.1:$port" --topic writes-in --limit 3000 --speed 0
sleep 15
kill -TERM "$(pgrep -P "$tracer")"   # the worker (strace's child): drain, commit, exit
wait "$tracer" || true
grep -E 'O_WRONLY|O_RDWR|O_CREAT|^[0-9]+ +(creat|mkdir|rename|unlink)' "$scratch/strace" \
  | grep -oE '"/[^"]*"' | tr -d '"' | grep -vE "^($scratch/data|/dev/|/proc/)" | sort -u || true
tail -1 "$scratch/worker.log"
echo "done (scratch: $scratch)"
