#!/usr/bin/env bash
# Prism, Beam's portable runner, as a standalone job server.
#
#   scripts/prism-jobserver.sh build          build bin/prism, print its path
#   scripts/prism-jobserver.sh [run] [FLAGS]  build, then run it (default job port 8073, no web UI)
#
# bin/prism (or $PRISM_BIN) is the prism command of the Beam Go module at the version go.mod
# pins (a `tool` of the module), so the job server and the SDK that submits
# to it are the same release. FLAGS are Prism's own (--job_port, --web_port,
# --serve_http, --log_level, --idle_shutdown_timeout, ...), given after the
# defaults --job_port=8073 --serve_http=false, so they win. Submit with
#   --runner=universal --endpoint=localhost:8073 --environment_type=LOOPBACK
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRISM_BIN:-$root/bin/prism}
cmd=run
case "${1:-}" in
  build|run) cmd=$1; shift ;;
esac

(cd "$root" && ${GO:-go} build -o "$bin" github.com/apache/beam/sdks/v2/go/cmd/prism)
if [ "$cmd" = build ]; then
  echo "$bin"
  exit 0
fi
exec "$bin" --job_port=8073 --serve_http=false "$@"
