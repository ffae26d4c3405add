//! Reading what the programs keep in kernel maps: the ring buffer for the reader, and the exact
//! totals summed over CPUs.

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use netprobe_common::{
    DropSiteKey, FlowKey, NapiKey, NapiTotals, NetRxTotals, NonNetworkKey, ReceiveTotals,
    RetransmitTotals, SiteCount, COUNTER_NAMES, COUNTER_SLOTS,
};

use super::{LoadError, Probe};

/// Exact totals kept in kernel maps.
#[derive(Debug, Clone, Default)]
pub struct KernelTotals {
    /// `COUNTER_*` sums over CPUs.
    pub counters: Vec<(u32, &'static str, u64)>,
    pub flows: Vec<(FlowKey, RetransmitTotals)>,
    /// Every drop by (raw reason, count per CPU): the drop-site table's counts by reason, plus
    /// the drops counted by reason alone.
    pub reasons: Vec<(u32, Vec<u64>)>,
    /// The drops counted by reason alone (`DROP_REASONS`: their site did not fit the table).
    pub reasons_only: Vec<(u32, Vec<u64>)>,
    /// NET_RX softirq totals, indexed by CPU (empty when the hooks are inactive).
    pub net_rx: Vec<NetRxTotals>,
    /// Per-flow receive-path totals (summed over CPUs).
    pub receive_flows: Vec<(FlowKey, ReceiveTotals)>,
    /// (device, totals per CPU) of NAPI polls.
    pub napi: Vec<(String, Vec<NapiTotals>)>,
    /// Frees that are not network drops, by (raw reason, location): summed over CPUs.
    pub non_network: Vec<(NonNetworkKey, u64)>,
    /// Drops by site, per CPU.
    pub sites: Vec<(DropSiteKey, Vec<u64>)>,
    /// Stream mode: drops counted but not streamed, their site being over its rate (storm
    /// sampling), by site, summed over CPUs; sites with none are left out.
    pub sampled_out: Vec<(DropSiteKey, u64)>,
}

impl KernelTotals {
    pub fn counter(&self, index: u32) -> u64 {
        self.counters
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, _, v)| *v)
            .unwrap_or(0)
    }
}

/// Drops by reason and CPU: the sites' counts summed by reason, plus those counted by reason
/// alone.
fn reasons_with_sites(
    reasons_only: &[(u32, Vec<u64>)],
    sites: &[(DropSiteKey, Vec<u64>)],
) -> Vec<(u32, Vec<u64>)> {
    let mut by_reason: std::collections::BTreeMap<u32, Vec<u64>> =
        reasons_only.iter().cloned().collect();
    for (key, per_cpu) in sites {
        let counts = by_reason.entry(key.reason).or_default();
        if counts.len() < per_cpu.len() {
            counts.resize(per_cpu.len(), 0);
        }
        for (total, count) in counts.iter_mut().zip(per_cpu) {
            *total += count;
        }
    }
    by_reason.into_iter().collect()
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |e| LoadError::Map {
        map,
        message: e.to_string(),
    }
}

impl Probe {
    /// Takes the ring buffer out of the object for the reader.
    pub fn take_events(&mut self) -> Option<Map> {
        self.ebpf.take_map("EVENTS")
    }

    /// Reads the exact totals from the kernel maps.
    pub fn kernel_totals(&self) -> Result<KernelTotals, LoadError> {
        let (sites, sampled_out) = self.drop_sites()?;
        let reasons_only = self.drop_reasons()?;
        Ok(KernelTotals {
            counters: self.counters()?,
            flows: self.retransmit_flows()?,
            reasons: reasons_with_sites(&reasons_only, &sites),
            reasons_only,
            receive_flows: self.receive_flows()?,
            net_rx: self.net_rx()?,
            napi: self.napi_polls()?,
            non_network: self.non_network_drops()?,
            sites,
            sampled_out,
        })
    }

    /// The counters alone (one small per-CPU array): cheap enough to read every second.
    pub fn counter_totals(&self) -> Result<KernelTotals, LoadError> {
        Ok(KernelTotals {
            counters: self.counters()?,
            ..KernelTotals::default()
        })
    }

    /// The drop-site table alone: drops and sampled-out drops by site.
    pub fn site_totals(&self) -> Result<KernelTotals, LoadError> {
        let (sites, sampled_out) = self.drop_sites()?;
        Ok(KernelTotals {
            sites,
            sampled_out,
            ..KernelTotals::default()
        })
    }

