//! The retransmit hooks: the raw tracepoints `tcp_retransmit_skb(sk, skb[, err])` and
//! `tcp_retransmit_synack(sk, req)`, their arguments checked against this kernel's BTF
//! prototypes (`netprobe-ebpf/src/tcp.rs` says why raw ones).

use netprobe_common::{RetransmitArgs, SynackArgs, TraceConfig, OFFSET_ABSENT};

use super::{
    catalogue::{RETRANSMIT_BTF_HOOK, RETRANSMIT_HOOK, SYNACK_HOOK},
    plan::{expect_args, raw_args, HookPlan},
};
use crate::{cli::TracepointHooks, kernel::btf::KernelBtf};

/// Where `tcp_retransmit_skb`'s arguments are: (sk, skb) on every kernel, then (Linux ≥ 6.17,
/// which also fires it for failed attempts) the attempt's `err`.
pub fn retransmit_args(args: &[String]) -> Result<RetransmitArgs, String> {
    let tracepoint = RETRANSMIT_HOOK.tracepoint();
    expect_args(tracepoint, args, &["sock", "sk_buff"])?;
    let err = match args.get(2).map(String::as_str) {
        None => OFFSET_ABSENT,
        Some("int") => 2,
        Some(_) => {
            return Err(format!(
                "{tracepoint} takes ({}) here, not (sock, sk_buff[, int])",
                args.join(", ")
            ))
        }
    };
    Ok(RetransmitArgs {
        sk: 0,
        skb: 1,
        err,
        total_retrans: OFFSET_ABSENT,
    })
}

/// Plans both retransmit hooks, filling their part of the configuration.
pub(super) fn plan_retransmit_hooks(
    btf: &KernelBtf,
    config: &mut TraceConfig,
    hooks: TracepointHooks,
    plan: &mut HookPlan,
) {
    match raw_args(btf, RETRANSMIT_HOOK.tracepoint()).and_then(|a| retransmit_args(&a)) {
        Ok(args) => {
            config.retransmit = args;
            let what = "arguments sk, skb, err checked against BTF btf_trace_tcp_retransmit_skb; skipped runs counted by the kernel, never silent); flow from the socket, segments and sequence from skb->cb via BTF offsets";
            // Some twenty helper reads per retransmit become direct loads and one cast.
            let (spec, mut detail) = if hooks == TracepointHooks::Raw {
                (
                    &RETRANSMIT_HOOK,
                    format!("raw tracepoint (--tracepoint-hooks raw; {what}"),
                )
            } else {
                (
                    &RETRANSMIT_BTF_HOOK,
                    format!("BTF-typed tracepoint (tp_btf: the socket, through bpf_skc_to_tcp_sock its tcp_sock, and the skb by direct loads; {what}"),
                )
            };
            if args.err == OFFSET_ABSENT {
                detail.push_str(
                    " (no err argument: only successful retransmits are traced by this kernel)",
                );
            }
            plan.want(spec, detail);
        }
        Err(why) => plan.unavailable(&RETRANSMIT_HOOK, why),
    }
    match synack_args(btf) {
        Ok(args) => {
            config.synack = args;
            plan.want(
                &SYNACK_HOOK,
                "raw tracepoint (arguments sk, req checked against BTF); SYN-ACK retransmits (kind synack), flow from the request socket (sock_common, BTF offsets), owner and netns from the listener".into(),
            );
        }
        Err(why) => plan.unavailable(&SYNACK_HOOK, why),
    }
}

/// `tcp_retransmit_synack(sk, req)`. The request's flow is its `sock_common`, read with the
/// full socket's offsets: it must begin the request as it begins a socket.
fn synack_args(btf: &KernelBtf) -> Result<SynackArgs, String> {
    let args = raw_args(btf, SYNACK_HOOK.tracepoint())?;
    expect_args(SYNACK_HOOK.tracepoint(), &args, &["sock", "request_sock"])?;
    let offset = |strukt: &str, path: &str| btf.offset_of(strukt, path).map_err(|e| e.to_string());
    let req_common = offset("request_sock", "__req_common")?;
    let sk_common = offset("sock", "__sk_common")?;
    if req_common != sk_common {
        return Err(format!(
            "request_sock.__req_common is at {req_common}, sock.__sk_common at {sk_common}: the request's flow cannot be read with the socket's offsets"
        ));
    }
    Ok(SynackArgs { sk: 0, req: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    /// The prototype before 6.17 (sent retransmits only) and after (every attempt, with err).
    #[test]
    fn retransmit_arguments_across_kernels() {
        let old = retransmit_args(&labels(&["sock", "sk_buff"])).unwrap();
        assert_eq!((old.sk, old.skb, old.err), (0, 1, OFFSET_ABSENT));
        let new = retransmit_args(&labels(&["sock", "sk_buff", "int"])).unwrap();
        assert_eq!((new.sk, new.skb, new.err), (0, 1, 2));
        let swapped = retransmit_args(&labels(&["sk_buff", "sock"])).unwrap_err();
        assert!(
            swapped.contains("tcp_retransmit_skb takes (sk_buff, sock) here"),
            "{swapped}"
        );
        let odd = retransmit_args(&labels(&["sock", "sk_buff", "sock"])).unwrap_err();
        assert!(odd.contains("not (sock, sk_buff[, int])"), "{odd}");
    }
}
