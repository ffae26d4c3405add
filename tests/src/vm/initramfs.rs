//! The guest's initramfs: busybox and its applets, host executables with their shared
//! libraries, extra files, the kernel's modules in dependency order (uncompressed), and /init.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    env, fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use super::{Guest, VmError};

impl Guest {
    /// The initramfs: busybox and its applets, the executables and their libraries, the files,
    /// the modules (uncompressed) and /init.
    pub(super) fn initramfs(&self) -> Result<Cpio, VmError> {
        let mut cpio = Cpio::default();
        for dir in [
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "root",
            "results",
            "np",
            "etc/np",
            "usr/local/bin",
        ] {
            cpio.add(dir, Entry::Dir);
        }
        // The kernel opens /dev/console for /init before /init can mount devtmpfs.
        cpio.add("dev/console", Entry::CharDev(5, 1));
        // `ip netns` keeps namespaces under /run/netns; tools also look under /var/run.
        cpio.add("var/run", Entry::Symlink("/run".into()));
        self.add_busybox(&mut cpio)?;
        for (name, required) in &self.executables {
            match which(name) {
                Some(path) => {
                    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
                    add_executable(&mut cpio, &path, &format!("usr/local/bin/{file_name}"))?;
                }
                None if *required => {
                    return Err(VmError::Setup(format!(
                        "no executable {name:?} on the host"
                    )))
                }
                None => {}
            }
        }
        for (host, guest) in &self.files {
            cpio.add_host_file(host, guest)?;
        }
        let order = ModuleIndex::load(&self.kernel.modules)?.load_order(&self.modules)?;
        let mut list = String::new();
        for (
            i,
            Load {
                path: rel,
                may_fail,
            },
        ) in order.iter().enumerate()
        {
            let name = format!("{i:02}-{}.ko", module_name(rel));
            let data = read_module(&self.kernel.modules.join(rel))?;
            cpio.add(&format!("lib/modules/np/{name}"), Entry::File(0o644, data));
            let kind = if *may_fail { "soft" } else { "hard" };
            list.push_str(&format!("{name} {kind}\n"));
        }
        cpio.add("etc/np/modules", Entry::File(0o644, list.into_bytes()));
        cpio.add(
            "etc/np/cmd",
            Entry::File(0o644, format!("{}\n", self.command).into_bytes()),
        );
        let init = INIT.replace("@TIMEOUT@", &self.timeout.as_secs().max(1).to_string());
        cpio.add("init", Entry::File(0o755, init.into_bytes()));
        Ok(cpio)
    }

    /// busybox-static as /bin/busybox, with a symlink per applet where busybox would install it,
    /// and the host's dash as /bin/sh: Debian's busybox sh runs its own applets before anything
    /// on PATH (FEATURE_SH_STANDALONE), so under it `ip` and `tc` would be busybox's, not
    /// iproute2's.
    fn add_busybox(&self, cpio: &mut Cpio) -> Result<(), VmError> {
        let busybox = which("busybox").ok_or_else(|| {
            VmError::Setup("no busybox on the host (package busybox-static)".into())
        })?;
        add_executable(cpio, &busybox, "bin/busybox")?;
        let list = Command::new(&busybox).arg("--list-full").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "bin/busybox" && !applet.is_empty() {
                cpio.add(applet, Entry::Symlink("/bin/busybox".into()));
            }
        }
        let dash = which("dash")
            .ok_or_else(|| VmError::Setup("no dash on the host (package dash)".into()))?;
        add_executable(cpio, &dash, "bin/sh")
    }
}

/// /init, run by the kernel as PID 1. Mounts what netprobe needs, inserts the modules, runs the
/// command with a watchdog, then writes /np (stdout, stderr, status) and /results to /dev/ttyS1
/// as a base64 tar.gz between markers (gzip's CRC tells a cut stream) and powers off.
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root RESULTS=/results
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# 5.10 still charges BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited
# A soft dependency may fail (crc32c_intel without SSE4.2): modprobe would not mind either.
while read -r m kind; do
    if [ "$kind" = soft ]; then
        insmod "/lib/modules/np/$m" 2>/dev/null || echo "netprobe-vm: soft dependency $m not inserted"
    else
        insmod "/lib/modules/np/$m" || echo "$m" >> /np/insmod_failed
    fi
done < /etc/np/modules
ip link set lo up
echo "netprobe-vm: running the command"
cd /results
sh /etc/np/cmd > /np/stdout 2> /np/stderr < /dev/null &
pid=$!
( sleep @TIMEOUT@; touch /np/timed_out; kill -9 $pid ) &
dog=$!
wait $pid
echo $? > /np/status
kill $dog 2>/dev/null
{
    echo "NETPROBE-RESULTS-BEGIN"
    tar -czf - -C / np results | base64
    echo "NETPROBE-RESULTS-END"
} > /dev/ttyS1
sync
poweroff -f
echo o > /proc/sysrq-trigger
"#;

