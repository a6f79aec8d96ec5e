//! Who opened a connection, live: the kernel rules keep bare SYNs out of
//! the queue, so the first packet the worker sees may be the server's. The
//! conntrack direction (an nfmark value set by the rules) must still name
//! the client as the opener: port scopes, events and resets depend on it.

use std::time::Duration;

use crate::support::LAB;
use crate::support::lab::{HOSTS, stop, wait_for, with_lab};
use crate::support::py::Py;

cases![server_first_connection_is_judged_by_its_opener_without_its_syn: LAB,];

/// A server that speaks first (a banner), then says how its connection ended.
const PY_BANNER_SERVER: &str = r#"
import socket, sys
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(4)
print("READY")
c, _ = l.accept()
c.sendall(b"220 lab ready\r\n")
c.settimeout(5)
try:
    while True:
        d = c.recv(100)
        if not d:
            print("EOF")
            break
except ConnectionResetError:
    print("RESET")
except socket.timeout:
    print("TIMEOUT")
"#;

/// Reads the banner, then opens an MSN HTTP gateway session: how the
/// connection ended.
const PY_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
b = s.recv(100)
s.sendall(b"POST /gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\n"
          b"Host: gateway.messenger.hotmail.com\r\nContent-Length: 0\r\n\r\n")
s.settimeout(3)
try:
    d = s.recv(100)
    print("BANNER" if b else "NOBANNER", "EOF" if not d else "DATA")
except ConnectionResetError:
    print("BANNER" if b else "NOBANNER", "RESET")
except socket.timeout:
    print("BANNER" if b else "NOBANNER", "TIMEOUT")
"#;

fn server_first_connection_is_judged_by_its_opener_without_its_syn() {
    with_lab(|lab| {
        let hosts = lab.hosts(HOSTS);
        let mut f = lab.start(&hosts, &[], "opener");
        let mut server = Py::start(lab, &lab.server, PY_BANNER_SERVER, &["5025"]);
        server.expect("READY", Duration::from_secs(5));
        let before = lab.kernel_queued();
        let o = lab
            .exec(
                &lab.client,
                "python3",
                &["-c", PY_CLIENT, appwall::lab::SERVER4, "5025"],
                Duration::from_secs(15),
            )
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(
            out,
            "BANNER RESET",
            "{o:?}\n{}\nevents {:?}\nstatus {}",
            f.log_text(),
            f.events(),
            crate::support::lab::status_json(&f)["totals"]
        );
        server.expect("RESET", Duration::from_secs(5));
        // Queued: the banner and the request; the SYN stayed in the kernel
        // (it was the third verdict before), and the blocked mark keeps the rest.
        let queued = lab.kernel_queued() - before;
        assert_eq!(queued, 2, "packets queued for one server-first connection");
        // The event names the client as the source, the server's port as the destination.
        wait_for("the event", Duration::from_secs(5), || !f.events().is_empty());
        let ev = &f.events()[0];
        assert_eq!(ev["src_ip"], "192.0.2.10", "{ev}");
        assert_eq!(ev["dest_port"], 5025, "{ev}");
        assert_eq!(ev["alert"]["signature_id"], "gateway-dll", "{ev}");
        stop(&mut f);
        lab.assert_clean();
    });
}
