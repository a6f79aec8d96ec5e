//! Where kernel rules are written and installed: the fast path that keeps
//! most packets out of userspace.
//!
//! - [`iptables`]: pure text generation of iptables-restore, ip6tables-restore
//!   and ipset input from a policy (golden-tested, no root needed);
//! - [`install`]: applying and removing that text atomically, and finding
//!   what an earlier instance left;
//! - [`addresses`]: apps' address lists as ipsets and the rules that use them;
//! - [`queue_rate`]: the per-source limit in front of the queue
//!   (`--queue-rate`), so one flooding host cannot fill it;
//! - [`marks`]: the connmark contract shared by the queue workers and every
//!   rule backend.
//!
//! A new backend (nftables, say) is a sibling of [`iptables`] that takes the
//! same [`crate::policy::Policy`] and [`marks::MarkBits`].

pub mod addresses;
pub mod install;
pub mod iptables;
pub mod marks;
pub mod nflog;
pub mod queue_rate;
