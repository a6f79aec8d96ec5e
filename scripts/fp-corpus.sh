#!/usr/bin/env bash
# Measures appwall's false positives and recall on public packet captures.
#
#   scripts/fp-corpus.sh [WORKDIR]      (default WORKDIR: /tmp/appwall-fp)
#
# Downloads (shallow, sparse) the nDPI test captures and nDPI's own per-flow
# labels for them, runs `appwall scan --json` over every capture with every
# app enabled for every host (with and without the port rules), and prints
# per app: flows nDPI labels as the app, how many appwall blocks by signature
# and by port, and every block of a flow nDPI labels as something else (a
# false positive unless nDPI is wrong; read the listed files to decide).
# Captures stay in WORKDIR, never in this repository.
#
# With SURICATA_VERIFY=1 it also scans every capture of OISF's
# suricata-verify (no per-flow labels: each block it lists is to be reviewed
# by hand). Wireshark's sample captures (https://wiki.wireshark.org/SampleCaptures:
# msnms.pcap, smtp.pcap, imap.cap, pop3 and nntp samples) can be scanned
# the same way.
set -euo pipefail
work=${1:-/tmp/appwall-fp}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
cd "$work"
if [ ! -d nDPI ]; then
    git clone --depth 1 --filter=blob:none --sparse https://github.com/ntop/nDPI
    git -C nDPI sparse-checkout set tests/cfgs/default/pcap tests/cfgs/default/result
fi
pcaps=(nDPI/tests/cfgs/default/pcap/*.pcap nDPI/tests/cfgs/default/pcap/*.pcapng)
printf '0.0.0.0/0 all\n::/0 all\n' > all.hosts
bin=${APPWALL:-$repo/target/release/appwall}
[ -x "$bin" ] || (cd "$repo" && cargo build --release) >&2
"$bin" scan --json --hosts all.hosts "${pcaps[@]}" > ports.json 2> ports.err || true
"$bin" scan --json --signatures-only --hosts all.hosts "${pcaps[@]}" > sigs.json 2> sigs.err || true
python3 - nDPI/tests/cfgs/default/result with-ports=ports.json signatures-only=sigs.json <<'PY'
import collections, json, os, re, sys
# appwall app -> nDPI label parts that name it; PLAIN: the master protocols
# whose payload a signature can see (not the vendor's TLS, DNS or web traffic).
NAMES = {'msn': {'MSN'}, 'qq': {'OICQ', 'QQ'}, 'aim': {'AIM', 'Oscar', 'ICQ'},
         'xmpp': {'Jabber', 'XMPP'}, 'irc': {'IRC'}, 'bittorrent': {'BitTorrent'},
         'yahoo': {'Yahoo'}, 'mysql': {'MySQL'}}
PLAIN = dict(NAMES, qq={'OICQ'}, xmpp={'Jabber'})
row = re.compile(r'^\t\d+\t(TCP|UDP) (\S+) <?->? (\S+) .*?\[proto: ([^\]]*)\]')
def endpoint(s):
    m = re.match(r'^\[?(.*?)\]?:(\d+)$', s)
    return (m.group(1), int(m.group(2)))
labels = {}
resdir = sys.argv[1]
for f in os.listdir(resdir):
    for line in open(os.path.join(resdir, f), errors='replace'):
        m = row.match(line)
        if m:
            key = (f[:-4], m.group(1).lower(), frozenset([endpoint(m.group(2)), endpoint(m.group(3))]))
            labels[key] = m.group(4).split('/')[-1]
for run in sys.argv[2:]:
    name, path = run.split('=', 1)
    flows = [json.loads(l) for l in open(path)]
    st = collections.defaultdict(collections.Counter)
    other = collections.Counter()
    conflicts = 0
    for v in flows:
        key = (os.path.basename(v['file']), v['proto'],
               frozenset([(v['src'], v['sport']), (v['dst'], v['dport'])]))
        label = labels.get(key, '?')
        parts = set(label.split('.'))
        conflicts += bool(v.get('conflicts'))
        for app in NAMES:
            if label.split('.')[0] in PLAIN[app]:
                st[app]['labelled'] += 1
                if v['verdict'] == 'block' and v['app'] == app:
                    st[app]['found-' + v['reason'].split()[0]] += 1
        if v['verdict'] == 'block':
            app, kind = v['app'] or '-', v['reason'].split()[0]
            if not parts & NAMES.get(app, set()):
                other[(app, kind, v['signature'], label, os.path.basename(v['file']))] += 1
    print(f'== {name}: {len(flows)} flows, {conflicts} with retransmission conflicts')
    print(f'{"app":12}{"nDPI":>6}{"by sig":>8}{"by port":>9}{"other-sig":>11}{"other-port":>12}')
    for app in sorted(NAMES):
        s = st[app]
        osig = sum(n for k, n in other.items() if k[0] == app and k[1] == 'signature')
        oport = sum(n for k, n in other.items() if k[0] == app and k[1] == 'port')
        print(f'{app:12}{s["labelled"]:>6}{s["found-signature"]:>8}{s["found-port"]:>9}{osig:>11}{oport:>12}')
    for (app, kind, sig, label, f), n in sorted(other.items()):
        print(f'  blocked as {app} ({kind} {sig or ""}), nDPI says {label}: {n} in {f}')
PY

if [ "${SURICATA_VERIFY:-0}" = 1 ]; then
    [ -d suricata-verify ] || git clone --depth 1 https://github.com/OISF/suricata-verify
    find suricata-verify/tests -name '*.pcap' -o -name '*.pcapng' | sort > sv.list
    xargs -a sv.list "$bin" scan --json --hosts all.hosts > sv.json 2> sv.err || true
    echo "== suricata-verify: $(wc -l < sv.list) captures, $(wc -l < sv.json) flows," \
        "$(grep -c '"conflicts":[1-9]' sv.json || true) with retransmission conflicts; blocked:"
    grep '"verdict":"block"' sv.json | python3 -c '
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    print("  ", v["app"], v["reason"], v["file"], v["proto"], v["dport"])'
fi
