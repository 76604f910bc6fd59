#!/usr/bin/env bash
# Build the image and run the compose demo for real, under podman (docs/deploy-check.md).
#
#   sudo bash scripts/container-check.sh [--install] [--keep] [--skip-cuda]
#
# 1. podman with a containers.conf that works on hybrid-cgroup hosts (no default ulimits,
#    cgroupfs, runc); --install apt-gets podman, runc, debootstrap and docker-compose first.
# 2. The base: python:3.11-slim and redis:7-alpine when a registry answers; otherwise a local
#    Debian bookworm base (debootstrap, Python 3.11) and Redis on it (deploy/redis/Containerfile).
# 3. `podman build` of the Dockerfile (wheels from pip's find-links directory, mounted; the host's
#    CA bundle, mounted; the PyTorch index when reachable, else pip's own index).
# 4. The image alone: the HEALTHCHECK turns healthy, POST /predict answers, the user is not root.
# 5. The compose demo with docker-compose (v1, Debian's) on podman's Docker API socket, because
#    podman-compose 1.x skips `condition: service_healthy` on podman < 4.6 (Debian 12 has 4.3).
#    Without systemd podman runs no health checks by itself: a loop here runs them every 3 s.
#    It waits for the attacker, checks its report and that Redis's counts equal the records'
#    queries, and tears everything down.
# 6. The CUDA image of docker-compose.gpu.yml is built when its torch index is reachable.
# Loopback only (published ports bind 127.0.0.1); bounded by CHECK_TIMEOUT seconds per phase.
# Results go to $STATE/results.env (key=value) for docs/deploy-check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${STATE:-/var/tmp/snd-container-check}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-1800}
PROJECT=snd-check
PIP_OWN="pip's own index"
INSTALL=0 KEEP=0 CUDA=1
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    --keep) KEEP=1 ;;
    --skip-cuda) CUDA=0 ;;
    *) echo "container-check: unknown argument $arg" >&2; exit 2 ;;
  esac
