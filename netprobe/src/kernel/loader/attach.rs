//! Loading each planned program into the kernel and attaching it, and detaching them all.

use aya::{
    programs::{
        raw_trace_point::RawTracePointLinkId, tp_btf::BtfTracePointLinkId, BtfTracePoint, Program,
        RawTracePoint,
    },
    Ebpf,
};

use super::{
    catalogue::{
        does_the_work_of, fallback_of, AttachKind, FunctionHook, HookSpec, HookStatus, DROP_HOOK,
        FUNCTION_HOOKS, RETRANSMIT_HOOK, STATE_PROCESS_HOOK,
    },
    Probe,
};
use crate::{
    cli::FunctionHooks,
    kernel::btf::KernelBtf,
    kernel::function_hooks::{self, FunctionLinks},
};

/// An attached program's link.
pub(super) enum AttachedLink {
    Raw(RawTracePointLinkId),
    Btf(BtfTracePointLinkId),
}

/// Loads and attaches every planned hook, adding each one's status to `hooks`. Returns the
/// links of those attached, by program.
///
/// Verification is most of a load and the kernel verifies programs independently, so they are
/// loaded two at a time (this project's machines have two cores or more), each exactly once;
/// then all are attached, in the planned order, within a fraction of a millisecond of each
/// other.
pub(super) fn attach_planned(
    ebpf: &mut Ebpf,
    btf: &KernelBtf,
    wanted: Vec<(&'static HookSpec, String)>,
    hooks: &mut Vec<HookStatus>,
) -> Vec<(&'static str, AttachedLink)> {
    let loaded = load_all(ebpf, btf, &wanted);
    let mut links = Vec::new();
    for ((spec, detail), load) in wanted.into_iter().zip(loaded) {
        let started = std::time::Instant::now();
        let attached = load.and_then(|load_ms| {
            attach(ebpf, spec).map(|link| (link, load_ms + started.elapsed().as_secs_f64() * 1e3))
        });
        // A better hook refused (tp_btf where BTF-typed programs are not allowed): its
        // fallback is loaded now, the only program ever verified after another.
        let (spec, detail, attached) = match (attached, fallback_of(spec)) {
            (Err(why), Some(fallback)) => {
                unload(ebpf, spec);
                let started = std::time::Instant::now();
                let attached = load_program(ebpf, btf, fallback)
                    .and_then(|()| attach(ebpf, fallback))
                    .map(|link| (link, started.elapsed().as_secs_f64() * 1e3))
                    .map_err(|e| {
                        let refused = short_refusal(&why);
                        format!("{e} ({} refused first: {refused})", spec.attach.name())
                    });
                (fallback, refused_detail(&detail, spec, &why), attached)
            }
            (attached, _) => (spec, detail, attached),
        };
        match attached {
            Ok((link, load_ms)) => {
                links.push((spec.program, link));
                hooks.push(active_status(ebpf, spec, detail, load_ms));
            }
            Err(e) => hooks.push(spec.inactive(e)),
        }
    }
    links
}

/// An attached hook's status, with what the kernel verified.
fn active_status(ebpf: &Ebpf, spec: &'static HookSpec, detail: String, load_ms: f64) -> HookStatus {
    let verified_insns = ebpf
        .program(spec.program)
        .and_then(|p| p.info().ok())
        .and_then(|info| info.verified_instruction_count());
    HookStatus {
        hook: spec.id.to_string(),
        attach: spec.attach.name(),
        program: spec.program,
        active: true,
        detail,
        verified_insns,
        load_ms: Some((load_ms * 10.0).round() / 10.0),
    }
}

/// Unloads `spec`'s program if it was loaded (it was refused at attach): nothing of a hook
/// that is not attached stays in the kernel.
fn unload(ebpf: &mut Ebpf, spec: &HookSpec) {
    let Some(program) = ebpf.program_mut(spec.program) else {
        return;
    };
    match spec.attach {
        AttachKind::RawTracepoint => {
            if let Ok(program) = <&mut RawTracePoint>::try_from(program) {
                let _ = program.unload();
            }
        }
        AttachKind::BtfTracepoint => {
            if let Ok(program) = <&mut BtfTracePoint>::try_from(program) {
                let _ = program.unload();
            }
        }
    }
}

/// The fallback's detail: `detail` (the refused hook's) with its first part, how the refused
/// program reads, replaced by the raw tracepoint and why the better hook was refused.
fn refused_detail(detail: &str, refused: &HookSpec, why: &str) -> String {
    let rest = detail.split_once("; ").map_or("", |(_, rest)| rest);
    format!(
        "raw tracepoint ({} refused here: {}); {rest}",
        refused.attach.name(),
        short_refusal(why)
    )
}

/// A refusal in one line: its first line, and the verifier's verdict (the log's last line
/// before its statistics) when the log follows.
fn short_refusal(why: &str) -> String {
    let mut lines = why.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("refused");
    let statistics = ["verification time", "stack depth", "processed ", ")"];
    let verdict = lines.rfind(|l| !statistics.iter().any(|s| l.starts_with(s)));
    match verdict {
        Some(verdict) => format!("{first} … {verdict}"),
        None => first.to_string(),
    }
}

/// Loads (verifies) the programs of `wanted` on two threads, each taking the next program
/// not yet taken. Per program, in `wanted`'s order: its load time in ms, or why it failed.
fn load_all(
    ebpf: &mut Ebpf,
    btf: &KernelBtf,
    wanted: &[(&'static HookSpec, String)],
) -> Vec<Result<f64, String>> {
    let mut programs: Vec<Option<(&mut Program, &'static HookSpec)>> =
        (0..wanted.len()).map(|_| None).collect();
    for (name, program) in ebpf.programs_mut() {
        if let Some(i) = wanted.iter().position(|(spec, _)| spec.program == name) {
            programs[i] = Some((program, wanted[i].0));
        }
    }
    let queue = std::sync::Mutex::new(programs.into_iter().enumerate());
    let results = std::sync::Mutex::new(vec![None; wanted.len()]);
    let worker = || loop {
        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
        let Some((i, program)) = next else { break };
        let started = std::time::Instant::now();
        let result = match program {
            Some((program, spec)) => {
                load(program, btf, spec).map(|()| started.elapsed().as_secs_f64() * 1e3)
            }
            None => Err(format!(
                "program {} missing from the object",
                wanted[i].0.program
            )),
        };
        if let Ok(mut results) = results.lock() {
            results[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(worker);
        worker();
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not loaded".into())))
        .collect()
}

fn load(program: &mut Program, btf: &KernelBtf, spec: &HookSpec) -> Result<(), String> {
    let rejected = |e: aya::programs::ProgramError| format!("{}: {e:#}", spec.program);
    match spec.attach {
        AttachKind::RawTracepoint => {
            let program: &mut RawTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program.load().map_err(rejected)
        }
        AttachKind::BtfTracepoint => {
            let program: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program
                .load(spec.tracepoint(), btf.aya()?)
                .map_err(rejected)
        }
    }
}

/// Loads one program of the object by its spec.
fn load_program(ebpf: &mut Ebpf, btf: &KernelBtf, spec: &HookSpec) -> Result<(), String> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| format!("program {} missing from the object", spec.program))?;
    load(program, btf, spec)
}

/// Attaches a loaded program.
fn attach(ebpf: &mut Ebpf, spec: &HookSpec) -> Result<AttachedLink, String> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| format!("program {} missing from the object", spec.program))?;
    let failed = |e: aya::programs::ProgramError| format!("attach failed: {e}");
    match spec.attach {
        AttachKind::RawTracepoint => {
            let program: &mut RawTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program
                .attach(spec.tracepoint())
                .map(AttachedLink::Raw)
                .map_err(failed)
        }
        AttachKind::BtfTracepoint => {
            let program: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program.attach().map(AttachedLink::Btf).map_err(failed)
        }
    }
}

/// Attaches the function hooks, each only where it refines a program attached here (`links`),
/// and `tcp_rcv_state_process` only where drops need it to name their socket (`drop_stash`:
/// drop reasons but no `rx_sk`). Their statuses go to `hooks` (with why for those not
/// wanted), and the refined hook's detail then says what is exact through them.
pub(super) fn attach_function_hooks(
    ebpf: &mut Ebpf,
    links: &[(&'static str, AttachedLink)],
    btf: &KernelBtf,
    method: FunctionHooks,
    drop_stash: bool,
    hooks: &mut Vec<HookStatus>,
) -> Vec<(&'static FunctionHook, FunctionLinks)> {
    let attached_program = |name: &str| {
        links
            .iter()
            .any(|(program, _)| does_the_work_of(program, name))
    };
    let mut wanted = Vec::new();
    for hook in FUNCTION_HOOKS {
        if !attached_program(hook.refines) {
            continue;
        }
        if hook.id == STATE_PROCESS_HOOK.id && !drop_stash {
            hooks.push(HookStatus {
                hook: hook.id.to_string(),
                attach: "none",
                program: hook.fentry,
                active: false,
                detail: "not needed: this kernel's kfree_skb names the receiving socket (rx_sk), or records no drop reasons (TCP's drops there fire no tracepoint)".into(),
                verified_insns: None,
                load_ms: None,
            });
            continue;
        }
        wanted.push(hook);
    }
    let (statuses, attached) = function_hooks::attach_all(ebpf, btf, method, &wanted);
    for refined in [RETRANSMIT_HOOK.program, DROP_HOOK.program] {
        let methods: Vec<String> = statuses
            .iter()
            .filter(|s| {
                s.active
                    && wanted
                        .iter()
                        .any(|h| h.id == s.hook && h.refines == refined)
            })
            .map(|s| format!("{} ({})", s.hook, s.attach))
            .collect();
        if methods.is_empty() {
            continue;
        }
        if let Some(status) = hooks
            .iter_mut()
            .find(|h| does_the_work_of(h.program, refined))
        {
            // The inferred method's caveats no longer apply to the hooked kinds.
            let inferred = status
                .detail
                .replace("; no kprobe/fentry here", "")
                .replace(", so tlp cannot be told from other", "");
            status.detail = format!("{inferred}; exact where hooked: {}", methods.join(", "));
        }
    }
    hooks.extend(statuses);
    attached
}

impl Probe {
    /// Detaches every program: no new events after this returns.
    pub fn detach(&mut self) {
        function_hooks::detach_all(&mut self.ebpf, std::mem::take(&mut self.function_links));
        for (name, link) in self.links.drain(..) {
            let Some(program) = self.ebpf.program_mut(name) else {
                continue;
            };
            match link {
                AttachedLink::Raw(link) => {
                    if let Ok(tp) = <&mut RawTracePoint>::try_from(program) {
                        let _ = tp.detach(link);
                    }
                }
                AttachedLink::Btf(link) => {
                    if let Ok(tp) = <&mut BtfTracePoint>::try_from(program) {
                        let _ = tp.detach(link);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::loader::catalogue::DROP_BTF_HOOK;

    #[test]
    fn a_refused_hook_says_why_in_one_line_and_keeps_the_rest_of_its_detail() {
        let why = "netprobe_drop_btf: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: 0: R1=ctx() R10=fp0\n584: (4f) r1 |= r9\nR1 pointer |= pointer prohibited\nverification time 29653 usec\nstack depth 112+0+0\nprocessed 237 insns (limit 1000000)\n)";
        let detail =
            "BTF-typed tracepoint (tp_btf): direct loads; arguments located; counted per site";
        assert_eq!(
            refused_detail(detail, &DROP_BTF_HOOK, why),
            "raw tracepoint (tp_btf refused here: netprobe_drop_btf: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: 0: R1=ctx() R10=fp0 … R1 pointer |= pointer prohibited); arguments located; counted per site"
        );
    }

    #[test]
    fn a_one_line_refusal_is_kept_as_it_is() {
        let why = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)";
        assert_eq!(short_refusal(why), why);
    }
}
