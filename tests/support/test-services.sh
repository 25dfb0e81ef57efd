#!/bin/bash
# Private services for the test suite, never the host's own:
#   source tests/support/test-services.sh start   -> exports DOCKER_HOST, NEMOCLAW_TEST_KUBE_URL,
#                                                    NEMOCLAW_TEST_SVC_DIR
#   bash tests/support/test-services.sh stop DIR  -> stops them, unmounts, removes DIR
# The Docker engine is Debian's dockerd on a socket in a temp dir (no iptables, no default bridge,
# vfs storage); the test image is busybox-static imported under two tags (image drift). The
# Kubernetes API is the kmock emulator (PyPI, pinned) with the fixes in kapi.py (no k3s or
# kube-apiserver can be installed here).
set -euo pipefail
svc_start() {
  local pkgs=() p
  for p in docker.io busybox-static python3-venv; do dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p"); done
  if [ ${#pkgs[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  D=$(mktemp -d -t ncd.XXXXXX)                 # short: unix socket paths must stay < 108 bytes
  dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs --data-root "$D/data" \
    --exec-root "$D/exec" --pidfile "$D/docker.pid" -H "unix://$D/docker.sock" >"$D/dockerd.log" 2>&1 &
  export DOCKER_HOST="unix://$D/docker.sock" NEMOCLAW_TEST_SVC_DIR="$D"
  local ok=""
  for _ in $(seq 300); do docker version >/dev/null 2>&1 && { ok=1; break; }; sleep 0.1; done
  if [ -z "$ok" ]; then echo "the private dockerd did not start:" >&2; tail -20 "$D/dockerd.log" >&2; return 1; fi
  docker version --format 'private dockerd {{.Server.Version}} (API {{.Server.APIVersion}}) at '"$DOCKER_HOST"
  local R="$D/rootfs"; mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/www"; cp /bin/busybox "$R/bin/"
  for a in sh sleep cat ls true nc httpd mkdir echo test; do ln -sf busybox "$R/bin/$a"; done
  echo ok > "$R/www/index.html"
  # Stand-in for the cluster image's `server ...` (k3s): serve HTTP on the gateway's container
  # port, 30051, and exit promptly on SIGTERM as PID 1.
  printf '#!/bin/sh\ntrap "exit 0" TERM INT\nhttpd -f -p 30051 -h /www &\nwait\n' > "$R/bin/server"
  chmod +x "$R/bin/server"
  tar -C "$R" -c . | docker import - nemoclaw-test/busybox:1 >/dev/null
  # A different image id for the second tag, so that drift is visible by id as well as by name.
  echo 2 > "$R/www/version"
  tar -C "$R" -c . | docker import - nemoclaw-test/busybox:2 >/dev/null
  # A gateway that takes 2s to answer: a window in which tests interrupt a start.
  printf '#!/bin/sh\ntrap "exit 0" TERM INT\nsleep 2\nhttpd -f -p 30051 -h /www &\nwait\n' > "$R/bin/server"
  tar -C "$R" -c . | docker import - nemoclaw-test/busybox:slow >/dev/null

  local HERE V
  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  V=${NEMOCLAW_TEST_VENV:-$HOME/.cache/nemoclaw-test-venv}
  [ -x "$V/bin/python" ] || /usr/bin/python3 -m venv "$V"
  "$V/bin/python" -c 'import kmock' 2>/dev/null || "$V/bin/pip" install -q 'kmock==0.8'
  "$V/bin/python" "$HERE/kapi.py" --port-file "$D/kapi.port" >"$D/kapi.log" 2>&1 &
  echo $! >"$D/kapi.pid"
  for _ in $(seq 100); do [ -s "$D/kapi.port" ] && break; sleep 0.1; done
  if [ ! -s "$D/kapi.port" ]; then echo "the Kubernetes API emulator did not start:" >&2; cat "$D/kapi.log" >&2; return 1; fi
  export NEMOCLAW_TEST_KUBE_URL="http://127.0.0.1:$(cat "$D/kapi.port")"
  echo "kmock Kubernetes API emulator at $NEMOCLAW_TEST_KUBE_URL"
}
svc_stop() {
  local D=$1 P
  kill -TERM "$(cat "$D/kapi.pid" 2>/dev/null)" 2>/dev/null || true
  if P=$(cat "$D/docker.pid" 2>/dev/null); then
    docker -H "unix://$D/docker.sock" rm -f $(docker -H "unix://$D/docker.sock" ps -aq) >/dev/null 2>&1 || true
    kill -TERM "$P" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
  fi
  umount "$D/exec/netns/default" "$D/data" 2>/dev/null || true   # dockerd leaves its data-root bind mount
  rm -rf "$D"
}
case "${1:-}" in
  start) svc_start ;;
  stop) svc_stop "$2" ;;
  *) echo "usage: source $0 start | bash $0 stop DIR" >&2; return 2 2>/dev/null || exit 2 ;;
esac
