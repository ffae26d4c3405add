//! Storms said as they happen: once a second, when drops were counted, the drop-site table
//! is compared with the previous look, and each site that streamed only a sample gets a
//! `storm:` line (text) or `{"type":"storm"}` object (NDJSON) in the stream; so does a
//! storm's end, and events the full ring lost. The summary's counts stay exact either way.

use std::{collections::HashMap, time::Instant};

use netprobe_common::{
    DropSiteKey, COUNTER_DROP_LOST, COUNTER_DROP_SEEN, COUNTER_RECEIVE_LOST,
    COUNTER_RETRANSMIT_LOST,
};
use serde::Serialize;

use crate::{
    kernel::{
        btf::DropReasons,
        kallsyms::Symbolizer,
        loader::{LoadError, Probe, STORM_RATE},
    },
    model::{
        event::IfName,
        storms::{StormNote, StormTracker},
    },
};

/// How often the table is looked at.
pub const STORM_LOOK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Sites named per look; the rest are summed in one line.
const SITES_SAID: usize = 5;

/// The storm side of a trace.
pub struct StormWatch {
    max_rate: Option<u32>,
    tracker: StormTracker,
    /// (drops seen, events lost) at the previous look.
    previous: (u64, u64),
    previous_at: Instant,
    /// Device names by (namespace, ifindex), learnt from the streamed drops: a storm's first
    /// drops each second are streamed, so its device is named by the time it is said.
    devices: HashMap<(u32, u32), IfName>,
    /// The (namespace, ifindex) learnt last: a storm's events repeat one device, and this is
    /// on the per-event path.
    last_learnt: (u32, u32),
}

/// One `{"type":"storm"}` line.
#[derive(Debug, Serialize)]
pub struct StormJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `sampling` (a site streams only a sample), `over` (it no longer does) or
    /// `events_lost` (the ring was full: events of every kind lost).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    pub seconds: f64,
    /// Drops at the site in `seconds` (exact), or events lost.
    pub count: u64,
    /// Of the drops, those counted only (not streamed).
    pub sampled_out: u64,
    /// The per-site limit, per second and CPU, and why it applied: `max_rate` or
    /// `reader_behind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<&'static str>,
}

/// A note ready to print both ways.
pub struct Said {
    pub text: String,
    pub json: String,
}

impl StormWatch {
    pub fn new(max_rate: Option<u32>) -> Self {
        let now = Instant::now();
        StormWatch {
            max_rate,
            tracker: StormTracker::new(now),
            previous: (0, 0),
            previous_at: now,
            devices: HashMap::new(),
            last_learnt: (0, 0),
        }
    }

    /// Remembers the name of a device a streamed drop was on.
    #[inline]
    pub fn learn_device(&mut self, netns: u32, ifindex: u32, name: IfName) {
        if self.last_learnt == (netns, ifindex) {
            return;
        }
        self.last_learnt = (netns, ifindex);
        self.devices.entry((netns, ifindex)).or_insert(name);
    }

    /// One look: reads the counters, and the drop-site table when drops were counted since
    /// the previous look (a quiet trace reads one small array a second).
    pub fn look(
        &mut self,
        probe: &Probe,
        reasons: &DropReasons,
        symbols: &Symbolizer,
    ) -> Result<Vec<Said>, LoadError> {
        let now = Instant::now();
        let counters = probe.counter_totals()?;
        let seen = counters.counter(COUNTER_DROP_SEEN);
        let lost = [
            COUNTER_DROP_LOST,
            COUNTER_RETRANSMIT_LOST,
            COUNTER_RECEIVE_LOST,
        ]
        .into_iter()
        .map(|c| counters.counter(c))
        .sum::<u64>();
        let seconds = now.duration_since(self.previous_at).as_secs_f64();
        let mut said = Vec::new();
        if lost > self.previous.1 {
            said.push(self.lost_line(lost - self.previous.1, seconds));
        }
        if seen > self.previous.0 || self.tracker.storming() > 0 {
            let sites = probe.site_totals()?;
            let notes = self.tracker.look(&sites.sites, &sites.sampled_out, now);
            said.extend(self.notes_said(&notes, reasons, symbols));
        }
        self.previous = (seen, lost);
        self.previous_at = now;
        Ok(said)
    }

    fn notes_said(
        &self,
        notes: &[StormNote],
        reasons: &DropReasons,
        symbols: &Symbolizer,
    ) -> Vec<Said> {
        let (sampling, over): (Vec<&StormNote>, Vec<&StormNote>) = notes
            .iter()
            .partition(|n| matches!(n, StormNote::Sampling { .. }));
        let mut said: Vec<Said> = sampling
            .iter()
            .take(SITES_SAID)
            .chain(&over)
            .map(|note| self.note_said(note, reasons, symbols))
            .collect();
        if sampling.len() > SITES_SAID {
            let rest = &sampling[SITES_SAID..];
            let (drops, sampled_out) = rest.iter().fold((0, 0), |(d, s), n| match n {
                StormNote::Sampling {
                    drops, sampled_out, ..
                } => (d + drops, s + sampled_out),
                StormNote::Over { .. } => (d, s),
            });
            said.push(Said {
                text: format!(
                    "storm: {} more sites sampled: {drops} drops, {sampled_out} counted only",
                    rest.len()
                ),
                json: serde_json::to_string(&StormJson {
                    state: "sampling",
                    count: drops,
                    sampled_out,
                    ..StormJson::empty()
                })
                .expect("storm line serializes"),
            });
        }
        said
    }

