//! The kernel matrix: the scenario set of `netprobe_integration::matrix` on Debian's stock
//! 5.10, 6.1 and 6.12 (booted under qemu from the cache `cargo xtask kernels` fills) and on
//! this host's kernel, each judged on the host. One test per kernel, one line each.

use std::{process::Command, time::Duration};

use netprobe_integration::{
    matrix::{self, Expect},
    netprobe_bin,
    vm::{kernels, Guest, Kernel},
};
use serde_json::Value;

const MATRIX_BIN: &str = env!("CARGO_BIN_EXE_np-matrix");

fn kernel(prefix: &str) -> Kernel {
    kernels()
        .into_iter()
        .find(|k| k.release.starts_with(prefix))
        .unwrap_or_else(|| panic!("no cached {prefix} kernel: run `cargo xtask kernels`"))
}

fn judge(results: &Value, expect: Expect) {
    match matrix::check(results, expect) {
        Ok(line) => println!("kernel {line}"),
        Err(failures) => panic!(
            "kernel {}: {} check(s) failed:\n  {}",
            results["kernel"],
            failures.len(),
            failures.join("\n  ")
        ),
    }
}

fn in_guest(prefix: &str, major: u32, minor: u32) {
    let kernel = kernel(prefix);
    let out = Guest::new(&kernel)
        .scenario_tools()
        .executable("bpftool")
        .scenario_modules()
        .executable(netprobe_bin().display().to_string())
        .executable(MATRIX_BIN)
        // `ip netns` keeps namespaces under /run/netns; the tests look under /var/run/netns.
        .command(
            "mkdir -p /run /var && { [ -e /var/run ] || ln -s /run /var/run; } && \
             NETPROBE_BIN=/usr/local/bin/netprobe NETPROBE_TEST_ATTACH_TIMEOUT_S=300 \
             np-matrix $RESULTS/matrix.json",
        )
        .timeout(Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.release));
    let Some(json) = out.file("matrix.json") else {
        panic!(
            "{}: no results (status {}, {:?}); stderr:\n{}\nconsole tail:\n{}",
            kernel.release,
            out.status,
            out.wall,
            out.stderr,
            out.console
                .chars()
                .rev()
                .take(3000)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        );
    };
    let results: Value = serde_json::from_str(&json).expect("matrix.json");
    eprintln!("{}: guest ran {:.0?}", kernel.release, out.wall);
    judge(&results, Expect::for_kernel(major, minor, Some(true)));
}

#[test]
fn matrix_debian_11_linux_5_10() {
    in_guest("5.10.", 5, 10);
}

#[test]
fn matrix_debian_12_linux_6_1() {
    in_guest("6.1.", 6, 1);
}

#[test]
fn matrix_debian_13_linux_6_12() {
    in_guest("6.12.", 6, 12);
}

/// The same scenarios on this machine's own kernel, directly.
#[test]
fn matrix_this_host() {
    let dir = std::env::temp_dir().join(format!("np-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("matrix.json");
    let status = Command::new(MATRIX_BIN)
        .arg(&path)
        .status()
        .expect("np-matrix");
    assert!(status.success(), "np-matrix failed on this host ({status})");
    let results: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("matrix.json");
    let _ = std::fs::remove_dir_all(&dir);
    let release = results["kernel"].as_str().unwrap_or("0.0").to_string();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    judge(&results, Expect::for_kernel(major, minor, None));
}
