//! Trace filters: parsed and checked in userspace, evaluated in the kernel.

use std::{
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use netprobe_common::{
    Filter, AF_INET, AF_INET6, FILTER_ADDR, FILTER_NETNS, FILTER_PORT, FILTER_REASON,
};

use crate::kernel::btf::DropReasons;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("--port: {0:?} is not a port number (1-65535)")]
    Port(String),
    #[error("--addr: {0:?} is not an IPv4 or IPv6 address")]
    Addr(String),
    #[error("--netns: no network namespace {spec:?} (looked for {path})")]
    Netns { spec: String, path: String },
    #[error("--reason: this kernel has no drop reason {0:?} (list them with `netprobe reasons`)")]
    Reason(String),
    #[error("--reason {0}: this kernel records no drop reasons (they arrived in Linux 5.17); filter with --port, --addr or --netns instead")]
    NoReasons(String),
}

/// Filters as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    pub port: Option<u16>,
    pub addr: Option<IpAddr>,
    pub netns: Option<String>,
    pub reason: Option<String>,
}

/// clap value parser for `--port`.
pub fn parse_port(s: &str) -> Result<u16, FilterError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(FilterError::Port(s.to_string())),
    }
}

/// clap value parser for `--addr`. IPv4-mapped IPv6 addresses match the IPv4 flow.
pub fn parse_addr(s: &str) -> Result<IpAddr, FilterError> {
    let addr: IpAddr = s
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| FilterError::Addr(s.to_string()))?;
    Ok(addr.to_canonical())
}

/// Inode of a network namespace given as an inode number, a name under /var/run/netns, or a
/// path (`/proc/<pid>/ns/net`, a bind mount).
pub fn resolve_netns(spec: &str) -> Result<u32, FilterError> {
    if let Ok(inode) = spec.parse::<u32>() {
        return Ok(inode);
    }
    let path = if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        Path::new("/var/run/netns").join(spec)
    };
    std::fs::metadata(&path)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
        .ok_or_else(|| FilterError::Netns {
            spec: spec.to_string(),
            path: path.display().to_string(),
        })
}

impl FilterSpec {
    /// The kernel-side filter. Drop-reason names are resolved against the running kernel.
    pub fn resolve(&self, reasons: &DropReasons) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        if let Some(port) = self.port {
            filter.flags |= FILTER_PORT;
            filter.port = port;
        }
        if let Some(addr) = self.addr {
            filter.flags |= FILTER_ADDR;
            match addr {
                IpAddr::V4(v4) => {
                    filter.addr_family = AF_INET;
                    filter.addr[..4].copy_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    filter.addr_family = AF_INET6;
                    filter.addr = v6.octets();
                }
            }
        }
        if let Some(netns) = &self.netns {
            filter.flags |= FILTER_NETNS;
            filter.netns = resolve_netns(netns)?;
        }
        if let Some(reason) = &self.reason {
            if !reasons.recorded() {
                return Err(FilterError::NoReasons(reason.clone()));
            }
            filter.flags |= FILTER_REASON;
            filter.reason = reasons
                .value(reason)
                .ok_or_else(|| FilterError::Reason(reason.clone()))?;
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("5001"), Ok(5001));
        assert_eq!(parse_port("0"), Err(FilterError::Port("0".into())));
        assert_eq!(parse_port("65536"), Err(FilterError::Port("65536".into())));
        assert_eq!(parse_port("http"), Err(FilterError::Port("http".into())));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("198.18.0.1").unwrap().to_string(), "198.18.0.1");
        assert_eq!(
            parse_addr("[2001:db8::1]").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            parse_addr("::ffff:198.18.0.1").unwrap().to_string(),
            "198.18.0.1"
        );
        assert!(parse_addr("198.18.0.256").is_err());
        assert!(parse_addr("host.example").is_err());
    }

    #[test]
    fn resolves_into_kernel_filter() {
        let reasons = DropReasons::from_pairs(&[(12, "NETFILTER_DROP")], &[]);
        let spec = FilterSpec {
            port: Some(5001),
            addr: Some(parse_addr("2001:db8::2").unwrap()),
            netns: Some("4026531840".into()),
            reason: Some("netfilter_drop".into()),
        };
        let f = spec.resolve(&reasons).unwrap();
        assert_eq!(
            f.flags,
            FILTER_PORT | FILTER_ADDR | FILTER_NETNS | FILTER_REASON
        );
        assert_eq!(
            (f.port, f.netns, f.reason, f.addr_family),
            (5001, 4026531840, 12, AF_INET6)
        );
        assert_eq!(f.addr[..2], [0x20, 0x01]);

        let v4 = FilterSpec {
            addr: Some(parse_addr("198.18.0.1").unwrap()),
            ..Default::default()
        };
        let f = v4.resolve(&reasons).unwrap();
        assert_eq!((f.flags, f.addr_family), (FILTER_ADDR, AF_INET));
        assert_eq!(f.addr, [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

        assert_eq!(
            FilterSpec::default().resolve(&reasons).unwrap(),
            Filter::default()
        );
    }
}
