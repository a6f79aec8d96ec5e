//! Inspection tunables: how deep a connection is inspected, how many bytes
//! are held for reordering, and which checks apply. Plain data, shared by
//! the engine and the stream inspector.

/// Tunables of inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// A connection is clean once one direction has passed this many
    /// inspected payload bytes with no match, counted from the start of its
    /// current stream (a tunnel restarts the count). An HTTP client
    /// direction is never settled while it can send requests: the depth
    /// then bounds each message's body scan, and once the reply direction
    /// passes it, only the reply direction is handed to the kernel.
    pub depth_bytes: u64,
    /// ...or, when non-zero, once this many payload segments (both
    /// directions) were inspected. Off by default: counting packets lets a
    /// sender that cuts its bytes into tiny segments reach "clean" early.
    pub depth_packets: u32,
    /// Bytes per direction held for segments that arrive ahead of a gap.
    pub reorder_bytes: usize,
    /// Block a connection whose retransmitted bytes differ from the bytes
    /// already inspected. Off by default: both versions are inspected anyway
    /// (a decoy cannot hide a signature), and benign stacks do re-send
    /// unacknowledged data differently; conflicts are counted either way
    /// ([`crate::engine::Decision::conflict`]).
    pub block_conflicts: bool,
    /// Apply the fast-path port rules (off: judge by payload alone, as
    /// `scan --signatures-only` does to measure signature coverage).
    pub port_rules: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            depth_bytes: 8192,
            depth_packets: 0,
            reorder_bytes: 16 * 1024,
            block_conflicts: false,
            port_rules: true,
        }
    }
}
