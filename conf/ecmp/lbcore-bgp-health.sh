#!/bin/bash
# Announce the VIP over BGP while lbcore is healthy (ECMP, docs/ha.md).
#
#   lbcore-bgp-health.sh BIRD_SOCKET HOST PORT PATH [RISE]
#
# Asks lbcore's monitor_uri every 0.1 s over bash's /dev/tcp; at the first
# failure (refused, no answer within 1 s, not 200: lbcore answers 503 once
# SIGTERM arrives) it disables BIRD's `vip` protocol, which withdraws the
# route at once; after RISE good answers in a row (default 3) it enables it
# again. Run it beside BIRD (a systemd unit with Restart=always).
sock=${1:-/run/bird/bird.ctl} host=${2:-127.0.0.1} port=${3:-80} path=${4:-/healthz} rise=${5:-3}

check() {
    local status
    exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: bgp-health\r\n\r\n' "$path" >&3
    read -r -t 1 status <&3
    exec 3<&- 3>&-
    [[ $status == "HTTP/1."?" 200"* ]]
}

announce() {
    if birdc -s "$sock" "$1" vip >/dev/null; then
        announced=$2
        logger -t lbcore-bgp "$1 vip: lbcore is $3" 2>/dev/null || true
        echo "$(date +%s.%N) $1" >&2
    fi
}

announced=unknown good=0
while :; do
    if check; then
        good=$((good + 1))
        if [[ $announced != yes && $good -ge $rise ]]; then announce enable yes up; fi
    else
        good=0
        if [[ $announced != no ]]; then announce disable no down; fi
    fi
    read -r -t 0.1 <> <(:) 2>/dev/null || true  # sleep 0.1 without a process
done
