#!/usr/bin/env bash
# Splits a system-wide `perf record -a` profile of one e2e cell into the
# stages a queued packet crosses, as CPU seconds (samples / frequency).
#
#   perf-stages.sh PERF_DATA FREQ LISTENER_COMM_REGEX
#
# Prints "stage<TAB>cpu_seconds" lines. Stages, by the function a sample
# fell in (self time, so nothing is counted twice):
#   k-rules      iptables/nftables chain walks and matches, ipset lookups
#   k-conntrack  connection tracking (and connmark)
#   k-queue      handing packets to the queue and taking verdicts back
#                (nfnetlink_queue, nf_queue, netlink) in any process
#   l-syscall    the kernel side of the listener's recv/send system calls
#                (entry, copies, socket, scheduling, page faults)
#   l-forward    the rest of the kernel in the listener's context: forwarding
#                and delivery of reinjected packets continue there after a
#                verdict (routing, TCP of the receiving namespace, skb frees)
#   u-parse      listener userspace: packet parsing and decapsulation
#   u-table      listener userspace: the connection table
#   u-judge      listener userspace: the verdict engine
#   u-queue      listener userspace: netlink message handling (source::nfqueue)
#   u-other      listener userspace: the worker loop, allocation, libc
#   lab          the lab's client, server and forwarding: wrk, nginx, iperf3,
#                the UDP sender, softirq threads and softirqs run from idle
#   outside      the rest of the machine (other jobs): not part of the lab
#   idle         the idle loop (cpu-clock sampling counts it)
# Without a PMU (as in most VMs) perf samples on cpu-clock: time spent with
# interrupts off lands on the function that turns them back on, so the split
# between kernel functions is approximate; totals per process are not.
set -euo pipefail
data=$1 freq=$2 comm=$3
perf report -i "$data" --no-children --sort comm,dso,sym -g none --percent-limit 0 \
    -F sample,comm,dso,sym --stdio 2>/dev/null |
awk -v freq="$freq" -v lc="$comm" '
    /^#/ || NF < 4 { next }
    {
        n = $1; c = $2; dso = $3
        sym = ""; for (i = 4; i <= NF; i++) sym = sym " " $i
        kern = (sym ~ /\[k\]/)
        s = (c ~ /^(wrk|nginx|iperf3|e2e_udp|ksoftirqd|swapper|curl)/) ? "lab" : "outside"
        if (c ~ /^swapper/ && sym ~ /halt|idle|mwait/) s = "idle"
        if (kern) {
            if (sym ~ /ipt_do_table|ip6t_do_table|nft_do_chain|nft_|_mt6?\>|_mt_v[0-9]|xt_|ip_set|hash_net|hash_ip|bitmap_/) s = "k-rules"
            else if (sym ~ /nf_conntrack|nf_ct_|conntrack|connmark|nf_nat|____nf_conntrack/) s = "k-conntrack"
            else if (sym ~ /nfqnl|nf_queue|nf_reinject|nfnetlink|netlink/) s = "k-queue"
            else if (c ~ lc) {
                if (sym ~ /sys_|syscall|entry_|recvfrom|recvmsg|sendmsg|sendto|_copy_to_|_copy_from_|copy_user|skb_copy_datagram|__skb_datagram|sock_|exit_to_user|schedule|finish_task_switch|futex|hrtimer|_mm_fault|page_fault|__check_object/) s = "l-syscall"
                else s = "l-forward"
            }
        } else if (c ~ lc) {
            if (sym ~ /appwall::engine|aho_corasick|memchr|regex/) s = "u-judge"
            else if (sym ~ /appwall::flow|hashbrown|foldhash/) s = "u-table"
            else if (sym ~ /appwall::packet|appwall::decap|etherparse/) s = "u-parse"
            else if (sym ~ /appwall::source::nfqueue/) s = "u-queue"
            else s = "u-other"
        }
        t[s] += n
    }
    END { for (s in t) printf "%s\t%.4f\n", s, t[s] / freq }
' | sort