    /// Forgets flows from the retransmit table (count mode keeps it bounded over days by
    /// forgetting flows long idle, once their counts are taken). A flow that retransmits
    /// again starts a new entry.
    pub fn forget_retransmit_flows(&mut self, keys: &[FlowKey]) -> Result<(), LoadError> {
        self.forget_flows::<RetransmitTotals>("RETRANSMIT_FLOWS", keys)
    }

    /// The same for the receive table (count mode with the receive hook: the monitor's
    /// Prometheus export).
    pub fn forget_receive_flows(&mut self, keys: &[FlowKey]) -> Result<(), LoadError> {
        self.forget_flows::<ReceiveTotals>("RECEIVE_FLOWS", keys)
    }

    fn forget_flows<T: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[FlowKey],
    ) -> Result<(), LoadError> {
        let map = self.ebpf.map_mut(name).ok_or(LoadError::Map {
            map: name,
            message: "missing".into(),
        })?;
        let mut table: PerCpuHashMap<&mut MapData, FlowKey, T> =
            PerCpuHashMap::try_from(map).map_err(map_error(name))?;
        for key in keys {
            // Already gone is fine: nothing else deletes, but a failed delete must not stop
            // the monitor.
            let _ = table.remove(key);
        }
        Ok(())
    }

    /// A map every object has.
    fn required_map(&self, map: &'static str) -> Result<&Map, LoadError> {
        self.ebpf.map(map).ok_or(LoadError::Map {
            map,
            message: "missing".into(),
        })
    }

    fn counters(&self) -> Result<Vec<(u32, &'static str, u64)>, LoadError> {
        let counters_map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.required_map("COUNTERS")?).map_err(map_error("COUNTERS"))?;
        let mut counters = Vec::new();
        for (index, name) in COUNTER_NAMES {
            debug_assert!(index < COUNTER_SLOTS);
            let per_cpu = counters_map.get(&index, 0).map_err(map_error("COUNTERS"))?;
            counters.push((index, name, per_cpu.iter().sum()));
        }
        Ok(counters)
    }

    fn retransmit_flows(&self) -> Result<Vec<(FlowKey, RetransmitTotals)>, LoadError> {
        let flows_map: PerCpuHashMap<&MapData, FlowKey, RetransmitTotals> =
            PerCpuHashMap::try_from(self.required_map("RETRANSMIT_FLOWS")?)
                .map_err(map_error("RETRANSMIT_FLOWS"))?;
        let mut flows = Vec::new();
        for entry in flows_map.iter() {
            let (key, per_cpu) = entry.map_err(map_error("RETRANSMIT_FLOWS"))?;
            let mut total = RetransmitTotals::default();
            for v in per_cpu.iter() {
                add_retransmits(&mut total, v);
            }
            flows.push((key, total));
        }
        Ok(flows)
    }

    fn drop_reasons(&self) -> Result<Vec<(u32, Vec<u64>)>, LoadError> {
        let reasons_map: PerCpuHashMap<&MapData, u32, u64> =
            PerCpuHashMap::try_from(self.required_map("DROP_REASONS")?)
                .map_err(map_error("DROP_REASONS"))?;
        let mut reasons = Vec::new();
        for entry in reasons_map.iter() {
            let (reason, per_cpu) = entry.map_err(map_error("DROP_REASONS"))?;
            reasons.push((reason, per_cpu.iter().copied().collect()));
        }
        Ok(reasons)
    }

    fn non_network_drops(&self) -> Result<Vec<(NonNetworkKey, u64)>, LoadError> {
        let table: PerCpuHashMap<&MapData, NonNetworkKey, u64> =
            PerCpuHashMap::try_from(self.required_map("NON_NETWORK_DROPS")?)
                .map_err(map_error("NON_NETWORK_DROPS"))?;
        let mut sites = Vec::new();
        for entry in table.iter() {
            let (key, per_cpu) = entry.map_err(map_error("NON_NETWORK_DROPS"))?;
            sites.push((key, per_cpu.iter().sum()));
        }
        Ok(sites)
    }

    /// Drops by site per CPU, and the sampled-out drops by site: from `DROP_SITES` in stream
    /// mode, from `SITE_SLOTS` and `SITE_COUNTS` in count mode (the other is empty).
    #[allow(clippy::type_complexity)]
    fn drop_sites(
        &self,
    ) -> Result<(Vec<(DropSiteKey, Vec<u64>)>, Vec<(DropSiteKey, u64)>), LoadError> {
        let table: PerCpuHashMap<&MapData, DropSiteKey, SiteCount> =
            PerCpuHashMap::try_from(self.required_map("DROP_SITES")?)
                .map_err(map_error("DROP_SITES"))?;
        let (mut sites, mut sampled_out) = (Vec::new(), Vec::new());
        for entry in table.iter() {
            let (key, per_cpu) = entry.map_err(map_error("DROP_SITES"))?;
            sites.push((key, per_cpu.iter().map(|c| c.drops).collect()));
            let sampled: u64 = per_cpu.iter().map(|c| c.sampled_out).sum();
            if sampled > 0 {
                sampled_out.push((key, sampled));
            }
        }
        sites.extend(self.slotted_sites()?);
        Ok((sites, sampled_out))
    }

    /// Count mode's sites: each CPU's slot of each site (`SITE_SLOTS`, slot + 1, 0 where the
    /// CPU never saw the site), read in that CPU's column of `SITE_COUNTS`.
    fn slotted_sites(&self) -> Result<Vec<(DropSiteKey, Vec<u64>)>, LoadError> {
        let slots_map: PerCpuHashMap<&MapData, DropSiteKey, u32> =
            PerCpuHashMap::try_from(self.required_map("SITE_SLOTS")?)
                .map_err(map_error("SITE_SLOTS"))?;
        let mut slotted = Vec::new();
        for entry in slots_map.iter() {
            let (key, per_cpu) = entry.map_err(map_error("SITE_SLOTS"))?;
            slotted.push((key, per_cpu.iter().copied().collect::<Vec<u32>>()));
        }
        if slotted.is_empty() {
            return Ok(Vec::new());
        }
        let counts_map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.required_map("SITE_COUNTS")?)
                .map_err(map_error("SITE_COUNTS"))?;
        // One read per slot in use: all CPUs' counts of that slot number.
        let mut columns: std::collections::HashMap<u32, Vec<u64>> = Default::default();
        let mut sites = Vec::with_capacity(slotted.len());
        for (key, slots) in slotted {
            let mut counts = vec![0; slots.len()];
            for (cpu, stored) in slots.iter().enumerate() {
                let Some(slot) = stored.checked_sub(1) else {
                    continue;
                };
                if let std::collections::hash_map::Entry::Vacant(e) = columns.entry(slot) {
                    let per_cpu = counts_map.get(&slot, 0).map_err(map_error("SITE_COUNTS"))?;
                    e.insert(per_cpu.iter().copied().collect());
                }
                counts[cpu] = columns[&slot].get(cpu).copied().unwrap_or(0);
            }
            sites.push((key, counts));
        }
        Ok(sites)
    }

    fn receive_flows(&self) -> Result<Vec<(FlowKey, ReceiveTotals)>, LoadError> {
        let mut receive_flows = Vec::new();
        if let Some(map) = self.ebpf.map("RECEIVE_FLOWS") {
            let table: PerCpuHashMap<&MapData, FlowKey, ReceiveTotals> =
                PerCpuHashMap::try_from(map).map_err(map_error("RECEIVE_FLOWS"))?;
            for entry in table.iter() {
                let (key, per_cpu) = entry.map_err(map_error("RECEIVE_FLOWS"))?;
                let mut total = ReceiveTotals::default();
                for v in per_cpu.iter() {
                    total.add(v);
                }
                receive_flows.push((key, total));
            }
        }
        Ok(receive_flows)
    }

    fn net_rx(&self) -> Result<Vec<NetRxTotals>, LoadError> {
        let Some(map) = self.ebpf.map("NET_RX") else {
            return Ok(Vec::new());
        };
        let array: PerCpuArray<&MapData, NetRxTotals> =
            PerCpuArray::try_from(map).map_err(map_error("NET_RX"))?;
        Ok(array
            .get(&0, 0)
            .map_err(map_error("NET_RX"))?
            .iter()
            .copied()
            .collect())
    }

    fn napi_polls(&self) -> Result<Vec<(String, Vec<NapiTotals>)>, LoadError> {
        let mut napi = Vec::new();
        if let Some(map) = self.ebpf.map("NAPI_POLLS") {
            let table: PerCpuHashMap<&MapData, NapiKey, NapiTotals> =
                PerCpuHashMap::try_from(map).map_err(map_error("NAPI_POLLS"))?;
            for entry in table.iter() {
                let (key, per_cpu) = entry.map_err(map_error("NAPI_POLLS"))?;
                let dev = netprobe_common::decode::nul_terminated(&key.dev);
                napi.push((dev, per_cpu.iter().copied().collect()));
            }
            napi.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(napi)
    }
}

