//! The event ABI shared by netprobe's kernel programs and its userspace agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding so that the kernel side (compiled for
//! `bpfel-unknown-none`) and the agent (x86_64/aarch64 Linux, both little-endian) agree on every
//! byte. Each type carries compile-time assertions of its size, of every field's offset and of
//! the absence of implicit padding, checked on both targets; the agent (feature `user`) reads a
//! record back as the very struct the kernel wrote, with a checked zerocopy read of exactly its
//! size, never a hand-written codec that could drift from the definition.
//!
//! Event-kind IDs are fixed forever: a retired kind keeps its number and is never reused.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod config;
pub mod counters;
pub mod event;
pub mod tables;
pub mod vocab;

#[cfg(feature = "user")]
pub mod decode;

mod layout;

pub use config::*;
pub use counters::*;
pub use event::*;
pub use tables::*;