/// A host executable: a path as given, or a name on PATH (then the sbin directories, which a
/// non-root PATH often lacks).
fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Adds an executable at `guest` and its shared libraries (and the loader) at their host paths.
fn add_executable(cpio: &mut Cpio, host: &Path, guest: &str) -> Result<(), VmError> {
    cpio.add_host_file(host, guest)?;
    for lib in ldd(host)? {
        cpio.add_host_file(&lib, &lib.to_string_lossy())?;
    }
    Ok(())
}

/// The libraries `ldd` resolves for `exe` (none for a static one), the loader included.
fn ldd(exe: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = Command::new("ldd").arg(exe).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            return Err(VmError::Setup(format!(
                "{}: {}",
                exe.display(),
                line.trim()
            )));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The name modules.dep's paths stand for: kernel/net/sched/sch_tbf.ko.xz → sch_tbf (modprobe
/// treats - and _ alike).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// A module's bytes, uncompressed: busybox's insmod passes them to init_module as they are,
/// and only 6.12's config decompresses in the kernel (trixie's modules are .ko.xz).
fn read_module(path: &Path) -> Result<Vec<u8>, VmError> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return Ok(fs::read(path)?),
    };
    let out = Command::new(tool).arg("-dc").arg(path).output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(VmError::Setup(format!(
            "{tool} -dc {}: {err}",
            path.display()
        )));
    }
    Ok(out.stdout)
}

/// What modprobe would read: modules.dep (name → path and dependency paths), the names in
/// modules.builtin, modules.softdep's `pre:` lists, and modules.alias (softdeps name aliases).
struct ModuleIndex {
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    soft_pre: HashMap<String, Vec<String>>,
    aliases: HashMap<String, Vec<String>>,
}

/// One module to insert. A soft dependency may fail: libcrc32c wants *a* crc32c, the alias
/// names crc32c_generic and crc32c_intel, and the latter needs a CPU with SSE4.2.
struct Load {
    path: String,
    may_fail: bool,
}

impl ModuleIndex {
    fn load(dir: &Path) -> Result<ModuleIndex, VmError> {
        let read = |f: &str| {
            fs::read_to_string(dir.join(f)).map_err(|e| {
                VmError::Setup(format!(
                    "{}: {e} (run cargo xtask kernels)",
                    dir.join(f).display()
                ))
            })
        };
        let mut index = ModuleIndex {
            deps: HashMap::new(),
            builtin: read("modules.builtin")?.lines().map(module_name).collect(),
            soft_pre: HashMap::new(),
            aliases: HashMap::new(),
        };
        for line in read("modules.dep")?.lines() {
            if let Some((path, rest)) = line.split_once(':') {
                let needs = rest.split_whitespace().map(str::to_owned).collect();
                index
                    .deps
                    .insert(module_name(path), (path.to_owned(), needs));
            }
        }
        // "softdep libcrc32c pre: crc32c post: …"
        for line in read("modules.softdep")?.lines() {
            let mut words = line.split_whitespace();
            if let (Some("softdep"), Some(module)) = (words.next(), words.next()) {
                let pre = words.skip_while(|w| *w != "pre:").skip(1);
                let pre = pre
                    .take_while(|w| *w != "post:")
                    .map(str::to_owned)
                    .collect();
                index.soft_pre.insert(module.replace('-', "_"), pre);
            }
        }
        for line in read("modules.alias")?.lines() {
            if let Some(("alias", rest)) = line.split_once(' ') {
                if let Some((alias, module)) = rest.split_once(' ') {
                    let modules = index.aliases.entry(alias.to_owned()).or_default();
                    modules.push(module.replace('-', "_"));
                }
            }
        }
        Ok(index)
    }

    /// The modules to insert, in order: each after everything it depends on (and its soft
    /// `pre:` dependencies), each once.
    fn load_order(&self, wanted: &[(String, bool)]) -> Result<Vec<Load>, VmError> {
        let mut roots = Vec::new();
        for (name, required) in wanted {
            let name = name.replace('-', "_");
            if self.deps.contains_key(&name) {
                roots.push(name);
            } else if *required && !self.builtin.contains(&name) {
                return Err(VmError::Setup(format!(
                    "kernel has no module {name} (not in modules.dep nor modules.builtin)"
                )));
            }
        }
        let (mut hard, mut all) = (Vec::new(), Vec::new());
        let (mut seen_hard, mut seen_all) = (HashSet::new(), HashSet::new());
        for root in &roots {
            self.visit(root, false, &mut seen_hard, &mut hard);
            self.visit(root, true, &mut seen_all, &mut all);
        }
        Ok(all
            .into_iter()
            .map(|name| Load {
                path: self.deps[&name].0.clone(),
                may_fail: !seen_hard.contains(&name),
            })
            .collect())
    }

