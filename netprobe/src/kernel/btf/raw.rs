//! A zero-copy reader of the BTF format: the bytes as read, one table of where each type
//! starts, and one sorted index of the named types netprobe looks up by name.
//!
//! Why not a general BTF library: parsing vmlinux BTF into owned types (a `String` per name, a
//! `Vec` per member list, a map of every name) took ~67 ms, the largest part of `netprobe
//! trace`'s start-up, to answer a few dozen questions. Here nothing is copied: one pass records
//! each type's offset (a few ms), types are read in place when asked for, and only the
//! struct/union/typedef/enum names are indexed (the kinds looked up by name).

use super::BtfError;

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;

pub const KIND_INT: u32 = 1;
pub const KIND_PTR: u32 = 2;
pub const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_ENUM: u32 = 6;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_VOLATILE: u32 = 9;
pub const KIND_CONST: u32 = 10;
pub const KIND_RESTRICT: u32 = 11;
pub const KIND_FUNC_PROTO: u32 = 13;
pub const KIND_VAR: u32 = 14;
pub const KIND_DATASEC: u32 = 15;
pub const KIND_DECL_TAG: u32 = 17;
pub const KIND_TYPE_TAG: u32 = 18;
pub const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

/// The kinds found by name: [`RawBtf::named`] indexes only these.
fn indexed(kind: u32) -> bool {
    matches!(
        kind,
        KIND_STRUCT | KIND_UNION | KIND_TYPEDEF | KIND_ENUM | KIND_ENUM64
    )
}

/// Bytes of a type's data after its 12-byte common header.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        0 => return None,
        k if k > KIND_MAX => return None,
        _ => 0,
    })
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// One type, read in place.
#[derive(Clone, Copy)]
pub struct TypeRef<'a> {
    pub name_off: u32,
    pub kind: u32,
    pub kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    pub size_or_type: u32,
    /// The kind's data after the common header (members, enumerators, parameters…).
    extra: &'a [u8],
}

impl<'a> TypeRef<'a> {
    /// The type's variable-length records of `width` bytes, as words.
    fn records(&self, width: usize) -> impl Iterator<Item = &'a [u8]> {
        self.extra.chunks_exact(width)
    }

    /// Struct or union members: (name offset, type id, bit offset, bitfield width or 0).
    pub fn members(&self) -> impl Iterator<Item = (u32, u32, u32, u32)> + 'a {
        let bitfields = self.kind_flag;
        self.records(12).map(move |m| {
            let offset = word(m, 8);
            let (bits, width) = if bitfields {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            (word(m, 0), word(m, 4), bits, width)
        })
    }

    /// Enumerators of an ENUM (value as the u32 BTF stores) or ENUM64: (name offset, value).
    pub fn enumerators(&self) -> impl Iterator<Item = (u32, u64)> + 'a {
        let wide = self.kind == KIND_ENUM64;
        self.records(if wide { 12 } else { 8 }).map(move |e| {
            let value = if wide {
                u64::from(word(e, 4)) | (u64::from(word(e, 8)) << 32)
            } else {
                u64::from(word(e, 4))
            };
            (word(e, 0), value)
        })
    }

    /// A function prototype's parameter type ids.
    pub fn parameters(&self) -> impl Iterator<Item = u32> + 'a {
        self.records(8).map(|p| word(p, 4))
    }
}

pub struct RawBtf {
    data: Vec<u8>,
    /// Start of the type section and of the string section, in `data`.
    types_at: usize,
    strings: std::ops::Range<usize>,
    /// Offset in the type section of each type, by id (id 0, void, has none: 0 unused).
    offsets: Vec<u32>,
    /// (name offset, id) of the indexed kinds, sorted by name then id.
    named: Vec<(u32, u32)>,
}

fn malformed(why: &str) -> BtfError {
    BtfError::Other(format!("malformed BTF: {why}"))
}

