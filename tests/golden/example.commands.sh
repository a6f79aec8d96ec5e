# appwall rules as iptables commands (not atomic; prefer --format restore)
iptables -t mangle -N APPWALL
iptables -t mangle -N APPWALL_INSPECT
iptables -t mangle -A APPWALL -m connmark --mark 0x100000/0x700000 -j DROP
iptables -t mangle -A APPWALL -m connmark --mark 0x200000/0x700000 -p tcp --tcp-flags FIN,RST NONE -j RETURN
iptables -t mangle -A APPWALL -m connmark --mark 0x200000/0x700000 ! -p tcp -j RETURN
iptables -t mangle -A APPWALL -m connmark --mark 0x400000/0x700000 -m conntrack --ctdir REPLY -p tcp --tcp-flags FIN,RST NONE -j RETURN
iptables -t mangle -A APPWALL -m mark --mark 0x100000/0x700000 -j CONNMARK --save-mark --nfmask 0x700000 --ctmask 0x700000
iptables -t mangle -A APPWALL -m mark --mark 0x100000/0x700000 -j DROP
iptables -t mangle -A APPWALL -m mark --mark 0x200000/0x700000 -j CONNMARK --save-mark --nfmask 0x700000 --ctmask 0x700000
iptables -t mangle -A APPWALL -m mark --mark 0x200000/0x700000 -j RETURN
iptables -t mangle -A APPWALL -m mark --mark 0x400000/0x700000 -j CONNMARK --save-mark --nfmask 0x700000 --ctmask 0x700000
iptables -t mangle -A APPWALL -m mark --mark 0x400000/0x700000 -j RETURN
iptables -t mangle -A APPWALL -m connmark --mark 0x200000/0x700000 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 5190 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall app-aim"
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 5190 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall app-aim" -j DROP
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 6667,6697 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall app-irc"
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 6667,6697 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall app-irc" -j DROP
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 1863 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall app-msn"
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 1863 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall app-msn" -j DROP
iptables -t mangle -A APPWALL -s 192.0.2.32/28 -p tcp -m multiport --dports 1863 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall app-msn"
iptables -t mangle -A APPWALL -s 192.0.2.32/28 -p tcp -m multiport --dports 1863 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall app-msn" -j DROP
iptables -t mangle -A APPWALL -s 198.51.100.7/32 -p tcp -m multiport --dports 3306 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall app-mysql"
iptables -t mangle -A APPWALL -s 198.51.100.7/32 -p tcp -m multiport --dports 3306 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall app-mysql" -j DROP
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 5050 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall app-yahoo"
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -p tcp -m multiport --dports 5050 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall app-yahoo" -j DROP
iptables -t mangle -A APPWALL -s 192.0.2.20/32 -p tcp -m multiport --dports 3306 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 0 --nflog-prefix "appwall port-tcp-3306"
iptables -t mangle -A APPWALL -s 192.0.2.20/32 -p tcp -m multiport --dports 3306 -m conntrack --ctdir ORIGINAL -m comment --comment "appwall port-tcp-3306" -j DROP
iptables -t mangle -A APPWALL -s 192.0.2.10/32 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL -s 192.0.2.32/28 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL -s 198.51.100.7/32 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL -d 192.0.2.10/32 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL -d 192.0.2.32/28 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL -d 198.51.100.7/32 -j APPWALL_INSPECT
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=40 && 32>>28=5" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=44 && 32>>28=6" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=48 && 32>>28=7" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=52 && 32>>28=8" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=56 && 32>>28=9" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=60 && 32>>28=10" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp --tcp-flags FIN,RST NONE -m u32 --u32 "0>>24=0x45 && 0&0xFFFF=64 && 32>>28=11" -j RETURN
iptables -t mangle -A APPWALL_INSPECT -p tcp -m hashlimit --hashlimit-above 10000/sec --hashlimit-burst 2000 --hashlimit-mode srcip --hashlimit-name appwall4 --hashlimit-htable-size 16384 --hashlimit-htable-max 131072 --hashlimit-htable-expire 2000 -m comment --comment "appwall queue-rate" -j DROP
iptables -t mangle -A APPWALL_INSPECT -p udp -m hashlimit --hashlimit-above 10000/sec --hashlimit-burst 2000 --hashlimit-mode srcip --hashlimit-name appwall4 --hashlimit-htable-size 16384 --hashlimit-htable-max 131072 --hashlimit-htable-expire 2000 -m comment --comment "appwall queue-rate" -j DROP
iptables -t mangle -A APPWALL_INSPECT -m conntrack --ctdir REPLY -j MARK --set-xmark 0x300000/0x700000
iptables -t mangle -A APPWALL_INSPECT -p tcp -j NFQUEUE --queue-num 0 --queue-bypass
iptables -t mangle -A APPWALL_INSPECT -p udp -j NFQUEUE --queue-num 0 --queue-bypass
iptables -t mangle -I PREROUTING 1 -j APPWALL
