//! Where the members the kernel programs read sit in this kernel's structs: byte offsets
//! (through anonymous members and typedefs), one-byte bitfields, and the two layouts handed to
//! the programs.

use netprobe_common::{KernelLayout, ReceiveLayout, SockFlowLayout, OFFSET_ABSENT};

use super::{BtfError, KernelBtf};

impl KernelBtf {
    /// Finds `name` among the members of `s`, looking inside anonymous structs and unions.
    /// Returns (bit offset, member type id).
    fn find_member(&self, s: u32, name: &str) -> Result<Option<(u32, u32)>, BtfError> {
        match self.find_member_bits(s, name)? {
            Some((_, _, Some(width))) if width != 0 => Err(BtfError::Unaligned(name.to_string())),
            Some((bits, id, _)) => Ok(Some((bits, id))),
            None => Ok(None),
        }
    }

    /// Like `find_member`, also for bitfields: (bit offset, type id, bitfield width).
    fn find_member_bits(
        &self,
        s: u32,
        name: &str,
    ) -> Result<Option<(u32, u32, Option<u32>)>, BtfError> {
        let aggregate = self.btf.type_by_id(s)?;
        for (name_off, type_id, bit_offset, width) in aggregate.members() {
            let member_name = self.btf.name(name_off);
            if member_name == name {
                return Ok(Some((bit_offset, type_id, Some(width).filter(|w| *w != 0))));
            }
            if member_name.is_empty() {
                if let Some(inner) = self.aggregate_of(type_id)? {
                    if let Some((bits, id, width)) = self.find_member_bits(inner, name)? {
                        return Ok(Some((bit_offset + bits, id, width)));
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
            self.find_member_bits(s, name)?
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
                self.find_member(current, part)?
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

    /// What the receive program reads (`tcp_probe` raw tracepoint): the segment's `end_seq`
    /// and the socket's receive state.
    pub fn receive_layout(&self) -> Result<ReceiveLayout, BtfError> {
        Ok(ReceiveLayout {
            tcb_end_seq: self.offset_of("tcp_skb_cb", "end_seq")?,
            rcv_nxt: self.offset_of("tcp_sock", "rcv_nxt")?,
            ooo_root: self.offset_of("tcp_sock", "out_of_order_queue.rb_node")?,
            ooo_last_skb: self.offset_of("tcp_sock", "ooo_last_skb")?,
        })
    }

    /// The `sock_common` members naming a socket's flow. IPv6 addresses are optional (a
    /// kernel without IPv6 has none).
    pub fn sock_flow_layout(&self) -> Result<SockFlowLayout, BtfError> {
        let common = |path: &str| self.offset_of("sock", &format!("__sk_common.{path}"));
        Ok(SockFlowLayout {
            family: common("skc_family")?,
            num: common("skc_num")?,
            dport: common("skc_dport")?,
            daddr: common("skc_daddr")?,
            rcv_saddr: common("skc_rcv_saddr")?,
            v6_daddr: common("skc_v6_daddr").unwrap_or(OFFSET_ABSENT),
            v6_rcv_saddr: common("skc_v6_rcv_saddr").unwrap_or(OFFSET_ABSENT),
            _pad0: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_btf::*;
    use super::*;

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
}
