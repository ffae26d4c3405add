//! The one line per kernel that the matrix prints when a kernel passes: what was measured
//! beside the kernel's own counters.

use serde_json::Value;

use super::function_hook_method;

/// The one line a kernel that passed shows in the test output.
pub(super) fn summary_line(results: &Value, verifier: &str) -> String {
    let l = &results["lossy"];
    let t = &results["tail"]["client"];
    format!(
        "{}: attached in {:.1} s; TLP/RTO {}; UDP socket drops {}=RcvbufErrors {}; monitor udp_rcvbuf {}, eBPF count mode {}, =RcvbufErrors {}; storm --max-rate 5: {} counted=NoPorts {}, {} streamed; trace --count NO_SOCKET {} (drop hook {}), raw tracepoint {}, =Udp NoPorts {}; kernel ns/drop under qemu: count mode {} ({}), raw {}, stream {}, raw {}; ack loss: {} dups, {} TCP drops in its netns; after FIN {} (+{} withheld of {} ftrace saw)/{} DelayedACKLost; backlog {}={}; RetransSegs {}={} (D-SACKed {}), spurious retransmits: D-SACKed {} (TCPDSACKRecv {}), OFO {}, dup {}, nft drops {}={}, SYN {}, SYN-ACK {}, TLP {}/{} RTO {}/{}; withheld by the kernel (ftrace saw, no program ran) {}; {verifier}",
        results["kernel"].as_str().unwrap_or("?"),
        results["attach_s"].as_f64().unwrap_or(0.0),
        function_hook_method(&results["hooks"]),
        results["udp_socket"]["row"]["drops_total"],
        results["udp_socket"]["rcvbuf_errors"],
        results["monitor"]["columns"]["udp_rcvbuf"],
        results["monitor"]["ebpf_socket_drops"],
        results["monitor"]["rcvbuf_errors"],
        results["storm"]["events"]["counted"],
        results["storm"]["no_ports"],
        results["storm"]["events"]["streamed"],
        results["count"]["auto"]["counted"],
        results["count"]["auto"]["drop_hook"],
        results["count"]["raw"]["counted"],
        results["count"]["no_ports"],
        results["cost"]["count"]["ns_per_drop"],
        results["cost"]["count"]["program"],
        results["cost"]["count_raw"]["ns_per_drop"],
        results["cost"]["stream"]["ns_per_drop"],
        results["cost"]["stream_raw"]["ns_per_drop"],
        results["ack_loss"]["duplicates"],
        results["ack_loss"]["tcp_drops_in_server_netns"],
        results["after_fin"]["old_drops"],
        results["after_fin"]["withheld"],
        results["after_fin"]["witnessed"],
        results["after_fin"]["DelayedACKLost"],
        results["backlog"]["drop_events"],
        results["backlog"]["softnet_dropped"],
        l["sender"]["segs"],
        l["sender"]["counters"]["RetransSegs"],
        l["sender"]["dsacked"],
        results["spurious"]["dsacked"],
        results["spurious"]["TCPDSACKRecv"],
        l["receiver"]["out_of_order"],
        l["receiver"]["duplicate"],
        l["drops"]["netfilter_ingress"],
        l["drops"]["nft_counter"],
        results["syn"]["client"]["kinds"]["syn"],
        results["synack"]["server"]["kinds"]["synack"],
        t["kinds"]["tlp"],
        t["counters"]["TCPLossProbes"],
        t["rto_timer"],
        t["counters"]["TCPTimeouts"],
        results["withheld"],
    )
}
