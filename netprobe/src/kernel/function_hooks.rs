//! The function hooks, each an entry/exit pair named in the loader's catalogue: those that make
//! retransmit kinds exact, `tcp_send_loss_probe` (tail-loss probes) and `tcp_retransmit_timer`
//! (the RTO timer's own retransmit; `netprobe-ebpf/src/timers.rs`), and, on kernels whose drops
//! do not name their socket, `tcp_rcv_state_process` (`netprobe-ebpf/src/state_process.rs`).
//! The best method the kernel allows: fentry/fexit, else kprobe/kretprobe; on a kernel with
//! neither (no kprobes, fentry refused) each says what is so without it.

use aya::{
    maps::Array,
    programs::{
        fentry::FEntryLinkId, fexit::FExitLinkId, kprobe::KProbeLinkId, FEntry, FExit, KProbe,
    },
    Btf, Ebpf,
};

use std::path::Path;

use crate::{
    cli::FunctionHooks,
    kernel::{
        btf::KernelBtf,
        loader::{catalogue::FunctionHook, HookStatus},
    },
};

/// An attached entry/exit pair.
pub enum FunctionLinks {
    Trampoline(FEntryLinkId, FExitLinkId),
    Probe(KProbeLinkId, KProbeLinkId),
}

/// Attaches each of `hooks` by the best method that works (or the one `method` names), marks
/// it in `HOOKED_FUNCTIONS` for the kernel side, and reports it.
pub fn attach_all(
    ebpf: &mut Ebpf,
    btf: &KernelBtf,
    method: FunctionHooks,
    hooks: &[&'static FunctionHook],
) -> (Vec<HookStatus>, Vec<(&'static FunctionHook, FunctionLinks)>) {
    let mut statuses = Vec::new();
    let mut links = Vec::new();
    for &hook in hooks {
        let started = std::time::Instant::now();
        let attached = match method {
            FunctionHooks::Off => Err(format!(
                "turned off (--function-hooks off); {}",
                hook.without
            )),
            FunctionHooks::Kprobe => attach_probe(ebpf, hook)
                .map(|pair| {
                    (
                        "kprobe/kretprobe",
                        pair,
                        " (--function-hooks kprobe)".to_string(),
                    )
                })
                .map_err(|e| format!("kprobe: {e}")),
            FunctionHooks::Fentry | FunctionHooks::Auto => {
                // fentry needs the kernel's BTF in aya's own form, parsed when first tried.
                let trampoline = btf
                    .aya()
                    .and_then(|aya_btf| attach_trampoline(ebpf, hook, aya_btf));
                match (trampoline, method) {
                    (Ok(pair), _) => Ok(("fentry/fexit", pair, String::new())),
                    (Err(no_fentry), FunctionHooks::Fentry) => Err(format!("fentry: {no_fentry}")),
                    (Err(no_fentry), _) => match attach_probe(ebpf, hook) {
                        Ok(pair) => {
                            Ok(("kprobe/kretprobe", pair, format!(" (fentry: {no_fentry})")))
                        }
                        Err(no_kprobe) => Err(format!(
                            "fentry: {no_fentry}; kprobe: {no_kprobe}; {}",
                            hook.without
                        )),
                    },
                }
            }
        };
        let load_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
        statuses.push(match attached {
            Ok((attach, pair, note)) => {
                let status = active_status(ebpf, hook, attach, &pair, note, load_ms);
                links.push((hook, pair));
                status
            }
            Err(why) => HookStatus {
                hook: hook.id.to_string(),
                // What was tried.
                attach: match method {
                    FunctionHooks::Auto => "fentry/fexit or kprobe/kretprobe",
                    FunctionHooks::Fentry => "fentry/fexit",
                    FunctionHooks::Kprobe => "kprobe/kretprobe",
                    FunctionHooks::Off => "off",
                },
                program: if method == FunctionHooks::Kprobe {
                    hook.kprobe
                } else {
                    hook.fentry
                },
                active: false,
                detail: why,
                verified_insns: None,
                load_ms: None,
            },
        });
    }
    (statuses, links)
}

fn active_status(
    ebpf: &mut Ebpf,
    hook: &FunctionHook,
    attach: &'static str,
    pair: &FunctionLinks,
    note: String,
    load_ms: f64,
) -> HookStatus {
    let marked = mark_hooked(ebpf, hook.slot);
    let (program, verified_insns) = programs_of(ebpf, hook, pair);
    HookStatus {
        hook: hook.id.to_string(),
        attach,
        program,
        active: marked.is_ok(),
        detail: match marked {
            Ok(()) => format!("{}{note}", hook.gives),
            Err(e) => format!("attached, but the kernel side cannot be told: {e}"),
        },
        verified_insns,
        load_ms: Some(load_ms),
    }
}

/// The entry program's name and the pair's verified instructions (summed).
fn programs_of(
    ebpf: &Ebpf,
    hook: &FunctionHook,
    pair: &FunctionLinks,
) -> (&'static str, Option<u32>) {
    let (entry, exit) = match pair {
        FunctionLinks::Trampoline(..) => (hook.fentry, hook.fexit),
        FunctionLinks::Probe(..) => (hook.kprobe, hook.kretprobe),
    };
    let insns = |name| {
        ebpf.program(name)
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count())
    };
    let verified = match (insns(entry), insns(exit)) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    (entry, verified)
}

fn mark_hooked(ebpf: &mut Ebpf, slot: u32) -> Result<(), String> {
    let map = ebpf
        .map_mut("HOOKED_FUNCTIONS")
        .ok_or("map HOOKED_FUNCTIONS missing from the object")?;
    let mut hooks: Array<_, u32> = Array::try_from(map).map_err(|e| e.to_string())?;
    hooks.set(slot, 1, 0).map_err(|e| e.to_string())
}

/// Exit first, then entry: an exit without its entry only clears a mark, while an entry
/// without its exit (attached, or failed to attach) would leave marks nothing clears.
fn attach_trampoline(
    ebpf: &mut Ebpf,
    hook: &FunctionHook,
    btf: &Btf,
) -> Result<FunctionLinks, String> {
    let exit: &mut FExit = program(ebpf, hook.fexit)?;
    exit.load(hook.function(), btf).map_err(describe)?;
    let exit_link = exit.attach().map_err(describe)?;
    let entry: &mut FEntry = program(ebpf, hook.fentry)?;
    let entry_link = entry
        .load(hook.function(), btf)
        .and_then(|()| entry.attach())
        .map_err(describe);
    match entry_link {
        Ok(entry_link) => Ok(FunctionLinks::Trampoline(entry_link, exit_link)),
        Err(e) => {
            if let Ok(exit) = program::<FExit>(ebpf, hook.fexit) {
                let _ = exit.detach(exit_link);
            }
            Err(e)
        }
    }
}

/// A program error in one line: aya appends an empty verifier log to load failures.
fn describe(e: aya::programs::ProgramError) -> String {
    let text = e.to_string();
    text.trim_end()
        .strip_suffix("Verifier output:")
        .map(|t| t.trim_end_matches(['.', ' ']).to_string())
        .unwrap_or(text)
}

/// As [`attach_trampoline`]: the return probe first.
fn attach_probe(ebpf: &mut Ebpf, hook: &FunctionHook) -> Result<FunctionLinks, String> {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err(
            "this kernel has no kprobes (no kprobe PMU in /sys/bus/event_source/devices)".into(),
        );
    }
    let exit: &mut KProbe = program(ebpf, hook.kretprobe)?;
    exit.load().map_err(describe)?;
    let exit_link = exit.attach(hook.function(), 0).map_err(describe)?;
    let entry: &mut KProbe = program(ebpf, hook.kprobe)?;
    let entry_link = entry
        .load()
        .and_then(|()| entry.attach(hook.function(), 0))
        .map_err(describe);
    match entry_link {
        Ok(entry_link) => Ok(FunctionLinks::Probe(entry_link, exit_link)),
        Err(e) => {
            if let Ok(exit) = program::<KProbe>(ebpf, hook.kretprobe) {
                let _ = exit.detach(exit_link);
            }
            Err(e)
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    program.try_into().map_err(describe)
}

/// Detaches every pair (no more marks after this returns).
pub fn detach_all(ebpf: &mut Ebpf, links: Vec<(&'static FunctionHook, FunctionLinks)>) {
    for (hook, pair) in links {
        match pair {
            FunctionLinks::Trampoline(entry, exit) => {
                if let Ok(p) = program::<FEntry>(ebpf, hook.fentry) {
                    let _ = p.detach(entry);
                }
                if let Ok(p) = program::<FExit>(ebpf, hook.fexit) {
                    let _ = p.detach(exit);
                }
            }
            FunctionLinks::Probe(entry, exit) => {
                if let Ok(p) = program::<KProbe>(ebpf, hook.kprobe) {
                    let _ = p.detach(entry);
                }
                if let Ok(p) = program::<KProbe>(ebpf, hook.kretprobe) {
                    let _ = p.detach(exit);
                }
            }
        }
    }
}
