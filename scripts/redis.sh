# Sourced by .ci/run and scripts/test: starts a throwaway redis-server for keel-redis's tests.
#
# keel_start_redis: installs the Debian package `redis-server` when the binary is missing (as
# root, with apt-get), starts it on a free loopback port with persistence off, exports
# KEEL_REDIS_URL=redis://127.0.0.1:PORT and arranges for the server to stop when the calling
# shell exits (an EXIT trap, and a watchdog in case a later step replaces the trap).

keel_start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "redis-server not found: installing the Debian package"
      apt-get update -qq >/dev/null && apt-get install -y -qq redis-server >/dev/null
    else
      echo "redis-server not found: install it (Debian/Ubuntu: apt-get install redis-server;" \
        "macOS: brew install redis), or start one and set KEEL_REDIS_URL=redis://HOST:PORT" >&2
      return 1
    fi
  fi
  local port pid log tries=0
  log=$(mktemp -t keel-redis.XXXXXX)
  while [ "$tries" -lt 20 ]; do
    tries=$((tries + 1))
    port=$((20000 + RANDOM % 40000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no >"$log" 2>&1 </dev/null &
    pid=$!
    local i=0
    while [ "$i" -lt 50 ]; do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
        export KEEL_REDIS_URL="redis://127.0.0.1:$port"
        KEEL_REDIS_PID=$pid
        trap 'kill "$KEEL_REDIS_PID" 2>/dev/null || true' EXIT
        # Stops the server when this shell is gone, whatever happened to the trap.
        local parent=$$
        (while kill -0 "$parent" 2>/dev/null; do sleep 2; done; kill "$pid" 2>/dev/null) \
          >/dev/null 2>&1 </dev/null &
        echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on $KEEL_REDIS_URL (pid $pid)"
        return 0
      fi
      sleep 0.1
      i=$((i + 1))
    done
    kill "$pid" 2>/dev/null || true
  done
  echo "could not start redis-server; its log:" >&2
  cat "$log" >&2
  return 1
}