    fn note_said(&self, note: &StormNote, reasons: &DropReasons, symbols: &Symbolizer) -> Said {
        let (key, state, count, sampled_out, seconds) = match *note {
            StormNote::Sampling {
                key,
                drops,
                sampled_out,
                over,
            } => (key, "sampling", drops, sampled_out, over.as_secs_f64()),
            StormNote::Over {
                key,
                lasted,
                drops,
                sampled_out,
            } => (key, "over", drops, sampled_out, lasted.as_secs_f64()),
        };
        let reason = reasons.name(key.reason);
        let location = symbols.resolve(key.location);
        let interface = self.interface(&key);
        let (limit, why) = self.limit();
        let place = match &interface {
            Some(name) => format!("{reason} at {location} on {name} (netns {})", key.netns),
            None => format!("{reason} at {location} (netns {})", key.netns),
        };
        let text = if state == "sampling" {
            let streamed = count.saturating_sub(sampled_out);
            let per_s = count as f64 / seconds.max(1e-3);
            format!(
                "storm: {} drops/s {place}; streaming {streamed} of {count} ({}, at most {limit}/s per CPU: {}); every drop is counted in the summary",
                human(per_s),
                one_in(count, streamed),
                if why == "max_rate" { "--max-rate" } else { "the reader is behind" },
            )
        } else {
            format!(
                "storm over: {place} after {seconds:.0} s: {count} drops, {} streamed",
                count.saturating_sub(sampled_out)
            )
        };
        let json = serde_json::to_string(&StormJson {
            state,
            reason: Some(&reason),
            location: Some(&location),
            interface: interface.as_deref(),
            netns: Some(key.netns),
            seconds: (seconds * 1000.0).round() / 1000.0,
            count,
            sampled_out,
            limit: (state == "sampling").then_some(limit),
            why: (state == "sampling").then_some(why),
            ..StormJson::empty()
        })
        .expect("storm line serializes");
        Said { text, json }
    }

    fn lost_line(&self, lost: u64, seconds: f64) -> Said {
        Said {
            text: format!(
                "storm: {lost} events lost in the last {seconds:.1} s (the ring was full; raise --ring-size or set --max-rate); the summary's counts stay exact"
            ),
            json: serde_json::to_string(&StormJson {
                state: "events_lost",
                seconds: (seconds * 1000.0).round() / 1000.0,
                count: lost,
                ..StormJson::empty()
            })
            .expect("storm line serializes"),
        }
    }

    /// The per-site limit: `--max-rate` when set (the kernel lowers it to the storm rate
    /// while the reader is behind, which the agent cannot see from here), else the storm
    /// rate, which applies only while the reader is behind.
    fn limit(&self) -> (u32, &'static str) {
        match self.max_rate {
            Some(rate) => (rate, "max_rate"),
            None => (STORM_RATE, "reader_behind"),
        }
    }

    fn interface(&self, key: &DropSiteKey) -> Option<String> {
        if key.ifindex == 0 {
            return None;
        }
        Some(
            self.devices
                .get(&(key.netns, key.ifindex))
                .map(|n| n.as_str().to_string())
                .unwrap_or_else(|| format!("ifindex {}", key.ifindex)),
        )
    }
}

impl StormJson<'_> {
    fn empty() -> Self {
        StormJson {
            kind: "storm",
            state: "",
            reason: None,
            location: None,
            interface: None,
            netns: None,
            seconds: 0.0,
            count: 0,
            sampled_out: 0,
            limit: None,
            why: None,
        }
    }
}

/// "182k", "1.2M": a rate as people read it.
fn human(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.1}M", per_s / 1e6)
    } else if per_s >= 1e4 {
        format!("{:.0}k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// "1 in 910".
fn one_in(count: u64, streamed: u64) -> String {
    if streamed == 0 {
        "none streamed".into()
    } else {
        format!("1 in {}", (count as f64 / streamed as f64).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ratios_read_as_people_say_them() {
        assert_eq!(human(182_400.0), "182k");
        assert_eq!(human(1_250_000.0), "1.2M");
        assert_eq!(human(950.0), "950");
        assert_eq!(one_in(182_000, 200), "1 in 910");
        assert_eq!(one_in(10, 0), "none streamed");
    }

    #[test]
    fn the_limit_said_is_the_one_that_applied() {
        assert_eq!(StormWatch::new(Some(10)).limit(), (10, "max_rate"));
        assert_eq!(StormWatch::new(None).limit(), (STORM_RATE, "reader_behind"));
    }
}
