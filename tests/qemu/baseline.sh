#!/usr/bin/env bash
# fw-baseline in QEMU: it must get a DHCP lease, send its hello line to a server on the host
# and print the reply (pass); and with no server listening it must fail, not hang or pass.
#   tests/qemu/baseline.sh [--no-build]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [ "${1:-}" = --no-build ]; then qemu_check_tools || exit 2; else qemu_check_tools build || exit 2; fi
[ "${1:-}" = --no-build ] || qemu_fw_build
elf=$(qemu_fw_elf fw-baseline)
passed=0 failed=0
trap qemu_stop_server EXIT

check() { # check NAME OK? LOG
    if [ "$2" = yes ]; then
        passed=$((passed + 1))
        echo "ok   $1 (${QEMU_RUN_MS} ms)"
    else
        failed=$((failed + 1))
        echo "FAIL $1 (${QEMU_RUN_MS} ms); QEMU output:"
        sed 's/^/    /' "$3"
    fi
}

# 1. Against a server: exit 0, the server saw the hello, the firmware printed the reply.
got=$QEMU_WORK/baseline.got
log=$QEMU_WORK/baseline.log
qemu_line_server "$got" "hello from host"
rc=0
qemu_run "$elf" "$log" "$QEMU_SERVER_PORT" "$(qemu_free_port)" 30 || rc=$?
qemu_stop_server
ok=no
if [ "$rc" = 0 ] && grep -qx "hello from fw-baseline" "$got" &&
    grep -q "fw-baseline: reply: hello from host" "$log"; then
    ok=yes
fi
check "fw-baseline talks to the host (exit $rc)" "$ok" "$log"

# 2. No server on the port: the firmware must report failure (exit 1), before the timeout.
log=$QEMU_WORK/baseline-noserver.log
rc=0
qemu_run "$elf" "$log" "$(qemu_free_port)" "$(qemu_free_port)" 30 || rc=$?
ok=no
if [ "$rc" = 1 ] && grep -q "fw-baseline: FAIL" "$log"; then ok=yes; fi
check "fw-baseline fails without a server (exit $rc)" "$ok" "$log"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
