//! `cargo xtask kernels`: Debian's stock kernels for the kernel matrix (tests/src/vm.rs boots
//! them under qemu). Per suite, the `linux-image-<release>-amd64` that `linux-image-amd64`
//! depends on, newest of the suite and its security updates, unpacked and depmod'ed into
//! `$NETPROBE_KERNEL_CACHE` (default /var/cache/netprobe/kernels) with a manifest the tests crate
//! reads. The host's apt configuration is never touched: each suite has its own sources list,
//! lists and cache under `<cache>/.apt/<suite>`. Once a suite has a kernel the network is not
//! used again unless `--refresh` is given.

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::symlink},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use netprobe_integration::vm::{self, Kernel};

use crate::setup;

/// A cached kernel: the manifest type the tests crate reads, so both sides agree on it.
pub use netprobe_integration::vm::Kernel as KernelDir;

/// Debian 11, 12 and 13: kernels 5.10, 6.1 and 6.12.
pub const SUITES: &[&str] = &["bullseye", "bookworm", "trixie"];

/// Where this machine's Debian mirror is configured (deb822).
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The kernels of every suite, fetched if not cached.
pub fn ensure() -> Result<Vec<KernelDir>> {
    ensure_with(false)
}

/// Like [`ensure`]; with `refresh`, asks the archive for each suite's current kernel, fetches it
/// if it is new, and deletes the ones it replaces.
pub fn ensure_with(refresh: bool) -> Result<Vec<KernelDir>> {
    setup::ensure_packages(setup::PACKAGES)?;
    let root = vm::cache_dir();
    let cached = vm::cached_kernels(&root);
    let mut kernels = Vec::new();
    let mut lock = None;
    let mut mirrors = None;
    for suite in SUITES {
        let old: Vec<&Kernel> = cached.iter().filter(|k| k.suite == *suite).collect();
        match old.last() {
            Some(k) if !refresh => kernels.push((*k).clone()),
            _ => {
                if lock.is_none() {
                    lock = Some(lock_cache(&root)?);
                }
                let mirrors = match &mirrors {
                    Some(m) => m,
                    None => mirrors.insert(Mirrors::from_host()?),
                };
                let kernel = fetch(&root, suite, mirrors)?;
                for k in old.iter().filter(|k| k.release != kernel.release) {
                    eprintln!(
                        "xtask: removing {} (replaced by {})",
                        k.release, kernel.release
                    );
                    fs::remove_dir_all(&k.dir).with_context(|| format!("removing {:?}", k.dir))?;
                }
                kernels.push(kernel);
            }
        }
    }
    Ok(kernels)
}

/// The task: ensure, then list what is cached.
pub fn task(refresh: bool) -> Result<()> {
    let start = Instant::now();
    let kernels = if refresh {
        ensure_with(true)?
    } else {
        ensure()?
    };
    for k in &kernels {
        println!(
            "{:<9} {:<24} {:<12} {}",
            k.suite,
            k.release,
            k.version,
            k.dir.display()
        );
    }
    eprintln!(
        "xtask: {} kernels ready in {:.1?}",
        kernels.len(),
        start.elapsed()
    );
    Ok(())
}

