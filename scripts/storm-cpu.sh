#!/usr/bin/env bash
# Storm CPU, before/after hardening (issue 12): the CPU (perf task-clock) an echo server spends
# per request under a fixed client load, old (8babb70, before the hardening) against this tree,
# on tokio, smol and async-std, plus the event-loop example (no "before": it came later).
#
#   bash scripts/storm-cpu.sh [RUNS]          # default 3 runs per binary, alternating
#   SKIP_BUILD=1 bash scripts/storm-cpu.sh 5  # reuse the binaries already in $WORK
#
# OLD_DIR (default /tmp/storm-cpu/old) holds old-tokio, old-smol, old-async-std: the release
# `storm` examples of 8babb70. If missing, they are built from a throwaway `git worktree` of
# 8babb70 with its own target dir, which is deleted afterwards. Needs perf (task-clock of the
# server process), python3 and the release examples of this tree (built here).
#
# Load: 88 connections x 100 `ping` lines, each client waiting 100 ms between lines (about
# 880 requests/s for ~10 s). Reported: median task-clock per request (us) and new/old.
set -euo pipefail
RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/storm-cpu}
OLD_DIR=${OLD_DIR:-$WORK/old}
OLD_REV=8babb70
CONNS=88
ROUNDS=100
mkdir -p "$WORK" "$OLD_DIR"
T=${CARGO_TARGET_DIR:-$ROOT/target}

cat > "$WORK/load.py" <<'PY'
import socket, sys, threading, time
host, port = sys.argv[1].rsplit(':', 1); port = int(port)
conns, rounds = int(sys.argv[2]), int(sys.argv[3])
def client():
    s = socket.create_connection((host, port)); f = s.makefile('rb')
    for _ in range(rounds):
        s.sendall(b'ping\n'); assert f.readline() == b'ping\n'
        time.sleep(0.1)
    s.close()
ts = [threading.Thread(target=client) for _ in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
PY

# Old binaries.
if [ ! -x "$OLD_DIR/old-tokio" ] || [ ! -x "$OLD_DIR/old-smol" ] || [ ! -x "$OLD_DIR/old-async-std" ]; then
  SRC=$WORK/oldsrc
  git -C "$ROOT" worktree add --detach "$SRC" "$OLD_REV"
  for a in tokio smol async-std; do
    cargo build --release --manifest-path "$SRC/Cargo.toml" --target-dir "$SRC/target" -p "keel-$a" --example storm
    cp "$SRC/target/release/examples/storm" "$OLD_DIR/old-$a"
  done
  git -C "$ROOT" worktree remove --force "$SRC"
fi

# New binaries (SKIP_BUILD=1: use those already in $WORK).
# keel-tokio's storm example is `storm`; keel-smol's and keel-async-std's are `smol-storm` and
# `async-std-storm` (the old revision above may predate the rename and is built as `storm`).
[ "${SKIP_BUILD:-0}" = 1 ] || for a in tokio smol async-std; do
  ex=storm; [ "$a" = tokio ] || ex=$a-storm
  cargo build --release --manifest-path "$ROOT/Cargo.toml" -p "keel-$a" --example "$ex"
  cp "$T/release/examples/$ex" "$WORK/new-$a"
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" -p keel-core --features std --example event_loop
  cp "$T/release/examples/event_loop" "$WORK/new-event_loop"
fi

# One run: prints task-clock ms of the server for the whole load.
run() {
  local bin=$1; shift
  local out=$WORK/run.$$
  "$bin" "$@" --addr 127.0.0.1:0 --max-connections 150 > "$out.srv" 2>/dev/null &
  local sp=$! addr=""
  for _ in $(seq 1 100); do
    addr=$(grep -o 'listening on [0-9.:]*' "$out.srv" | awk '{print $3}' || true)
    [ -n "$addr" ] && break; sleep 0.1
  done
  perf stat -x, -e task-clock -p "$sp" -o "$out.perf" &
  local pp=$!
  sleep 0.2
  python3 "$WORK/load.py" "$addr" $CONNS $ROUNDS
  kill -INT $pp; wait $pp || true
  kill -TERM $sp; wait $sp || true
  grep task-clock "$out.perf" | cut -d, -f1
  rm -f "$out.srv" "$out.perf"
}

declare -A ms
for i in $(seq 1 "$RUNS"); do
  for a in tokio smol async-std; do
    ms[old-$a]+="$(run "$OLD_DIR/old-$a" --serve) "
    ms[new-$a]+="$(run "$WORK/new-$a" --serve) "
  done
  ms[new-event_loop]+="$(run "$WORK/new-event_loop" --rate-per-ip 0) "
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
REQ=$((CONNS * ROUNDS))
printf '| server | runs (task-clock ms) | median us/request | new/old |\n| --- | --- | --- | --- |\n'
for a in tokio smol async-std; do
  o=$(echo "${ms[old-$a]}" | median); n=$(echo "${ms[new-$a]}" | median)
  printf '| %s old | %s | %.2f | |\n' "$a" "${ms[old-$a]}" "$(echo "$o*1000/$REQ" | bc -l)"
  printf '| %s new | %s | %.2f | %.3f |\n' "$a" "${ms[new-$a]}" "$(echo "$n*1000/$REQ" | bc -l)" "$(echo "$n/$o" | bc -l)"
done
e=$(echo "${ms[new-event_loop]}" | median)
printf '| event_loop | %s | %.2f | (no before) |\n' "${ms[new-event_loop]}" "$(echo "$e*1000/$REQ" | bc -l)"
