# Helpers for running depot firmware in QEMU (mps2-an385). Source it from bash:
#   source tests/qemu/lib.sh
# Every network path stays on this machine: QEMU's user-mode network with restrict=on, a
# guestfwd to a server on 127.0.0.1 and a hostfwd from 127.0.0.1.

QEMU_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QEMU_FW_DIR=$QEMU_REPO/examples/firmware
QEMU_FW_TARGET=thumbv7m-none-eabi
# Where logs and scratch files go; callers may set it before sourcing.
QEMU_WORK=${QEMU_WORK:-$QEMU_REPO/target/qemu}
mkdir -p "$QEMU_WORK"

# Checks that the tools the QEMU tests need are installed; names every missing one with how
# to get it and returns 2, so a fresh machine fails at once instead of scenario by scenario.
#   qemu_check_tools [build] [size] [defmt] [nats]
# Always: qemu-system-arm, socat, python3. build: cargo and the thumbv7m-none-eabi target.
# size: llvm-size from rustup's llvm-tools. defmt: defmt-print. nats: nats-server.
qemu_check_tools() {
    local missing=() want sysroot=""
    command -v qemu-system-arm >/dev/null || missing+=("qemu-system-arm (apt-get install qemu-system-arm)")
    command -v socat >/dev/null || missing+=("socat (apt-get install socat)")
    command -v python3 >/dev/null || missing+=("python3 (apt-get install python3)")
    if command -v rustc >/dev/null; then sysroot=$(rustc --print sysroot); fi
    for want in "$@"; do
        case $want in
        build)
            command -v cargo >/dev/null || missing+=("cargo (https://rustup.rs)")
            [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/$QEMU_FW_TARGET" ] ||
                missing+=("the $QEMU_FW_TARGET Rust target (rustup target add $QEMU_FW_TARGET)")
            ;;
        size)
            [ -x "$(qemu_size_tool)" ] || missing+=("llvm-size (rustup component add llvm-tools)")
            ;;
        defmt)
            command -v defmt-print >/dev/null || missing+=("defmt-print (cargo install defmt-print)")
            ;;
        nats)
            command -v nats-server >/dev/null || missing+=("nats-server (apt-get install nats-server)")
            ;;
        esac
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "cannot run the QEMU tests; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "tests/install installs all of them." >&2
    return 2
}

# Path of rustup's llvm-size (from the llvm-tools component); empty without rustc.
qemu_size_tool() {
    command -v rustc >/dev/null || return 0
    echo "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-size"
}

# Host CPU a process used over the next SECS seconds, in percent of one core (rounded), from
# the utime + stime ticks in /proc/PID/stat.
#   qemu_cpu_percent PID SECS
qemu_cpu_percent() {
    local pid=$1 secs=$2 hz t0 t1 s0 s1
    hz=$(getconf CLK_TCK)
    # Fields after the command name, which is in parentheses and may hold spaces.
    t0=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }') || return 1
    s0=$(date +%s%N)
    sleep "$secs"
    t1=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }') || return 1
    s1=$(date +%s%N)
    echo $((((t1 - t0) * 100 * 1000000000 / hz + (s1 - s0) / 2) / (s1 - s0)))
}

# Builds every firmware image in release. Cargo reads .cargo/config.toml from the current
# directory, not from --manifest-path, so build from inside the firmware workspace.
qemu_fw_build() {
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet)
}

# Path of a built firmware ELF: qemu_fw_elf fw-baseline
qemu_fw_elf() {
    echo "$QEMU_FW_DIR/target/$QEMU_FW_TARGET/release/$1"
}

# Builds every image with the apps' FEATURES in target/features, which every build with
# features shares (so the dependencies they do not change are built once), then copies the
# images to target/NAME, where they stay when a later build replaces them there.
#   qemu_fw_build_variant NAME FEATURES
qemu_fw_build_variant() {
    local built=$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release
    local copies=$QEMU_FW_DIR/target/$1/$QEMU_FW_TARGET/release
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet --features "$2" --target-dir target/features) &&
        mkdir -p "$copies" &&
        find "$built" -maxdepth 1 -type f -name 'fw-*' ! -name '*.*' ! -name '*+*' \
            -exec cp {} "$copies/" \;
}

# The images again with the apps' `defmt` feature (depot's logs as defmt frames on semihosting
# stdout), kept apart so they never replace the plain ones.
qemu_fw_build_defmt() {
    qemu_fw_build_variant defmt defmt
}

qemu_fw_elf_defmt() {
    echo "$QEMU_FW_DIR/target/defmt/$QEMU_FW_TARGET/release/$1"
}

# The images again with the apps' optional `aead` feature (frames sealed, not only MACed:
# PROTOCOL.md §5.1), kept apart: what firmware that encrypts costs.
qemu_fw_build_aead() {
    qemu_fw_build_variant aead aead
}

qemu_fw_elf_aead() {
    echo "$QEMU_FW_DIR/target/aead/$QEMU_FW_TARGET/release/$1"
}

# fw-manager again with depot-core's optional capabilities FEATURES (comma-separated apps
# features, e.g. leases,objects), copied to a file of its own: the builds share one target
# directory, so the dependencies are built once for all of them.
qemu_fw_build_features() {
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet --bin fw-manager --features "$1" \
        --target-dir target/features) &&
        cp "$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release/fw-manager" \
            "$(qemu_fw_elf_features "$1")"
}

