//! Other kernels under qemu: Debian's stock 5.10, 6.1 and 6.12, cached by `cargo xtask kernels`,
//! booted with TCG (this machine's /dev/kvm cannot run them: shared/KERNELS.md) from a busybox
//! initramfs built here. One shell command runs inside; what it leaves in `$RESULTS` (and its
//! stdout, stderr and exit status) comes back over the second serial port, since the guest has
//! neither network nor disk.
//!
//! ```no_run
//! use netprobe_integration::vm::{kernels, Guest};
//! for kernel in kernels() {
//!     let out = Guest::new(&kernel)
//!         .scenario_tools()
//!         .scenario_modules()
//!         .command("uname -r > $RESULTS/uname")
//!         .run()
//!         .unwrap();
//!     assert_eq!(out.file("uname").unwrap().trim(), kernel.release);
//! }
//! ```

use std::{
    collections::BTreeMap,
    env, fmt, fs, io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

mod initramfs;
mod results;

/// The file in each kernel's cache directory that describes it (written by `cargo xtask kernels`).
pub const MANIFEST: &str = "netprobe-kernel.json";

/// The tools real scenarios drive inside a guest (resolved on the host's PATH). `sysctl` and
/// the other small tools are busybox's; `sh` is the host's dash.
pub const SCENARIO_TOOLS: &[&str] = &["ip", "nft", "tc", "ss"];

/// The modules real scenarios need; their dependencies come from modules.dep (and softdeps:
/// libcrc32c, under nf_tables, needs a crc32c module loaded first). All are modules
/// on Debian's 5.10, 6.1 and 6.12 (none built in), so one missing is an error.
pub const SCENARIO_MODULES: &[&str] = &[
    "veth",
    "nf_tables",
    "nft_numgen",
    "nft_reject",
    "nf_reject_ipv4",
    "nf_reject_ipv6",
    "nft_reject_inet",
    "sch_tbf",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
];

/// Modules that some kernels fold into another module, so they have no name of their own there:
/// nft_counter is its own module on 5.10 but part of nf_tables.ko on 6.1 and 6.12.
pub const SCENARIO_OPTIONAL_MODULES: &[&str] = &["nft_counter"];

/// Printed on the console by /init once modules are in and the command starts: a host timeout
/// before it is a boot timeout.
const RUNNING_MARKER: &str = "netprobe-vm: running the command";

/// Where `cargo xtask kernels` keeps kernels: `$NETPROBE_KERNEL_CACHE`, else
/// /var/cache/netprobe/kernels. One directory per kernel release.
pub fn cache_dir() -> PathBuf {
    env::var_os("NETPROBE_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netprobe/kernels"))
}

