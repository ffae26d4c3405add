//! What the running kernel's BTF tells us: struct member offsets for the kernel programs and
//! the names of drop reasons. Nothing about kernel layouts is compiled in.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use btf_rs::{Btf, BtfType, Type};
use fallible_iterator::FallibleIterator;
use netprobe_common::{KernelLayout, ReceiveLayout, OFFSET_ABSENT};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Upper 16 bits of a drop reason name the subsystem (`SKB_DROP_REASON_SUBSYS_SHIFT`).
const SUBSYS_SHIFT: u32 = 16;
const REASON_PREFIX: &str = "SKB_DROP_REASON_";
const SUBSYS_PREFIX: &str = "SKB_DROP_REASON_SUBSYS_";

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

/// The kernel's type information.
pub struct KernelBtf {
    btf: Btf,
    path: PathBuf,
}

impl KernelBtf {
    /// Loads BTF from `path` (normally [`VMLINUX_BTF`]).
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing {
                path: path.to_path_buf(),
            });
        }
        let btf = Btf::from_file(path).map_err(|e| BtfError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            btf,
            path: path.to_path_buf(),
        })
    }

    /// Parses BTF from bytes (tests and fixtures).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        let btf = Btf::from_bytes(bytes).map_err(|e| BtfError::Parse {
            path: PathBuf::from("<bytes>"),
            message: e.to_string(),
        })?;
        Ok(Self {
            btf,
            path: PathBuf::from("<bytes>"),
        })
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

    /// Finds `name` among the members of `s`, looking inside anonymous structs and unions.
    /// Returns (bit offset, member type id).
    fn find_member(&self, s: &btf_rs::Struct, name: &str) -> Result<Option<(u32, u32)>, BtfError> {
        match self.find_member_bits(s, name)? {
            Some((_, _, Some(width))) if width != 0 => Err(BtfError::Unaligned(name.to_string())),
            Some((bits, id, _)) => Ok(Some((bits, id))),
            None => Ok(None),
        }
    }

    /// Like `find_member`, also for bitfields: (bit offset, type id, bitfield width).
    fn find_member_bits(
        &self,
        s: &btf_rs::Struct,
        name: &str,
    ) -> Result<Option<(u32, u32, Option<u32>)>, BtfError> {
        for member in &s.members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let type_id = member.get_type_id().unwrap_or(0);
            if member_name == name {
                return Ok(Some((
                    member.bit_offset(),
                    type_id,
                    member.bitfield_size().filter(|w| *w != 0),
                )));
            }
            if member_name.is_empty() {
                if let Some(inner) = self.aggregate_of(type_id)? {
                    if let Some((bits, id, width)) = self.find_member_bits(&inner, name)? {
                        return Ok(Some((member.bit_offset() + bits, id, width)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// A one-byte member that may be a bitfield (`__u8 icsk_ca_state:5`): the byte offset of
    /// a little-endian u16 holding it, its bit position in that u16, and its width.
    pub fn small_field_of(&self, strukt: &str, name: &str) -> Result<(u32, u32, u32), BtfError> {
        let s = self.struct_named(strukt)?;
        let (bits, _, width) =
            self.find_member_bits(&s, name)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.to_string(),
                    member: name.to_string(),
                })?;
        let width = width.unwrap_or(8);
        let (byte, shift) = (bits / 8, bits % 8);
        if shift + width > 16 {
            return Err(BtfError::Unaligned(format!("{strukt}.{name}")));
        }
        Ok((byte, shift, width))
    }

    /// Byte offset of a member path inside a struct, e.g. `("sock", "__sk_common.skc_net.net")`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut current = self.struct_named(strukt)?;
        let mut bits = 0u32;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (offset, type_id) =
                self.find_member(&current, part)?
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: strukt.to_string(),
                        member: parts[..=i].join("."),
                    })?;
            bits += offset;
            if i + 1 < parts.len() {
                current = self
                    .aggregate_of(type_id)?
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: strukt.to_string(),
                        member: parts[..=i + 1].join("."),
                    })?;
            }
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Unaligned(format!("{strukt}.{path}")));
        }
        Ok(bits / 8)
    }

    /// Every offset the kernel programs read.
    pub fn kernel_layout(&self) -> Result<KernelLayout, BtfError> {
        Ok(KernelLayout {
            skb_len: self.offset_of("sk_buff", "len")?,
            skb_dev: self.offset_of("sk_buff", "dev")?,
            skb_sk: self.offset_of("sk_buff", "sk")?,
            skb_head: self.offset_of("sk_buff", "head")?,
            skb_network_header: self.offset_of("sk_buff", "network_header")?,
            skb_cb: self.offset_of("sk_buff", "cb")?,
            skb_iif: self.offset_of("sk_buff", "skb_iif")?,
            sk_net: self.offset_of("sock", "__sk_common.skc_net.net")?,
            sk_state: self.offset_of("sock", "__sk_common.skc_state")?,
            sk_socket: self.offset_of("sock", "sk_socket")?,
            socket_ino: self.offset_of("socket_alloc", "vfs_inode.i_ino")?,
            net_inum: self.offset_of("net", "ns.inum")?,
            dev_name: self.offset_of("net_device", "name")?,
            dev_ifindex: self.offset_of("net_device", "ifindex")?,
            dev_nd_net: self.offset_of("net_device", "nd_net.net")?,
            tcb_seq: self.offset_of("tcp_skb_cb", "seq")?,
            tcb_gso_segs: self.offset_of("tcp_skb_cb", "tcp_gso_segs")?,
        })
    }

    /// What the receive program reads (`tcp_probe` raw tracepoint): the segment's `end_seq`,
    /// the socket's receive state and the members naming its flow. IPv6 addresses are
    /// optional (a kernel without IPv6 has none).
    pub fn receive_layout(&self) -> Result<ReceiveLayout, BtfError> {
        let common = |path: &str| self.offset_of("sock", &format!("__sk_common.{path}"));
        Ok(ReceiveLayout {
            tcb_end_seq: self.offset_of("tcp_skb_cb", "end_seq")?,
            rcv_nxt: self.offset_of("tcp_sock", "rcv_nxt")?,
            ooo_root: self.offset_of("tcp_sock", "out_of_order_queue.rb_node")?,
            ooo_last_skb: self.offset_of("tcp_sock", "ooo_last_skb")?,
            skc_family: common("skc_family")?,
            skc_num: common("skc_num")?,
            skc_dport: common("skc_dport")?,
            skc_daddr: common("skc_daddr")?,
            skc_rcv_saddr: common("skc_rcv_saddr")?,
            skc_v6_daddr: common("skc_v6_daddr").unwrap_or(OFFSET_ABSENT),
            skc_v6_rcv_saddr: common("skc_v6_rcv_saddr").unwrap_or(OFFSET_ABSENT),
            _pad0: 0,
        })
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
}

