//! The NFQUEUE packet source: a kernel queue bound through the `nfq` crate.
//!
//! Guarantees: the socket is configured before the first packet (fail-open
//! flag, GSO packets up to 64 KiB, queue length, an enlarged receive buffer,
//! ENOBUFS reporting so overruns are counted instead of hidden, a receive
//! timeout so a worker notices a stop); a queue owned by another process is
//! reported as [`QueueError::Busy`] with the owner's port id; the kernel's
//! own drop counters of the socket are readable ([`socket_drops`]).
//! What to answer is not decided here: see [`crate::daemon::worker`].

use std::collections::HashSet;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::{PacketSource, QueueError, QueueVerdict, Received};

/// Kernel-side settings of a queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Accept (true) or drop packets the kernel cannot queue because the queue is full.
    pub fail_open: bool,
    /// Most packets waiting in the kernel queue.
    pub max_len: u32,
    /// Socket receive buffer in bytes (SO_RCVBUFFORCE).
    pub rcvbuf: usize,
    /// How long `recv` waits before returning `Idle` (to notice a stop).
    pub poll: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            fail_open: true,
            max_len: 4096,
            rcvbuf: 8 << 20,
            poll: Duration::from_millis(200),
        }
    }
}

/// A queue bound through the nfq crate: the production [`PacketSource`].
pub struct NfqSource {
    queue: nfq::Queue,
    num: u16,
    /// The socket's fd, found by [`find_new_netlink_fd`] (nfq does not expose it).
    fd: Option<RawFd>,
    /// The socket's inode, to read its drop counter in `/proc/net/netlink`.
    pub inode: Option<u64>,
    /// Receive buffer the kernel granted, bytes.
    pub rcvbuf: Option<usize>,
}

static OPEN_LOCK: Mutex<()> = Mutex::new(());

impl NfqSource {
    /// Opens a netlink socket and binds queue `num`: fail-open flag, GSO
    /// packets (up to 64 KiB), queue length, enlarged receive buffer, and
    /// ENOBUFS reporting so overruns are counted instead of hidden.
    pub fn open(num: u16, opts: &QueueOptions) -> Result<NfqSource, QueueError> {
        let cfg = |what: &'static str| {
            move |source| QueueError::Config {
                queue: num,
                what,
                source,
            }
        };
        let (mut queue, fd) = {
            let _guard = OPEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let before: HashSet<u64> = socket_fds().into_iter().map(|(_, ino)| ino).collect();
            let queue = nfq::Queue::open().map_err(QueueError::Open)?;
            (queue, find_new_netlink_fd(&before))
        };
        if let Err(e) = queue.bind(num) {
            let owner = kernel_queues().into_iter().find(|k| k.queue == num);
            return Err(match owner {
                Some(k) => QueueError::Busy {
                    queue: num,
                    portid: k.portid,
                },
                None => cfg("bind")(e),
            });
        }
        queue
            .set_fail_open(num, opts.fail_open)
            .map_err(cfg("set the fail-open flag"))?;
        queue
            .set_recv_gso(num, true)
            .map_err(cfg("ask for GSO packets"))?;
        queue
            .set_queue_max_len(num, opts.max_len)
            .map_err(cfg("set the queue length"))?;
        queue
            .set_recv_enobufs(true)
            .map_err(cfg("enable overrun reports"))?;
        let mut src = NfqSource {
            queue,
            num,
            fd: fd.map(|(fd, _)| fd),
            inode: fd.map(|(_, ino)| ino),
            rcvbuf: None,
        };
        match src.fd {
            Some(fd) => {
                set_close_on_exec(fd).map_err(cfg("make the socket close-on-exec"))?;
                src.rcvbuf = Some(
                    set_socket_options(fd, opts.rcvbuf, opts.poll).map_err(cfg("size the socket buffer"))?,
                )
            }
            None => {
                // Without the fd there is no receive timeout, and a worker
                // could not notice a stop: refuse rather than hang.
                return Err(cfg("find its netlink socket")(io::Error::other(
                    "not listed in /proc/self/fd and /proc/net/netlink",
                )));
            }
        }
        Ok(src)
    }

    /// The queue number.
    pub fn queue_num(&self) -> u16 {
        self.num
    }

    /// The socket's descriptor (close-on-exec).
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd
    }
}

