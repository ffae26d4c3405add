//! `cargo xtask lint`: rustfmt on every crate and clippy on every crate, the kernel programs
//! included, each with warnings denied and every `unsafe` block documented.

use std::process::Command;

use anyhow::Result;

use crate::{cargo, run, setup, workspace_root};

/// Clippy's verdicts that fail the lint: every warning, and an `unsafe` block (or impl)
/// without a `// SAFETY:` comment, which `clippy::all` does not include.
const DENY: &[&str] = &["-D", "warnings", "-D", "clippy::undocumented_unsafe_blocks"];

/// Debian's clippy for its BPF-capable rustc (`cargo xtask setup` installs the compiler).
pub const PACKAGES: &[&str] = &["rust-web-clippy"];

pub fn run_all() -> Result<()> {
    // The eBPF crate is its own workspace (see the root Cargo.toml), so `--all` skips it.
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "fmt",
        "--check",
        "--manifest-path",
        "netprobe-ebpf/Cargo.toml",
    ]))?;
    setup::ensure()?;
    setup::ensure_packages(PACKAGES)?;
    // The debug profile: clippy only type-checks, and nothing here differs between profiles.
    run(cargo()
        .args(["clippy", "--workspace", "--all-targets", "--"])
        .args(DENY))?;
    clippy_kernel_programs()
}

/// Clippy on the eBPF crate, for its real target. rustup's clippy cannot do it: it has no
/// `core` for bpfel-unknown-none (see netprobe/build.rs), and the prebuilt one that Debian's
/// rustc ships is only readable by that same compiler; so Debian's clippy-driver of that
/// compiler's release runs it, the way build.rs builds the object.
fn clippy_kernel_programs() -> Result<()> {
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.args([
        "clippy",
        "--manifest-path",
        "netprobe-ebpf/Cargo.toml",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "--target-dir",
    ])
    .arg(workspace_root().join("target/bpf-clippy"))
    .arg("--")
    .args(DENY)
    // The programs pass map keys and values by reference on purpose: they keep their
    // working state in per-CPU scratch maps, and a key passed by value would be copied
    // from there onto the 512-byte BPF stack.
    .args(["-A", "clippy::needless_borrows_for_generic_args"])
    // cargo-clippy runs the clippy-driver beside it: Debian's, not rustup's proxy.
    .env("PATH", format!("/usr/bin:{}", std::env::var("PATH")?))
    .env("RUSTC", "/usr/bin/rustc")
    // aya-ebpf uses #![feature(asm_experimental_arch)]; Debian's stable rustc needs this.
    .env("RUSTC_BOOTSTRAP", "1");
    // Nothing of this (host) cargo run may leak into the BPF one, as in netprobe/build.rs.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd)
}
