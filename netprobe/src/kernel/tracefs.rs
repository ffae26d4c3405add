//! Tracepoint record layouts, read from tracefs `format` files at start-up.
//!
//! Layouts change between kernels (`tcp_retransmit_skb` gained `err` in 6.17, `kfree_skb`
//! gained `reason` in 5.17 and `rx_sk` later), so no offset is compiled in.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use netprobe_common::{RetransmitRecordLayout, SockStateLayout, SynackRecordLayout, OFFSET_ABSENT};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} is not available on this kernel ({path}: {source})")]
    Missing {
        tracepoint: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint}: malformed format line {line:?}")]
    Malformed { tracepoint: String, line: String },
    #[error("tracepoint {tracepoint} has no field `{field}`")]
    MissingField {
        tracepoint: String,
        field: &'static str,
    },
    #[error("tracepoint {tracepoint}: field `{field}` is {found} bytes, expected {expected}")]
    FieldSize {
        tracepoint: String,
        field: &'static str,
        found: u32,
        expected: u32,
    },
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `const void *` or `__u8[4]`.
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed tracepoint `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub tracepoint: String,
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses the text of `events/<category>/<name>/format`.
    pub fn parse(tracepoint: &str, text: &str) -> Result<Self, TracefsError> {
        let malformed = |line: &str| TracefsError::Malformed {
            tracepoint: tracepoint.to_string(),
            line: line.to_string(),
        };
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            // field:<decl>;\toffset:N;\tsize:N;\tsigned:N;
            let mut decl = None;
            let (mut offset, mut size, mut signed) = (None, None, None);
            for (i, part) in rest.split(';').map(str::trim).enumerate() {
                if i == 0 {
                    decl = Some(part);
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("signed:") {
                    signed = Some(v == "1");
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(malformed(line));
            };
            let (c_type, name) = split_declaration(decl).ok_or_else(|| malformed(line))?;
            fields.push(Field {
                name,
                c_type,
                offset,
                size,
                signed: signed.unwrap_or(false),
            });
        }
        if fields.is_empty() {
            return Err(malformed(text.lines().next().unwrap_or("")));
        }
        Ok(Self {
            tracepoint: tracepoint.to_string(),
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of a field that must exist with the given size.
    fn required(&self, name: &'static str, size: u32) -> Result<u32, TracefsError> {
        let field = self.field(name).ok_or_else(|| TracefsError::MissingField {
            tracepoint: self.tracepoint.clone(),
            field: name,
        })?;
        self.check_size(field, name, size)
    }

    /// Offset of a field that newer kernels have, or [`OFFSET_ABSENT`].
    fn optional(&self, name: &'static str, size: u32) -> Result<u32, TracefsError> {
        match self.field(name) {
            Some(field) => self.check_size(field, name, size),
            None => Ok(OFFSET_ABSENT),
        }
    }

    fn check_size(
        &self,
        field: &Field,
        name: &'static str,
        size: u32,
    ) -> Result<u32, TracefsError> {
        if field.size != size {
            return Err(TracefsError::FieldSize {
                tracepoint: self.tracepoint.clone(),
                field: name,
                found: field.size,
                expected: size,
            });
        }
        Ok(field.offset)
    }

    /// The `tcp:tcp_retransmit_skb` layout the kernel program needs.
    pub fn retransmit_layout(&self) -> Result<RetransmitRecordLayout, TracefsError> {
        Ok(RetransmitRecordLayout {
            skbaddr: self.required("skbaddr", 8)?,
            skaddr: self.required("skaddr", 8)?,
            state: self.required("state", 4)?,
            sport: self.required("sport", 2)?,
            dport: self.required("dport", 2)?,
            // Added in Linux 5.11; before, the address pairs tell the family.
            family: self.optional("family", 2)?,
            saddr: self.required("saddr", 4)?,
            daddr: self.required("daddr", 4)?,
            saddr_v6: self.required("saddr_v6", 16)?,
            daddr_v6: self.required("daddr_v6", 16)?,
            err: self.optional("err", 4)?,
            // From BTF, when the outcome hook is planned.
            total_retrans: OFFSET_ABSENT,
        })
    }

    /// The `sock:inet_sock_set_state` layout.
    pub fn sock_state_layout(&self) -> Result<SockStateLayout, TracefsError> {
        Ok(SockStateLayout {
            skaddr: self.required("skaddr", 8)?,
            newstate: self.required("newstate", 4)?,
            protocol: self.required("protocol", 2)?,
            _pad0: 0,
        })
    }

    /// The `tcp:tcp_retransmit_synack` layout.
    pub fn synack_layout(&self) -> Result<SynackRecordLayout, TracefsError> {
        Ok(SynackRecordLayout {
            skaddr: self.required("skaddr", 8)?,
            sport: self.required("sport", 2)?,
            dport: self.required("dport", 2)?,
            family: self.optional("family", 2)?,
            saddr: self.required("saddr", 4)?,
            daddr: self.required("daddr", 4)?,
            saddr_v6: self.required("saddr_v6", 16)?,
            daddr_v6: self.required("daddr_v6", 16)?,
        })
    }
}

/// Splits `const void * skbaddr` into (`const void *`, `skbaddr`), `__u8 saddr[4]` into
/// (`__u8[4]`, `saddr`) and `__data_loc char[] dev_name` into (`__data_loc char[]`, `dev_name`).
fn split_declaration(decl: &str) -> Option<(String, String)> {
    let decl = decl.trim();
    let split = decl.rfind(|c: char| c.is_whitespace() || c == '*')?;
    let last = &decl[split + 1..];
    let (name, array) = match last.find('[') {
        Some(i) => (&last[..i], &last[i..]),
        None => (last, ""),
    };
    if name.is_empty() {
        return None;
    }
    Some((
        format!("{}{}", decl[..=split].trim(), array),
        name.to_string(),
    ))
}

/// Where tracefs lives; mounts it at the standard place when it is not mounted (it is not at
/// boot on some systems). Returns the path and whether this call mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let path = Path::new(candidate);
        if path.join("events").is_dir() {
            return Ok((path.to_path_buf(), false));
        }
    }
    let path = PathBuf::from("/sys/kernel/tracing");
    let target = CString::new("/sys/kernel/tracing").expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((path, true))
}

/// Reads and parses `events/<category>/<name>/format` under `tracefs`.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let tracepoint = format!("{category}:{name}");
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Missing {
        tracepoint: tracepoint.clone(),
        path,
        source,
    })?;
    Format::parse(&tracepoint, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.18: `err` at the end.
    const RETRANSMIT_6_18: &str = include_str!("../../fixtures/tracefs/tcp_retransmit_skb.6.18");
    /// Linux 5.15: no `err`.
    const RETRANSMIT_5_15: &str = include_str!("../../fixtures/tracefs/tcp_retransmit_skb.5.15");

    #[test]
    fn parses_every_field_of_a_current_format() {
        let f = Format::parse("tcp:tcp_retransmit_skb", RETRANSMIT_6_18).unwrap();
        let names: Vec<_> = f.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "skbaddr",
                "skaddr",
                "state",
                "sport",
                "dport",
                "family",
                "saddr",
                "daddr",
                "saddr_v6",
                "daddr_v6",
                "err"
            ]
        );
        let saddr = f.field("saddr").unwrap();
        assert_eq!(saddr.c_type, "__u8[4]");
        assert_eq!((saddr.offset, saddr.size, saddr.signed), (34, 4, false));
        assert_eq!(f.field("skbaddr").unwrap().c_type, "const void *");
        assert!(f.field("err").unwrap().signed);
    }

    #[test]
    fn retransmit_layout_with_and_without_err() {
        let new = Format::parse("t", RETRANSMIT_6_18)
            .unwrap()
            .retransmit_layout()
            .unwrap();
        assert_eq!((new.skbaddr, new.skaddr, new.state), (8, 16, 24));
        assert_eq!((new.sport, new.dport, new.family), (28, 30, 32));
        assert_eq!(
            (new.saddr, new.daddr, new.saddr_v6, new.daddr_v6),
            (34, 38, 42, 58)
        );
        assert_eq!(new.err, 76);

        let old = Format::parse("t", RETRANSMIT_5_15)
            .unwrap()
            .retransmit_layout()
            .unwrap();
        assert_eq!(old.err, OFFSET_ABSENT);
        assert_eq!((old.state, old.sport, old.family), (24, 28, 32));
        assert_eq!((old.saddr_v6, old.daddr_v6), (42, 58));
    }

    #[test]
    fn synack_layout() {
        let f = Format::parse(
            "tcp:tcp_retransmit_synack",
            include_str!("../../fixtures/tracefs/tcp_retransmit_synack.6.18"),
        )
        .unwrap();
        let l = f.synack_layout().unwrap();
        assert_eq!((l.skaddr, l.sport, l.dport, l.family), (8, 24, 26, 28));
        assert_eq!((l.saddr, l.daddr, l.saddr_v6, l.daddr_v6), (30, 34, 38, 54));
    }

    #[test]
    fn sock_state_layout() {
        let f = Format::parse(
            "sock:inet_sock_set_state",
            include_str!("../../fixtures/tracefs/inet_sock_set_state.6.18"),
        )
        .unwrap();
        let l = f.sock_state_layout().unwrap();
        assert_eq!((l.skaddr, l.newstate, l.protocol), (8, 20, 30));
    }

    #[test]
    fn data_loc_strings_parse() {
        let napi = Format::parse(
            "napi:napi_poll",
            include_str!("../../fixtures/tracefs/napi_poll.6.18"),
        )
        .unwrap();
        let dev = napi.field("dev_name").unwrap();
        assert_eq!(
            (dev.c_type.as_str(), dev.offset, dev.size),
            ("__data_loc char[]", 16, 4)
        );
    }

    #[test]
    fn wrong_sizes_and_missing_fields_are_errors() {
        let bad = RETRANSMIT_6_18.replace("offset:28;\tsize:2;", "offset:28;\tsize:4;");
        let err = Format::parse("tcp:x", &bad)
            .unwrap()
            .retransmit_layout()
            .unwrap_err();
        assert!(matches!(
            err,
            TracefsError::FieldSize {
                field: "sport",
                found: 4,
                ..
            }
        ));

        let err = Format::parse(
            "napi:napi_poll",
            include_str!("../../fixtures/tracefs/napi_poll.6.18"),
        )
        .unwrap()
        .retransmit_layout()
        .unwrap_err();
        assert!(matches!(
            err,
            TracefsError::MissingField {
                field: "skbaddr",
                ..
            }
        ));

        assert!(Format::parse("x", "name: x\nID: 1\nformat:\n").is_err());
        assert!(Format::parse("x", "\tfield:int a;\toffset:zz;\tsize:4;\n").is_err());
    }

    #[test]
    fn declarations_split_into_type_and_name() {
        assert_eq!(
            split_declaration("unsigned short common_type"),
            Some(("unsigned short".into(), "common_type".into()))
        );
        assert_eq!(
            split_declaration("void *location"),
            Some(("void *".into(), "location".into()))
        );
        assert_eq!(
            split_declaration("__u8 daddr_v6[16]"),
            Some(("__u8[16]".into(), "daddr_v6".into()))
        );
        assert_eq!(
            split_declaration("enum skb_drop_reason reason"),
            Some(("enum skb_drop_reason".into(), "reason".into()))
        );
        assert_eq!(
            split_declaration("__data_loc char[] dev_name"),
            Some(("__data_loc char[]".into(), "dev_name".into()))
        );
        assert_eq!(split_declaration("int"), None);
    }
}
