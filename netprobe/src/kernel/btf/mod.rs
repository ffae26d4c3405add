//! What the running kernel's BTF tells us: struct member offsets for the kernel programs and
//! the names of drop reasons. Nothing about kernel layouts is compiled in.
//!
//! This module loads the BTF and finds types in it (structs, enums, raw tracepoint
//! prototypes); `layouts` turns struct members into the offsets the programs read, `reasons`
//! names drop reasons.

mod layouts;
mod reasons;
#[cfg(test)]
pub(crate) mod test_btf;

pub use reasons::{DropReasons, UNRECORDED};

use std::{
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use btf_rs::{Btf, BtfType, Type};
use fallible_iterator::FallibleIterator;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no kernel BTF at {path}: netprobe needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Missing { path: PathBuf },
    #[error("cannot parse BTF at {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: `{0}` is a bitfield or not byte-aligned")]
    Unaligned(String),
    #[error("kernel BTF: {0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> BtfError {
    BtfError::Other(e.to_string())
}

/// The kernel's type information, read and parsed once per run and handed to whatever needs
/// it: parsing vmlinux BTF is the largest part of netprobe's start-up.
pub struct KernelBtf {
    btf: Btf,
    path: PathBuf,
    /// The file as read, for aya's own form of it.
    raw: Vec<u8>,
    /// aya's form (fentry/fexit programs load against it), parsed from `raw` on first use.
    aya: OnceLock<Result<aya::Btf, String>>,
}

