//! Test hosts for netprobe's privileged tests: network namespaces joined by veth pairs
//! (198.18.0.0/15 and 2001:db8::/32 only), nftables loss, TCP traffic from threads that
//! joined a namespace, kernel counters read inside a namespace, and the netprobe binary.
//!
//! Everything is re-exported at the top, so that a test says `use netprobe_integration::*`.

mod after_fin;
mod bond;
mod bundle;
mod connect;
mod holder;
mod host;
mod monitor;
mod netprobe;
mod nft;
mod prometheus;
mod service;
mod tracer;
mod traffic;
mod witness;
mod xdp;

pub mod matrix;
pub mod vm;

pub use after_fin::*;
pub use bond::*;
pub use bundle::*;
pub use connect::*;
pub use holder::*;
pub use host::*;
pub use monitor::*;
pub use netprobe::*;
pub use nft::*;
pub use prometheus::*;
pub use service::*;
pub use tracer::*;
pub use traffic::*;
pub use witness::*;
pub use xdp::*;
