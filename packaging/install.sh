#!/usr/bin/env bash
# cilium-py set-up for a fresh Debian/Ubuntu machine.
#
#   sudo packaging/install.sh start   install what is missing and start the agent
#   sudo packaging/install.sh test    install test dependencies and run the whole suite
#                                     (extra arguments are added to 'pytest tests')
#   sudo packaging/install.sh nightly soak, chaos, fuzz and benchmarks, with a report
#   sudo packaging/install.sh deps    only install (apt, venv, pip, headers link, bpffs)
#   sudo packaging/install.sh stop    stop the agent (its masquerade/FORWARD rules stay, so
#                                     traffic keeps flowing across a restart)
#   sudo packaging/install.sh cleanup stop the agent and remove those rules as well
#
# The code goes into a virtualenv (/opt/cilium-py/venv by default, CILIUM_PY_VENV to
# change it) built from Debian's python3; bcc (python3-bpfcc) is linked into it.
# 'test' never touches that production copy: it installs this checkout (editable, with
# the test extras) into a virtualenv of its own, /opt/cilium-py-test/venv by default
# (CILIUM_PY_TEST_VENV to change it), and links no commands or CNI plugin into the system.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VENV="${CILIUM_PY_VENV:-/opt/cilium-py/venv}"
TEST_VENV="${CILIUM_PY_TEST_VENV:-/opt/cilium-py-test/venv}"
PY=/usr/bin/python3
RUN_DIR=/var/run/cilium-py
LOG_DIR=/var/log/cilium-py
KREL="$(uname -r)"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    if [ -z "${_APT_UPDATED:-}" ]; then
        apt-get update -qq
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_headers() {
    # bcc compiles against /lib/modules/$(uname -r)/build. Prefer the running kernel's
    # own headers package; when the kernel has none (custom or cloud kernels), point
    # bcc at the newest installed Debian linux-headers.
    local build="/lib/modules/$KREL/build"
    [ -d "$build/include" ] && return 0
    if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then
        apt_install "linux-headers-$KREL"
    fi
    [ -d "$build/include" ] && return 0
    apt_install "linux-headers-$(dpkg --print-architecture)"
    local arch_dir common_dir
    arch_dir="$(ls -d /usr/src/linux-headers-*-"$(dpkg --print-architecture)" 2>/dev/null | sort -V | tail -1)"
    common_dir="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)"
    [ -n "$arch_dir" ] || die "no linux-headers found under /usr/src"
    log "linking $build -> $arch_dir (no packaged headers for $KREL)"
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$arch_dir" "$build"
    [ -n "$common_dir" ] && ln -sfn "$common_dir" "/lib/modules/$KREL/source"
    return 0
}

mount_bpffs() {
    if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
        log "mounting the BPF filesystem at /sys/fs/bpf"
        mkdir -p /sys/fs/bpf
        mount -t bpf bpf /sys/fs/bpf
    fi
}

make_venv() {
    # make_venv VENV EXTRAS EDITABLE: create VENV if missing, pip install the checkout.
    local venv="$1" extras="$2" editable="$3"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating virtualenv $venv"
        mkdir -p "$(dirname "$venv")"
        "$PY" -m venv "$venv"
    fi
    log "pip install cilium-py$extras into $venv"
    local target="$REPO$extras"
    if [ "$editable" = 1 ]; then
        "$venv/bin/pip" install -q -e "$target"
    else
        "$venv/bin/pip" install -q "$target"
    fi
    # bcc is Debian's python3-bpfcc: make exactly that package importable from the venv.
    local site
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$venv/lib/bcc-dist"
    ln -sfn /usr/lib/python3/dist-packages/bcc "$venv/lib/bcc-dist/bcc"
    echo "$venv/lib/bcc-dist" > "$site/cilium_py_bcc.pth"
}

install_production() {
    # The production copy: a regular (not editable) install, its commands on PATH, the
    # CNI launcher and conflist where runtimes look for them.
    make_venv "$VENV" "" 0
    for tool in cilium-py-agent cilium-py cilium-py-cni cilium-py-docker; do
        [ -x "$VENV/bin/$tool" ] && ln -sfn "$VENV/bin/$tool" "/usr/local/bin/$tool"
    done
    # A small launcher (starts in ~9 ms, not a console script's ~19 ms) and the conflist;
    # the conflist chains portmap, which Debian ships in /usr/lib/cni: the installer links
    # it into /opt/cni/bin, where runtimes look.
    "$VENV/bin/python" -m cilium_py.cni.install --plugins-dir /opt/cni/bin \
        --config-dir /etc/cni/net.d
}

