//! Test hosts for netprobe's privileged tests: network namespaces joined by veth pairs
//! (198.18.0.0/15 and 2001:db8::/32 only), nftables loss, TCP traffic from threads that
//! joined a namespace, kernel counters read inside a namespace, and the netprobe binary.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod matrix;
pub mod vm;

/// Runs a command, panicking with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `nft -f -` inside a namespace with the given ruleset.
pub fn nft_in(ns: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft ruleset failed:\n{ruleset}"
    );
}

/// A ruleset dropping `percent`% of TCP segments to `port` at random on their way *into* the
/// host, counted by the rule's own counter. (A drop in the sender's own OUTPUT hook is not path
/// loss: the error reaches TCP synchronously and it sends the data again as new data, so
/// RetransSegs does not move.)
pub fn input_loss_ruleset(table: &str, port: u16, percent: u32) -> String {
    format!(
        "table inet {table} {{\n  chain in {{\n    type filter hook input priority 0; policy accept;\n    \
         tcp dport {port} numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
    )
}

/// A tbf shaper far below what a test sends (1 Mbit/s, 3 KB queue) on `dev` in `ns`: qdisc
/// drops on demand.
pub fn add_tiny_tbf(ns: &Netns, dev: &str) {
    sh(
        "ip",
        &[
            "netns", "exec", &ns.name, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
            "1mbit", "burst", "2kb", "limit", "3kb",
        ],
    );
}

/// Packets counted by the first `counter` in `table inet <table>` in a namespace.
pub fn nft_counter_packets(ns: &str, table: &str) -> u64 {
    let json = sh(
        "ip",
        &[
            "netns", "exec", ns, "nft", "-j", "list", "table", "inet", table,
        ],
    );
    let v: Value = serde_json::from_str(&json).expect("nft json");
    for item in v["nftables"].as_array().expect("nftables array") {
        if let Some(exprs) = item["rule"]["expr"].as_array() {
            for e in exprs {
                if let Some(p) = e["counter"]["packets"].as_u64() {
                    return p;
                }
            }
        }
    }
    panic!("no counter in table {table}: {json}");
}

