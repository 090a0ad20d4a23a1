#!/bin/sh
# keepalived notify hook: log every VRRP transition and record the current
# state in STATE_FILE (monitoring, and the HA drill, read it).
#
#   notify "/etc/keepalived/notify.sh STATE_FILE"
#   keepalived appends: TYPE NAME STATE PRIORITY   (e.g. INSTANCE VI_LB MASTER 100)
state_file=$1 type=$2 name=$3 state=$4 priority=$5
now=$(date +%s.%N)
echo "$now $type $name $state $priority" >> "$state_file.log"
echo "$state" > "$state_file.tmp" && mv "$state_file.tmp" "$state_file"
logger -t lbcore-keepalived "$type $name is $state (priority $priority)" 2>/dev/null || true
exit 0