/// One cached kernel: its image and its depmod'ed modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The Debian suite it came from: bullseye, bookworm or trixie.
    pub suite: String,
    /// `uname -r` inside the guest, e.g. 6.1.0-37-amd64.
    pub release: String,
    /// The Debian package, e.g. linux-image-6.1.0-37-amd64.
    pub package: String,
    /// The package's version, e.g. 6.1.140-1.
    pub version: String,
    /// The kernel's cache directory (holds the manifest).
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`, with modules.dep and modules.builtin.
    pub modules: PathBuf,
}

impl Kernel {
    /// Reads `dir`'s manifest. Its paths are relative to `dir`, so a cache can be moved.
    pub fn load(dir: &Path) -> io::Result<Kernel> {
        let text = fs::read_to_string(dir.join(MANIFEST))?;
        let v: Value = serde_json::from_str(&text).map_err(io::Error::other)?;
        let field = |k: &str| {
            v[k].as_str().map(str::to_owned).ok_or_else(|| {
                io::Error::other(format!("{}: no \"{k}\"", dir.join(MANIFEST).display()))
            })
        };
        Ok(Kernel {
            suite: field("suite")?,
            release: field("release")?,
            package: field("package")?,
            version: field("version")?,
            dir: dir.to_path_buf(),
            vmlinuz: dir.join(field("vmlinuz")?),
            modules: dir.join(field("modules")?),
        })
    }

    /// Writes the manifest (atomically: a reader never sees half of one).
    pub fn write_manifest(&self) -> io::Result<()> {
        let rel = |p: &Path| -> io::Result<String> {
            p.strip_prefix(&self.dir)
                .map(|r| r.to_string_lossy().into_owned())
                .map_err(|_| io::Error::other(format!("{} not under {:?}", p.display(), self.dir)))
        };
        let v = json!({
            "suite": self.suite, "release": self.release, "package": self.package,
            "version": self.version, "vmlinuz": rel(&self.vmlinuz)?, "modules": rel(&self.modules)?,
        });
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        fs::write(&tmp, serde_json::to_string_pretty(&v)? + "\n")?;
        fs::rename(tmp, self.dir.join(MANIFEST))
    }

    /// The upstream version, from the package version: 6.1.140-1 → (6, 1, 140).
    pub fn upstream(&self) -> (u32, u32, u32) {
        let mut parts = self
            .version
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse().unwrap_or(0));
        let mut next = || parts.next().unwrap_or(0);
        (next(), next(), next())
    }

    /// Whether this kernel is `major.minor` or newer (e.g. `enum skb_drop_reason` needs 5.17).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        let (a, b, _) = self.upstream();
        (a, b) >= (major, minor)
    }
}

/// The kernels in `root` with a readable manifest and image, oldest first.
pub fn cached_kernels(root: &Path) -> Vec<Kernel> {
    let mut found: Vec<Kernel> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Kernel::load(&e.path()).ok())
        .filter(|k| k.vmlinuz.is_file() && k.modules.join("modules.dep").is_file())
        .collect();
    found.sort_by_key(|k| (k.upstream(), k.release.clone()));
    found
}

/// The cached kernels, oldest first. Panics if there are none: they come from `cargo xtask
/// kernels`.
pub fn kernels() -> Vec<Kernel> {
    let root = cache_dir();
    let found = cached_kernels(&root);
    assert!(
        !found.is_empty(),
        "no kernels cached in {} (NETPROBE_KERNEL_CACHE): run `cargo xtask kernels` first",
        root.display()
    );
    found
}

/// Why a guest gave no outcome.
#[derive(Debug)]
pub enum VmError {
    /// The initramfs could not be built: a tool, library, file or module is missing.
    Setup(String),
    Io(io::Error),
    /// qemu was killed after `after`; `booted` says whether /init had started the command.
    Timeout {
        booted: bool,
        after: Duration,
        console_tail: String,
    },
    /// qemu ended without a complete results stream (a kernel panic, a crash of /init…).
    NoResults {
        why: String,
        status: ExitStatus,
        console_tail: String,
    },
    /// A module failed to insert inside the guest.
    Insmod {
        modules: Vec<String>,
        console_tail: String,
    },
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::Setup(why) => write!(f, "building the guest: {why}"),
            VmError::Io(e) => write!(f, "running the guest: {e}"),
            VmError::Timeout {
                booted,
                after,
                console_tail,
            } => {
                let stage = if *booted {
                    "after /init started the command"
                } else {
                    "booting"
                };
                write!(
                    f,
                    "guest timed out {stage} ({after:.0?}); console ends:\n{console_tail}"
                )
            }
            VmError::NoResults {
                why,
                status,
                console_tail,
            } => write!(
                f,
                "no results from the guest ({why}; qemu {status}); console ends:\n{console_tail}"
            ),
            VmError::Insmod {
                modules,
                console_tail,
            } => write!(
                f,
                "insmod failed in the guest for {modules:?}; console ends:\n{console_tail}"
            ),
        }
    }
}

impl std::error::Error for VmError {}

impl From<io::Error> for VmError {
    fn from(e: io::Error) -> Self {
        VmError::Io(e)
    }
}

/// What came back from a guest.
#[derive(Debug)]
pub struct GuestOutcome {
    /// Everything on the first serial port: the kernel's messages and /init's.
    pub console: String,
    pub stdout: String,
    pub stderr: String,
    /// The command's exit status (137 if it was killed at its timeout).
    pub status: i32,
    pub timed_out: bool,
    /// The host directory holding what the command left in `$RESULTS`.
    pub results: PathBuf,
    /// The same files, by path relative to `$RESULTS`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// From starting qemu to its exit: boot, modules, command, results.
    pub wall: Duration,
}

