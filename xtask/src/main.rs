//! Project tasks: `cargo xtask setup | build | run | test | test-kernels | bench | lint | kernels`.
//!
//! `run` and `test` are the README's two fresh-machine commands: each installs what is
//! missing (Debian's BPF-capable rustc, LLVM 22, bpf-linker, bpftool, nftables…), builds, and
//! then runs. Everything is checked first, so a second run is quick.

mod bench;
mod kernels;
mod lint;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages and bpf-linker.
    Setup,
    /// Setup, then build target/release/netprobe (kernel object included).
    Build,
    /// Setup, build, then trace a real lossy TCP transfer between two test namespaces (or run
    /// netprobe with the arguments given after `--`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, then the whole test suite: unit tests and privileged integration tests.
    Test,
    /// Setup, build, then benchmarks: kernel cost per event beside bpftrace, userspace decode,
    /// `netprobe monitor` beside the script it replaces.
    Bench {
        /// Only the veth throughput with and without netprobe.
        #[arg(long)]
        throughput_only: bool,
        /// Only `netprobe monitor` beside the shell script it replaces (CPU per interval, RSS).
        #[arg(long, conflicts_with = "throughput_only")]
        monitor_only: bool,
        /// Only the kernel ns per event (trace, monitor's count mode, bpftrace) and the storm.
        #[arg(long, conflicts_with_all = ["throughput_only", "monitor_only"])]
        kernel_only: bool,
        /// Only `netprobe trace`'s start-up to its hooks line (median of runs; beside the
        /// binary at $NETPROBE_STARTUP_BASELINE, alternated, when set).
        #[arg(long, conflicts_with_all = ["throughput_only", "monitor_only", "kernel_only"])]
        startup_only: bool,
        /// Only the CPU every hook takes during a clean 3 GiB veth transfer (bpf_stats).
        #[arg(long, conflicts_with_all = ["throughput_only", "monitor_only", "kernel_only", "startup_only"])]
        hooks_cpu_only: bool,
    },
    /// rustfmt and clippy (warnings and undocumented unsafe denied) on every crate, the eBPF
    /// crate included.
    Lint,
    /// Setup, build, fetch the kernels, then the kernel matrix alone: the scenario set on
    /// Debian's 5.10, 6.1 and 6.12 under qemu and on this host's kernel, one line per kernel.
    TestKernels,
    /// Fetch Debian's stock kernels (5.10, 6.1, 6.12) for the qemu kernel matrix into
    /// $NETPROBE_KERNEL_CACHE (default /var/cache/netprobe/kernels); cached after the first run.
    Kernels {
        /// Ask the archive for newer kernels (network) instead of trusting the cache.
        #[arg(long)]
        refresh: bool,
    },
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The kernel matrix (tests/tests/kernels.rs): one guest at a time, its lines shown.
const MATRIX_TEST: &[&str] = &[
    "test",
    "--release",
    "-p",
    "netprobe-integration",
    "--test",
    "kernels",
    "--",
    "--test-threads=1",
    "--nocapture",
];

fn build() -> Result<()> {
    setup::ensure()?;
    run(cargo().args(["build", "--release", "-p", "netprobe"]))
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure(),
        Task::Build => build(),
        Task::Run { args } => {
            build()?;
            if args.is_empty() {
                bench::demo()
            } else {
                run(Command::new(workspace_root().join("target/release/netprobe")).args(args))
            }
        }
        Task::TestKernels => {
            build()?;
            kernels::ensure()?;
            run(cargo().args(MATRIX_TEST))
        }
        Task::Test => {
            build()?;
            // The kernel matrix (tests/tests/kernels.rs) boots these.
            kernels::ensure()?;
            // Unit tests in parallel; privileged tests one at a time (they check the whole
            // kernel for leftover programs).
            run(cargo().args([
                "test",
                "--release",
                "--workspace",
                "--exclude",
                "netprobe-integration",
            ]))?;
            // `--tests`: no (empty) doc-test run after them. The kernel matrix last, on its own,
            // so that its one line per kernel shows and the last line reports its tests.
            run(cargo().args([
                "test",
                "--release",
                "-p",
                "netprobe-integration",
                "--tests",
                "--",
                "--test-threads=1",
                "--skip",
                "matrix_",
            ]))?;
            run(cargo().args(MATRIX_TEST))
        }
        Task::Bench {
            throughput_only,
            monitor_only,
            kernel_only,
            startup_only,
            hooks_cpu_only,
        } => {
            build()?;
            if hooks_cpu_only {
                bench::hooks_cpu()
            } else if startup_only {
                bench::startup()
            } else if throughput_only {
                bench::throughput_with_and_without()
            } else if monitor_only {
                bench::monitor_beside_script()
            } else if kernel_only {
                bench::kernel_cost()
            } else {
                bench::run_all()
            }
        }
        Task::Kernels { refresh } => kernels::task(refresh),
        Task::Lint => lint::run_all(),
    }
}
