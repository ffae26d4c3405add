//! A running `netprobe trace --json`, and what it printed.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{attach_timeout, netprobe_bin, signal, Netns};

/// A running `netprobe trace --json`.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a finished tracer printed.
pub struct TraceOutput {
    pub records: Vec<Value>,
    pub stderr: String,
    pub success: bool,
}

impl TraceOutput {
    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|v| v["type"] == kind).collect()
    }

    /// The drop events with this reason.
    pub fn drops_with_reason(&self, reason: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|v| v["type"] == "drop" && v["reason"] == reason)
            .collect()
    }

    /// The events of this type in namespace `netns` with `port` at either end.
    pub fn on_port(&self, kind: &str, netns: u64, port: u16) -> Vec<&Value> {
        self.of_type(kind)
            .into_iter()
            .filter(|e| {
                e["netns"].as_u64() == Some(netns) && (e["dport"] == port || e["sport"] == port)
            })
            .collect()
    }

    pub fn summary(&self) -> &Value {
        let s = self.of_type("summary");
        assert_eq!(s.len(), 1, "exactly one summary; stderr: {}", self.stderr);
        s[0]
    }

    /// The summary's count of invocations of `program` the kernel skipped.
    pub fn kernel_skipped(&self, program: &str) -> u64 {
        self.summary()["kernel_skipped"][program].as_u64().unwrap()
    }

    /// How `hook` (`skb:kfree_skb`) was attached: `tp_btf`, `raw_tracepoint`…
    pub fn attach_of(&self, hook: &str) -> String {
        let hooks = self.hooks();
        let found = hooks.iter().find(|h| h["hook"] == hook);
        found
            .and_then(|h| h["attach"].as_str())
            .unwrap_or_else(|| panic!("no hook {hook}: {hooks:?}"))
            .to_string()
    }

    /// `kernel_skipped` of the program attached for `hook` (`skb:kfree_skb`: `netprobe_drop`,
    /// or `netprobe_drop_btf` where the kernel allows tp_btf), as the hooks line names it.
    pub fn kernel_skipped_of_hook(&self, hook: &str) -> u64 {
        let hooks = self.hooks();
        let program = hooks
            .iter()
            .find(|h| h["hook"] == hook)
            .and_then(|h| h["program"].as_str())
            .unwrap_or_else(|| panic!("no hook {hook}: {hooks:?}"));
        self.kernel_skipped(program)
    }

    /// The first findings bundle.
    pub fn first_bundle(&self) -> Value {
        self.of_type("findings")[0].clone()
    }

    /// The hooks line's list of hooks.
    pub fn hooks(&self) -> Vec<Value> {
        self.of_type("hooks")[0]["hooks"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Tracer {
    /// Starts `netprobe trace --json <args>` and waits until its hooks are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(netprobe_bin()), args)
    }

    /// The same, run inside `ns` (`ip netns exec`): the counter side of its findings is then
    /// that namespace's.
    pub fn start_in(ns: &Netns, args: &[&str]) -> Self {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name])
            .arg(netprobe_bin());
        Self::spawn(command, args)
    }

    fn spawn(mut command: Command, args: &[&str]) -> Self {
        let mut child = command
            .arg("trace")
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netprobe");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("stdout line");
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if value["type"] == "hooks" {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(value);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let tracer = Self {
            child,
            lines,
            reader: Some(reader),
            stderr: Some(stderr),
        };
        if ready_rx.recv_timeout(attach_timeout()).is_err() {
            let out = tracer.stop();
            panic!("netprobe never attached; stderr: {}", out.stderr);
        }
        tracer
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGINT, then wait for the summary and exit.
    pub fn stop(mut self) -> TraceOutput {
        signal(self.pid(), libc::SIGINT);
        self.wait()
    }

    /// Waits for the process to exit by itself (e.g. --duration) or after a signal.
    pub fn wait(&mut self) -> TraceOutput {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "netprobe did not exit");
            thread::sleep(Duration::from_millis(20));
        };
        self.reader.take().unwrap().join().expect("stdout reader");
        let stderr = self.stderr.take().unwrap().join().unwrap();
        TraceOutput {
            records: std::mem::take(&mut *self.lines.lock().unwrap()),
            stderr,
            success: status.success(),
        }
    }

    /// SIGKILL: the process cannot clean up; the kernel must.
    pub fn kill(mut self) {
        signal(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}