impl GuestOutcome {
    /// A result file as text (lossy UTF-8).
    pub fn file(&self, name: &str) -> Option<String> {
        self.files
            .get(name)
            .map(|d| String::from_utf8_lossy(d).into_owned())
    }

    pub fn success(&self) -> bool {
        self.status == 0 && !self.timed_out
    }
}

/// A guest to boot: a kernel, what to put in its initramfs, and the command to run.
#[derive(Clone, Debug)]
pub struct Guest {
    kernel: Kernel,
    /// Executable names or paths, and whether a missing one is an error.
    executables: Vec<(String, bool)>,
    files: Vec<(PathBuf, String)>,
    /// Module names, and whether a missing one is an error.
    modules: Vec<(String, bool)>,
    command: String,
    timeout: Duration,
    boot_timeout: Duration,
    memory_mib: u32,
    cpus: u32,
    work_dir: Option<PathBuf>,
}

impl Guest {
    pub fn new(kernel: &Kernel) -> Guest {
        Guest {
            kernel: kernel.clone(),
            executables: Vec::new(),
            files: Vec::new(),
            modules: Vec::new(),
            command: "true".into(),
            timeout: Duration::from_secs(300),
            // Boot to /init is ~2 s under TCG; this also covers module loading and results.
            boot_timeout: Duration::from_secs(120),
            memory_mib: 2048,
            cpus: 2,
            work_dir: None,
        }
    }

    /// A host executable, by name (looked up on PATH, then the sbin directories) or by path. It
    /// goes to /usr/local/bin (first on the guest's PATH, before busybox's applets), with the
    /// shared libraries `ldd` lists at their host paths.
    pub fn executable(mut self, name_or_path: impl Into<String>) -> Guest {
        self.executables.push((name_or_path.into(), true));
        self
    }

    /// Like [`Guest::executable`], skipped if the host does not have it.
    pub fn optional_executable(mut self, name_or_path: impl Into<String>) -> Guest {
        self.executables.push((name_or_path.into(), false));
        self
    }

    /// A host file at `guest_path` in the guest (mode kept).
    pub fn file(mut self, host: impl Into<PathBuf>, guest_path: impl Into<String>) -> Guest {
        self.files.push((host.into(), guest_path.into()));
        self
    }

    /// A module to insert before the command, with its dependencies. Built into the kernel
    /// (modules.builtin): skipped. Neither: an error.
    pub fn module(mut self, name: impl Into<String>) -> Guest {
        self.modules.push((name.into(), true));
        self
    }

    /// Like [`Guest::module`], skipped if the kernel has no module of that name.
    pub fn optional_module(mut self, name: impl Into<String>) -> Guest {
        self.modules.push((name.into(), false));
        self
    }

    /// [`SCENARIO_TOOLS`], and bpftool if the host has it.
    pub fn scenario_tools(self) -> Guest {
        let g = SCENARIO_TOOLS.iter().fold(self, |g, t| g.executable(*t));
        g.optional_executable("bpftool")
    }

    /// [`SCENARIO_MODULES`] and [`SCENARIO_OPTIONAL_MODULES`].
    pub fn scenario_modules(self) -> Guest {
        let g = SCENARIO_MODULES.iter().fold(self, |g, m| g.module(*m));
        SCENARIO_OPTIONAL_MODULES
            .iter()
            .fold(g, |g, m| g.optional_module(*m))
    }

    /// The shell command to run (by busybox sh, in `$RESULTS`, stdin from /dev/null).
    pub fn command(mut self, sh: impl Into<String>) -> Guest {
        self.command = sh.into();
        self
    }

