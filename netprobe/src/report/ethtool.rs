//! NIC facts through the ethtool ioctl (what `ethtool -i`, `-g` and `-S` print), without
//! forking ethtool. The ethtool netlink family has no driver-private statistics nor driver
//! info, so the ioctl is the interface that has them all.

use std::{ffi::c_void, io, os::fd::AsRawFd};

use netprobe_common::decode::nul_terminated;
use serde::Serialize;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GRINGPARAM: u32 = 0x10;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// No driver has anywhere near this many statistics; a bound against a confused driver.
const MAX_STATS: u32 = 1 << 16;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut c_void,
    _pad: [u8; 16],
}

#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
#[derive(Default)]
struct RingParam {
    cmd: u32,
    rx_max_pending: u32,
    rx_mini_max_pending: u32,
    rx_jumbo_max_pending: u32,
    tx_max_pending: u32,
    rx_pending: u32,
    rx_mini_pending: u32,
    rx_jumbo_pending: u32,
    tx_pending: u32,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Rings {
    pub rx: u32,
    pub rx_max: u32,
    pub tx: u32,
    pub tx_max: u32,
}

/// One driver statistic, with what it says about loss.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NicStat {
    pub name: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NicInfo {
    pub driver: String,
    pub version: String,
    pub firmware: String,
    pub bus: String,
    /// `None` when the driver has no ring parameters (veth, loopback, …).
    pub rings: Option<Rings>,
    /// Every statistic, in the driver's order.
    pub stats: Vec<NicStat>,
}

/// Where a NIC statistic counts loss, and in which direction and queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LossStat {
    pub name: String,
    /// `rx`, `tx` or `unknown`.
    pub direction: &'static str,
    pub queue: Option<u32>,
}

/// Classifies a driver statistic name: drop/miss/discard/error/no-buffer counters are loss.
pub fn classify(name: &str) -> Option<LossStat> {
    let lower = name.to_ascii_lowercase();
    const LOSS: [&str; 8] = [
        "drop", "miss", "discard", "err", "fifo", "no_buf", "nobuf", "overrun",
    ];
    if !LOSS.iter().any(|k| lower.contains(k)) || lower.contains("xdp_redirect") {
        return None;
    }
    let direction = if lower.starts_with("rx") || lower.contains("_rx") || lower.contains("rx_") {
        "rx"
    } else if lower.starts_with("tx") || lower.contains("_tx") || lower.contains("tx_") {
        "tx"
    } else {
        "unknown"
    };
    Some(LossStat {
        name: name.to_string(),
        direction,
        queue: queue_number(&lower),
    })
}

/// `rx_queue_3_drops`, `rx3_dropped`, `queue_3_rx_drops`, `rxq3_…` → 3.
fn queue_number(name: &str) -> Option<u32> {
    for part in name.split(['_', '.', '-']) {
        for prefix in ["rxq", "txq", "rx", "tx", "q"] {
            if let Some(n) = part.strip_prefix(prefix) {
                if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
                    return n.parse().ok();
                }
            }
        }
    }
    let parts: Vec<&str> = name.split('_').collect();
    parts
        .windows(2)
        .find(|w| w[0] == "queue" && w[1].chars().all(|c| c.is_ascii_digit()))
        .and_then(|w| w[1].parse().ok())
}

struct EthtoolSocket(std::os::fd::OwnedFd);

impl EthtoolSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        Ok(Self(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    /// One SIOCETHTOOL call; `data` starts with the command word.
    fn call(&self, ifname: &str, data: *mut c_void) -> io::Result<()> {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data,
            _pad: [0; 16],
        };
        let bytes = ifname.as_bytes();
        if bytes.len() >= libc::IFNAMSIZ {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        req.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: req and the buffer behind data live across the call and are sized as the
        // kernel expects for the command in data.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Driver, rings and statistics of `ifname`. Errors only when even the driver info fails.
pub fn read_nic(ifname: &str) -> io::Result<NicInfo> {
    let sock = EthtoolSocket::open()?;
    // SAFETY: all-zero is a valid DrvInfo.
    let mut drv: DrvInfo = unsafe { std::mem::zeroed() };
    drv.cmd = ETHTOOL_GDRVINFO;
    sock.call(ifname, &mut drv as *mut _ as *mut c_void)?;
    let mut info = NicInfo {
        driver: nul_terminated(&drv.driver),
        version: nul_terminated(&drv.version),
        firmware: nul_terminated(&drv.fw_version),
        bus: nul_terminated(&drv.bus_info),
        ..Default::default()
    };

    let mut ring = RingParam {
        cmd: ETHTOOL_GRINGPARAM,
        ..Default::default()
    };
    if sock
        .call(ifname, &mut ring as *mut _ as *mut c_void)
        .is_ok()
    {
        info.rings = Some(Rings {
            rx: ring.rx_pending,
            rx_max: ring.rx_max_pending,
            tx: ring.tx_pending,
            tx_max: ring.tx_max_pending,
        });
    }

    let n = drv.n_stats.min(MAX_STATS) as usize;
    if n > 0 {
        // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len * 32]; }
        let mut strings = vec![0u8; 12 + n * ETH_GSTRING_LEN];
        strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
        strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
        // struct ethtool_stats { u32 cmd, n_stats; u64 data[n_stats]; }
        let mut values = vec![0u64; 1 + n];
        values[0] = ETHTOOL_GSTATS as u64 | ((n as u64) << 32);
        if sock
            .call(ifname, strings.as_mut_ptr() as *mut c_void)
            .is_ok()
            && sock
                .call(ifname, values.as_mut_ptr() as *mut c_void)
                .is_ok()
        {
            let returned = (u32::from_ne_bytes(strings[8..12].try_into().unwrap()) as usize).min(n);
            for i in 0..returned {
                let name = nul_terminated(
                    &strings[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN],
                );
                info.stats.push(NicStat {
                    name,
                    value: values[1 + i],
                });
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_stats_are_singled_out_with_direction_and_queue() {
        let c = classify("rx_queue_3_drops").unwrap();
        assert_eq!((c.direction, c.queue), ("rx", Some(3)));
        let c = classify("rx_missed_errors").unwrap();
        assert_eq!((c.direction, c.queue), ("rx", None));
        let c = classify("tx5_dropped").unwrap();
        assert_eq!((c.direction, c.queue), ("tx", Some(5)));
        let c = classify("rx_discards_phy").unwrap();
        assert_eq!(c.direction, "rx");
        let c = classify("queue_7_rx_no_buffer").unwrap();
        assert_eq!((c.direction, c.queue), ("rx", Some(7)));
        assert!(classify("rx_packets").is_none());
        assert!(classify("peer_ifindex").is_none());
        assert!(classify("rx_queue_0_xdp_redirect").is_none());
    }

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<DrvInfo>(), 196);
        assert_eq!(std::mem::size_of::<RingParam>(), 36);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
