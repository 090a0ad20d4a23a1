#!/bin/bash
# keepalived track script: succeeds while lbcore answers its monitor_uri.
#
#   check_lbcore.sh HOST PORT PATH [WATCH_STEPS]
#
# keepalived starts a vrrp_script at most once a second. To see lbcore fail
# within ~0.1 s instead, the script watches for most of that second: it
# checks every 0.1 s (WATCH_STEPS times, default 8) and exits 1 at the first
# miss, 0 if every check passed. Each check is an HTTP GET over bash's
# /dev/tcp (no process started): refused (lbcore gone), no answer within
# 1 s (hung) or not 200 (stopping: monitor_uri answers 503) fail it.
host=${1:-127.0.0.1} port=${2:-80} path=${3:-/healthz} steps=${4:-8}

check() {
    local status
    exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: keepalived\r\n\r\n' "$path" >&3
    read -r -t 1 status <&3
    exec 3<&- 3>&-
    [[ $status == "HTTP/1."?" 200"* ]]
}

for ((i = 0; i < steps; i++)); do
    check || exit 1
    read -r -t 0.1 <> <(:) 2>/dev/null || true  # sleep 0.1 without a process
done
exit 0
