# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_appwall_global_optspecs
    string join \n h/help V/version
end

function __fish_appwall_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_appwall_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_appwall_using_subcommand
    set -l cmd (__fish_appwall_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c appwall -n "__fish_appwall_needs_command" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_needs_command" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "check" -d 'Validate a hosts file and the app library; print a summary. Exit code 0 only when all is valid'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "kernel-rules" -d 'Print the kernel rules (iptables-restore input, plain commands, or ipset input) for a hosts file'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "scan" -d 'Judge every packet of pcap/pcapng captures offline with the live filter\'s engine'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "run" -d 'Run the live filter: install the rules, judge queued packets, remove the rules on exit'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "status" -d 'Show what the running filter of this network namespace reports (its status file): state, policy, counters'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "uninstall" -d 'Remove everything `appwall run` installed (after a crash, say)'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "demo" -d 'Build a throw-away lab of network namespaces and show what `appwall run` blocks (root)'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "bench" -d 'Measure verdict throughput without root: replay captures (or a synthetic mix) in memory through the engine'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "sample" -d 'Write a synthetic sample capture (MSN over HTTP, MSNP, benign web and DNS) to scan'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "import-squid" -d 'Translate a squid.conf\'s deny rules (and the ACLs they use) into an app library file of message rules'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "generate" -d 'Write the man pages or shell completions generated from this command line (for packagers)'
complete -c appwall -n "__fish_appwall_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c appwall -n "__fish_appwall_using_subcommand check" -l hosts -d 'Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand check" -l library -d 'App library directory (one TOML file per app, like rules/), added to the built-in library; an app of the same name replaces the built-in one. Repeatable. Old spelling: --rules' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand check" -l default-apps -d 'Apps for hosts lines that name none (comma-separated). Default: every app marked default in the library' -r
complete -c appwall -n "__fish_appwall_using_subcommand check" -l queue -d 'First NFQUEUE queue number' -r
complete -c appwall -n "__fish_appwall_using_subcommand check" -l queues -d 'Number of queues, spread with --queue-balance (one worker each)' -r
complete -c appwall -n "__fish_appwall_using_subcommand check" -l port-action -d 'What to do with connections to a blocked port' -r -f -a "drop\t'Drop in mangle PREROUTING'
reject\t'Reject in the filter table (TCP reset, ICMP port unreachable)'"
complete -c appwall -n "__fish_appwall_using_subcommand check" -l ipset-threshold -d 'Host groups larger than this are matched through an ipset (hash:net)' -r
complete -c appwall -n "__fish_appwall_using_subcommand check" -l queue-rate -d 'Per-source share of the queue: PPS[/BURST] packets per second (and burst, default PPS/5) per source address, or off. A source\'s packets above it are dropped in the kernel, never passed uninspected, so one flooding host cannot fill the queue for others. Only packets on their way to the queue count (new and not yet settled connections); status and metrics count the drops as queue_rate_limited' -r
complete -c appwall -n "__fish_appwall_using_subcommand check" -l no-builtin-library -d 'Use only the --library directories, not the library built into appwall. Old spelling: --no-builtin-rules'
complete -c appwall -n "__fish_appwall_using_subcommand check" -l fail-closed -d 'Drop queued traffic when appwall is not running (default: fail open with --queue-bypass)'
complete -c appwall -n "__fish_appwall_using_subcommand check" -l reset -d 'Answer blocked TCP connections with a reset so clients fail fast'
complete -c appwall -n "__fish_appwall_using_subcommand check" -l queue-empty-segments -d 'Also queue TCP segments without payload (pure ACKs, SYNs, SYN-ACKs; by default the kernel skips them with xt_u32; use this on kernels without xt_u32)'
complete -c appwall -n "__fish_appwall_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c appwall -n "__fish_appwall_using_subcommand check" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l hosts -d 'Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l library -d 'App library directory (one TOML file per app, like rules/), added to the built-in library; an app of the same name replaces the built-in one. Repeatable. Old spelling: --rules' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l default-apps -d 'Apps for hosts lines that name none (comma-separated). Default: every app marked default in the library' -r
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l queue -d 'First NFQUEUE queue number' -r
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l queues -d 'Number of queues, spread with --queue-balance (one worker each)' -r
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l port-action -d 'What to do with connections to a blocked port' -r -f -a "drop\t'Drop in mangle PREROUTING'
reject\t'Reject in the filter table (TCP reset, ICMP port unreachable)'"
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l ipset-threshold -d 'Host groups larger than this are matched through an ipset (hash:net)' -r
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l queue-rate -d 'Per-source share of the queue: PPS[/BURST] packets per second (and burst, default PPS/5) per source address, or off. A source\'s packets above it are dropped in the kernel, never passed uninspected, so one flooding host cannot fill the queue for others. Only packets on their way to the queue count (new and not yet settled connections); status and metrics count the drops as queue_rate_limited' -r
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l family -d 'Which address family to print' -r -f -a "ipv4\t'IPv4 only: one iptables-restore input'
ipv6\t'IPv6 only: one ip6tables-restore input'
all\t'Both, one after the other, each under a comment header'"
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l format -d 'Output format' -r -f -a "restore\t'iptables-restore --noflush input (atomic)'
commands\t'Plain iptables commands, as a classic shell script would run them'
ipset\t'ipset restore input for the host sets the rules use'"
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l no-builtin-library -d 'Use only the --library directories, not the library built into appwall. Old spelling: --no-builtin-rules'
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l fail-closed -d 'Drop queued traffic when appwall is not running (default: fail open with --queue-bypass)'
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l reset -d 'Answer blocked TCP connections with a reset so clients fail fast'
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -l queue-empty-segments -d 'Also queue TCP segments without payload (pure ACKs, SYNs, SYN-ACKs; by default the kernel skips them with xt_u32; use this on kernels without xt_u32)'
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c appwall -n "__fish_appwall_using_subcommand kernel-rules" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l hosts -d 'Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l library -d 'App library directory (one TOML file per app, like rules/), added to the built-in library; an app of the same name replaces the built-in one. Repeatable. Old spelling: --rules' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l default-apps -d 'Apps for hosts lines that name none (comma-separated). Default: every app marked default in the library' -r
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l depth-bytes -d 'A connection is clean (no longer inspected) once one direction has carried this many payload bytes with no match' -r
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l depth-packets -d '...or, when not 0, once this many payload segments (both directions) passed with no match. Off by default: a sender that cuts its bytes into tiny segments would reach it early' -r
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l max-flows -d 'Most connections tracked at once; the least recently active is evicted beyond it' -r
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l flow-timeout -d 'Seconds of silence after which a connection is forgotten' -r
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l no-builtin-library -d 'Use only the --library directories, not the library built into appwall. Old spelling: --no-builtin-rules'
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l json -d 'One JSON object per flow per line instead of a table'
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l signatures-only -d 'Ignore the fast-path port rules: judge by payload signatures alone'
complete -c appwall -n "__fish_appwall_using_subcommand scan" -l blocked-only -d 'Show only blocked flows in the table'
complete -c appwall -n "__fish_appwall_using_subcommand scan" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_using_subcommand scan" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l hosts -d 'Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand run" -l library -d 'App library directory (one TOML file per app, like rules/), added to the built-in library; an app of the same name replaces the built-in one. Repeatable. Old spelling: --rules' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand run" -l default-apps -d 'Apps for hosts lines that name none (comma-separated). Default: every app marked default in the library' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l depth-bytes -d 'A connection is clean (no longer inspected) once one direction has carried this many payload bytes with no match' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l depth-packets -d '...or, when not 0, once this many payload segments (both directions) passed with no match. Off by default: a sender that cuts its bytes into tiny segments would reach it early' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l max-flows -d 'Most connections tracked at once; the least recently active is evicted beyond it' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l flow-timeout -d 'Seconds of silence after which a connection is forgotten' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l queue -d 'First NFQUEUE queue number' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l queues -d 'Number of queues, spread with --queue-balance (one worker each)' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l port-action -d 'What to do with connections to a blocked port' -r -f -a "drop\t'Drop in mangle PREROUTING'
reject\t'Reject in the filter table (TCP reset, ICMP port unreachable)'"
complete -c appwall -n "__fish_appwall_using_subcommand run" -l ipset-threshold -d 'Host groups larger than this are matched through an ipset (hash:net)' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l queue-rate -d 'Per-source share of the queue: PPS[/BURST] packets per second (and burst, default PPS/5) per source address, or off. A source\'s packets above it are dropped in the kernel, never passed uninspected, so one flooding host cannot fill the queue for others. Only packets on their way to the queue count (new and not yet settled connections); status and metrics count the drops as queue_rate_limited' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l queue-maxlen -d 'Most packets waiting in each kernel queue; beyond it the kernel accepts (fail-open) or drops (--fail-closed)' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l rcvbuf -d 'Netlink socket receive buffer per queue, bytes (set with SO_RCVBUFFORCE)' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l status-file -d 'JSON status file, rewritten every --stats-interval and at exit, with OpenMetrics text beside it (FILE with extension .prom, for node_exporter\'s textfile collector). Default: /run/appwall/status.json in the initial network namespace, /run/appwall/NETNS-ID/status.json in any other' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand run" -l metrics-listen -d 'Serve OpenMetrics at http://ADDR/metrics (e.g. 127.0.0.1:9474): one connection at a time, bounded requests' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l events -d 'JSON-lines event log, one line per blocked connection ("-" for stdout)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand run" -l stats-interval -d 'Seconds between status file writes and summary log lines' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l user -d 'Run as this user (name or uid) once the instance lock is taken, keeping only CAP_NET_ADMIN (and CAP_NET_RAW for iptables); --status-file and --events must be writable by it' -r
complete -c appwall -n "__fish_appwall_using_subcommand run" -l queue-full -d 'When a queue is full (a flood outruns the filter): accept the packets that do not fit, uninspected, or drop them. Separate from --fail-closed, which is about appwall not running at all. Default: drop with --fail-closed, else accept' -r -f -a "accept\t'Accept it uninspected (the queue\'s fail-open flag): traffic never stalls, a flood can push packets past inspection'
drop\t'Drop it: nothing passes uninspected, a flood costs packets (retransmitted for TCP)'"
complete -c appwall -n "__fish_appwall_using_subcommand run" -l no-builtin-library -d 'Use only the --library directories, not the library built into appwall. Old spelling: --no-builtin-rules'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l fail-closed -d 'Drop queued traffic when appwall is not running (default: fail open with --queue-bypass)'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l reset -d 'Answer blocked TCP connections with a reset so clients fail fast'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l queue-empty-segments -d 'Also queue TCP segments without payload (pure ACKs, SYNs, SYN-ACKs; by default the kernel skips them with xt_u32; use this on kernels without xt_u32)'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l silent-drop -d 'Drop blocked TCP connections silently instead of answering both sides with a reset (clients then wait for their own timeout)'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l accept-all -d 'Benchmarking: queue and answer every packet as usual (same rules) but accept it without judging and never mark its connection, so every packet keeps being queued. Measures the queue path alone; blocks nothing'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l no-fast-path -d 'Benchmarking: judge every packet but never hand a connection to the kernel fast path (no connmark), so every packet of a listed host is queued and judged'
complete -c appwall -n "__fish_appwall_using_subcommand run" -l stage-timings -d 'Profiling: keep latency histograms per stage of a queued packet (queue wait from the kernel\'s receive timestamp, judging, verdict) in the status file, `appwall status` and the metrics. Turns on the kernel\'s receive timestamps for the whole machine and reads the clock a few times per packet'
complete -c appwall -n "__fish_appwall_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c appwall -n "__fish_appwall_using_subcommand run" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand status" -l status-file -d 'The status file to read. Default: that of this network namespace (/run/appwall/status.json in the initial one, /run/appwall/NETNS-ID/status.json in others)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand status" -l json -d 'Print the status file\'s JSON as it is'
complete -c appwall -n "__fish_appwall_using_subcommand status" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_using_subcommand status" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand uninstall" -l force -d 'Remove even when an appwall instance is running in this network namespace'
complete -c appwall -n "__fish_appwall_using_subcommand uninstall" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_using_subcommand uninstall" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand demo" -l verbose -d 'Show the filter\'s own log lines'
complete -c appwall -n "__fish_appwall_using_subcommand demo" -l no-filter -d 'Run the lab without the filter, to see that everything passes then'
complete -c appwall -n "__fish_appwall_using_subcommand demo" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_using_subcommand demo" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l hosts -d 'Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l library -d 'App library directory (one TOML file per app, like rules/), added to the built-in library; an app of the same name replaces the built-in one. Repeatable. Old spelling: --rules' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l default-apps -d 'Apps for hosts lines that name none (comma-separated). Default: every app marked default in the library' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l depth-bytes -d 'A connection is clean (no longer inspected) once one direction has carried this many payload bytes with no match' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l depth-packets -d '...or, when not 0, once this many payload segments (both directions) passed with no match. Off by default: a sender that cuts its bytes into tiny segments would reach it early' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l max-flows -d 'Most connections tracked at once; the least recently active is evicted beyond it' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l flow-timeout -d 'Seconds of silence after which a connection is forgotten' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l threads -d 'Threads for the multi-thread rows, each with its own connection table (as each queue has). Default: the number of cores' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l rounds -d 'Timed rounds per row; the table shows min/median/max over them' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l seconds -d 'Seconds of replay per round (a warm-up of up to 0.2 s comes first)' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l mix -d 'Synthetic traffic to use when no capture is given' -r -f -a "mixed\t'Benign web (HTML pages, TLS-like downloads, DNS) with one connection in sixteen being MSN'
web\t'Benign web only'
msn\t'MSN only: HTTP gateway, MSNP on 1863 and on other ports'
small\t'Small packets: interactive sessions of 30-120 byte segments'
full\t'Full-size packets: 1460-byte segments of text and binary'"
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l connections -d 'Concurrent connections in the synthetic traffic' -r
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l no-builtin-library -d 'Use only the --library directories, not the library built into appwall. Old spelling: --no-builtin-rules'
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l no-depth -d 'Also measure with no inspection depth: every packet inspected in full (the worst case)'
complete -c appwall -n "__fish_appwall_using_subcommand bench" -l json -d 'One JSON object instead of a table'
complete -c appwall -n "__fish_appwall_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c appwall -n "__fish_appwall_using_subcommand bench" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand sample" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_using_subcommand sample" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand import-squid" -s o -l output -d 'Write the rule file here instead of standard output (e.g. rules/site.toml; the app is named after the file)' -r -F
complete -c appwall -n "__fish_appwall_using_subcommand import-squid" -l name -d 'App name when writing to standard output' -r
complete -c appwall -n "__fish_appwall_using_subcommand import-squid" -l utc-offset -d 'UTC offset of the proxy\'s local time (`+01:00`): Squid reads `time` ACLs in local time; the schedules written are in UTC without it' -r
complete -c appwall -n "__fish_appwall_using_subcommand import-squid" -s h -l help -d 'Print help'
complete -c appwall -n "__fish_appwall_using_subcommand import-squid" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c appwall -n "__fish_appwall_using_subcommand generate" -s V -l version -d 'Print version'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "check" -d 'Validate a hosts file and the app library; print a summary. Exit code 0 only when all is valid'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "kernel-rules" -d 'Print the kernel rules (iptables-restore input, plain commands, or ipset input) for a hosts file'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "scan" -d 'Judge every packet of pcap/pcapng captures offline with the live filter\'s engine'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "run" -d 'Run the live filter: install the rules, judge queued packets, remove the rules on exit'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "status" -d 'Show what the running filter of this network namespace reports (its status file): state, policy, counters'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "uninstall" -d 'Remove everything `appwall run` installed (after a crash, say)'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "demo" -d 'Build a throw-away lab of network namespaces and show what `appwall run` blocks (root)'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "bench" -d 'Measure verdict throughput without root: replay captures (or a synthetic mix) in memory through the engine'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "sample" -d 'Write a synthetic sample capture (MSN over HTTP, MSNP, benign web and DNS) to scan'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "import-squid" -d 'Translate a squid.conf\'s deny rules (and the ACLs they use) into an app library file of message rules'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "generate" -d 'Write the man pages or shell completions generated from this command line (for packagers)'
complete -c appwall -n "__fish_appwall_using_subcommand help; and not __fish_seen_subcommand_from check kernel-rules scan run status uninstall demo bench sample import-squid generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