    /// How long the command may run inside the guest before it is killed (default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Guest {
        self.timeout = timeout;
        self
    }

    /// Time allowed on top of the command's for boot, modules and results (default 120 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Guest {
        self.boot_timeout = timeout;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Guest {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Guest {
        self.cpus = cpus;
        self
    }

    /// Where to keep the console log and results (default: a new directory under the temp dir).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Guest {
        self.work_dir = Some(dir.into());
        self
    }

    /// Boots the guest, waits for it to power off and collects what came back. Guests run one
    /// at a time on this host (a lock file): each keeps both cores busy.
    pub fn run(&self) -> Result<GuestOutcome, VmError> {
        let initramfs = self.initramfs()?.into_bytes();
        let _lock = HostLock::acquire()?;
        let work = self.make_work_dir()?;
        let initrd = work.join("initrd.cpio");
        fs::write(&initrd, initramfs)?;
        let (console_log, serial) = (work.join("console.log"), work.join("results.raw"));
        let start = Instant::now();
        let mut qemu = self.qemu(&initrd, &console_log, &serial, &work)?;
        let deadline = self.boot_timeout + self.timeout;
        let status = loop {
            if let Some(status) = qemu.try_wait()? {
                break Some(status);
            }
            if start.elapsed() > deadline {
                let _ = qemu.kill();
                let _ = qemu.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let wall = start.elapsed();
        let _ = fs::remove_file(&initrd); // tens of MB, and rebuilt each run
        let console =
            String::from_utf8_lossy(&fs::read(&console_log).unwrap_or_default()).into_owned();
        let Some(status) = status else {
            return Err(VmError::Timeout {
                booted: console.contains(RUNNING_MARKER),
                after: wall,
                console_tail: tail(&console),
            });
        };
        let raw = fs::read(&serial).unwrap_or_default();
        if let Err(why) = results::unpack(&raw, &work) {
            let qemu_log = fs::read_to_string(work.join("qemu.log")).unwrap_or_default();
            let qemu_log = qemu_log.trim();
            return Err(VmError::NoResults {
                why: if qemu_log.is_empty() {
                    why
                } else {
                    format!("{why}; qemu: {qemu_log}")
                },
                status,
                console_tail: tail(&console),
            });
        }
        results::outcome(&work, console, wall)
    }

    fn make_work_dir(&self) -> io::Result<PathBuf> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = self.work_dir.clone().unwrap_or_else(|| {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}-{}-{seq}", self.kernel.release, std::process::id());
            env::temp_dir().join("netprobe-vm").join(name)
        });
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn qemu(
        &self,
        initrd: &Path,
        console: &Path,
        serial: &Path,
        work: &Path,
    ) -> io::Result<std::process::Child> {
        let log = fs::File::create(work.join("qemu.log"))?;
        Command::new("qemu-system-x86_64")
            // No KVM: /dev/kvm here is a kvm_pvm device on which stock kernels hang at boot.
            // One TCG thread for both vCPUs (interleaved, never at once): with one thread per
            // vCPU, guests now and then died while the kernel patched its own text (attaching
            // and detaching tracepoints flips static keys through int3): "Oops: int3" in
            // ttwu_do_activate on 6.12, a soft lockup of both CPUs on 6.1, a few runs in a
            // hundred. The scenarios still see two CPUs.
            .args([
                "-accel",
                "tcg,thread=single",
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
            ])
            .args(["-monitor", "none", "-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            // panic=-1 with -no-reboot: a panic ends qemu at once instead of at the timeout.
            // softlockup_panic: a CPU stuck in the kernel for 20 s panics, with the stuck
            // CPU's stack on the console (the panic prints verbosely), instead of a guest that
            // hangs silently until the timeout (seen once in a while on 6.1 under emulation;
            // no passing run has ever logged a soft lockup or RCU stall).
            .args(["-append", "console=ttyS0 quiet panic=-1 softlockup_panic=1"])
            .arg("-serial")
            .arg(qemu_file(console))
            .arg("-serial")
            .arg(qemu_file(serial))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting qemu-system-x86_64 (cargo xtask kernels installs it): {e}"),
                )
            })
    }
}

/// The last lines of the console, for error messages.
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// qemu's `file:` chardev; a comma in the path would end the option, so it is doubled.
fn qemu_file(path: &Path) -> String {
    format!("file:{}", path.display().to_string().replace(',', ",,"))
}

/// Serialises guests across processes (parallel test binaries, xtask): one at a time.
struct HostLock(#[allow(dead_code)] fs::File);

impl HostLock {
    fn acquire() -> io::Result<HostLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(env::temp_dir().join("netprobe-vm.lock"))?;
        // SAFETY: flock on an fd we own; it is released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(HostLock(file))
    }
}
