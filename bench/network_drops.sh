#!/bin/bash
# network_drops.sh — the per-layer drop monitor script that `netprobe monitor` replaces, kept
# as the baseline of `cargo xtask bench --monitor-only`. It is written the way such scripts
# are: every interval it forks `ethtool -S`, `tc -s qdisc`, `netstat -s` and `netstat -su`,
# reads /proc/net/softnet_stat, pulls each counter out with its own awk, computes the deltas
# with awk, prints one console line (and one per non-zero column) and appends a CSV row.
#
# Usage: network_drops.sh [INTERFACE] [INTERVAL] [LOGFILE]   (defaults: eth0 5 /var/log/network_drops.log)
# THRESHOLD (environment, default 100): drops per interval from which it is CRIT.
#
# Known limits of the script, kept because they are the baseline's: IPv4 UDP only (netstat
# -su shows no Udp6), TcpExt counters netstat leaves out when zero are read as 0, a counter
# that goes backwards gives 0, and `sleep INTERVAL` after the work makes the period drift.

INTERFACE="${1:-eth0}"
INTERVAL="${2:-5}"
LOGFILE="${3:-/var/log/network_drops.log}"
THRESHOLD="${THRESHOLD:-100}"

HEADER="timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity"
LABELS=("NIC RX Dropped" "NIC TX Dropped" "NIC Missed" "Qdisc Dropped" "Softirq Dropped"
    "SYN Queue Dropped" "Accept Queue Overflow" "TCP Pruned" "TCP Collapsed"
    "UDP Rcvbuf Errors" "UDP Sndbuf Errors")
COLLAPSED=8 # index of TCP Collapsed: shown, but merged segments are not lost

if ! ip link show "$INTERFACE" >/dev/null 2>&1; then
    echo "network_drops.sh: no interface $INTERFACE" >&2
    exit 1
fi
if [ ! -s "$LOGFILE" ]; then
    echo "$HEADER" >>"$LOGFILE" || exit 1
fi

if [ -t 1 ]; then
    GREEN=$'\e[32m' YELLOW=$'\e[33m' RED=$'\e[1;31m' RESET=$'\e[0m'
else
    GREEN="" YELLOW="" RED="" RESET=""
fi

trap 'echo "network_drops.sh: stopped"; exit 0' INT TERM

# Prints the cumulative counters, space separated, in the CSV's column order.
snapshot() {
    local nic qdisc_out netstat_out udp_out
    nic=$(ethtool -S "$INTERFACE" 2>/dev/null)
    qdisc_out=$(tc -s qdisc show dev "$INTERFACE" 2>/dev/null)
    netstat_out=$(netstat -s 2>/dev/null)
    udp_out=$(netstat -su 2>/dev/null)

    local nic_rx nic_tx nic_missed qdisc softirq=0 syn accept pruned collapsed rcvbuf sndbuf
    nic_rx=$(echo "$nic" | awk -F: '$1 ~ /rx/ && $1 ~ /drop|discard|no_buf/ && $1 !~ /rx_dropped/ {s += $2} END {print s + 0}')
    nic_tx=$(echo "$nic" | awk -F: '$1 ~ /tx/ && $1 ~ /drop|discard|no_buf/ && $1 !~ /tx_dropped/ {s += $2} END {print s + 0}')
    nic_missed=$(echo "$nic" | awk -F: '$1 ~ /rx_missed_errors|rx_fifo_errors/ {s += $2} END {print s + 0}')
    # The root qdisc's drops (a classful root already includes its children's).
    qdisc=$(echo "$qdisc_out" | awk '/^qdisc/ {root = / root /} root && match($0, /dropped [0-9]+/) {s += substr($0, RSTART + 8, RLENGTH - 8)} END {print s + 0}')
    # softnet_stat: one line per CPU, hex, the second field is "dropped" (backlog full).
    local line
    while read -r -a line; do
        softirq=$((softirq + 16#${line[1]}))
    done </proc/net/softnet_stat
    syn=$(echo "$netstat_out" | awk '/TCPReqQFullDrop:/ {print $2; exit}')
    accept=$(echo "$netstat_out" | awk '/times the listen queue of a socket overflowed/ {print $1; exit}')
    pruned=$(echo "$netstat_out" | awk '/pruned from receive queue because of socket buffer overrun/ {print $1; exit}')
    collapsed=$(echo "$netstat_out" | awk '/collapsed in receive queue due to low socket buffer/ {print $1; exit}')
    rcvbuf=$(echo "$udp_out" | awk '/^Udp:/ {u = 1; next} /^[A-Za-z]/ {u = 0} u && /receive buffer errors/ {print $1; exit}')
    sndbuf=$(echo "$udp_out" | awk '/^Udp:/ {u = 1; next} /^[A-Za-z]/ {u = 0} u && /send buffer errors/ {print $1; exit}')

    echo "$nic_rx $nic_tx $nic_missed $qdisc $softirq ${syn:-0} ${accept:-0} ${pruned:-0}" \
        "${collapsed:-0} ${rcvbuf:-0} ${sndbuf:-0}"
}

previous=$(snapshot)
iteration=0
while true; do
    sleep "$INTERVAL"
    current=$(snapshot)
    iteration=$((iteration + 1))
    timestamp=$(date '+%Y-%m-%d %H:%M:%S')

    # total, the 11 deltas, severity.
    read -r -a row <<<"$(awk -v prev="$previous" -v cur="$current" -v threshold="$THRESHOLD" 'BEGIN {
        n = split(prev, p, " "); split(cur, c, " ")
        total = 0; out = ""
        for (i = 1; i <= n; i++) {
            d = c[i] - p[i]; if (d < 0) d = 0
            if (i != 9) total += d
            out = out " " d
        }
        severity = total == 0 ? "OK" : (total >= threshold ? "CRIT" : "WARN")
        print total out " " severity
    }')"
    previous=$current

    total=${row[0]}
    severity=${row[12]}
    case $severity in
    OK) badge="${GREEN}✓ OK${RESET}" ;;
    WARN) badge="${YELLOW}⚠ WARN${RESET}" ;;
    *) badge="${RED}✗ CRIT${RESET}" ;;
    esac
    printf '[%s] #%04d | %s | Drops: %s\n' "$timestamp" "$iteration" "$badge" "$total"
    shown=()
    for i in "${!LABELS[@]}"; do
        [ "${row[i + 1]}" -gt 0 ] && shown+=("$i")
    done
    for n in "${!shown[@]}"; do
        i=${shown[n]}
        branch="├─"
        [ "$n" -eq $((${#shown[@]} - 1)) ] && branch="└─"
        aside=""
        [ "$i" -eq "$COLLAPSED" ] && aside=" (merged to save memory, not lost)"
        echo "  $branch ${LABELS[i]}: ${row[i + 1]}$aside"
    done

    fields="${row[*]:1:11}"
    echo "$timestamp,$iteration,$INTERFACE,$total,${fields// /,},$severity" >>"$LOGFILE"
done