impl RawBtf {
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.len() < HEADER_MIN || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(malformed("no little-endian BTF header"));
        }
        if data[2] != 1 {
            return Err(malformed("version is not 1"));
        }
        let hdr_len = word(&data, 4) as usize;
        let [type_off, type_len, str_off, str_len] =
            [8, 12, 16, 20].map(|at| word(&data, at) as usize);
        let types_at = hdr_len + type_off;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types_at + type_len > data.len() || strings.end > data.len() || hdr_len < HEADER_MIN {
            return Err(malformed("sections beyond the data"));
        }
        let section = &data[types_at..types_at + type_len];
        let mut offsets = vec![0u32];
        let mut named = Vec::new();
        let mut at = 0usize;
        while at < section.len() {
            if at + 12 > section.len() {
                return Err(malformed("truncated type"));
            }
            let info = word(section, at + 4);
            let kind = (info >> 24) & 0x1f;
            let len = extra_len(kind, (info & 0xffff) as usize)
                .ok_or_else(|| malformed(&format!("unknown kind {kind}")))?;
            let name_off = word(section, at);
            if indexed(kind) && name_off != 0 {
                named.push((name_off, offsets.len() as u32));
            }
            offsets.push(at as u32);
            at += 12 + len;
        }
        if at != section.len() {
            return Err(malformed("type section overruns its length"));
        }
        let mut btf = Self {
            data,
            types_at,
            strings,
            offsets,
            named: Vec::new(),
        };
        named.sort_unstable_by(|a, b| {
            btf.str_bytes(a.0)
                .cmp(btf.str_bytes(b.0))
                .then(a.1.cmp(&b.1))
        });
        btf.named = named;
        Ok(btf)
    }

    /// The NUL-terminated string at `off` in the string section, without its NUL.
    fn str_bytes(&self, off: u32) -> &[u8] {
        let strings = &self.data[self.strings.clone()];
        let rest = strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    pub fn name(&self, off: u32) -> &str {
        std::str::from_utf8(self.str_bytes(off)).unwrap_or("")
    }

    /// Whether the string at `off` is `name`, without measuring it first.
    pub fn name_is(&self, off: u32, name: &str) -> bool {
        let strings = &self.data[self.strings.clone()];
        let start = off as usize;
        let end = start + name.len();
        strings.get(start..end) == Some(name.as_bytes()) && strings.get(end) == Some(&0)
    }

    /// Ids of the struct, union, typedef and enum types called `name`, in id order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = u32> + 'a {
        let first = self
            .named
            .partition_point(|(off, _)| self.str_bytes(*off) < name.as_bytes());
        self.named[first..]
            .iter()
            .take_while(move |(off, _)| self.str_bytes(*off) == name.as_bytes())
            .map(|(_, id)| *id)
    }

    /// Every type id but void's.
    pub fn ids(&self) -> std::ops::Range<u32> {
        1..self.offsets.len() as u32
    }

    /// The type `id`; `None` for void (id 0) and ids beyond the section.
    pub fn get(&self, id: u32) -> Option<TypeRef<'_>> {
        if id == 0 {
            return None;
        }
        let at = self.types_at + *self.offsets.get(id as usize)? as usize;
        let info = word(&self.data, at + 4);
        let kind = (info >> 24) & 0x1f;
        let len = extra_len(kind, (info & 0xffff) as usize)?;
        Some(TypeRef {
            name_off: word(&self.data, at),
            kind,
            kind_flag: info >> 31 != 0,
            size_or_type: word(&self.data, at + 8),
            extra: &self.data[at + 12..at + 12 + len],
        })
    }

    /// The type `id`, which must exist (void is not one).
    pub fn type_by_id(&self, id: u32) -> Result<TypeRef<'_>, BtfError> {
        self.get(id)
            .ok_or_else(|| BtfError::Other(format!("no type with id {id}")))
    }

    /// The bytes as read (aya parses its own form from them).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}
