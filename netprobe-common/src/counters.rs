//! Indices of the per-CPU `COUNTERS` array kept by the kernel programs.
//!
//! Every hook counts what it saw *before* trying to queue an event, and counts separately
//! what it could not queue, so the agent can always report exact totals and exact loss.

/// Retransmit events that passed the filters.
pub const COUNTER_RETRANSMIT_SEEN: u32 = 0;
/// Retransmit events that could not be queued (ring buffer full).
pub const COUNTER_RETRANSMIT_LOST: u32 = 1;
/// Drop events that passed the filters: network drops only (an IP, IPv6 or ARP packet, or
/// one of an IP socket); the kernel's other frees are counted apart, in `NON_NETWORK_DROPS`.
pub const COUNTER_DROP_SEEN: u32 = 2;
/// Drop events that could not be queued (ring buffer full).
pub const COUNTER_DROP_LOST: u32 = 3;
/// Retransmits whose flow could not be added to the per-flow table (table full).
pub const COUNTER_FLOW_TABLE_FULL: u32 = 4;
/// Drops whose reason could not be added to the per-reason table (table full).
pub const COUNTER_REASON_TABLE_FULL: u32 = 5;
/// NAPI polls of a device that could not be added to the per-device table (table full).
pub const COUNTER_NAPI_TABLE_FULL: u32 = 6;
/// Out-of-sequence segments (duplicates, hole fills, holes) that passed the filters.
/// The receive program has counters of its own: it is a raw tracepoint, which may run
/// nested inside the classic-tracepoint programs on the same CPU, so it must not share
/// their slots.
pub const COUNTER_RECEIVE_SEEN: u32 = 7;
/// Receive events that could not be queued (ring buffer full).
pub const COUNTER_RECEIVE_LOST: u32 = 8;
/// Receive events whose flow could not be added to the per-flow receive table.
pub const COUNTER_RECEIVE_TABLE_FULL: u32 = 9;
/// Non-network frees (unix-domain, netlink… skbs) whose (reason, location) could not be added
/// to their table (table full).
pub const COUNTER_NON_NETWORK_TABLE_FULL: u32 = 10;
/// Drops counted by reason only because their (reason, site, device, namespace) could not be
/// added to `DROP_SITES` (table full). Such drops are never sampled out: they are streamed.
pub const COUNTER_DROP_SITE_TABLE_FULL: u32 = 11;
/// Drops counted in `DROP_SITES` but not streamed, their site being over its rate in the
/// current second (stream mode's storm sampling, see `AggregateConfig`).
pub const COUNTER_DROP_SAMPLED_OUT: u32 = 12;
/// Size of the array; leave room for later counters without changing the map.
pub const COUNTER_SLOTS: u32 = 16;

/// Human-readable names, indexed like the counters (for reports and tests).
pub const COUNTER_NAMES: [(u32, &str); 13] = [
    (COUNTER_RETRANSMIT_SEEN, "retransmit_seen"),
    (COUNTER_RETRANSMIT_LOST, "retransmit_lost"),
    (COUNTER_DROP_SEEN, "drop_seen"),
    (COUNTER_DROP_LOST, "drop_lost"),
    (COUNTER_FLOW_TABLE_FULL, "flow_table_full"),
    (COUNTER_REASON_TABLE_FULL, "reason_table_full"),
    (COUNTER_NAPI_TABLE_FULL, "napi_table_full"),
    (COUNTER_RECEIVE_SEEN, "receive_seen"),
    (COUNTER_RECEIVE_LOST, "receive_lost"),
    (COUNTER_RECEIVE_TABLE_FULL, "receive_table_full"),
    (COUNTER_NON_NETWORK_TABLE_FULL, "non_network_table_full"),
    (COUNTER_DROP_SITE_TABLE_FULL, "drop_site_table_full"),
    (COUNTER_DROP_SAMPLED_OUT, "drop_sampled_out"),
];