/// A network namespace, deleted on drop by its owner.
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("np-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh("ip", &["netns", "add", &name]);
        sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self { name, owned: true }
    }

    /// A handle to the same namespace that does not delete it (to move into threads).
    pub fn shared(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            owned: false,
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// The namespace's inode: what netprobe reports as `netns`.
    pub fn inode(&self) -> u64 {
        fs::metadata(self.path()).expect("netns file").ino()
    }

    /// Runs `f` on a new thread that has joined this namespace: sockets it creates live there.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Runs `f` inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }

    /// Sets a per-namespace sysctl in this namespace (e.g. `net.ipv4.tcp_early_retrans`).
    pub fn sysctl(&self, name: &str, value: &str) {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                &format!("{name}={value}"),
            ],
        );
    }

    /// A counter from /proc/net/snmp (e.g. `Tcp`, `RetransSegs`) as this namespace sees it.
    pub fn snmp(&self, group: &'static str, field: &'static str) -> u64 {
        self.proc_net_counter("snmp", group, field)
    }

    /// A counter from /proc/net/netstat (e.g. `TcpExt`, `ListenOverflows`).
    pub fn netstat(&self, group: &'static str, field: &'static str) -> u64 {
        self.proc_net_counter("netstat", group, field)
    }

    fn proc_net_counter(
        &self,
        file: &'static str,
        group: &'static str,
        field: &'static str,
    ) -> u64 {
        self.run(move || {
            // /proc/thread-self/net follows this thread's namespace, /proc/self/net would not.
            let text = fs::read_to_string(format!("/proc/thread-self/net/{file}")).expect(file);
            snmp_value(&text, group, field).unwrap_or_else(|| panic!("no {group}:{field}"))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }
}

/// Joins the network namespace at `path` (this thread only).
fn enter(path: &std::path::Path) {
    let file = fs::File::open(path).expect("open netns");
    // SAFETY: a valid namespace fd; CLONE_NEWNET may be joined per thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A value from the two-line-per-group /proc/net/snmp format.
pub fn snmp_value(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let index = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// Two namespaces joined by a veth pair: `a` has .1/::1, `b` has .2/::2 of subnet `n`
/// (198.18.n.0/24, 2001:db8:n::/64).
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub subnet: u8,
}

impl Link {
    pub fn new(tag: &str, subnet: u8) -> Self {
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        sh(
            "ip",
            &[
                "-n", &a.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                "netns", &b.name,
            ],
        );
        for (ns, host) in [(&a, 1), (&b, 2)] {
            let v4 = format!("198.18.{subnet}.{host}/24");
            let v6 = format!("2001:db8:{subnet}::{host}/64");
            sh("ip", &["-n", &ns.name, "addr", "add", &v4, "dev", "veth0"]);
            sh(
                "ip",
                &["-n", &ns.name, "addr", "add", &v6, "dev", "veth0", "nodad"],
            );
            sh("ip", &["-n", &ns.name, "link", "set", "veth0", "up"]);
        }
        Self { a, b, subnet }
    }

    /// Permanent neighbour entries both ways, so that no packet waits for ARP (queued packets
    /// are flushed from whichever CPU processes the ARP reply).
    pub fn static_neighbours(&self) {
        let mac = |ns: &Netns| {
            let json = sh("ip", &["-n", &ns.name, "-j", "link", "show", "veth0"]);
            let v: Value = serde_json::from_str(&json).expect("ip -j link");
            v[0]["address"].as_str().expect("mac").to_string()
        };
        let (mac_a, mac_b) = (mac(&self.a), mac(&self.b));
        for (ns, peer, peer_mac) in [(&self.a, 2, &mac_b), (&self.b, 1, &mac_a)] {
            let ip = self.addr(peer, false).to_string();
            sh(
                "ip",
                &[
                    "-n",
                    &ns.name,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    peer_mac,
                    "dev",
                    "veth0",
                    "nud",
                    "permanent",
                ],
            );
        }
    }

    pub fn addr(&self, host: u8, v6: bool) -> std::net::IpAddr {
        if v6 {
            format!("2001:db8:{}::{host}", self.subnet).parse().unwrap()
        } else {
            format!("198.18.{}.{host}", self.subnet).parse().unwrap()
        }
    }
}

/// Result of a bulk transfer.
pub struct Transfer {
    pub local: SocketAddr,
    pub bytes: u64,
}

/// Sends `bytes` from a thread in `client` to a sink in `server` listening on `to`, then closes
/// both ends cleanly (FIN both ways) so that no retransmit can follow the transfer.
pub fn bulk_transfer(client: &Netns, server: &Netns, to: SocketAddr, bytes: u64) -> Transfer {
    transfer(client, server, to, bytes, None)
}

/// `bulk_transfer` with both ends kept on one CPU. veth delivers through the transmitting
/// CPU's backlog, and TCP also transmits from the CPU where the receiver freed its skbs (TSQ);
/// packets sent from two CPUs can overtake each other, and the receiver's SACKs then trigger
/// spurious fast retransmits (real, and counted as such).
pub fn bulk_transfer_pinned(
    client: &Netns,
    server: &Netns,
    to: SocketAddr,
    bytes: u64,
    cpu: usize,
) -> Transfer {
    transfer(client, server, to, bytes, Some(cpu))
}

fn transfer(
    client: &Netns,
    server: &Netns,
    to: SocketAddr,
    bytes: u64,
    pin: Option<usize>,
) -> Transfer {
    let (ready_tx, ready_rx) = mpsc::channel();
    let sink = server.spawn(move || {
        if let Some(cpu) = pin {
            pin_to_cpu(cpu);
        }
        let listener = TcpListener::bind(SocketAddr::new(
            if to.is_ipv6() {
                "::".parse().unwrap()
            } else {
                "0.0.0.0".parse().unwrap()
            },
            to.port(),
        ))
        .expect("bind sink");
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) => panic!("sink read: {e}"),
            }
        }
        total
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("sink ready");
    let sender = client.spawn(move || {
        if let Some(cpu) = pin {
            pin_to_cpu(cpu);
        }
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(20)).expect("connect");
        let local = conn.local_addr().unwrap();
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0u64;
        while sent < bytes {
            let n = chunk.len().min((bytes - sent) as usize);
            conn.write_all(&chunk[..n]).expect("send");
            sent += n as u64;
        }
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        // The server's FIN arrives only after it has read our FIN: then everything we sent,
        // FIN included, is acknowledged.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).expect("read until FIN");
        local
    });
    let local = sender.join().expect("sender");
    let received = sink.join().expect("sink");
    assert_eq!(received, bytes, "sink received everything");
    Transfer { local, bytes }
}