/// Drop-reason names of the running kernel (`enum skb_drop_reason`), with the subsystem
/// encoding of the upper 16 bits (`enum skb_drop_reason_subsys`).
#[derive(Debug, Clone)]
pub struct DropReasons {
    /// The kernel records drop reasons (`enum skb_drop_reason`, Linux ≥ 5.17). Before, every
    /// drop has reason 0 and is named [`UNRECORDED`]; its layer comes from the freeing function.
    recorded: bool,
    /// Raw value → short name (`NETFILTER_DROP`).
    names: BTreeMap<u32, String>,
    /// Subsystem id → short name (`MAC80211_UNUSABLE`).
    subsystems: BTreeMap<u32, String>,
}

/// The reason of every drop on a kernel that records none (before Linux 5.17).
pub const UNRECORDED: &str = "UNRECORDED";

impl Default for DropReasons {
    fn default() -> Self {
        Self {
            recorded: true,
            names: BTreeMap::new(),
            subsystems: BTreeMap::new(),
        }
    }
}

impl DropReasons {
    /// The running kernel's reasons; on a kernel without `enum skb_drop_reason` (before 5.17),
    /// an empty table that names every drop [`UNRECORDED`].
    pub fn from_btf(btf: &KernelBtf) -> Result<Self, BtfError> {
        let mut reasons = Self::default();
        let members = match btf.enum_members("skb_drop_reason") {
            Ok(members) => members,
            // Only a kernel without the enum (before 5.17) records none; other errors stand.
            Err(BtfError::Other(why)) if why.starts_with("no enum") => {
                reasons.recorded = false;
                return Ok(reasons);
            }
            Err(e) => return Err(e),
        };
        for (name, value) in members {
            let short = name.strip_prefix(REASON_PREFIX).unwrap_or(&name);
            reasons.names.insert(value as u32, short.to_string());
        }
        // Older kernels have no subsystems: then every reason is a core reason.
        if let Ok(subsystems) = btf.enum_members("skb_drop_reason_subsys") {
            for (name, value) in subsystems {
                let short = name.strip_prefix(SUBSYS_PREFIX).unwrap_or(&name);
                reasons.subsystems.insert(value as u32, short.to_string());
            }
        }
        // Subsystem reasons live in their own enums (mac80211_drop_reason, ovs_drop_reason…),
        // in vmlinux or module BTF; collect whatever is there.
        for (name, value) in btf.subsystem_reason_members() {
            reasons.names.entry(value).or_insert(name);
        }
        Ok(reasons)
    }

