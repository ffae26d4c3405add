//! Loads the kernel programs with the running kernel's layouts and attaches them, recording for
//! every hook whether it is active and why.
//!
//! `catalogue` names every hook and program; `plan` works out which hooks this kernel can
//! take and the configuration their programs read; `attach` loads and attaches them; `maps`
//! and `prog_info` read what the kernel keeps about them.

mod attach;
pub mod catalogue;
mod maps;
mod outcomes;
mod plan;
mod prog_info;
mod retransmits;

pub use catalogue::{HookStatus, DROP_PROGRAM};
pub use maps::KernelTotals;
pub use outcomes::OUTCOMES_CLASSIFIED;

use aya::{Ebpf, EbpfLoader};
use netprobe_common::Filter;

use crate::{
    cli::{FunctionHooks, TracepointHooks},
    kernel::btf::{BtfError, KernelBtf},
    kernel::function_hooks::FunctionLinks,
};
use attach::AttachedLink;
use catalogue::FunctionHook;

/// At most one reader wakeup per this interval while events keep coming (plus one whenever a
/// quarter of the ring is pending). See `StreamConfig`.
pub const WAKEUP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// The kernel object, built by build.rs from `netprobe-ebpf`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("--ring-size {0}: must be a power of two of at least 4096 bytes")]
    RingSize(u32),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("no hook could be attached: {0}")]
    NoHooks(String),
    #[error("reading kernel map {map}: {message}")]
    Map { map: &'static str, message: String },
}

pub struct LoadOptions<'a> {
    /// The kernel's BTF, parsed once by the caller.
    pub btf: &'a KernelBtf,
    pub filter: Filter,
    pub ring_size: u32,
    /// Leave the per-CPU hooks (softirq entry/exit, NAPI polls) detached: they run on every
    /// softirq and poll, the largest part of netprobe's cost on a busy receive path.
    pub without_cpu_hooks: bool,
    /// Leave the receive-path hook (`tcp_probe`, every segment received) detached.
    pub without_receive_hook: bool,
    /// How the timer functions are hooked (`--function-hooks`).
    pub function_hooks: FunctionHooks,
    /// How the drop hook attaches (`--tracepoint-hooks`).
    pub tracepoint_hooks: TracepointHooks,
    /// Count only (`netprobe monitor`): no event is streamed; drops are counted per site in
    /// `DROP_SITES` (see `AggregateConfig`). The ring is then its smallest.
    pub counting_only: bool,
    /// Stream mode: at most this many drops streamed per drop site per second on each CPU
    /// (`--max-rate`; 0: no limit). The rest are counted exactly, never streamed.
    pub max_rate: u32,
}

/// Drops streamed per site per second on each CPU while the reader is behind (half the ring
/// unread), with or without `--max-rate`: enough to see every site's flows, few enough that
/// a storm of millions per second leaves the ring to the other events.
pub const STORM_RATE: u32 = 100;

/// A ring buffer's smallest size: one page.
fn page_size() -> u32 {
    // SAFETY: sysconf reads a constant of the running system; no memory is touched.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096).max(4096)
}

/// `DROP_SITES` entries: the kernel's drop sites (a few hundred reasons and
/// freeing functions) times the devices that drop; a site beyond it is still counted by
/// reason (and the overflow said).
pub const DROP_SITE_ENTRIES: u32 = 4096;

