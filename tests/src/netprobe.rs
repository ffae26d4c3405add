//! The netprobe binary under test, run to completion, in text mode, unprivileged, inside a
//! namespace, or into a pipe nobody reads; and what it leaves loaded in the kernel.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use serde_json::Value;

use crate::{sh, Netns};

/// Path of the netprobe binary under test.
pub fn netprobe_bin() -> PathBuf {
    if let Ok(path) = std::env::var("NETPROBE_BIN") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/netprobe");
    assert!(
        path.exists(),
        "{} missing: build it first (`cargo build --release -p netprobe`, done by `cargo xtask test`)",
        path.display()
    );
    path
}

/// How long netprobe may take to load and attach: 30 s, or `NETPROBE_TEST_ATTACH_TIMEOUT_S`
/// (kernels under emulation verify programs an order of magnitude slower).
pub fn attach_timeout() -> Duration {
    std::env::var("NETPROBE_TEST_ATTACH_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

/// Runs the netprobe binary to completion with `args`; returns (exit ok, stdout, stderr).
pub fn netprobe_once(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(netprobe_bin())
        .args(args)
        .output()
        .expect("netprobe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the netprobe binary as an unprivileged user (nobody, no capabilities).
pub fn netprobe_unprivileged(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(netprobe_bin())
        .args(args)
        .output()
        .expect("setpriv")
}

/// Runs `netprobe report --json` inside a namespace while `during` runs; returns the document.
pub fn report_in<T: Send + 'static>(
    ns: &Netns,
    interval: &str,
    during: impl FnOnce() -> T + Send + 'static,
) -> (Value, T) {
    report_in_after(ns, interval, Duration::from_millis(150), during)
}

/// The same, `during` starting `lead` after the report: long enough, where a check compares
/// two readings of one sample (a counter and a socket's own), for the first sample to be
/// over before anything moves (on a loaded machine it takes longer than 150 ms).
pub fn report_in_after<T: Send + 'static>(
    ns: &Netns,
    interval: &str,
    lead: Duration,
    during: impl FnOnce() -> T + Send + 'static,
) -> (Value, T) {
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(netprobe_bin())
        .args(["report", "--json", "--interval", interval])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netprobe report");
    // Give the first sample a moment so that the activity falls inside the window.
    thread::sleep(lead);
    let result = during();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    (doc, result)
}

/// Runs `netprobe trace <args>` (text mode), runs `during` once netprobe says it is tracing,
/// and waits for it to exit; returns (exit ok, stdout, stderr).
pub fn netprobe_traced(args: &[&str], during: impl FnOnce()) -> (bool, String, String) {
    let mut child = spawn_trace(args, Stdio::piped());
    let mut stdout = child.stdout.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (status, stderr) = run_while_tracing(child, |_| during());
    (status.success(), stdout.join().unwrap(), stderr)
}

/// Runs `netprobe trace <args>` with its stdout a pipe whose reader is already gone, runs
/// `during` (given the process, to watch it) once netprobe says it is tracing, and waits for
/// it to exit; returns how it exited, with its stderr.
pub fn netprobe_traced_into_closed_pipe(
    args: &[&str],
    during: impl FnOnce(&mut Child),
) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = spawn_trace(args, Stdio::from(writer));
    run_while_tracing(child, during)
}

fn spawn_trace(args: &[&str], stdout: Stdio) -> Child {
    Command::new(netprobe_bin())
        .arg("trace")
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("netprobe")
}

/// Runs `during` once the child's stderr says it is tracing, then waits for it to exit.
fn run_while_tracing(mut child: Child, during: impl FnOnce(&mut Child)) -> (ExitStatus, String) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = watch_stderr(&mut child, ready_tx);
    let ready = ready_rx.recv_timeout(attach_timeout()).is_ok();
    if ready {
        during(&mut child);
    }
    let status = child.wait().expect("netprobe");
    let stderr = stderr.join().unwrap();
    assert!(ready, "netprobe never said it was tracing: {stderr}");
    (status, stderr)
}

/// Collects the child's stderr, signalling `ready` at the line that says it is tracing.
fn watch_stderr(child: &mut Child, ready: mpsc::Sender<()>) -> JoinHandle<String> {
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("netprobe: tracing") {
                let _ = ready.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

/// Runs the netprobe binary with `args` and its stdout a pipe whose reader is already gone
/// (a reader that quit before the first byte).
pub fn netprobe_into_closed_pipe(args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(netprobe_bin())
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("netprobe");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the netprobe binary with `args` into a reader that takes one byte and closes the pipe
/// (`| head -c1`); returns how it exited, the byte, and its stderr.
pub fn netprobe_into_one_byte_reader(args: &[&str]) -> (ExitStatus, Vec<u8>, String) {
    let mut child = Command::new(netprobe_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netprobe");
    let mut byte = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .take(1)
        .read_to_end(&mut byte)
        .expect("first byte");
    // The pipe's read end is closed here, when the reader goes out of scope.
    let out = child.wait_with_output().expect("netprobe");
    (
        out.status,
        byte,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One BPF program loaded in the kernel now, as `bpftool prog list` shows it; `runs` and
/// `run_time_ns` are its `bpf_stats` (zero unless `kernel.bpf_stats_enabled` is on).
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    pub name: String,
    pub id: u64,
    /// `tracepoint`, `raw_tracepoint`, `tracing`…
    pub kind: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

/// Every BPF program loaded anywhere in the kernel now.
pub fn loaded_programs() -> Vec<LoadedProgram> {
    let json = sh("bpftool", &["prog", "list", "-j"]);
    let v: Value = serde_json::from_str(&json).expect("bpftool json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| LoadedProgram {
            name: p["name"].as_str().unwrap_or("").to_string(),
            id: p["id"].as_u64().unwrap_or(0),
            kind: p["type"].as_str().unwrap_or("").to_string(),
            runs: p["run_cnt"].as_u64().unwrap_or(0),
            run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Names of netprobe's BPF programs currently loaded anywhere in the kernel.
pub fn loaded_netprobe_programs() -> Vec<String> {
    loaded_programs()
        .into_iter()
        .map(|p| p.name)
        .filter(|n| n.starts_with("netprobe_"))
        .collect()
}

/// Waits (the kernel frees programs after an RCU grace period) until none of netprobe's
/// programs is loaded; returns what is still loaded after the timeout.
pub fn wait_no_programs(timeout: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = loaded_netprobe_programs();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