/// Adds one CPU's totals of a flow to the sum.
fn add_retransmits(total: &mut RetransmitTotals, v: &RetransmitTotals) {
    total.merge_readings(v);
    let sums = [
        (&mut total.sent, v.sent),
        (&mut total.segs, v.segs),
        (&mut total.bytes, v.bytes),
        (&mut total.failed_counted, v.failed_counted),
        (&mut total.failed_counted_segs, v.failed_counted_segs),
        (&mut total.failed_busy_segs, v.failed_busy_segs),
        (&mut total.aborted, v.aborted),
        (&mut total.aborted_segs, v.aborted_segs),
        (&mut total.unclassified, v.unclassified),
        (&mut total.unclassified_segs, v.unclassified_segs),
    ];
    for (sum, n) in sums {
        *sum += n;
    }
    let arrays = [
        (&mut total.kinds, &v.kinds),
        (&mut total.kind_segs, &v.kind_segs),
        (&mut total.timer_kinds, &v.timer_kinds),
        (&mut total.timer_segs, &v.timer_segs),
        (&mut total.failed_kinds, &v.failed_kinds),
    ];
    for (sum, per_kind) in arrays {
        for (s, n) in sum.iter_mut().zip(per_kind) {
            *s += n;
        }
    }
    for (s, n) in total.failed_causes.iter_mut().zip(v.failed_causes) {
        *s += n;
    }
    // A handshake's end is counted on the CPU it happened on.
    total.handshakes_completed += v.handshakes_completed;
    total.handshakes_failed += v.handshakes_failed;
    // The same socket on every CPU that saw the flow.
    if v.sock_ino != 0 {
        total.sock_ino = v.sock_ino;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_sums_over_cpus_and_keeps_its_socket() {
        let mut first = RetransmitTotals {
            sent: 2,
            failed_counted: 1,
            failed_counted_segs: 2,
            segs: 3,
            bytes: 4000,
            sock_ino: 77,
            ..Default::default()
        };
        first.kinds[1] = 2;
        first.timer_segs[2] = 1;
        // A CPU that saw the flow without its socket.
        let mut second = RetransmitTotals {
            sent: 1,
            segs: 2,
            bytes: 1448,
            ..Default::default()
        };
        second.kinds[1] = 1;
        second.kind_segs[1] = 2;
        second.timer_kinds[3] = 4;
        second.aborted = 5;
        second.failed_kinds[4] = 1;
        second.failed_causes[1] = 1;
        first.failed_causes[1] = 2;
        first.handshakes_failed = 1;
        second.handshakes_failed = 2;
        second.handshakes_completed = 1;

        let mut total = RetransmitTotals::default();
        for cpu in [&first, &second] {
            add_retransmits(&mut total, cpu);
        }
        assert_eq!(
            (total.sent, total.failed_counted, total.segs, total.bytes),
            (3, 1, 5, 5448)
        );
        assert_eq!((total.failed_counted_segs, total.aborted), (2, 5));
        assert_eq!((total.failed_kinds[4], total.failed_causes[1]), (1, 3));
        assert_eq!((total.kinds[1], total.kind_segs[1]), (3, 2));
        assert_eq!((total.timer_kinds[3], total.timer_segs[2]), (4, 1));
        assert_eq!(total.sock_ino, 77);
        assert_eq!(
            (total.handshakes_completed, total.handshakes_failed),
            (1, 3)
        );
    }

    /// D-SACK and reordering readings: the earliest first reading and the latest one of the
    /// CPUs that recorded an attempt; a CPU that recorded none (zeros) changes nothing.
    #[test]
    fn socket_readings_span_every_cpu_that_saw_an_attempt() {
        let cpu = |sent, first, latest, reord: (u32, u32)| RetransmitTotals {
            sent,
            dsack_dups_first: first,
            dsack_dups_latest: latest,
            reord_seen_first: reord.0,
            reord_seen_latest: reord.1,
            ..Default::default()
        };
        let idle = RetransmitTotals::default();
        let mut total = RetransmitTotals::default();
        for v in [
            &idle,
            &cpu(4, 120, 180, (3, 5)),
            &idle,
            &cpu(2, 100, 150, (4, 9)),
        ] {
            add_retransmits(&mut total, v);
        }
        assert_eq!(total.sent, 6);
        assert_eq!(
            (total.dsack_dups_first, total.dsack_dups_latest),
            (100, 180)
        );
        assert_eq!((total.dsacked_segs(), total.reordering_seen()), (80, 6));
    }

    #[test]
    fn a_missing_counter_reads_as_zero() {
        let totals = KernelTotals {
            counters: vec![(0, "first", 5), (3, "fourth", 9)],
            ..Default::default()
        };
        assert_eq!(totals.counter(3), 9);
        assert_eq!(totals.counter(1), 0);
    }
}