impl Drop for NfqSource {
    fn drop(&mut self) {
        // Closing the socket unbinds too; this just says it explicitly.
        let _ = self.queue.unbind(self.num);
    }
}

impl PacketSource for NfqSource {
    type Packet = nfq::Message;

    fn recv(&mut self) -> Result<Received<nfq::Message>, QueueError> {
        match self.queue.recv() {
            Ok(m) => Ok(Received::Packet(m)),
            Err(e) => match e.raw_os_error() {
                Some(libc_errno::EAGAIN | libc_errno::EINTR) => Ok(Received::Idle),
                Some(libc_errno::ENOBUFS) => Ok(Received::Overrun),
                _ if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Idle),
                _ => Err(QueueError::Recv {
                    queue: self.num,
                    source: e,
                }),
            },
        }
    }

    fn payload(p: &nfq::Message) -> &[u8] {
        p.get_payload()
    }

    fn mark(p: &nfq::Message) -> u32 {
        p.get_nfmark()
    }

    fn is_gso(p: &nfq::Message) -> bool {
        p.is_seg_offloaded()
    }

    fn is_truncated(p: &nfq::Message) -> bool {
        p.get_original_len() > p.get_payload().len()
    }

    fn verdict(&mut self, mut p: nfq::Message, v: QueueVerdict) -> Result<(), QueueError> {
        match v {
            QueueVerdict::Accept => p.set_verdict(nfq::Verdict::Accept),
            QueueVerdict::Drop => p.set_verdict(nfq::Verdict::Drop),
            QueueVerdict::Repeat(mark) => {
                p.set_nfmark(mark);
                p.set_verdict(nfq::Verdict::Repeat);
            }
        }
        self.queue.verdict(p).map_err(|source| QueueError::Verdict {
            queue: self.num,
            source,
        })
    }

    fn start_draining(&mut self) {
        self.queue.set_nonblocking(true);
    }
}

/// errno values used above (nix re-exports them as an enum; plain numbers
/// compare directly with `raw_os_error`).
mod libc_errno {
    pub const EAGAIN: i32 = nix::errno::Errno::EAGAIN as i32;
    pub const EINTR: i32 = nix::errno::Errno::EINTR as i32;
    pub const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;
}

/// (fd, socket inode) of every socket this process holds.
fn socket_fds() -> Vec<(RawFd, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
        let link = std::fs::read_link(e.path()).ok()?;
        let ino = link
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some((fd, ino))
    })
    .collect()
}

