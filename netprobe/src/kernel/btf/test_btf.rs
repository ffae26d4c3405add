//! A minimal BTF writer, so that unit tests run on hand-made type information with the
//! shapes the kernel uses (anonymous unions, typedef'd structs, enums).

pub const KIND_INT: u32 = 1;
pub const KIND_PTR: u32 = 2;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_ENUM: u32 = 6;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_CONST: u32 = 10;
pub const KIND_FUNC_PROTO: u32 = 13;

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
    pub fn constant(&mut self, to: u32) -> u32 {
        self.header("", KIND_CONST, 0, to)
    }
    /// A function prototype returning void, with unnamed parameters of these types.
    pub fn func_proto(&mut self, params: &[u32]) -> u32 {
        let id = self.header("", KIND_FUNC_PROTO, params.len() as u32, 0);
        for ty in params {
            self.types.extend_from_slice(&0u32.to_le_bytes());
            self.types.extend_from_slice(&ty.to_le_bytes());
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

/// Kernel-shaped types: members behind anonymous unions/structs, a typedef'd struct
/// (`possible_net_t`), nested named structs.
pub fn kernel_shaped() -> super::KernelBtf {
    let mut b = Builder::new();
    let scalars = Scalars {
        u8_t: b.int("unsigned char", 1),
        u16_t: b.int("__u16", 2),
        u32_t: b.int("unsigned int", 4),
        int_t: b.int("int", 4),
    };
    let possible_net_t = add_sock(&mut b, &scalars);
    add_skb_and_device(&mut b, &scalars, possible_net_t);
    add_tcp_skb_cb(&mut b, &scalars);
    add_enums(&mut b);
    super::KernelBtf::from_bytes(&b.build()).unwrap()
}

/// Type ids of the integer types the structs use.
#[derive(Clone, Copy)]
struct Scalars {
    u8_t: u32,
    u16_t: u32,
    u32_t: u32,
    int_t: u32,
}

/// `struct sock` and what it reaches (namespace, socket inode); returns `possible_net_t`.
fn add_sock(b: &mut Builder, s: &Scalars) -> u32 {
    let Scalars {
        u8_t,
        u16_t,
        u32_t,
        int_t,
    } = *s;
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
    possible_net_t
}

/// `struct sk_buff`, with `dev` two anonymous levels down, and `struct net_device`.
fn add_skb_and_device(b: &mut Builder, s: &Scalars, possible_net_t: u32) {
    let Scalars {
        u8_t,
        u16_t,
        u32_t,
        int_t,
    } = *s;
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
}

/// `struct tcp_skb_cb`, `tcp_gso_segs` inside an anonymous union.
fn add_tcp_skb_cb(b: &mut Builder, s: &Scalars) {
    let Scalars { u16_t, u32_t, .. } = *s;
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
}

/// Drop reasons (core, subsystems, a subsystem's own enum) and the anonymous softirq enum.
fn add_enums(b: &mut Builder) {
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
}
