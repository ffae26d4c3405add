//! The monitor as a service: a notify socket listened on as systemd listens, the shipped
//! systemd unit and logrotate file made runnable here, and a log directory on a tiny tmpfs
//! that only the monitor's own mount namespace sees.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{netprobe_bin, Netns};

/// A file of this repository (contrib/…).
pub fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A fresh directory of this test's own (0755: logrotate refuses world-writable parents),
/// removed with what is in it when dropped.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("np-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Self(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One datagram to the notify socket: when it came, and its `KEY=value` lines.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    pub text: String,
}

impl Notification {
    /// It holds the line `assignment` (`READY=1`).
    pub fn has(&self, assignment: &str) -> bool {
        self.text.lines().any(|l| l == assignment)
    }

    pub fn status(&self) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// A `NOTIFY_SOCKET`: a datagram socket bound in a directory of the test's, read by a thread
/// that stamps each message when it arrives (as systemd's watchdog timer would see it).
pub struct NotifySocket {
    pub path: PathBuf,
    _dir: TestDir,
    messages: mpsc::Receiver<Notification>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    pub fn bind(tag: &str) -> Self {
        let dir = TestDir::new(tag);
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (tx, messages) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let _ = tx.send(Notification {
                        at: Instant::now(),
                        text,
                    });
                }
            }
        });
        Self {
            path,
            _dir: dir,
            messages,
            stop,
            reader: Some(reader),
        }
    }

    /// The next message, waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Notification> {
        self.messages.recv_timeout(timeout).ok()
    }

    /// Every message received so far and not yet taken, after a pause long enough for the
    /// reader to have stamped what is queued.
    pub fn rest(&self) -> Vec<Notification> {
        thread::sleep(Duration::from_millis(200));
        self.messages.try_iter().collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// contrib/systemd/netprobe-monitor@.service with its binary pointed at the netprobe under
/// test, written as instance `instance` into `dir`; returns the unit's path.
pub fn unit_for_test(dir: &TestDir, instance: &str, extra: &str) -> PathBuf {
    let unit = fs::read_to_string(repo_file("contrib/systemd/netprobe-monitor@.service"))
        .expect("the unit file");
    let installed = "/usr/local/bin/netprobe ";
    assert_eq!(unit.matches(installed).count(), 1, "one ExecStart binary");
    let here = format!("{} ", netprobe_bin().canonicalize().unwrap().display());
    let path = dir.join(&format!("netprobe-monitor@{instance}.service"));
    fs::write(&path, unit.replace(installed, &here) + extra).unwrap();
    path
}

/// `systemd-analyze verify` on one unit (not the units it pulls in, which are the host's):
/// whether it exited 0, and everything it printed.
pub fn systemd_verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (the systemd package)");
    let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
}

/// contrib/logrotate/netprobe-monitor for logs in `dir`, its postrotate signalling `pid`
/// instead of the systemd units.
pub fn logrotate_config_for_test(dir: &TestDir, pid: i32) -> PathBuf {
    let shipped = fs::read_to_string(repo_file("contrib/logrotate/netprobe-monitor"))
        .expect("the logrotate file");
    assert!(shipped.contains("/var/log/netprobe/*.csv {"), "{shipped}");
    let logs = format!("{}/", dir.0.display());
    let mut signals = 0;
    let lines: Vec<String> = shipped
        .replace("/var/log/netprobe/", &logs)
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("systemctl kill ") {
                signals += 1;
                format!("        kill -HUP {pid}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(signals, 1, "one systemctl kill in postrotate: {shipped}");
    let path = dir.join("logrotate.conf");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// `logrotate -f` with its own state file: a rotation now, as the daily one would.
pub fn logrotate_now(config: &Path, state: &Path) {
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(config)
        .output()
        .expect("logrotate (installed by cargo xtask setup)");
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A monitor whose log directory `dir` is a tmpfs of `pages` 4 KiB pages, mounted in a mount
/// namespace of its own (it goes away with the process: nothing is left mounted), holding
/// `seed` as `lo.csv` and a file `filler` that takes every other page. The shell runs the
/// monitor (`lo`, every `interval` s) and, once it exits, copies the log to `out`.
pub fn monitor_on_full_tmpfs(
    ns: &Netns,
    dir: &TestDir,
    pages: u32,
    seed: &Path,
    out: &Path,
    interval: &str,
) -> Command {
    let script = r#"
        mount -t tmpfs -o "size=$1,mode=0755" np-full "$2" || exit 97
        cp "$3" "$2/lo.csv" || exit 98
        dd if=/dev/zero of="$2/filler" bs=4096 2>/dev/null
        "$5" monitor lo "$6" "$2/lo.csv"
        status=$?
        cp "$2/lo.csv" "$4"
        exit $status
    "#;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.name, "unshare", "--mount"])
        .args(["--propagation", "private", "sh", "-c", script, "sh"])
        .arg(format!("{}k", pages * 4))
        .arg(&dir.0)
        .arg(seed)
        .arg(out)
        .arg(netprobe_bin())
        .arg(interval);
    command
}

/// The one child of `pid` (the monitor under a shell), from /proc.
pub fn only_child(pid: i32) -> i32 {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let pids: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "children of {pid}: {children:?}");
    pids[0]
}