/// Inodes of this namespace's NETLINK_NETFILTER sockets, from `/proc/net/netlink`.
fn netfilter_netlink_inodes() -> HashSet<u64> {
    std::fs::read_to_string("/proc/net/netlink")
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() >= 10 && f[1] == "12").then(|| f[9].parse().ok())?
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The netfilter netlink socket that appeared since `before` (socket
/// inodes, not fd numbers, which get reused): the nfq crate keeps its fd
/// private, and setting the receive buffer needs it. `None` unless exactly
/// one candidate is found.
fn find_new_netlink_fd(before: &HashSet<u64>) -> Option<(RawFd, u64)> {
    let inodes = netfilter_netlink_inodes();
    let mut found = socket_fds()
        .into_iter()
        .filter(|(_, ino)| !before.contains(ino) && inodes.contains(ino));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Sets FD_CLOEXEC: the nfq crate opens its socket without it, and a rule
/// tool started later (iptables-restore on reload) would inherit the bound
/// queue; orphaned by a crash, it would keep the queue bound.
#[allow(unsafe_code)]
fn set_close_on_exec(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: as in `set_socket_options`: the Queue owning `fd` outlives this call.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    let bits = fcntl(bfd, FcntlArg::F_GETFD)?;
    fcntl(
        bfd,
        FcntlArg::F_SETFD(FdFlag::from_bits_truncate(bits) | FdFlag::FD_CLOEXEC),
    )?;
    Ok(())
}

/// True when `fd` is close-on-exec (tests and start-up checks).
#[allow(unsafe_code)]
pub fn is_close_on_exec(fd: RawFd) -> bool {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: only reads the descriptor flags; a closed fd reads as an error.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(bfd, FcntlArg::F_GETFD).is_ok_and(|b| FdFlag::from_bits_truncate(b).contains(FdFlag::FD_CLOEXEC))
}

/// Sets SO_RCVBUFFORCE (falling back to SO_RCVBUF) and the receive timeout;
/// returns the buffer size the kernel reports.
#[allow(unsafe_code)]
fn set_socket_options(fd: RawFd, rcvbuf: usize, poll: Duration) -> io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    // SAFETY: `fd` is the nfq Queue's socket, found by inode right after it
    // was opened; the Queue lives in the same NfqSource and outlives this call.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    if setsockopt(&bfd, sockopt::RcvBufForce, &rcvbuf).is_err() {
        setsockopt(&bfd, sockopt::RcvBuf, &rcvbuf)?;
    }
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(poll.as_secs()).unwrap_or(i64::MAX),
        i64::from(poll.subsec_micros()),
    );
    setsockopt(&bfd, sockopt::ReceiveTimeout, &tv)?;
    Ok(getsockopt(&bfd, sockopt::RcvBuf)?)
}

/// Netlink socket drop counter of an inode (`/proc/net/netlink`, column Drops).
pub fn socket_drops(inode: u64) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netlink").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 10 && f[9].parse() == Ok(inode)).then(|| f[8].parse().ok())?
    })
}

/// One row of `/proc/net/netfilter/nfnetlink_queue`: the kernel's view of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelQueue {
    /// Queue number.
    pub queue: u16,
    /// Netlink port id of the bound listener.
    pub portid: u32,
    /// Packets waiting for a verdict now.
    pub waiting: u64,
    /// Packets dropped because the queue was full (fail-closed only: in
    /// fail-open mode the kernel passes them uncounted; see `Totals::queue_overflow`).
    pub queue_dropped: u64,
    /// Packets dropped because the socket buffer was full.
    pub user_dropped: u64,
    /// Last packet id handed out.
    pub id_sequence: u64,
}

/// Parses the kernel's queue table (rows it cannot read are skipped).
pub fn parse_kernel_queues(text: &str) -> Vec<KernelQueue> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().map_while(|w| w.parse().ok()).collect();
            (f.len() >= 8).then_some(())?;
            Some(KernelQueue {
                queue: u16::try_from(f[0]).ok()?,
                portid: u32::try_from(f[1]).ok()?,
                waiting: f[2],
                queue_dropped: f[5],
                user_dropped: f[6],
                id_sequence: f[7],
            })
        })
        .collect()
}

/// Reads the kernel's queue counters of this network namespace.
pub fn kernel_queues() -> Vec<KernelQueue> {
    std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue")
        .map(|t| parse_kernel_queues(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_parses() {
        let t = "    0  12345     2 2 65535     7     9      100  1\n    1 -4012     0 2 65535 0 0 0 1\ngarbage\n";
        let q = parse_kernel_queues(t);
        assert_eq!(q.len(), 1, "a negative portid row is not readable as u64: {q:?}");
        assert_eq!(q[0].queue, 0);
        assert_eq!(q[0].waiting, 2);
        assert_eq!(q[0].queue_dropped, 7);
        assert_eq!(q[0].user_dropped, 9);
    }
}