impl KernelBtf {
    /// Loads BTF from `path` (normally [`VMLINUX_BTF`]).
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing {
                path: path.to_path_buf(),
            });
        }
        let raw = fs::read(path).map_err(|e| BtfError::Parse {
            path: path.to_path_buf(),
            message: format!("i/o error: {e}"),
        })?;
        Self::parse(raw, path)
    }

    /// Parses BTF from bytes (tests and fixtures).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::parse(bytes.to_vec(), Path::new("<bytes>"))
    }

    fn parse(raw: Vec<u8>, path: &Path) -> Result<Self, BtfError> {
        // From the bytes rather than the file: one read serves both parsers, and btf-rs reads
        // a file through small buffered reads, slower than parsing the bytes in memory.
        let btf = Btf::from_bytes(&raw).map_err(|e| BtfError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            btf,
            path: path.to_path_buf(),
            raw,
            aya: OnceLock::new(),
        })
    }

    /// The same BTF as aya represents it, for loading fentry/fexit programs. Parsed from the
    /// bytes already read, once, and only when asked for: with function hooks off or on
    /// kprobes, nothing needs it.
    pub fn aya(&self) -> Result<&aya::Btf, String> {
        self.aya
            .get_or_init(|| {
                aya::Btf::parse(&self.raw, aya::Endianness::default())
                    .map_err(|e| format!("kernel BTF: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn struct_named(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoStruct(name.to_string()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Follows typedefs and qualifiers to a struct or union, if the type is one.
    fn aggregate_of(&self, type_id: u32) -> Result<Option<btf_rs::Struct>, BtfError> {
        let mut ty = self.btf.resolve_type_by_id(type_id).map_err(other)?;
        loop {
            match ty {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type().expect("qualifier is a BTF type");
                    ty = self.btf.resolve_chained_type(inner).map_err(other)?;
                }
                _ => return Ok(None),
            }
        }
    }

    /// The arguments a raw tracepoint hands to BPF, from the kernel's `btf_trace_<name>`
    /// typedef (a pointer to the probe's prototype, whose first parameter is the tracepoint's
    /// private data): each named by what it points to (`struct sock`) or its own type name.
    pub fn raw_tracepoint_args(&self, tracepoint: &str) -> Result<Vec<String>, BtfError> {
        let typedef = format!("btf_trace_{tracepoint}");
        let types = self.btf.resolve_types_by_name(&typedef).map_err(|_| {
            BtfError::Other(format!(
                "no {typedef} (tracepoint {tracepoint} is not in this kernel)"
            ))
        })?;
        let Some(Type::Typedef(td)) = types.into_iter().find(|t| matches!(t, Type::Typedef(_)))
        else {
            return Err(BtfError::Other(format!("{typedef} is not a typedef")));
        };
        let mut ty = self.btf.resolve_chained_type(&td).map_err(other)?;
        if let Type::Ptr(p) = &ty {
            ty = self.btf.resolve_chained_type(p).map_err(other)?;
        }
        let Type::FuncProto(proto) = ty else {
            return Err(BtfError::Other(format!(
                "{typedef} is not a function pointer"
            )));
        };
        proto
            .parameters
            .iter()
            .skip(1)
            .map(|param| self.type_label(param.get_type_id().unwrap_or(0)))
            .collect()
    }

    /// `struct sock *` → `sock`; other types by name, qualifiers dropped.
    fn type_label(&self, type_id: u32) -> Result<String, BtfError> {
        let mut ty = self.btf.resolve_type_by_id(type_id).map_err(other)?;
        loop {
            match ty {
                Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type().expect("qualifier is a BTF type");
                    ty = self.btf.resolve_chained_type(inner).map_err(other)?;
                }
                Type::Ptr(p) => {
                    let mut target = self.btf.resolve_chained_type(&p).map_err(other)?;
                    while let Type::Const(_) | Type::Volatile(_) = target {
                        let inner = target.as_btf_type().expect("qualifier is a BTF type");
                        target = self.btf.resolve_chained_type(inner).map_err(other)?;
                    }
                    return Ok(match target.as_btf_type() {
                        Some(t) => self.btf.resolve_name(t).unwrap_or_default(),
                        None => "void".to_string(),
                    });
                }
                _ => {
                    return Ok(ty
                        .as_btf_type()
                        .and_then(|t| self.btf.resolve_name(t).ok())
                        .unwrap_or_default())
                }
            }
        }
    }

    /// Members of the enum `name` as (name, value), whether it is an ENUM or ENUM64.
    pub fn enum_members(&self, name: &str) -> Result<Vec<(String, u64)>, BtfError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        for ty in types {
            let members = match &ty {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .map(|m| Ok((self.btf.resolve_name(m).map_err(other)?, m.val() as u64)))
                    .collect::<Result<Vec<_>, BtfError>>()?,
                Type::Enum64(e) => e
                    .members
                    .iter()
                    .map(|m| Ok((self.btf.resolve_name(m).map_err(other)?, m.val())))
                    .collect::<Result<Vec<_>, BtfError>>()?,
                _ => continue,
            };
            return Ok(members);
        }
        Err(BtfError::Other(format!("no enum {name}")))
    }

    /// The value of an enumerator by name, in any enum (named or anonymous), e.g.
    /// `NET_RX_SOFTIRQ`.
    pub fn enumerator(&self, name: &str) -> Option<u64> {
        let mut types = self.btf.type_iter();
        while let Ok(Some(ty)) = types.next() {
            match &ty {
                Type::Enum(e) => {
                    for m in &e.members {
                        if self.btf.resolve_name(m).ok().as_deref() == Some(name) {
                            return Some(m.val() as u64);
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if self.btf.resolve_name(m).ok().as_deref() == Some(name) {
                            return Some(m.val());
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Members of every plain (32-bit) enum whose name `wanted` accepts, as (name, value).
    fn plain_enum_members(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut types = self.btf.type_iter();
        while let Ok(Some(ty)) = types.next() {
            let Type::Enum(e) = &ty else { continue };
            let Ok(name) = self.btf.resolve_name(e) else {
                continue;
            };
            if !wanted(&name) {
                continue;
            }
            for m in &e.members {
                if let Ok(member) = self.btf.resolve_name(m) {
                    out.push((member, m.val()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_btf::kernel_shaped;
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        assert!(matches!(
            KernelBtf::load(Path::new("/nonexistent/vmlinux")),
            Err(BtfError::Missing { .. })
        ));
    }

    /// aya's form comes from the bytes already read, parsed on first use and then kept.
    #[test]
    fn the_aya_form_is_parsed_once_from_the_same_bytes() {
        let btf = kernel_shaped();
        let first: *const aya::Btf = btf.aya().unwrap();
        let again: *const aya::Btf = btf.aya().unwrap();
        assert_eq!(first, again);
        let aya_btf = btf.aya().unwrap();
        assert!(aya_btf
            .id_by_type_name_kind("sk_buff", aya_obj::btf::BtfKind::Struct)
            .is_ok());
        assert!(aya_btf
            .id_by_type_name_kind("no_such_struct", aya_obj::btf::BtfKind::Struct)
            .is_err());
    }

    #[test]
    fn enumerators_of_anonymous_enums() {
        let btf = kernel_shaped();
        assert_eq!(btf.enumerator("NET_RX_SOFTIRQ"), Some(3));
        assert_eq!(btf.enumerator("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(btf.enumerator("NO_SUCH_ENUMERATOR"), None);
    }
}
