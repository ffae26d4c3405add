//! netprobe: where packets are lost, from eBPF events and the kernel's own counters.

pub mod btf;
pub mod cli;
pub mod dropclass;
pub mod filter;
pub mod findings;
pub mod kallsyms;
pub mod loader;
pub mod output;
pub mod owners;
pub mod reader;
pub mod report;
pub mod summary;
pub mod timer_hooks;
pub mod trace;
pub mod tracefs;
