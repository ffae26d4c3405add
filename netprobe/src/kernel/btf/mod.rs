//! What the running kernel's BTF tells us: struct member offsets for the kernel programs and
//! the names of drop reasons. Nothing about kernel layouts is compiled in.
//!
//! This module loads the BTF and finds types in it (structs, enums, raw tracepoint
//! prototypes); `layouts` turns struct members into the offsets the programs read, `reasons`
//! names drop reasons.

mod layouts;
mod raw;
mod reasons;
#[cfg(test)]
pub(crate) mod test_btf;

pub use reasons::{DropReasons, UNRECORDED};

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use raw::{
    RawBtf, KIND_CONST, KIND_ENUM, KIND_ENUM64, KIND_FUNC_PROTO, KIND_PTR, KIND_RESTRICT,
    KIND_STRUCT, KIND_TYPEDEF, KIND_TYPE_TAG, KIND_UNION, KIND_VOLATILE,
};

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

/// Qualifiers (and typedefs, where `follow_typedefs`) between a use of a type and the type.
fn is_qualifier(kind: u32) -> bool {
    matches!(
        kind,
        KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG
    )
}

/// The kernel's type information, read and indexed once per run and handed to whatever needs
/// it (see `raw` for why it is read in place).
pub struct KernelBtf {
    btf: RawBtf,
    path: PathBuf,
    /// aya's form (fentry/fexit programs load against it), parsed from the same bytes on first
    /// use, or taken from the thread that parsed it during start-up.
    aya: OnceLock<Result<aya::Btf, String>>,
    aya_parsing: Mutex<Option<AyaParsing>>,
}

