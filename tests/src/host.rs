//! Test hosts: network namespaces joined by veth pairs (198.18.0.0/15 and 2001:db8::/32
//! only), their counters, and the few host-wide settings a test may change and restores.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    process::Command,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

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

    /// Runs a command inside this namespace (`ip netns exec`), panicking if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Waits until no TCP socket on `port` in this namespace can send anything more: every one
    /// is gone, listening, or in TIME-WAIT (both FINs sent and acknowledged). A trace stopped
    /// before then can miss a last FIN or data retransmit that the counters read after it
    /// still see. False if that takes longer than `timeout`.
    pub fn wait_tcp_quiet(&self, port: u16, timeout: Duration) -> bool {
        let filter = format!("( sport = :{port} or dport = :{port} )");
        let deadline = Instant::now() + timeout;
        loop {
            let sockets = self.exec("ss", &["-Htan", &filter]);
            let busy = sockets.lines().any(|line| {
                let state = line.split_whitespace().next().unwrap_or("");
                !matches!(state, "LISTEN" | "TIME-WAIT")
            });
            if !busy {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sets a per-namespace sysctl in this namespace (e.g. `net.ipv4.tcp_early_retrans`).
    pub fn sysctl(&self, name: &str, value: &str) {
        self.exec("sysctl", &["-qw", &format!("{name}={value}")]);
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

    /// The MAC address of this namespace's `veth0`.
    fn veth_mac(&self) -> String {
        let json = sh("ip", &["-n", &self.name, "-j", "link", "show", "veth0"]);
        let v: Value = serde_json::from_str(&json).expect("ip -j link");
        v[0]["address"].as_str().expect("mac").to_string()
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
fn enter(path: &Path) {
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
        let (mac_a, mac_b) = (self.a.veth_mac(), self.b.veth_mac());
        self.static_neighbour(&self.a, 2, &mac_b);
        self.static_neighbour(&self.b, 1, &mac_a);
    }

    /// A permanent entry in `ns` for host `peer` of this link (IPv4) at `peer_mac`.
    fn static_neighbour(&self, ns: &Netns, peer: u8, peer_mac: &str) {
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

    /// A permanent entry for b in a only: a's packets to b reach the device even when b's
    /// end of the link is down.
    pub fn static_neighbour_of_b_in_a(&self) {
        self.static_neighbour(&self.a, 2, &self.b.veth_mac());
    }

    pub fn addr(&self, host: u8, v6: bool) -> IpAddr {
        if v6 {
            format!("2001:db8:{}::{host}", self.subnet).parse().unwrap()
        } else {
            format!("198.18.{}.{host}", self.subnet).parse().unwrap()
        }
    }

    /// `port` at host `host` (1: a, 2: b) of this link.
    pub fn socket(&self, host: u8, port: u16, v6: bool) -> SocketAddr {
        SocketAddr::new(self.addr(host, v6), port)
    }

    /// `port` at b over IPv4: where most tests' flows go.
    pub fn b_port(&self, port: u16) -> SocketAddr {
        self.socket(2, port, false)
    }
}

/// A tbf shaper far below what a test sends (1 Mbit/s, 3 KB queue) on `dev` in `ns`: qdisc
/// drops on demand.
pub fn add_tiny_tbf(ns: &Netns, dev: &str) {
    ns.exec(
        "tc",
        &[
            "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1mbit", "burst", "2kb", "limit",
            "3kb",
        ],
    );
}

/// RPS on `ns`'s veth0: every packet it receives is processed on CPU 1's backlog, whichever
/// CPU it arrived on (with a tiny `netdev_max_backlog`, per-CPU backlog drops on demand).
pub fn steer_rx_to_cpu1(ns: &Netns) {
    ns.exec(
        "sh",
        &["-c", "echo 2 > /sys/class/net/veth0/queues/rx-0/rps_cpus"],
    );
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

/// Sends `signal` (libc::SIGTERM…) to a process this test started. A process that has
/// already exited is not an error: what the test checks next is how it ended.
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, signal) };
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
