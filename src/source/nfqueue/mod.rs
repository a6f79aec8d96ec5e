//! The NFQUEUE packet source: a kernel queue bound through appwall's own
//! netlink client ([`netlink`]), which receives packets in batches and
//! answers runs of accepts with one batch verdict.
//!
//! Guarantees: the socket is configured before the first packet (fail-open
//! flag, GSO packets up to 64 KiB, queue length, an enlarged receive buffer,
//! ENOBUFS reporting so overruns are counted instead of hidden, a receive
//! timeout so a worker notices a stop); a queue owned by another process is
//! reported as [`QueueError::Busy`] with the owner's port id; the socket is
//! close-on-exec from the start; the kernel's own drop counters of the
//! socket are readable ([`socket_drops`]). Verdicts reach the kernel in
//! queue order: accepts wait in a batch only until the next other verdict
//! or the next receive. What to answer is not decided here: see
//! [`crate::daemon::worker`].

pub mod netlink;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use serde::Serialize;

use self::netlink::{NfqSocket, NlPacket, NlVerdict, Recv};
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
    /// Ask for kernel receive timestamps on queued packets
    /// (`--stage-timings`: the queue-wait stage).
    pub timestamps: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            fail_open: true,
            max_len: 4096,
            rcvbuf: 8 << 20,
            poll: Duration::from_millis(200),
            timestamps: false,
        }
    }
}

/// A bound queue: the production [`PacketSource`].
pub struct NfqSource {
    sock: NfqSocket,
    num: u16,
    /// The socket's inode, to read its drop counter in `/proc/net/netlink`.
    pub inode: Option<u64>,
    /// Receive buffer the kernel granted, bytes.
    pub rcvbuf: Option<usize>,
}

impl NfqSource {
    /// Opens a netlink socket and binds queue `num`: enlarged receive
    /// buffer and receive timeout, then the queue with the whole packet
    /// copied, fail-open flag, GSO packets (up to 64 KiB) and queue length.
    /// ENOBUFS stays reported (the socket default), so overruns are counted.
    pub fn open(num: u16, opts: &QueueOptions) -> Result<NfqSource, QueueError> {
        let cfg = |what: &'static str| {
            move |source| QueueError::Config {
                queue: num,
                what,
                source,
            }
        };
        let mut sock = NfqSocket::open(num).map_err(QueueError::Open)?;
        let rcvbuf =
            set_socket_options(sock.fd(), opts.rcvbuf, opts.poll).map_err(cfg("size the socket buffer"))?;
        let inode = nix::sys::stat::fstat(sock.fd()).ok().map(|st| st.st_ino);
        if let Err(e) = sock.bind_queue() {
            let owner = kernel_queues().into_iter().find(|k| k.queue == num);
            return Err(match owner {
                Some(k) => QueueError::Busy {
                    queue: num,
                    portid: k.portid,
                },
                None => cfg("bind")(e),
            });
        }
        sock.set_copy_range().map_err(cfg("set the copy range"))?;
        sock.set_fail_open(opts.fail_open)
            .map_err(cfg("set the fail-open flag"))?;
        sock.set_gso(true).map_err(cfg("ask for GSO packets"))?;
        sock.set_max_len(opts.max_len)
            .map_err(cfg("set the queue length"))?;
        if opts.timestamps {
            sock.request_timestamps()
                .map_err(cfg("turn on receive timestamps"))?;
        }
        Ok(NfqSource {
            sock,
            num,
            inode,
            rcvbuf: Some(rcvbuf),
        })
    }

    /// The queue number.
    pub fn queue_num(&self) -> u16 {
        self.num
    }

    /// The socket's descriptor (close-on-exec).
    pub fn raw_fd(&self) -> Option<RawFd> {
        Some(self.sock.fd().as_raw_fd())
    }
}

impl PacketSource for NfqSource {
    type Packet = NlPacket;

    fn recv(&mut self) -> Result<Received<NlPacket>, QueueError> {
        match self.sock.recv() {
            Ok(Recv::Packet(p)) => Ok(Received::Packet(p)),
            Ok(Recv::Idle) => Ok(Received::Idle),
            Ok(Recv::Overrun) => Ok(Received::Overrun),
            Ok(Recv::Malformed) => Ok(Received::Malformed),
            Ok(Recv::Refused(errno)) => Err(QueueError::Verdict {
                queue: self.num,
                source: io::Error::from_raw_os_error(errno),
            }),
            Err(source) => Err(QueueError::Recv {
                queue: self.num,
                source,
            }),
        }
    }

    fn payload(p: &NlPacket) -> &[u8] {
        p.payload()
    }

    fn mark(p: &NlPacket) -> u32 {
        p.mark()
    }

    fn is_gso(p: &NlPacket) -> bool {
        p.is_gso()
    }

    fn is_truncated(p: &NlPacket) -> bool {
        p.is_truncated()
    }

    fn timestamp(p: &NlPacket) -> Option<std::time::SystemTime> {
        p.timestamp()
    }

    fn verdict(&mut self, p: NlPacket, v: QueueVerdict) -> Result<(), QueueError> {
        let v = match v {
            QueueVerdict::Accept => NlVerdict::Accept,
            QueueVerdict::Drop => NlVerdict::Drop,
            QueueVerdict::Repeat(mark) => NlVerdict::Repeat(mark),
        };
        self.sock.verdict(p, v).map_err(|source| QueueError::Verdict {
            queue: self.num,
            source,
        })
    }

    fn start_draining(&mut self) {
        self.sock.set_nonblocking(true);
    }
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
fn set_socket_options(fd: BorrowedFd<'_>, rcvbuf: usize, poll: Duration) -> io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
    }
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(poll.as_secs()).unwrap_or(i64::MAX),
        i64::from(poll.subsec_micros()),
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    Ok(getsockopt(&fd, sockopt::RcvBuf)?)
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