    /// The name of a raw reason value. Unknown core reasons print as `UNKNOWN_<n>`, unknown
    /// subsystem reasons as `<SUBSYS>:<n>`.
    pub fn name(&self, raw: u32) -> String {
        if !self.recorded {
            return UNRECORDED.to_string();
        }
        if let Some(name) = self.names.get(&raw) {
            return name.clone();
        }
        let subsystem = raw >> SUBSYS_SHIFT;
        let code = raw & ((1 << SUBSYS_SHIFT) - 1);
        if subsystem == 0 {
            return format!("UNKNOWN_{code}");
        }
        match self.subsystems.get(&subsystem) {
            Some(sub) => format!("{sub}:{code}"),
            None => format!("SUBSYS_{subsystem}:{code}"),
        }
    }

    /// The raw value of a reason given by name (`NETFILTER_DROP`, any case, with or without
    /// the `SKB_DROP_REASON_` prefix), or a number.
    pub fn value(&self, name: &str) -> Option<u32> {
        if let Ok(raw) = name.parse::<u32>() {
            return Some(raw);
        }
        let upper = name.to_ascii_uppercase();
        let short = upper.strip_prefix(REASON_PREFIX).unwrap_or(&upper);
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == short)
            .map(|(v, _)| *v)
    }

    /// False on kernels before 5.17, which record no drop reasons.
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(v, n)| (*v, n.as_str()))
    }

    #[cfg(test)]
    pub fn from_pairs(names: &[(u32, &str)], subsystems: &[(u32, &str)]) -> Self {
        Self {
            recorded: true,
            names: names.iter().map(|(v, n)| (*v, n.to_string())).collect(),
            subsystems: subsystems
                .iter()
                .map(|(v, n)| (*v, n.to_string()))
                .collect(),
        }
    }
}

impl KernelBtf {
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

