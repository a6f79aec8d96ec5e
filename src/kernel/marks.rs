//! The connection-mark contract between the queue workers and the kernel
//! rules: which bits of the nfmark/connmark appwall owns, and what each
//! value means.
//!
//! A worker that settles a connection answers its packet with `NF_REPEAT`
//! and one of these marks OR-ed into the packet's nfmark (other bits kept);
//! the first rules of appwall's mangle chain save that mark to the
//! connection and act on it, so the rest of the connection never leaves the
//! kernel: "blocked" is dropped (or reset in the filter table), "clean"
//! returns at once; "reply clean" returns at once for packets of the reply
//! direction only (`--ctdir REPLY`), so an HTTP server's downloads leave the
//! queue while the client's requests are still judged one by one. A later
//! "blocked" or "clean" replaces "reply clean" (same mask). Only the bits in
//! [`MarkBits::mask`] are ever read or
//! written, so marks set by other tools on the same box survive. Every
//! kernel backend and the worker take their bits from this one type.
//!
//! One more value travels the other way, on the packet only: the rules
//! give a packet queued in conntrack's reply direction the nfmark value
//! [`MarkBits::queued_reply`] under the same mask, so the worker knows
//! which side opened a connection whose SYN stayed in the kernel (this
//! kernel's NFQUEUE cannot attach conntrack information itself:
//! `CONFIG_NETFILTER_NETLINK_GLUE_CT` is often off). The value is never
//! saved to a connection: no rule matches it, and a decision's mark
//! replaces it.

/// Connection-mark bits appwall owns (only these bits are read or written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkBits {
    /// Mark of a blocked connection.
    pub blocked: u32,
    /// Mark of a clean connection.
    pub clean: u32,
    /// Mark of a connection whose reply direction is clean (originator
    /// payload still queued).
    pub reply_clean: u32,
    /// Packet mark (never a connection mark) of a packet queued in the
    /// reply direction: a value under [`MarkBits::mask`] that no decision
    /// uses.
    pub queued_reply: u32,
    /// Mask covering all three.
    pub mask: u32,
}

impl Default for MarkBits {
    fn default() -> Self {
        MarkBits {
            blocked: 0x0010_0000,
            clean: 0x0020_0000,
            reply_clean: 0x0040_0000,
            queued_reply: 0x0030_0000,
            mask: 0x0070_0000,
        }
    }
}

impl MarkBits {
    /// The nfmark that hands a connection to the kernel as blocked,
    /// keeping every bit outside the mask.
    pub fn blocked_mark(&self, current: u32) -> u32 {
        (current & !self.mask) | self.blocked
    }

    /// The nfmark that hands a connection to the kernel as clean.
    pub fn clean_mark(&self, current: u32) -> u32 {
        (current & !self.mask) | self.clean
    }

    /// True when a queued packet's nfmark says it travels in conntrack's
    /// reply direction (towards the connection's opener).
    pub fn is_queued_reply(&self, mark: u32) -> bool {
        mark & self.mask == self.queued_reply
    }

    /// The nfmark that hands a connection's reply direction to the kernel.
    pub fn reply_clean_mark(&self, current: u32) -> u32 {
        (current & !self.mask) | self.reply_clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_foreign_bits_and_replace_ours() {
        let m = MarkBits::default();
        let foreign = 0x0000_00ff;
        assert_eq!(m.blocked_mark(foreign | m.clean), foreign | m.blocked);
        assert_eq!(m.clean_mark(foreign | m.blocked), foreign | m.clean);
        assert_eq!(m.reply_clean_mark(foreign | m.clean), foreign | m.reply_clean);
        assert_eq!(m.blocked_mark(foreign | m.reply_clean), foreign | m.blocked);
        assert_eq!(m.blocked & m.clean, 0, "the marks are distinct bits");
        assert_eq!(
            (m.blocked | m.clean) & m.reply_clean,
            0,
            "the marks are distinct bits"
        );
        assert_eq!(m.blocked | m.clean | m.reply_clean, m.mask);
        // The direction value is none of the decisions, and a decision replaces it.
        for d in [m.blocked, m.clean, m.reply_clean, 0] {
            assert_ne!(m.queued_reply, d);
        }
        assert_eq!(m.queued_reply & !m.mask, 0);
        assert!(m.is_queued_reply(foreign | m.queued_reply));
        assert!(!m.is_queued_reply(m.clean_mark(foreign | m.queued_reply)));
        assert_eq!(m.clean_mark(m.queued_reply), m.clean);
    }
}
