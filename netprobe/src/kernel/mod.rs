//! The kernel side, as userspace sees it: what this kernel offers (BTF, kallsyms), loading and attaching the eBPF programs, and reading what they write.

pub mod btf;
pub mod filter;
pub mod function_hooks;
pub mod kallsyms;
pub mod loader;
pub mod reader;
