#!/usr/bin/env bash
# Bring up berth's integration-test environment on a Debian 12 machine, as root:
#   1. a Docker engine (Debian's docker.io, dockerd 20.10 / API 1.41)
#   2. a local registry (Debian's docker-registry) on $BERTH_TEST_REGISTRY
#   3. an MQTT broker (mosquitto) on 127.0.0.1:$BERTH_TEST_MQTT_PORT
#   4. test images built FROM scratch with busybox, pushed to that registry
# Idempotent: whatever already answers is left alone; a warm re-run takes seconds.
# Only Debian's apt mirrors are needed (no Docker Hub).
#
# Knobs:
#   BERTH_TEST_REGISTRY   host:port of the registry (default 127.0.0.1:5000);
#                         started here only when the host is loopback.
#   BERTH_TEST_MQTT_PORT  broker port on 127.0.0.1 (default 1883).
#   BERTH_TEST_AUTH_REGISTRY  host:port of a second local registry that needs
#                         a login (htpasswd basic auth; default 127.0.0.1:5001),
#                         user berth-test, password in tests/fixtures/registry-auth.password.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REGISTRY=${BERTH_TEST_REGISTRY:-127.0.0.1:5000}
MQTT_PORT=${BERTH_TEST_MQTT_PORT:-1883}
AUTH_REGISTRY=${BERTH_TEST_AUTH_REGISTRY:-127.0.0.1:5001}
AUTH_USER=berth-test
REPO_PREFIX=berth-test
IMAGES=(service crash unhealthy healthy volume)
VERSIONS=(1 2)
LATEST_VERSION=2              # service:latest = service:2

DOCKERD_LOG=/var/log/berth-dockerd.log
REGISTRY_LOG=/var/log/berth-registry.log
MQTT_LOG=/var/log/berth-mosquitto.log
REGISTRY_STORAGE=/var/lib/berth-test-registry
RUN_DIR=/run/berth-test
MANIFEST_ACCEPT='application/vnd.docker.distribution.manifest.v2+json'

