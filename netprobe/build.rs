//! Builds the kernel programs (crate `netprobe-ebpf`) for `bpfel-unknown-none` and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`.
//!
//! rustup ships no `core` for the BPF target, so the object is built with a compiler that has
//! one: Debian's `rustc-web` (1.96, `libstd-rust-web-dev-bpf`). `cargo xtask setup` installs it;
//! override the paths with NETPROBE_BPF_CARGO / NETPROBE_BPF_RUSTC.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Keep BTF in the object (bpftool shows types; aya relocates with it), and deny warnings in
/// our own kernel-side crates (host clippy never compiles them; cargo caps registry crates).
const BPF_RUSTFLAGS: &str = "-Cdebuginfo=2\x1f-Clink-arg=--btf\x1f-Dwarnings";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap();
    let ebpf_dir = workspace.join("netprobe-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());

    for path in [
        "netprobe-ebpf/src",
        "netprobe-ebpf/Cargo.toml",
        "netprobe-ebpf/Cargo.lock",
        "netprobe-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=NETPROBE_BPF_CARGO");
    println!("cargo:rerun-if-env-changed=NETPROBE_BPF_RUSTC");

    let cargo = env::var("NETPROBE_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = env::var("NETPROBE_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    for tool in [&cargo, &rustc] {
        if !Path::new(tool).exists() {
            panic!(
                "{tool} not found: the eBPF programs need Debian's rustc with a BPF core. \
                 Run `cargo xtask setup` (or see README.md)."
            );
        }
    }

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTC", &rustc)
        // aya-ebpf uses #![feature(asm_experimental_arch)]; Debian's stable rustc needs this.
        .env("RUSTC_BOOTSTRAP", "1");
    // Nothing of the outer (host, possibly clippy) build may leak into the BPF build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", BPF_RUSTFLAGS);
    let status = cmd.status().expect("failed to run the BPF cargo");
    if !status.success() {
        panic!("building netprobe-ebpf for bpfel-unknown-none failed ({status})");
    }
    let object = target_dir.join("bpfel-unknown-none/release/netprobe");
    std::fs::copy(&object, out_dir.join("netprobe.bpf.o"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", object.display()));
}