# fw-consumer with depot's error texts (the apps' `texts` feature), beside those.
qemu_fw_build_texts() {
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet --bin fw-consumer --features texts \
        --target-dir target/features) &&
        cp "$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release/fw-consumer" "$(qemu_fw_elf_texts)"
}

qemu_fw_elf_texts() {
    echo "$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release/fw-consumer+texts"
}

# fw-keyring-manager, which needs the apps' `keyring` feature, built beside those.
qemu_fw_build_keyring() {
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet --bin fw-keyring-manager \
        --features keyring --target-dir target/features)
}

# fw-call-manager and fw-caller, built with the apps' `objects` feature beside those.
qemu_fw_build_objects() {
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet --bin fw-call-manager --bin fw-caller \
        --features objects --target-dir target/features)
}

qemu_fw_elf_objects() {
    echo "$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release/$1"
}

qemu_fw_elf_keyring() {
    echo "$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release/$1"
}

# fw-session-producer, which needs the apps' `sessions` feature (a client that reconnects),
# built beside those.
qemu_fw_build_sessions() {
    (cd "$QEMU_FW_DIR" && cargo build --release --quiet --bin fw-session-producer \
        --features sessions --target-dir target/features)
}

qemu_fw_elf_sessions() {
    echo "$QEMU_FW_DIR/target/features/$QEMU_FW_TARGET/release/$1"
}

qemu_fw_elf_features() {
    echo "$QEMU_FW_DIR/target/features/fw-manager+${1//,/+}"
}

# Prints a TCP port that is free on 127.0.0.1 right now.
qemu_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a firmware ELF in QEMU and returns QEMU's exit status (0 pass, 1 fail, 124 timeout).
#   qemu_run ELF LOG HOST_PORT FWD_PORT [TIMEOUT_SECONDS]
# The guest reaches 127.0.0.1:HOST_PORT as 10.0.2.100:7777 (a socat per connection; its log
# goes to /dev/null because QEMU hands it the guest's socket as stderr too), and
# 127.0.0.1:FWD_PORT on the host reaches the guest's port 5555. QEMU's output goes to LOG
# (only its stderr, where the firmware prints, if QEMU_RUN_STDOUT names a file for its stdout,
# where defmt frames go), its process id to LOG.pid. Sets QEMU_RUN_MS to the run's wall time.
qemu_run() {
    local elf=$1 log=$2 host_port=$3 fwd_port=$4 secs=${5:-30}
    local netdev="user,id=n0,restrict=on"
    netdev+=",guestfwd=tcp:10.0.2.100:7777-cmd:socat -lf /dev/null - TCP:127.0.0.1:$host_port"
    netdev+=",hostfwd=tcp:127.0.0.1:$fwd_port-:5555"
    local start rc=0
    start=$(date +%s%N)
    rm -f "$log.pid"
    # Both streams append, so that into one file neither overwrites the other.
    : >"$log"
    : >"${QEMU_RUN_STDOUT:-$log}"
    # A fresh value per run, readable by the firmware through semihosting: test entropy.
    DEPOT_QEMU_NETDEV=$netdev \
        DEPOT_QEMU_APPEND="seed=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
        DEPOT_QEMU_PIDFILE=$log.pid \
        timeout --kill-after=5 "$secs" "$QEMU_FW_DIR/qemu-run" "$elf" </dev/null \
        >>"${QEMU_RUN_STDOUT:-$log}" 2>>"$log" || rc=$?
    QEMU_RUN_MS=$((($(date +%s%N) - start) / 1000000))
    return "$rc"
}

# Starts a one-connection line server on 127.0.0.1 in the background: it reads one line,
# appends it to GOT_FILE, answers REPLY plus a newline and exits (or gives up after
# TIMEOUT_SECONDS). Sets QEMU_SERVER_PID and QEMU_SERVER_PORT.
#   qemu_line_server GOT_FILE REPLY [TIMEOUT_SECONDS]
qemu_line_server() {
    local got=$1 reply=$2 secs=${3:-30}
    local port_file
    port_file=$(mktemp "$QEMU_WORK/port.XXXXXX")
    : >"$got"
    python3 - "$port_file" "$got" "$reply" "$secs" <<'PY' &
import socket, sys
port_file, got, reply, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
server = socket.create_server(("127.0.0.1", 0))
server.settimeout(secs)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.getsockname()[1]))
import os; os.rename(port_file + ".tmp", port_file)
conn, _ = server.accept()
conn.settimeout(secs)
stream = conn.makefile("rwb")
line = stream.readline()
with open(got, "ab") as f:
    f.write(line)
stream.write(reply.encode() + b"\n")
stream.flush()
conn.close()
PY
    QEMU_SERVER_PID=$!
    # The port file is empty until the server has bound its socket.
    local i
    for i in $(seq 100); do
        [ -s "$port_file" ] && break
        sleep 0.05
    done
    QEMU_SERVER_PORT=$(cat "$port_file")
    rm -f "$port_file"
    [ -n "$QEMU_SERVER_PORT" ]
}

# Stops the server started by qemu_line_server, if it still runs.
qemu_stop_server() {
    if [ -n "${QEMU_SERVER_PID:-}" ]; then
        kill "$QEMU_SERVER_PID" 2>/dev/null || true
        wait "$QEMU_SERVER_PID" 2>/dev/null || true
        QEMU_SERVER_PID=
    fi
}
