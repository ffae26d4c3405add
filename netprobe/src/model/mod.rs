//! The domain model: what was lost, built once per event from the decoded records, and read
//! by every view (the event stream, the summary, the findings).

pub mod classify;
pub mod cpuset;
pub mod event;
pub mod flow;
pub mod non_network;
pub mod owners;
pub mod retransmits;
pub mod sites;
pub mod socket_limits;
pub mod storms;
pub mod tally;
pub mod window;