/// RPS on `ns`'s veth0: every packet it receives is processed on CPU 1's backlog, whichever
/// CPU it arrived on (with a tiny `netdev_max_backlog`, per-CPU backlog drops on demand).
pub fn steer_rx_to_cpu1(ns: &Netns) {
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sh",
            "-c",
            "echo 2 > /sys/class/net/veth0/queues/rx-0/rps_cpus",
        ],
    );
}

/// `count` UDP datagrams from `link.a`, pinned to CPU 0, to the discard port of `link.b`.
pub fn udp_flood_from_cpu0(link: &Link, count: usize) {
    let to = SocketAddr::new(link.addr(2, false), 9);
    link.a.run(move || {
        pin_to_cpu(0);
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..count {
            let _ = udp.send_to(b"rps", to);
        }
    });
}

/// Sets a global sysctl for a test and restores the old value when dropped (also on panic).
pub struct SysctlGuard {
    path: PathBuf,
    old: String,
}

impl SysctlGuard {
    pub fn set(name: &str, value: &str) -> Self {
        let path = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
        let old = fs::read_to_string(&path).expect("read sysctl");
        fs::write(&path, value).expect("write sysctl");
        Self { path, old }
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, self.old.trim());
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "pin to cpu{cpu}"
        );
    }
}

/// A helper process inside a namespace (see `np-holder`), killed on drop.
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `bin args…` inside `ns` and waits for its "ready" line.
    pub fn start(ns: &Netns, bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, bin])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "holder {args:?} did not start");
        Self { child }
    }

    /// `ip netns exec` execs the program: this is the holder's own pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `netprobe report --json` inside a namespace while `during` runs; returns the document.
pub fn report_in<T: Send + 'static>(
    ns: &Netns,
    interval: &str,
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
    thread::sleep(Duration::from_millis(150));
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

/// The findings of a report with the given id.
pub fn findings<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id)
        .collect()
}

/// The finding of a findings bundle with this id, about this namespace (`None`: any);
/// panics with the bundle's findings when there is none.
pub fn finding_about(bundle: &Value, id: &str, netns: Option<u64>) -> Value {
    bundle["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id && netns.is_none_or(|ns| f["netns"].as_u64() == Some(ns)))
        .cloned()
        .unwrap_or_else(|| panic!("no {id} finding in {}", bundle["findings"]))
}

/// The reconciliation row of a findings bundle for a kernel counter.
pub fn reconciliation_row(bundle: &Value, counter: &str) -> Value {
    bundle["reconciliation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["counter"] == counter)
        .cloned()
        .unwrap_or_else(|| panic!("no {counter} row in {}", bundle["reconciliation"]))
}

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
    pub fn summary(&self) -> &Value {
        let s = self.of_type("summary");
        assert_eq!(s.len(), 1, "exactly one summary; stderr: {}", self.stderr);
        s[0]
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
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
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
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Names of netprobe's BPF programs currently loaded anywhere in the kernel.
pub fn loaded_netprobe_programs() -> Vec<String> {
    let json = sh("bpftool", &["prog", "list", "-j"]);
    let v: Value = serde_json::from_str(&json).expect("bpftool json");
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("netprobe_"))
        .map(String::from)
        .collect()
}

/// Waits (the kernel frees programs after an RCU grace period) until none of netprobe's
/// programs is loaded; returns what is still loaded after the timeout.
pub fn wait_no_programs(timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = loaded_netprobe_programs();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
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

/// Runs `netprobe trace <args>` (text mode), runs `during` once netprobe says it is tracing,
/// and waits for it to exit; returns (exit ok, stdout, stderr).
pub fn netprobe_traced(args: &[&str], during: impl FnOnce()) -> (bool, String, String) {
    let mut child = Command::new(netprobe_bin())
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netprobe");
    let mut stdout = child.stdout.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("netprobe: tracing") {
                let _ = ready_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let ready = ready_rx.recv_timeout(attach_timeout()).is_ok();
    if ready {
        during();
    }
    let status = child.wait().expect("netprobe");
    let stderr = stderr.join().unwrap();
    assert!(ready, "netprobe never said it was tracing: {stderr}");
    (status.success(), stdout.join().unwrap(), stderr)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_parsing() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 42 0\n";
        assert_eq!(snmp_value(text, "Tcp", "RetransSegs"), Some(42));
        assert_eq!(snmp_value(text, "Ip", "DefaultTTL"), Some(64));
        assert_eq!(snmp_value(text, "Tcp", "Nope"), None);
        assert_eq!(snmp_value(text, "Udp", "InErrors"), None);
    }
}