deps() {
    apt_install python3 python3-venv python3-pip python3-bpfcc iproute2 iptables ca-certificates \
        bpftool containernetworking-plugins
    install_headers
    mount_bpffs
}

wait_healthy() {
    local sock="${CILIUM_PY_SOCKET:-$RUN_DIR/cilium.sock}"
    for _ in $(seq 1 100); do
        if CILIUM_PY_SOCK="$sock" "$VENV/bin/cilium-py" status >/dev/null 2>&1; then
            CILIUM_PY_SOCK="$sock" "$VENV/bin/cilium-py" status
            return 0
        fi
        sleep 0.2
    done
    die "the agent did not become healthy; see $LOG_DIR/agent.log or journalctl -u cilium-py-agent"
}

start() {
    deps
    install_production
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    if [ -d /run/systemd/system ]; then
        log "installing systemd units"
        install -m 0644 "$HERE/systemd/cilium-py-agent.service" "$HERE/systemd/sys-fs-bpf.mount" \
            "$HERE/systemd/cilium-py-docker.service" /etc/systemd/system/
        systemctl daemon-reload
        systemctl enable --now cilium-py-agent.service cilium-py-docker.service
    else
        if [ -f "$RUN_DIR/agent.pid" ] && kill -0 "$(cat "$RUN_DIR/agent.pid")" 2>/dev/null; then
            log "agent already running (pid $(cat "$RUN_DIR/agent.pid"))"
        else
            log "no systemd: starting cilium-py-agent in the background (log $LOG_DIR/agent.log)"
            nohup "$VENV/bin/cilium-py-agent" >>"$LOG_DIR/agent.log" 2>&1 &
            echo $! > "$RUN_DIR/agent.pid"
        fi
        if [ -f "$RUN_DIR/docker-plugin.pid" ] && kill -0 "$(cat "$RUN_DIR/docker-plugin.pid")" 2>/dev/null; then
            log "Docker plugin already running (pid $(cat "$RUN_DIR/docker-plugin.pid"))"
        else
            log "starting cilium-py-docker (log $LOG_DIR/docker.log)"
            mkdir -p /run/docker/plugins
            nohup "$VENV/bin/cilium-py-docker" >>"$LOG_DIR/docker.log" 2>&1 &
            echo $! > "$RUN_DIR/docker-plugin.pid"
        fi
    fi
    wait_healthy
}

stop() {
    if [ -d /run/systemd/system ] && systemctl is-active -q cilium-py-agent.service; then
        systemctl stop cilium-py-docker.service cilium-py-agent.service
    else
        for name in docker-plugin agent; do
            if [ -f "$RUN_DIR/$name.pid" ]; then
                kill "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || true
                rm -f "$RUN_DIR/$name.pid"
            fi
        done
    fi
}

cleanup() {
    stop
    # The agent's settings (pools, state dir), as the systemd unit passes them.
    if [ -f /etc/default/cilium-py ]; then set -a; . /etc/default/cilium-py; set +a; fi
    # Wait for the stopped agent to let go of its state lock, then remove its rules.
    for _ in $(seq 1 100); do
        "$VENV/bin/cilium-py-agent" cleanup && return 0
        sleep 0.2
    done
    die "cleanup refused: an agent still runs (see $LOG_DIR/agent.log)"
}

test_deps() {
    deps
    apt_install iperf3 sockperf busybox-static procps iputils-ping netcat-openbsd \
        docker.io golang-go golang-github-appc-cni-dev containernetworking-plugins \
        etcd-server etcd-client openssl curl wrk nghttp2-client nghttp2-server kcat gcc
    [ "$(realpath -m "$TEST_VENV")" != "$(realpath -m "$VENV")" ] \
        || die "CILIUM_PY_TEST_VENV must not be the production virtualenv ($VENV)"
    make_venv "$TEST_VENV" "[test]" 1
}

run_tests() {
    test_deps
    cd "$REPO"
    log "running the test suite with $TEST_VENV"
    "$TEST_VENV/bin/python" -m pytest tests "$@"
}

nightly() {
    # Soak, chaos, fuzz and every benchmark within a budget (tests/nightly/run.py);
    # results in a dated folder under /var/tmp/cilium-py-nightly (--results-root).
    test_deps
    "$TEST_VENV/bin/pip" install -q -e "$REPO[test,nightly]"
    cd "$REPO"
    log "running the nightly with $TEST_VENV"
    "$TEST_VENV/bin/python" -m tests.nightly.run "$@"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    cleanup) cleanup ;;
    deps) deps; install_production ;;
    --link-headers|headers) install_headers ;;
    test) shift; run_tests "$@" ;;
    nightly) shift; nightly "$@" ;;
    *) die "usage: $0 start|stop|cleanup|test|nightly|deps|--link-headers" ;;
esac