log() { printf 'test-env: %s\n' "$*"; }
die() { printf 'test-env: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command quietly; show its output only if it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

# Poll "$@" every 0.5 s for up to $1 seconds.
wait_for() {
  local secs=$1; shift
  local i
  for ((i = 0; i < secs * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

# Start a daemon detached from this script: own session (setsid) so it outlives
# us and our terminal, stdin from /dev/null, output appended to a log file.
spawn() {
  local logfile=$1; shift
  printf '\n=== %s: %s\n' "$(date -Is)" "$*" >>"$logfile"
  setsid nohup "$@" </dev/null >>"$logfile" 2>&1 &
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

# --- apt ----------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    quiet apt-get update -q
    APT_UPDATED=1
  fi
  log "installing $*"
  # No init system runs here and we start the daemons ourselves: keep the
  # packages' maintainer scripts from starting their own services (policy-rc.d
  # exit 101 = "action forbidden"). Only add one if none exists.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q --no-install-recommends "$@" || rc=$?
  [[ $made_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || die "apt-get install $* failed"
}

# --- 1. Docker engine ---------------------------------------------------------
# Prefer Debian's client (same release as the daemon); /usr/local/bin/docker may
# be a newer client-only install, fine as a fallback.
pick_docker() {
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker
  elif type -P docker >/dev/null; then DOCKER=$(type -P docker)   # not our docker() wrapper
  else DOCKER=""
  fi
}
docker() { "$DOCKER" "$@"; }

engine_ping() { curl -fsS --max-time 2 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }

# If the client is newer than the daemon supports, pin the API version for this
# script only (exported to our children, nothing global).
fix_api_version() {
  [[ -n $DOCKER ]] || return 0
  docker version >/dev/null 2>&1 && return 0
  local api
  api=$(curl -fsS --max-time 2 --unix-socket /var/run/docker.sock http://localhost/version | jq -r .ApiVersion) || return 0
  export DOCKER_API_VERSION=$api
  log "client $DOCKER refused the daemon; using DOCKER_API_VERSION=$api for this script"
}

# Debian 12 defaults iptables to the nft backend; use whichever backend the
# kernel actually accepts (dockerd needs the nat table for published ports).
pick_iptables_backend() {
  command -v update-alternatives >/dev/null || return 0
  [[ -x /usr/sbin/iptables-nft || -x /usr/sbin/iptables-legacy ]] || return 0
  if iptables -t nat -L -n >/dev/null 2>&1; then
    log "iptables ($(readlink -f "$(command -v iptables)" | xargs basename)) works"
    return 0
  fi
  local b
  for b in nft legacy; do
    if [[ -x /usr/sbin/iptables-$b ]] && "/usr/sbin/iptables-$b" -t nat -L -n >/dev/null 2>&1; then
      log "switching iptables to the $b backend"
      update-alternatives --set iptables "/usr/sbin/iptables-$b" >/dev/null
      update-alternatives --set ip6tables "/usr/sbin/ip6tables-$b" >/dev/null 2>&1 || true
      return 0
    fi
  done
  log "warning: no iptables backend works; dockerd will probably fail"
}

start_engine() {
  pick_docker
  if [[ -n $DOCKER ]] && { engine_ping || docker info >/dev/null 2>&1; }; then
    fix_api_version
    log "docker engine already running"
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
    pick_docker
  fi
  pick_iptables_backend
  # A dead dockerd/containerd can leave stale pid files that block a restart.
  if ! pgrep -x dockerd >/dev/null; then
    rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid
  fi
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  spawn "$DOCKERD_LOG" dockerd
  log "started dockerd (log $DOCKERD_LOG)"
  if ! wait_for 60 engine_ping; then
    log "dockerd did not answer within 60 s; tail of $DOCKERD_LOG:"
    tail -n 40 "$DOCKERD_LOG" >&2
    exit 1
  fi
  fix_api_version
  docker info >/dev/null || die "dockerd answers /_ping but '$DOCKER info' fails"
  log "docker engine is up"
}

# --- 2. Registry --------------------------------------------------------------
registry_up() { curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1; }

start_registry() {
  if registry_up; then
    log "registry already answering at http://$REGISTRY/v2/"
    return 0
  fi
  case ${REGISTRY%:*} in
    127.*|localhost) ;;
    *) die "registry $REGISTRY does not answer and is not local; cannot start it" ;;
  esac
  if [[ ! -x /usr/bin/docker-registry ]]; then
    apt_install docker-registry
  fi
  # A non-default port gets its own storage so two registries never share it.
  local storage=$REGISTRY_STORAGE
  [[ $REGISTRY == 127.0.0.1:5000 ]] || storage=$REGISTRY_STORAGE-${REGISTRY##*:}
  mkdir -p "$storage"
  # The package ships an init script/unit for its own instance on :5000 with
  # /etc/docker/registry/config.yml; we never start it (policy-rc.d above, no
  # systemd here) and run our own with the fixture config instead.
  # REGISTRY_<SECTION>_<KEY> env vars override the YAML.
  REGISTRY_HTTP_ADDR=$REGISTRY REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$storage \
    spawn "$REGISTRY_LOG" /usr/bin/docker-registry serve "$ROOT/tests/fixtures/registry.yml"
  log "started docker-registry on $REGISTRY (log $REGISTRY_LOG)"
  if ! wait_for 30 registry_up; then
    tail -n 20 "$REGISTRY_LOG" >&2
    die "registry did not answer within 30 s"
  fi
}

# --- 2b. Registry with basic auth --------------------------------------------
# For registry credentials (pulls, `berth check`): the same docker-registry
# with an htpasswd file (bcrypt, as distribution requires), on its own port and
# storage. Anonymous requests get 401.
auth_registry_up() {
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://$AUTH_REGISTRY/v2/" 2>/dev/null) || return 1
  [[ $code == 401 ]]
}

start_auth_registry() {
  if auth_registry_up; then
    log "auth registry already answering (401) at http://$AUTH_REGISTRY/v2/"
    return 0
  fi
  case ${AUTH_REGISTRY%:*} in
    127.*|localhost) ;;
    *) die "auth registry $AUTH_REGISTRY does not answer and is not local; cannot start it" ;;
  esac
  [[ -x /usr/bin/docker-registry ]] || apt_install docker-registry
  command -v htpasswd >/dev/null 2>&1 || apt_install apache2-utils
  local dir=$REGISTRY_STORAGE-auth-${AUTH_REGISTRY##*:}
  mkdir -p "$dir/data"
  htpasswd -bBc "$dir/htpasswd" "$AUTH_USER" "$(cat "$ROOT/tests/fixtures/registry-auth.password")" >/dev/null 2>&1 ||
    die "htpasswd failed"
  REGISTRY_HTTP_ADDR=$AUTH_REGISTRY REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$dir/data \
    REGISTRY_AUTH_HTPASSWD_REALM=berth-test REGISTRY_AUTH_HTPASSWD_PATH=$dir/htpasswd \
    spawn "$REGISTRY_LOG" /usr/bin/docker-registry serve "$ROOT/tests/fixtures/registry.yml"
  log "started docker-registry with basic auth on $AUTH_REGISTRY (log $REGISTRY_LOG)"
  if ! wait_for 30 auth_registry_up; then
    tail -n 20 "$REGISTRY_LOG" >&2
    die "auth registry did not answer within 30 s"
  fi
}

# --- 3. MQTT broker -----------------------------------------------------------
mqtt_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null; }

# Publish a retained message and read it back: proves the broker speaks MQTT.
mqtt_roundtrip() {
  local topic=berth-test-env/ping got
  mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -r -t "$topic" -m ok || return 1
  got=$(mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t "$topic" -C 1 -W 3) || return 1
  mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -r -n -t "$topic" || true   # clear it
  [[ $got == ok ]]
}

start_mqtt() {
  if mqtt_listening; then
    log "mqtt broker already listening on 127.0.0.1:$MQTT_PORT"
  else
    local missing=()
    command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
    command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    [[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
    local conf=$ROOT/tests/fixtures/mosquitto.conf
    if [[ $MQTT_PORT != 1883 ]]; then
      mkdir -p "$RUN_DIR"
      sed "s/^listener 1883 /listener $MQTT_PORT /" "$conf" >"$RUN_DIR/mosquitto.conf"
      conf=$RUN_DIR/mosquitto.conf
    fi
    spawn "$MQTT_LOG" /usr/sbin/mosquitto -c "$conf"
    log "started mosquitto on 127.0.0.1:$MQTT_PORT (log $MQTT_LOG)"
    if ! wait_for 15 mqtt_listening; then
      tail -n 20 "$MQTT_LOG" >&2
      die "mosquitto did not listen within 15 s"
    fi
  fi
  if command -v mosquitto_pub >/dev/null 2>&1; then
    mqtt_roundtrip || die "mqtt publish/subscribe round-trip on 127.0.0.1:$MQTT_PORT failed"
    log "mqtt publish/subscribe round-trip ok"
  fi
}

# --- 3b. TLS test tools ---------------------------------------------------------
# tests/tls.rs starts mosquitto processes of its own with TLS listeners and
# plays a TLS Docker endpoint with openssl s_server: the binaries must be
# there even when a broker already answers on $MQTT_PORT.
ensure_tls_tools() {
  local missing=()
  [[ -x /usr/sbin/mosquitto ]] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
  log "tls test tools: mosquitto, mosquitto_sub, openssl"
}

# --- 3c. Fleet brokers -----------------------------------------------------------
# tests/fleet_rabbitmq.rs starts RabbitMQ clusters of its own through
# scripts/rabbitmq-cluster.sh (Debian's rabbitmq-server, never its system
# service): the package must be installed. Installing it may start the
# system service; it is stopped, so its ports and epmd are the tests' own.
ensure_rabbitmq() {
  if [[ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
    apt_install rabbitmq-server
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
      systemctl stop rabbitmq-server || true
    fi
  fi
  log "fleet brokers: rabbitmq-server $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null)"
}

# --- 4. Test images -----------------------------------------------------------
# Digest of the manifest the registry serves for repo:tag, or empty.
registry_digest() {
  curl -fsSI --max-time 5 -H "Accept: $MANIFEST_ACCEPT" \
    "http://$REGISTRY/v2/$1/manifests/$2" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# True when the local image is built from the current inputs and the registry
# serves exactly that image under the tag.
image_current() {
  local ref=$1 repo=$2 tag=$3 label digest
  label=$(docker image inspect --format \
    '{{index .Config.Labels "org.example.berth-test.fingerprint"}}' "$ref" 2>/dev/null) || return 1
  [[ $label == "$FINGERPRINT" ]] || return 1
  digest=$(registry_digest "$repo" "$tag")
  [[ -n $digest ]] || return 1
  docker image inspect --format '{{join .RepoDigests "\n"}}' "$ref" | grep -qxF "$REGISTRY/$repo@$digest"
}

BUILD_CTX=""
build_context() {
  if [[ -z $BUILD_CTX ]]; then
    BUILD_CTX=$(mktemp -d /tmp/berth-test-images.XXXXXX)
    cp "$ROOT/tests/images/Dockerfile" "$ROOT/tests/images/service.sh" "$BUILD_CTX/"
    cp /bin/busybox "$BUILD_CTX/busybox"
  fi
}
trap '[[ -z $BUILD_CTX ]] || rm -rf "$BUILD_CTX"' EXIT

PUSHED=()
build_images() {
  if [[ ! -x /bin/busybox ]]; then
    apt_install busybox-static
  fi
  # Fingerprint of everything that goes into the images: a change rebuilds.
  FINGERPRINT=$(cat "$ROOT/tests/images/Dockerfile" "$ROOT/tests/images/service.sh" /bin/busybox |
    sha256sum | cut -c1-16)

  local name version tag repo ref t built tags=() tag_args=()
  for name in "${IMAGES[@]}"; do
    repo=$REPO_PREFIX/$name
    for version in "${VERSIONS[@]}"; do
      tags=("$version")
      [[ $name == service && $version == "$LATEST_VERSION" ]] && tags+=(latest)
      built=0
      for tag in "${tags[@]}"; do
        ref=$REGISTRY/$repo:$tag
        if image_current "$ref" "$repo" "$tag"; then
          log "image $ref up to date"
        else
          if [[ $built -eq 0 ]]; then
            build_context
            log "building $REGISTRY/$repo:$version"
            # Legacy builder: no BuildKit/buildx needed, works with dockerd 20.10.
            tag_args=()
            for t in "${tags[@]}"; do tag_args+=(-t "$REGISTRY/$repo:$t"); done
            DOCKER_BUILDKIT=0 quiet docker build --target "$name" \
              --build-arg "VERSION=$version" --build-arg "FINGERPRINT=$FINGERPRINT" \
              "${tag_args[@]}" "$BUILD_CTX"
            built=1
          fi
          log "pushing $ref"
          quiet docker push "$ref"
        fi
        PUSHED+=("$ref")
      done
    done
  done
}

# berth-test/migrating:<tag> (issue 22's migration tests): its own Dockerfile
# and fingerprint, so that changing it rebuilds only these images.
MIGRATING_TAGS=(1.0.0 1.1.0 1.2.0 broken-1.2.0)
build_migrating_images() {
  local dir=$ROOT/tests/images/migrating repo=$REPO_PREFIX/migrating tag ref ctx
  local saved=$FINGERPRINT
  FINGERPRINT=$(cat "$dir/Dockerfile" "$dir/make-migrations.sh" "$ROOT/tests/images/service.sh" \
    /bin/busybox | sha256sum | cut -c1-16)
  for tag in "${MIGRATING_TAGS[@]}"; do
    ref=$REGISTRY/$repo:$tag
    if image_current "$ref" "$repo" "$tag"; then
      log "image $ref up to date"
    else
      ctx=$(mktemp -d /tmp/berth-test-migrating.XXXXXX)
      cp "$dir/Dockerfile" "$dir/make-migrations.sh" "$ROOT/tests/images/service.sh" "$ctx/"
      cp /bin/busybox "$ctx/busybox"
      log "building $ref"
      DOCKER_BUILDKIT=0 quiet docker build --build-arg "VERSION=$tag" \
        --build-arg "FINGERPRINT=$FINGERPRINT" -t "$ref" "$ctx"
      rm -rf "$ctx"
      log "pushing $ref"
      quiet docker push "$ref"
    fi
    PUSHED+=("$ref")
  done
  FINGERPRINT=$saved
}

# --- main ---------------------------------------------------------------------
start_engine
start_registry
start_auth_registry
start_mqtt
ensure_tls_tools
ensure_rabbitmq
build_images
build_migrating_images

log "summary:"
log "  engine:   $(docker version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}') via $DOCKER${DOCKER_API_VERSION:+ (DOCKER_API_VERSION=$DOCKER_API_VERSION)}"
log "  registry: http://$REGISTRY"
log "  registry with basic auth: http://$AUTH_REGISTRY (user $AUTH_USER)"
log "  broker:   mqtt://127.0.0.1:$MQTT_PORT"
log "  images:"
for ref in "${PUSHED[@]}"; do log "    $ref"; done