done
mkdir -p "$STATE"
RESULTS=$STATE/results.env
: > "$RESULTS"
say() { printf '== %s\n' "$*"; }
note() { printf '%s=%q\n' "$1" "$2" >> "$RESULTS"; }
die() { echo "container-check: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# -- 1. podman ------------------------------------------------------------------------------
if [[ $INSTALL = 1 ]]; then
  say "installing podman, runc, debootstrap, docker-compose"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap docker-compose
fi
command -v podman >/dev/null || die "no podman (rerun with --install)"
[[ $(id -u) = 0 ]] || die "run as root (rootful podman)"
cat > "$STATE/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
export CONTAINERS_CONF=$STATE/containers.conf
note podman "$(podman --version)"

reachable() { timeout 15 curl -fsS -o /dev/null "$1" 2>/dev/null; }

# -- 2. base images -------------------------------------------------------------------------
if timeout 60 podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1 \
   && timeout 60 podman pull -q docker.io/library/redis:7-alpine >/dev/null 2>&1; then
  BASE_IMAGE=docker.io/library/python:3.11-slim REDIS_IMAGE=docker.io/library/redis:7-alpine
  say "registry reachable: $BASE_IMAGE"
else
  BASE_IMAGE=localhost/debian-py:bookworm REDIS_IMAGE=localhost/snd-redis:bookworm
  if ! podman image exists "$BASE_IMAGE"; then
    say "no registry: making $BASE_IMAGE with debootstrap"
    command -v debootstrap >/dev/null || die "no debootstrap (rerun with --install)"
    start=$(now)
    rm -rf "$STATE/rootfs"
    timeout "$CHECK_TIMEOUT" debootstrap --variant=minbase \
      --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$STATE/rootfs" \
      http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
      || die "debootstrap failed: $STATE/debootstrap.log"
    tar -C "$STATE/rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
    note base_seconds "$(since "$start")"
  fi
  if ! podman image exists "$REDIS_IMAGE"; then
    say "building $REDIS_IMAGE"
    timeout "$CHECK_TIMEOUT" podman build -q --format docker --network host \
      -v /etc/ssl/certs:/etc/ssl/certs:ro --build-arg BASE_IMAGE="$BASE_IMAGE" \
      -t "$REDIS_IMAGE" deploy/redis >/dev/null
  fi
fi
note base_image "$BASE_IMAGE"
note redis_image "$REDIS_IMAGE"

# -- 3. the image ---------------------------------------------------------------------------
BUILD_ARGS=(--format docker --network host --build-arg BASE_IMAGE="$BASE_IMAGE")
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  BUILD_ARGS+=(-v /etc/ssl/certs:/etc/ssl/certs:ro
               --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
WHEELS=$(pip config get global.find-links 2>/dev/null || true)
if [[ -n $WHEELS && -d $WHEELS ]]; then
  BUILD_ARGS+=(-v "$WHEELS:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
fi
TORCH_INDEX=https://download.pytorch.org/whl/cpu
reachable "$TORCH_INDEX/torch/" || TORCH_INDEX=
BUILD_ARGS+=(--build-arg TORCH_INDEX="$TORCH_INDEX")
note torch_index "${TORCH_INDEX:-$PIP_OWN}"
say "building snd-gateway:cpu (torch from ${TORCH_INDEX:-$PIP_OWN})"
start=$(now)
timeout "$CHECK_TIMEOUT" podman build "${BUILD_ARGS[@]}" -t snd-gateway:cpu . \
  >"$STATE/build.log" 2>&1 || die "the build failed: $STATE/build.log"
note build_seconds "$(since "$start")"
note image_bytes "$(podman image inspect --format '{{.Size}}' snd-gateway:cpu)"

# -- 4. the image alone ---------------------------------------------------------------------
free_port() { python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
cleanup() {
  [[ -n ${HEALTH_LOOP:-} ]] && kill "$HEALTH_LOOP" 2>/dev/null || true
  if [[ $KEEP = 0 ]]; then
    podman rm -f -t 5 snd-check-single >/dev/null 2>&1 || true
    if [[ -n ${COMPOSE:-} ]]; then
      timeout 120 "${COMPOSE[@]}" down -v -t 5 >/dev/null 2>&1 || true
    fi
  fi
  [[ -n ${API:-} ]] && kill "$API" 2>/dev/null || true
}
trap cleanup EXIT
podman rm -f snd-check-single >/dev/null 2>&1 || true
PORT=$(free_port)
say "running the image on 127.0.0.1:$PORT"
start=$(now)
podman run -d --name snd-check-single -p "127.0.0.1:$PORT:8000" \
  -e SND_DEFENSE=snd -e SND_SIGMA=0.01 snd-gateway:cpu >/dev/null
healthy=0
for _ in $(seq 1 120); do
  if podman healthcheck run snd-check-single >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1
done
[[ $healthy = 1 ]] || { podman logs snd-check-single | tail -20; die "the container never turned healthy"; }
note healthy_seconds "$(since "$start")"
note health_status "$(podman inspect --format '{{.State.Health.Status}}' snd-check-single)"
answer=$(curl -fsS -X POST "http://127.0.0.1:$PORT/predict" -H 'Content-Type: application/json' \
  -d "{\"inputs\": [$(python3 -c "print([[[0.0] * 28] * 28])")]}")
echo "$answer" | python3 -c "import json, sys; d = json.load(sys.stdin); assert len(d['labels']) == 1, d" \
  || die "/predict did not answer a label: $answer"
note predict "$answer"
uid=$(podman exec snd-check-single id -u)
[[ $uid != 0 ]] || die "the container runs as root"
note container_user "$(podman exec snd-check-single id -un) (uid $uid)"
podman rm -f -t 5 snd-check-single >/dev/null

# -- 5. the compose demo --------------------------------------------------------------------
command -v docker-compose >/dev/null || die "no docker-compose (rerun with --install)"
note compose "$(docker-compose version --short 2>/dev/null || docker-compose version | head -1)"
rm -f "$STATE/podman.sock"
podman system service --time=0 "unix://$STATE/podman.sock" >"$STATE/api.log" 2>&1 &
API=$!
for _ in $(seq 1 50); do [[ -S $STATE/podman.sock ]] && break; sleep 0.2; done
export DOCKER_HOST=unix://$STATE/podman.sock
REPORTS=$STATE/reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
APP_UID=$(podman run --rm --entrypoint id snd-gateway:cpu -u)
chown "$APP_UID" "$REPORTS"  # the image's unprivileged user writes the report
grep -v -E '^(BASE_IMAGE|REDIS_IMAGE|TORCH_INDEX|UNDEFENDED_PORT|DEFENDED_PORT)=' .env.example \
  > "$STATE/compose.env"
cat >> "$STATE/compose.env" <<EOF
BASE_IMAGE=$BASE_IMAGE
REDIS_IMAGE=$REDIS_IMAGE
TORCH_INDEX=$TORCH_INDEX
UNDEFENDED_PORT=$(free_port)
DEFENDED_PORT=$(free_port)
EOF
# the compose file mounts ./reports: run it from a copy of the files it reads, next to $REPORTS
cp docker-compose.yml "$STATE/docker-compose.yml"
COMPOSE=(docker-compose -p "$PROJECT" -f "$STATE/docker-compose.yml" --project-directory "$ROOT"
         --env-file "$STATE/compose.env")
sed -i "s#- ./reports:/reports#- $REPORTS:/reports#" "$STATE/docker-compose.yml"
# docker-compose 1.29 knows no top-level `name:` (the project name is -p here)
sed -i '/^name: /d' "$STATE/docker-compose.yml"
# health checks: what systemd timers would do
( while true; do
    for c in $(podman ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
    sleep 3
  done ) &
HEALTH_LOOP=$!
say "compose up (docker-compose on podman's API)"
start=$(now)
timeout "$CHECK_TIMEOUT" "${COMPOSE[@]}" up -d --no-build >"$STATE/compose.log" 2>&1 \
  || { cat "$STATE/compose.log"; die "compose up failed"; }
note compose_up_seconds "$(since "$start")"
attacker=$("${COMPOSE[@]}" ps -q attacker)
say "waiting for the attacker ($attacker)"
timeout "$CHECK_TIMEOUT" podman wait "$attacker" >"$STATE/attacker.rc" \
  || die "the attacker did not finish in ${CHECK_TIMEOUT}s"
note attack_seconds "$(since "$start")"
"${COMPOSE[@]}" logs --no-color attacker >"$STATE/attacker.log" 2>&1 || true
[[ $(tr -d '[:space:]' <"$STATE/attacker.rc") = 0 ]] || { tail -30 "$STATE/attacker.log"; die "the attacker failed"; }
[[ -s $REPORTS/compose/report.md ]] || die "no report in $REPORTS/compose"
cp "$REPORTS/compose/report.md" "$STATE/report.md"
# Redis's counts (database 0: defended, 1: undefended) against the records' queries
redis=$("${COMPOSE[@]}" ps -q redis)
python3 - "$REPORTS/compose/records.jsonl" "$redis" <<'PY' >>"$RESULTS"
import json, subprocess, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
experiment = json.load(open(sys.argv[1].replace("records.jsonl", "experiment.json")))
# the experiment's endpoint at each service's URL (docker-compose.yml: defended -> database 0)
by_host = {e["url"].split("//")[1].split(":")[0]: e["name"] for e in experiment["endpoints"]}
for db, service in ((0, "defended"), (1, "undefended")):
    spent = sum(r["queries"] for r in records if r["endpoint"] == by_host[service])
    endpoint = service
    def cli(*args: str) -> str:
        return subprocess.run(["podman", "exec", sys.argv[2], "redis-cli", "-n", str(db), *args],
                              capture_output=True, text=True, check=True).stdout
    # snd:{<caller>}:usage is a hash model -> images answered (service/accounting/redis_counter.py)
    keys = cli("--scan", "--pattern", "snd:{*attacker*}:usage").split()
    counted = sum(int(v) for key in keys for v in cli("hvals", key).split())
    print(f"{endpoint}_record_queries={spent}")
    print(f"{endpoint}_redis_count={counted}")
    if spent != counted:
        sys.exit(f"{endpoint}: the records spent {spent} queries, Redis counted {counted}")
PY
say "compose demo: report and counts agree"

# -- 6. the CUDA image ----------------------------------------------------------------------
# docker-compose.gpu.yml's torch comes from a CUDA wheel index; where that is out of reach, PyPI's
# Linux torch is itself a CUDA build (with its nvidia-* wheels), so pip's own index serves.
if [[ $CUDA = 1 ]]; then
  CUDA_INDEX=https://download.pytorch.org/whl/cu128
  reachable "$CUDA_INDEX/torch/" || CUDA_INDEX=
  CUDA_ARGS=("${BUILD_ARGS[@]}")
  CUDA_ARGS[${#CUDA_ARGS[@]}-1]=TORCH_INDEX=$CUDA_INDEX
  say "building snd-gateway:cuda (torch from ${CUDA_INDEX:-$PIP_OWN})"
  start=$(now)
  if timeout "$CHECK_TIMEOUT" podman build "${CUDA_ARGS[@]}" -t snd-gateway:cuda . \
       >"$STATE/build-cuda.log" 2>&1; then
    note cuda_build_seconds "$(since "$start")"
    note cuda_torch "$(podman run --rm snd-gateway:cuda python -c \
      "import torch; print(torch.__version__, 'CUDA', torch.version.cuda, 'available:', torch.cuda.is_available())")"
  else
    note cuda_build "failed: $STATE/build-cuda.log"
  fi
fi
say "done: $RESULTS"
cat "$RESULTS"
