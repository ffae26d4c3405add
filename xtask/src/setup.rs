//! Installs what a fresh machine lacks. Checks first, so that it is quick when all is there.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// Debian packages, from shared/TOOLCHAIN.md: a rustc with a prebuilt BPF core, LLVM 22 for
/// bpf-linker, and the tools the tests and benchmarks drive.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "bpftool",
    "bpftrace",
    "nftables",
    "iproute2",
    "util-linux",
    // The monitor as a service (tests/tests/systemd.rs, monitor_service.rs): systemd-analyze
    // verifies the unit, logrotate runs the shipped contrib/logrotate file.
    "systemd",
    "logrotate",
    // The monitor's Prometheus endpoint (tests/tests/monitor_prometheus.rs): a real Prometheus
    // scrapes it, promtool checks the scrape and unit-tests contrib/prometheus's rules. The
    // tests start their own server (temporary storage, loopback port); the package's service
    // is not needed.
    "prometheus",
    // Baselines for `cargo xtask bench`: the shell tools `netprobe report` replaces.
    "net-tools",
    "ethtool",
    // The labels of `netprobe analyze --chart x.png` (tests/analyze.rs checks them drawn).
    "fonts-dejavu-core",
    // The kernel matrix (`cargo xtask kernels`, tests/src/vm.rs): qemu, the guests' busybox,
    // depmod, the archive keys for the other suites' lists, and xz/zstd for compressed modules.
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "debian-archive-keyring",
    "xz-utils",
    "zstd",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The packages of `packages` not installed, from one dpkg-query (fast enough for every run).
fn missing<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(packages)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let installed: Vec<&str> = out
        .lines()
        .filter(|l| l.ends_with("install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    packages
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

/// Installs whichever of `packages` is missing (as root, with apt-get).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing = missing(packages);
    if !missing.is_empty() {
        if !is_root() {
            bail!("missing Debian packages {missing:?}; run this as root (it runs apt-get)");
        }
        eprintln!("xtask: installing {missing:?}");
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

pub fn ensure() -> Result<()> {
    ensure_packages(PACKAGES)?;
    if !bpf_linker_ok() {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)"
        );
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22", "--force"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )
        .context("installing bpf-linker")?;
        if !bpf_linker_ok() {
            bail!("bpf-linker {BPF_LINKER_VERSION} installed but not on PATH (is ~/.cargo/bin on PATH?)");
        }
    }
    Ok(())
}