    /// Members with a nonzero subsystem in the upper bits from any `*_drop_reason` enum other
    /// than the core one.
    fn subsystem_reason_members(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut types = self.btf.type_iter();
        while let Ok(Some(ty)) = types.next() {
            let Type::Enum(e) = &ty else { continue };
            let Ok(name) = self.btf.resolve_name(e) else {
                continue;
            };
            if !name.ends_with("_drop_reason") || name == "skb_drop_reason" {
                continue;
            }
            for m in &e.members {
                if m.val() >> SUBSYS_SHIFT != 0 {
                    if let Ok(member) = self.btf.resolve_name(m) {
                        out.push((member, m.val()));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod test_btf {
    //! A minimal BTF writer, so that unit tests run on hand-made type information with the
    //! shapes the kernel uses (anonymous unions, typedef'd structs, enums).

    pub const KIND_INT: u32 = 1;
    pub const KIND_PTR: u32 = 2;
    pub const KIND_STRUCT: u32 = 4;
    pub const KIND_UNION: u32 = 5;
    pub const KIND_ENUM: u32 = 6;
    pub const KIND_TYPEDEF: u32 = 8;

    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn header(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
            let name_off = self.string(name);
            for word in [name_off, (kind << 24) | vlen, size_or_type] {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.header(name, KIND_INT, 0, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }
        pub fn ptr(&mut self, to: u32) -> u32 {
            self.header("", KIND_PTR, 0, to)
        }
        pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.header(name, KIND_TYPEDEF, 0, to)
        }
        /// `members`: (name, type id, byte offset).
        /// Members with bit offsets and bitfield widths (kind_flag set): (name, type, bits, width).
        pub fn aggregate_bits(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let name_off = self.string(name);
            for word in [
                name_off,
                (1 << 31) | (KIND_STRUCT << 24) | members.len() as u32,
                size,
            ] {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            let id = self.next_id - 1;
            for (member, ty, bits, width) in members {
                let member_off = self.string(member);
                for word in [member_off, *ty, (width << 24) | bits] {
                    self.types.extend_from_slice(&word.to_le_bytes());
                }
            }
            id
        }
        pub fn aggregate(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.header(name, kind, members.len() as u32, size);
            for (member, ty, offset) in members {
                let name_off = self.string(member);
                for word in [name_off, *ty, offset * 8] {
                    self.types.extend_from_slice(&word.to_le_bytes());
                }
            }
            id
        }
        pub fn enumeration(&mut self, name: &str, members: &[(&str, u32)]) -> u32 {
            let id = self.header(name, KIND_ENUM, members.len() as u32, 4);
            for (member, value) in members {
                let name_off = self.string(member);
                self.types.extend_from_slice(&name_off.to_le_bytes());
                self.types.extend_from_slice(&value.to_le_bytes());
            }
            id
        }
        pub fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            let words = [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_btf::*;
    use super::*;

    /// Kernel-shaped types: members behind anonymous unions/structs, a typedef'd struct
    /// (`possible_net_t`), nested named structs.
    fn kernel_shaped() -> KernelBtf {
        let mut b = Builder::new();
        let u8_t = b.int("unsigned char", 1);
        let u16_t = b.int("__u16", 2);
        let u32_t = b.int("unsigned int", 4);
        let int_t = b.int("int", 4);
        let ns_common = b.aggregate(
            KIND_STRUCT,
            "ns_common",
            16,
            &[("stashed", u32_t, 0), ("inum", u32_t, 8)],
        );
        let net = b.aggregate(
            KIND_STRUCT,
            "net",
            200,
            &[("passive", u32_t, 0), ("ns", ns_common, 120)],
        );
        let net_ptr = b.ptr(net);
        let possible_net = b.aggregate(KIND_STRUCT, "", 8, &[("net", net_ptr, 0)]);
        let possible_net_t = b.typedef("possible_net_t", possible_net);
        let sock_common = b.aggregate(
            KIND_STRUCT,
            "sock_common",
            136,
            &[
                ("skc_family", u16_t, 16),
                ("skc_state", u8_t, 18),
                ("skc_net", possible_net_t, 48),
            ],
        );
        let u64_t = b.int("unsigned long", 8);
        let socket = b.aggregate(KIND_STRUCT, "socket", 128, &[("state", int_t, 0)]);
        let socket_ptr = b.ptr(socket);
        let inode = b.aggregate(
            KIND_STRUCT,
            "inode",
            600,
            &[("i_mode", u16_t, 0), ("i_ino", u64_t, 64)],
        );
        let _socket_alloc = b.aggregate(
            KIND_STRUCT,
            "socket_alloc",
            728,
            &[("socket", socket, 0), ("vfs_inode", inode, 128)],
        );
        let _sock = b.aggregate(
            KIND_STRUCT,
            "sock",
            800,
            &[
                ("__sk_common", sock_common, 0),
                ("sk_socket", socket_ptr, 400),
            ],
        );
        let char_arr = b.int("char", 1);
        let dev_ptr = b.ptr(u8_t);
        let dev_union = b.aggregate(
            KIND_UNION,
            "",
            8,
            &[("dev", dev_ptr, 0), ("dev_scratch", u32_t, 0)],
        );
        let dev_struct = b.aggregate(
            KIND_STRUCT,
            "",
            24,
            &[
                ("next", dev_ptr, 0),
                ("prev", dev_ptr, 8),
                ("", dev_union, 16),
            ],
        );
        let outer_union = b.aggregate(
            KIND_UNION,
            "",
            24,
            &[("", dev_struct, 0), ("rbnode", dev_ptr, 0)],
        );
        let headers = b.aggregate(
            KIND_STRUCT,
            "",
            8,
            &[("transport_header", u16_t, 0), ("network_header", u16_t, 2)],
        );
        let _skb = b.aggregate(
            KIND_STRUCT,
            "sk_buff",
            232,
            &[
                ("", outer_union, 0),
                ("sk", dev_ptr, 24),
                ("cb", char_arr, 40),
                ("len", u32_t, 112),
                ("skb_iif", int_t, 144),
                ("", headers, 180),
                ("head", dev_ptr, 200),
            ],
        );
        let _ndev = b.aggregate(
            KIND_STRUCT,
            "net_device",
            2000,
            &[
                ("name", char_arr, 300),
                ("ifindex", int_t, 224),
                ("nd_net", possible_net_t, 1184),
            ],
        );
        let gso = b.aggregate(
            KIND_STRUCT,
            "",
            4,
            &[("tcp_gso_segs", u16_t, 0), ("tcp_gso_size", u16_t, 2)],
        );
        let gso_union = b.aggregate(KIND_UNION, "", 4, &[("", gso, 0)]);
        let _tcb = b.aggregate(
            KIND_STRUCT,
            "tcp_skb_cb",
            48,
            &[("seq", u32_t, 0), ("end_seq", u32_t, 4), ("", gso_union, 8)],
        );
        b.enumeration(
            "skb_drop_reason",
            &[
                ("SKB_DROP_REASON_NOT_DROPPED_YET", 0),
                ("SKB_DROP_REASON_NO_SOCKET", 3),
                ("SKB_DROP_REASON_NETFILTER_DROP", 12),
            ],
        );
        b.enumeration(
            "skb_drop_reason_subsys",
            &[
                ("SKB_DROP_REASON_SUBSYS_CORE", 0),
                ("SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE", 1),
                ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3),
            ],
        );
        // The softirq vectors are an anonymous enum in the kernel.
        b.enumeration(
            "",
            &[
                ("HI_SOFTIRQ", 0),
                ("TIMER_SOFTIRQ", 1),
                ("NET_TX_SOFTIRQ", 2),
                ("NET_RX_SOFTIRQ", 3),
            ],
        );
        b.enumeration(
            "ovs_drop_reason",
            &[
                ("OVS_DROP_LAST_ACTION", 3 << 16),
                ("OVS_DROP_ACTION_ERROR", (3 << 16) | 1),
            ],
        );
        KernelBtf::from_bytes(&b.build()).unwrap()
    }

    #[test]
    fn offsets_through_anonymous_members_and_typedefs() {
        let btf = kernel_shaped();
        let layout = btf.kernel_layout().unwrap();
        assert_eq!(layout.skb_dev, 16);
        assert_eq!(layout.skb_sk, 24);
        assert_eq!(layout.skb_cb, 40);
        assert_eq!(layout.skb_len, 112);
        assert_eq!(layout.skb_iif, 144);
        assert_eq!(layout.skb_network_header, 182);
        assert_eq!(layout.skb_head, 200);
        assert_eq!(layout.sk_net, 48);
        assert_eq!(layout.sk_state, 18);
        assert_eq!(layout.sk_socket, 400);
        assert_eq!(layout.socket_ino, 128 + 64);
        assert_eq!(layout.net_inum, 128);
        assert_eq!(layout.dev_name, 300);
        assert_eq!(layout.dev_ifindex, 224);
        assert_eq!(layout.dev_nd_net, 1184);
        assert_eq!(layout.tcb_seq, 0);
        assert_eq!(layout.tcb_gso_segs, 8);
    }

    #[test]
    fn missing_structs_and_members_are_named() {
        let btf = kernel_shaped();
        assert!(matches!(btf.offset_of("nope", "x"), Err(BtfError::NoStruct(s)) if s == "nope"));
        match btf.offset_of("sock", "__sk_common.skc_nope") {
            Err(BtfError::NoMember { strukt, member }) => {
                assert_eq!(
                    (strukt.as_str(), member.as_str()),
                    ("sock", "__sk_common.skc_nope")
                )
            }
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
        assert!(matches!(
            KernelBtf::load(Path::new("/nonexistent/vmlinux")),
            Err(BtfError::Missing { .. })
        ));
    }

    #[test]
    fn bitfields_and_plain_bytes() {
        let mut b = Builder::new();
        let u8_t = b.int("__u8", 1);
        // __u8 icsk_ca_state:5, icsk_ca_initialized:1 … at byte 1387 (bit 11096).
        b.aggregate_bits(
            "inet_connection_sock",
            1500,
            &[
                ("icsk_retransmits", u8_t, 11088, 0),
                ("icsk_ca_state", u8_t, 11096, 5),
                ("icsk_ca_initialized", u8_t, 11101, 1),
            ],
        );
        b.aggregate_bits("old_icsk", 100, &[("icsk_ca_state", u8_t, 96, 0)]);
        let btf = KernelBtf::from_bytes(&b.build()).unwrap();
        assert_eq!(
            btf.small_field_of("inet_connection_sock", "icsk_ca_state")
                .unwrap(),
            (1387, 0, 5)
        );
        assert_eq!(
            btf.small_field_of("inet_connection_sock", "icsk_ca_initialized")
                .unwrap(),
            (1387, 5, 1)
        );
        assert_eq!(
            btf.small_field_of("old_icsk", "icsk_ca_state").unwrap(),
            (12, 0, 8)
        );
        // offset_of refuses bitfields.
        assert!(matches!(
            btf.offset_of("inet_connection_sock", "icsk_ca_state"),
            Err(BtfError::Unaligned(_))
        ));
    }

    #[test]
    fn enumerators_of_anonymous_enums() {
        let btf = kernel_shaped();
        assert_eq!(btf.enumerator("NET_RX_SOFTIRQ"), Some(3));
        assert_eq!(btf.enumerator("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(btf.enumerator("NO_SUCH_ENUMERATOR"), None);
    }

    #[test]
    fn drop_reason_names_with_subsystems() {
        let reasons = DropReasons::from_btf(&kernel_shaped()).unwrap();
        assert_eq!(reasons.name(12), "NETFILTER_DROP");
        assert_eq!(reasons.name(3), "NO_SOCKET");
        assert_eq!(reasons.name(999), "UNKNOWN_999");
        // Found in a subsystem enum.
        assert_eq!(reasons.name((3 << 16) | 1), "OVS_DROP_ACTION_ERROR");
        // Subsystem known, code not.
        assert_eq!(reasons.name((1 << 16) | 7), "MAC80211_UNUSABLE:7");
        assert_eq!(reasons.name((9 << 16) | 2), "SUBSYS_9:2");

        assert_eq!(reasons.value("NETFILTER_DROP"), Some(12));
        assert_eq!(reasons.value("skb_drop_reason_no_socket"), Some(3));
        assert_eq!(reasons.value("no_socket"), Some(3));
        assert_eq!(reasons.value("17"), Some(17));
        assert_eq!(reasons.value("NO_SUCH_REASON"), None);
    }
}