/// Loaded and attached programs, and the maps they fill.
pub struct Probe {
    ebpf: Ebpf,
    links: Vec<(&'static str, AttachedLink)>,
    function_links: Vec<(&'static FunctionHook, FunctionLinks)>,
    pub hooks: Vec<HookStatus>,
    /// The drop hook receives the socket a segment was dropped by (`rx_sk`, 6.3+), in every
    /// TCP state; without it only `tcp_rcv_established`'s drops are tied to their socket.
    pub drops_name_their_socket: bool,
}

/// aya's loader and aya's form of the kernel's BTF, made on a thread of their own while the
/// caller reads our BTF and plans. `EbpfLoader::new()` parses /sys/kernel/btf/vmlinux (for
/// CO-RE relocations; aya 0.14 has no constructor that does not, and `.btf()` only replaces
/// the result), and fentry/fexit programs load against an `aya::Btf`: both are the same
/// kind of parse, taken off start-up's critical path on the second core. One after the
/// other, not two threads: the main thread is busy too.
pub struct Preload {
    loader: std::sync::mpsc::Receiver<EbpfLoader<'static>>,
    /// Ends with aya's form of the BTF, when fentry will be tried.
    aya_btf: std::thread::JoinHandle<Option<Result<aya::Btf, String>>>,
}

impl Preload {
    /// `btf_path`: where the caller's BTF is read from (aya's form is parsed from the same
    /// file); `function_hooks`: whether fentry will be tried at all.
    pub fn start(btf_path: &std::path::Path, function_hooks: FunctionHooks) -> Self {
        let (send, loader) = std::sync::mpsc::channel();
        let path = btf_path.to_path_buf();
        let fentry = matches!(function_hooks, FunctionHooks::Auto | FunctionHooks::Fentry);
        let aya_btf = std::thread::spawn(move || {
            let _ = send.send(EbpfLoader::new());
            fentry.then(|| {
                let raw = std::fs::read(&path).map_err(|e| format!("kernel BTF: {e}"))?;
                aya::Btf::parse(&raw, aya::Endianness::default())
                    .map_err(|e| format!("kernel BTF: {e}"))
            })
        });
        Self { loader, aya_btf }
    }
}

pub fn load(options: &LoadOptions) -> Result<Probe, LoadError> {
    load_preloaded(
        options,
        Preload::start(options.btf.path(), options.function_hooks),
    )
}

/// [`load`] with aya's loader already being made (see [`Preload`]).
pub fn load_preloaded(options: &LoadOptions, preload: Preload) -> Result<Probe, LoadError> {
    if !options.ring_size.is_power_of_two() || options.ring_size < 4096 {
        return Err(LoadError::RingSize(options.ring_size));
    }
    let plan::Planned {
        config,
        wanted,
        mut hooks,
    } = plan::plan(options)?;

    // Count mode streams nothing (the smallest ring) and counts sites in slots; stream mode
    // counts them in DROP_SITES, beside their sampling state. Each leaves the other's
    // tables at one entry.
    let (ring_size, drop_sites, site_slots) = if options.counting_only {
        (page_size(), 1, DROP_SITE_ENTRIES)
    } else {
        (options.ring_size, DROP_SITE_ENTRIES, 1)
    };
    let mut loader: EbpfLoader<'_> = preload.loader.recv().unwrap_or_else(|_| EbpfLoader::new());
    let mut ebpf = loader
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", ring_size)
        .map_max_entries("DROP_SITES", drop_sites)
        .map_max_entries("SITE_SLOTS", site_slots)
        .map_max_entries("SITE_COUNTS", site_slots)
        .load(BPF_OBJECT)
        .map_err(LoadError::Load)?;
    options.btf.provide_aya(preload.aya_btf);

    let links = attach::attach_planned(&mut ebpf, options.btf, wanted, &mut hooks);
    let function_links = attach::attach_function_hooks(
        &mut ebpf,
        &links,
        options.btf,
        options.function_hooks,
        config.drop.rx_sk_stash != 0,
        &mut hooks,
    );
    if links.is_empty() {
        let why: Vec<String> = hooks
            .iter()
            .map(|h| format!("{}: {}", h.hook, h.detail))
            .collect();
        return Err(LoadError::NoHooks(why.join("; ")));
    }
    // Through rx_sk, or the socket tcp_rcv_state_process was called with.
    let drops_name_their_socket = config.drop.rx_sk != netprobe_common::OFFSET_ABSENT
        || function_links
            .iter()
            .any(|(hook, _)| hook.id == catalogue::STATE_PROCESS_HOOK.id);
    Ok(Probe {
        ebpf,
        links,
        function_links,
        hooks,
        drops_name_their_socket,
    })
}