/// A thread parsing aya's form of the same BTF; `None` if it was not asked to.
pub type AyaParsing = std::thread::JoinHandle<Option<Result<aya::Btf, String>>>;

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
        let btf = RawBtf::parse(raw).map_err(|e| BtfError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            btf,
            path: path.to_path_buf(),
            aya: OnceLock::new(),
            aya_parsing: Mutex::new(None),
        })
    }

    /// The same BTF as aya represents it, for loading fentry/fexit programs. Parsed from the
    /// bytes already read, once, and only when asked for: with function hooks off or on
    /// kprobes, nothing needs it.
    pub fn aya(&self) -> Result<&aya::Btf, String> {
        self.aya
            .get_or_init(|| {
                let parsing = self.aya_parsing.lock().ok().and_then(|mut p| p.take());
                // A thread that failed (or made none) is not trusted: parse here, as before.
                if let Some(Ok(Some(Ok(parsed)))) = parsing.map(|thread| thread.join()) {
                    return Ok(parsed);
                }
                aya::Btf::parse(self.btf.bytes(), aya::Endianness::default())
                    .map_err(|e| format!("kernel BTF: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// aya's form is being parsed on `thread` (from this BTF's file): [`Self::aya`] waits for
    /// it instead of parsing it again.
    pub fn provide_aya(&self, thread: AyaParsing) {
        if let Ok(mut parsing) = self.aya_parsing.lock() {
            *parsing = Some(thread);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id of the first struct called `name`.
    fn struct_named(&self, name: &str) -> Result<u32, BtfError> {
        self.btf
            .named(name)
            .find(|id| self.btf.get(*id).is_some_and(|t| t.kind == KIND_STRUCT))
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Follows typedefs and qualifiers to a struct or union, if the type is one.
    fn aggregate_of(&self, type_id: u32) -> Result<Option<u32>, BtfError> {
        let mut id = type_id;
        loop {
            let Some(ty) = self.btf.get(id) else {
                return Ok(None);
            };
            match ty.kind {
                KIND_STRUCT | KIND_UNION => return Ok(Some(id)),
                k if k == KIND_TYPEDEF || is_qualifier(k) => id = ty.size_or_type,
                _ => return Ok(None),
            }
        }
    }

    /// The arguments a raw tracepoint hands to BPF, from the kernel's `btf_trace_<name>`
    /// typedef (a pointer to the probe's prototype, whose first parameter is the tracepoint's
    /// private data): each named by what it points to (`struct sock`) or its own type name.
    pub fn raw_tracepoint_args(&self, tracepoint: &str) -> Result<Vec<String>, BtfError> {
        let typedef = format!("btf_trace_{tracepoint}");
        let mut found = self.btf.named(&typedef).peekable();
        if found.peek().is_none() {
            return Err(BtfError::Other(format!(
                "no {typedef} (tracepoint {tracepoint} is not in this kernel)"
            )));
        }
        let Some(td) = found
            .filter_map(|id| self.btf.get(id))
            .find(|t| t.kind == KIND_TYPEDEF)
        else {
            return Err(BtfError::Other(format!("{typedef} is not a typedef")));
        };
        let mut ty = self.btf.type_by_id(td.size_or_type)?;
        if ty.kind == KIND_PTR {
            ty = self.btf.type_by_id(ty.size_or_type)?;
        }
        if ty.kind != KIND_FUNC_PROTO {
            return Err(BtfError::Other(format!(
                "{typedef} is not a function pointer"
            )));
        }
        ty.parameters()
            .skip(1)
            .map(|param| self.type_label(param))
            .collect()
    }

    /// `struct sock *` → `sock`; other types by name, qualifiers dropped.
    fn type_label(&self, type_id: u32) -> Result<String, BtfError> {
        let mut id = type_id;
        loop {
            // Void: a `void *` is labelled "void", a bare void (never an argument) "".
            let Some(ty) = self.btf.get(id) else {
                return Ok(String::new());
            };
            if is_qualifier(ty.kind) {
                id = ty.size_or_type;
                continue;
            }
            if ty.kind != KIND_PTR {
                return Ok(self.btf.name(ty.name_off).to_string());
            }
            let mut target = ty.size_or_type;
            while let Some(t) = self
                .btf
                .get(target)
                .filter(|t| matches!(t.kind, KIND_CONST | KIND_VOLATILE))
            {
                target = t.size_or_type;
            }
            return Ok(match self.btf.get(target) {
                Some(t) => self.btf.name(t.name_off).to_string(),
                None => "void".to_string(),
            });
        }
    }

    /// Members of the enum `name` as (name, value), whether it is an ENUM or ENUM64.
    pub fn enum_members(&self, name: &str) -> Result<Vec<(String, u64)>, BtfError> {
        let found = self
            .btf
            .named(name)
            .filter_map(|id| self.btf.get(id))
            .find(|t| matches!(t.kind, KIND_ENUM | KIND_ENUM64));
        match found {
            Some(ty) => Ok(ty
                .enumerators()
                .map(|(off, value)| (self.btf.name(off).to_string(), value))
                .collect()),
            None => Err(BtfError::Other(format!("no enum {name}"))),
        }
    }

    /// The value of an enumerator by name, in any enum (named or anonymous), e.g.
    /// `NET_RX_SOFTIRQ`.
    pub fn enumerator(&self, name: &str) -> Option<u64> {
        self.btf
            .ids()
            .filter_map(|id| self.btf.get(id))
            .filter(|t| matches!(t.kind, KIND_ENUM | KIND_ENUM64))
            .find_map(|t| {
                t.enumerators()
                    .find(|(off, _)| self.btf.name_is(*off, name))
                    .map(|(_, value)| value)
            })
    }

    /// Members of every plain (32-bit) enum whose name `wanted` accepts, as (name, value).
    fn plain_enum_members(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, u32)> {
        self.btf
            .ids()
            .filter_map(|id| self.btf.get(id))
            .filter(|t| t.kind == KIND_ENUM && wanted(self.btf.name(t.name_off)))
            .flat_map(|t| {
                t.enumerators()
                    .map(|(off, value)| (self.btf.name(off).to_string(), value as u32))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_btf::{kernel_shaped, KIND_STRUCT};
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

    /// `btf_trace_<tp>` is a typedef of a pointer to the probe's prototype; its first
    /// parameter (the tracepoint's data) is skipped, pointers are named by their target.
    #[test]
    fn raw_tracepoint_arguments_from_the_typedef() {
        use super::test_btf::Builder;
        let mut b = Builder::new();
        let skb = b.aggregate(KIND_STRUCT, "sk_buff", 8, &[]);
        let uint = b.int("unsigned int", 4);
        let reason = b.enumeration("skb_drop_reason", &[("SKB_DROP_REASON_NOT_SPECIFIED", 2)]);
        let (void_ptr, skb_ptr) = (b.ptr(0), b.ptr(skb));
        let const_skb = b.constant(skb);
        let const_skb_ptr = b.ptr(const_skb);
        let proto = b.func_proto(&[void_ptr, skb_ptr, void_ptr, reason, const_skb_ptr, uint]);
        let proto_ptr = b.ptr(proto);
        b.typedef("btf_trace_kfree_skb", proto_ptr);
        b.typedef("btf_trace_not_a_pointer", skb);
        let btf = KernelBtf::from_bytes(&b.build()).unwrap();
        assert_eq!(
            btf.raw_tracepoint_args("kfree_skb").unwrap(),
            [
                "sk_buff",
                "void",
                "skb_drop_reason",
                "sk_buff",
                "unsigned int"
            ]
        );
        let missing = btf.raw_tracepoint_args("nope").unwrap_err().to_string();
        assert!(missing.contains("no btf_trace_nope"), "{missing}");
        let wrong = btf
            .raw_tracepoint_args("not_a_pointer")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("is not a function pointer"), "{wrong}");
    }

    #[test]
    fn enumerators_of_anonymous_enums() {
        let btf = kernel_shaped();
        assert_eq!(btf.enumerator("NET_RX_SOFTIRQ"), Some(3));
        assert_eq!(btf.enumerator("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(btf.enumerator("NO_SUCH_ENUMERATOR"), None);
    }
}
