//! netprobe's kernel programs. One module per topic; each entry point is a thin wrapper over a
//! `try_*` function so that every early exit is an ordinary `?`.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod btf;
mod drop;
mod drop_btf;
mod drop_count;
mod handshake;
mod headers;
mod kernel;
mod maps;
mod outcome;
mod receive;
mod softirq;
mod span;
mod state_process;
mod tcp;
mod tcp_btf;
mod timers;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic; this is never executed.
    loop {}
}

/// bpf_probe_read_kernel is GPL-only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