    /// Depth first, dependencies before the module (post-order), softdeps too if `soft`.
    fn visit(&self, name: &str, soft: bool, seen: &mut HashSet<String>, out: &mut Vec<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some((_, needs)) = self.deps.get(name) else {
            return;
        };
        if soft {
            for pre in self.soft_pre.get(name).into_iter().flatten() {
                let by_name = self.deps.contains_key(pre).then(|| vec![pre.clone()]);
                for m in by_name
                    .or_else(|| self.aliases.get(pre).cloned())
                    .unwrap_or_default()
                {
                    self.visit(&m, soft, seen, out);
                }
            }
        }
        for dep in needs {
            self.visit(&module_name(dep), soft, seen, out);
        }
        out.push(name.to_owned());
    }
}

/// One initramfs entry.
enum Entry {
    Dir,
    File(u32, Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

/// A newc ("070701") cpio archive, the initramfs format. Paths are kept sorted, so each
/// directory comes before what is in it: the kernel's unpacker does not create parents.
#[derive(Default)]
pub(super) struct Cpio {
    entries: BTreeMap<String, Entry>,
}

impl Cpio {
    /// Adds `path` (leading / optional) and any missing parent directories.
    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path.to_owned(), entry);
    }

    fn add_host_file(&mut self, host: &Path, guest: &str) -> Result<(), VmError> {
        let data =
            fs::read(host).map_err(|e| VmError::Setup(format!("{}: {e}", host.display())))?;
        let mode = fs::metadata(host).map(|m| m.permissions().mode())?;
        self.add(guest, Entry::File(mode & 0o7777, data));
        Ok(())
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.into_iter().enumerate() {
            let (mode, data, rdev) = match entry {
                Entry::Dir => (0o040755, Vec::new(), (0, 0)),
                Entry::File(mode, data) => (0o100000 | mode, data, (0, 0)),
                Entry::Symlink(target) => (0o120777, target.into_bytes(), (0, 0)),
                Entry::CharDev(major, minor) => (0o020600, Vec::new(), (major, minor)),
            };
            write_cpio_entry(&mut out, ino as u32 + 1, mode, &path, &data, rdev);
        }
        write_cpio_entry(&mut out, 0, 0, "TRAILER!!!", &[], (0, 0));
        out
    }
}

fn write_cpio_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    // magic, then ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
    // namesize check, 8 hex digits each.
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_and_order() {
        assert_eq!(module_name("kernel/net/sched/sch_tbf.ko.xz"), "sch_tbf");
        assert_eq!(module_name("kernel/x/nf-foo.ko"), "nf_foo");
        let deps = [
            ("a", vec!["b.ko", "c.ko"]),
            ("b", vec!["c.ko"]),
            ("c", vec![]),
            ("crc_generic", vec![]),
        ];
        let index = ModuleIndex {
            deps: deps
                .into_iter()
                .map(|(n, d)| {
                    (
                        n.into(),
                        (format!("{n}.ko"), d.into_iter().map(String::from).collect()),
                    )
                })
                .collect(),
            builtin: ["d".to_string()].into(),
            soft_pre: [("c".to_string(), vec!["crc".to_string()])].into(),
            aliases: [("crc".to_string(), vec!["crc_generic".to_string()])].into(),
        };
        let want = |n: &str, r| (n.to_string(), r);
        let order = index.load_order(&[want("a", true), want("d", true), want("e", false)]);
        let order: Vec<(String, bool)> = order
            .unwrap()
            .into_iter()
            .map(|l| (l.path, l.may_fail))
            .collect();
        let expected = [
            ("crc_generic.ko", true),
            ("c.ko", false),
            ("b.ko", false),
            ("a.ko", false),
        ];
        assert_eq!(order, expected.map(|(p, f)| (p.to_string(), f)));
        assert!(index.load_order(&[want("e", true)]).is_err());
    }

    #[test]
    fn cpio_lists_parents_first_and_pads() {
        let mut cpio = Cpio::default();
        cpio.add("/usr/local/bin/x", Entry::File(0o755, vec![1, 2, 3]));
        let names: Vec<&String> = cpio.entries.keys().collect();
        assert_eq!(
            names,
            ["usr", "usr/local", "usr/local/bin", "usr/local/bin/x"]
        );
        let bytes = cpio.into_bytes();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
    }
}