/// One cold fetch at a time per cache (two xtasks would share the .partial directories).
fn lock_cache(root: &Path) -> Result<fs::File> {
    fs::create_dir_all(root).with_context(|| {
        format!("creating {root:?} (as root, or set NETPROBE_KERNEL_CACHE to a writable directory)")
    })?;
    let file = fs::File::create(root.join(".lock"))?;
    // SAFETY: flock on an fd we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("locking {root:?}: {}", std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Resolves a suite's current kernel package, then downloads and unpacks it unless that exact
/// version is cached already.
fn fetch(root: &Path, suite: &str, mirrors: &Mirrors) -> Result<Kernel> {
    let apt = Apt::new(&root.join(".apt").join(suite), suite, mirrors)?;
    apt.update()?;
    let (package, version) = apt.kernel_package()?;
    if let Some(k) = vm::cached_kernels(root)
        .into_iter()
        .find(|k| k.package == package && k.version == version)
    {
        return Ok(k);
    }
    eprintln!("xtask: fetching {package} {version} ({suite})");
    let partial = root.join(format!(".{suite}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    let deb = apt.download(&package, &partial)?;
    let tree = partial.join("tree");
    check(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let (release, modules) = prepare_modules(&tree)?;
    let vmlinuz = Path::new("boot").join(format!("vmlinuz-{release}"));
    if !tree.join(&vmlinuz).is_file() {
        bail!("{package}: no {vmlinuz:?} in the package");
    }
    let dir = root.join(&release);
    if dir.exists() {
        fs::remove_dir_all(&dir)?; // a leftover without a manifest, or another version
    }
    fs::rename(&tree, &dir)?;
    fs::remove_dir_all(&partial)?;
    let kernel = Kernel {
        suite: suite.to_owned(),
        release,
        package,
        version,
        vmlinuz: dir.join(vmlinuz),
        modules: dir.join(modules),
        dir,
    };
    // Last: a manifest means the directory is complete.
    kernel.write_manifest()?;
    Ok(kernel)
}

/// Finds the modules under `tree` (lib/modules, or usr/lib/modules in trixie's merged-usr
/// package) and runs depmod on them. Returns the release and the modules directory, relative.
fn prepare_modules(tree: &Path) -> Result<(String, PathBuf)> {
    let base = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(PathBuf::from)
        .find(|d| tree.join(d).is_dir())
        .context("no lib/modules nor usr/lib/modules in the package")?;
    let releases: Vec<String> = fs::read_dir(tree.join(&base))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let [release] = releases.as_slice() else {
        bail!("expected one release under {base:?}, found {releases:?}");
    };
    // depmod -b looks in either lib/modules or usr/lib/modules, depending on how this host's
    // kmod was built: make both lead to the modules.
    if base.starts_with("usr") {
        if !tree.join("lib").exists() {
            symlink("usr/lib", tree.join("lib"))?;
        }
    } else if !tree.join("usr/lib/modules").exists() {
        fs::create_dir_all(tree.join("usr/lib"))?;
        symlink("../../lib/modules", tree.join("usr/lib/modules"))?;
    }
    check(Command::new("depmod").arg("-b").arg(tree).arg(release))?;
    let modules = base.join(release);
    if !tree.join(&modules).join("modules.dep").is_file() {
        bail!("depmod made no modules.dep in {modules:?}");
    }
    Ok((release.clone(), modules))
}

/// This machine's Debian mirror and security mirror, and the keyring that signs them.
struct Mirrors {
    main: String,
    security: String,
    keyring: String,
}

impl Mirrors {
    /// From debian.sources: the stanza with a plain suite gives the mirror, the one with a
    /// `-security` suite the security mirror. Debian's own hosts if it is missing.
    fn from_host() -> Result<Mirrors> {
        let mut m = Mirrors {
            main: "http://deb.debian.org/debian".into(),
            security: "http://deb.debian.org/debian-security".into(),
            keyring: DEFAULT_KEYRING.into(),
        };
        let Ok(text) = fs::read_to_string(DEBIAN_SOURCES) else {
            return Ok(m);
        };
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
            };
            let (Some(uri), Some(suites)) = (field("URIs"), field("Suites")) else {
                continue;
            };
            let uri = uri.split_whitespace().next().unwrap_or(uri).to_owned();
            if suites.split_whitespace().any(|s| s.ends_with("-security")) {
                m.security = uri;
            } else {
                m.main = uri;
            }
            // Signed-By may also hold an inline key: only a keyring file is reused.
            if let Some(key) = field("Signed-By").filter(|k| Path::new(k).is_file()) {
                m.keyring = key.to_owned();
            }
        }
        Ok(m)
    }
}

/// apt-get and apt-cache on a private sources list, lists and cache: the host's are neither
/// read nor written (its pins either, so the newest version wins).
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(dir: &Path, suite: &str, m: &Mirrors) -> Result<Apt> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let key = &m.keyring;
        let sources = format!(
            "deb [signed-by={key}] {} {suite} main\ndeb [signed-by={key}] {} {suite}-security main\n",
            m.main, m.security
        );
        fs::write(dir.join("sources.list"), sources)?;
        Ok(Apt {
            dir: dir.to_path_buf(),
        })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = self.dir.display();
        for opt in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={d}/lists"),
            // Else pkgcache.bin in /var/cache/apt would be rebuilt from these lists.
            format!("Dir::Cache={d}/cache"),
            "Dir::Etc::Preferences=/dev/null".into(),
            "Dir::Etc::PreferencesParts=/dev/null".into(),
            "Acquire::Languages=none".into(),
            // apt's _apt user could not write into this root-owned directory (and would warn);
            // the lists are still checked against the archive keyring.
            "APT::Sandbox::User=root".into(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    fn update(&self) -> Result<()> {
        check(self.cmd("apt-get").args(["update", "-qq"])).map(drop)
    }

    /// The image package `linux-image-amd64` depends on, and its candidate version.
    fn kernel_package(&self) -> Result<(String, String)> {
        let depends = check(self.cmd("apt-cache").args(["depends", "linux-image-amd64"]))?;
        let package = depends
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("linux-image-amd64 depends on no image:\n{depends}"))?
            .to_owned();
        let show = check(
            self.cmd("apt-cache")
                .args(["show", "--no-all-versions", &package]),
        )?;
        let version = show
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .with_context(|| format!("no version for {package}"))?
            .to_owned();
        Ok((package, version))
    }

    /// Downloads `package` into `into` and returns the .deb's path.
    fn download(&self, package: &str, into: &Path) -> Result<PathBuf> {
        check(
            self.cmd("apt-get")
                .args(["download", "-q", package])
                .current_dir(into),
        )?;
        fs::read_dir(into)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))
    }
}

/// Runs a command, returning its stdout; fails with its stderr.
fn check(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
