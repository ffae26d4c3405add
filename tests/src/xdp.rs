//! A two-instruction XDP program that drops every frame, attached in driver mode through a
//! BPF link: on a veth, each frame it drops is counted in the receive queue's `xdp_drops`
//! driver statistic (`ethtool -S`), the NIC-level drop counter a veth has. The link detaches
//! when the guard is dropped (also on panic), and the namespace's deletion would end it too.

use std::{
    io,
    mem::size_of,
    thread,
    time::{Duration, Instant},
};

use crate::{sh, Netns};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s BPF_XDP.
const BPF_XDP: u32 = 37;
/// XDP in the driver (native), as opposed to generic XDP, which a veth does not count.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The head of `union bpf_attr` for BPF_PROG_LOAD (the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The head of `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<i32> {
    // SAFETY: `attr` is a live, initialised bpf_attr head of the size given; the kernel reads
    // (and for these commands writes) no more than that.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd as i32)
    }
}

/// `r0 = XDP_DROP (1); exit`.
const DROP_ALL: [u64; 2] = [
    0x0000_0001_0000_00b7u64.to_le(),
    0x0000_0000_0000_0095u64.to_le(),
];

/// Every frame `device` in `ns` receives is dropped by XDP while this lives.
pub struct XdpDrop {
    prog: i32,
    link: i32,
}

impl XdpDrop {
    pub fn attach(ns: &Netns, device: &str) -> Self {
        let ifindex: u32 = ns
            .exec("cat", &[&format!("/sys/class/net/{device}/ifindex")])
            .trim()
            .parse()
            .expect("ifindex");
        let device = device.to_string();
        // The link resolves the ifindex in the caller's namespace: attach from inside it.
        let (prog, link) = ns
            .run(move || {
                let license = b"GPL\0";
                let mut load = ProgLoad {
                    prog_type: BPF_PROG_TYPE_XDP,
                    insn_cnt: DROP_ALL.len() as u32,
                    insns: DROP_ALL.as_ptr() as u64,
                    license: license.as_ptr() as u64,
                    ..Default::default()
                };
                load.prog_name[..9].copy_from_slice(b"test_drop");
                let prog = bpf(BPF_PROG_LOAD, &mut load)?;
                let mut create = LinkCreate {
                    prog_fd: prog as u32,
                    target_ifindex: ifindex,
                    attach_type: BPF_XDP,
                    flags: XDP_FLAGS_DRV_MODE,
                };
                match bpf(BPF_LINK_CREATE, &mut create) {
                    Ok(link) => Ok((prog, link)),
                    Err(e) => {
                        // SAFETY: our own fd, closed once.
                        unsafe { libc::close(prog) };
                        Err(e)
                    }
                }
            })
            .unwrap_or_else(|e: io::Error| panic!("XDP drop program on {device}: {e}"));
        Self { prog, link }
    }
}

impl Drop for XdpDrop {
    fn drop(&mut self) {
        // SAFETY: fds this guard owns, closed once; closing the link detaches the program.
        unsafe {
            libc::close(self.link);
            libc::close(self.prog);
        }
    }
}

/// A veth's NIC-level receive drops as `ethtool -S` shows them: every queue's `drops` and
/// `xdp_drops` (what the monitor's `nic_rx` reads for a veth), summed.
pub fn veth_rx_drops(ns: &Netns, device: &str) -> u64 {
    let text = sh("ip", &["netns", "exec", &ns.name, "ethtool", "-S", device]);
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter(|(name, _)| {
            name.starts_with("rx_queue_") && (name.ends_with("_drops") && !name.contains("xmit"))
        })
        .map(|(_, value)| value.trim().parse::<u64>().expect("a counter"))
        .sum()
}

/// Each device's `veth_rx_drops` once they have stopped moving for 300 ms (a setup's own
/// frames, such as IPv6 neighbour discovery and multicast reports, have arrived): a scenario
/// that starts from there counts only its own frames. Panics after 10 s of movement.
pub fn settled_rx_drops(ns: &Netns, devices: &[String]) -> Vec<u64> {
    let read = || -> Vec<u64> { devices.iter().map(|d| veth_rx_drops(ns, d)).collect() };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{devices:?} still receiving: {now:?}"
        );
        last = now;
    }
}
