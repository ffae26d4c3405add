//! Reads the ring buffer with tokio's `AsyncFd`: the task sleeps in epoll until the kernel
//! signals data, then drains everything available. No polling interval, no busy loop.

use std::io;

use aya::maps::{Map, MapData, RingBuf};
use netprobe_common::decode::{DecodeError, Event};
use tokio::io::{unix::AsyncFd, Interest};

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that did not decode (should stay zero; counted, never ignored).
    pub decode_errors: u64,
    pub last_decode_error: Option<DecodeError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("the EVENTS map is not a ring buffer: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("cannot register the ring buffer with the event loop: {0}")]
    Io(#[from] io::Error),
}

impl EventReader {
    pub fn new(map: Map) -> Result<Self, ReaderError> {
        let ring = RingBuf::try_from(map)?;
        Ok(Self {
            // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the
            // AsyncFd (and the RingBuf inside it) is dropped.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|e| ReaderError::Io(io::Error::from(e)))?,
            decode_errors: 0,
            last_decode_error: None,
        })
    }

    /// Waits until the kernel has queued events, then appends all queued events to `out`.
    pub async fn read_batch(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let (ring, errors, last) = (
            guard.get_inner_mut(),
            &mut self.decode_errors,
            &mut self.last_decode_error,
        );
        drain_into(ring, out, errors, last);
        guard.clear_ready();
        Ok(())
    }

    /// Appends whatever is queued now, without waiting (used after detaching, so that every
    /// event the programs queued is accounted for).
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        let ring = self.ring.get_mut();
        drain_into(
            ring,
            out,
            &mut self.decode_errors,
            &mut self.last_decode_error,
        );
    }
}

fn drain_into(
    ring: &mut RingBuf<MapData>,
    out: &mut Vec<Event>,
    errors: &mut u64,
    last: &mut Option<DecodeError>,
) {
    while let Some(item) = ring.next() {
        accept_record(&item, out, errors, last);
    }
}

/// Decodes one ring-buffer record into `out`, or counts it as a decode error. `record` is the
/// item exactly as aya hands it over: its length is the size the program reserved (the ring
/// buffer's 8-byte rounding only advances the consumer position), so a record shorter or
/// longer than its kind's struct is a real mismatch and counted, never cut to fit.
fn accept_record(
    record: &[u8],
    out: &mut Vec<Event>,
    errors: &mut u64,
    last: &mut Option<DecodeError>,
) {
    match Event::try_from(record) {
        Ok(event) => out.push(event),
        Err(e) => {
            *errors += 1;
            *last = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_common::{decode::Encode, DropEvent, EventHeader, EventKind};

    fn drop_record() -> Vec<u8> {
        DropEvent {
            header: EventHeader {
                kind: EventKind::Drop.id(),
                cpu: 2,
                ts_ns: 7,
                ..EventHeader::default()
            },
            reason: 2,
            ..DropEvent::default()
        }
        .encode()
    }

    #[test]
    fn records_of_the_wrong_length_are_counted_not_decoded() {
        let good = drop_record();
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 8]);
        let short = &good[..good.len() - 4];
        let (mut out, mut errors, mut last) = (Vec::new(), 0, None);

        accept_record(&good, &mut out, &mut errors, &mut last);
        assert_eq!((out.len(), errors, &last), (1, 0, &None));
        assert!(matches!(out[0], Event::Drop(e) if e.reason == 2 && e.header.cpu == 2));

        accept_record(&padded, &mut out, &mut errors, &mut last);
        assert_eq!(out.len(), 1);
        assert_eq!(errors, 1);
        assert_eq!(
            last,
            Some(DecodeError::Long {
                what: "drop event",
                len: 120,
                size: 112
            })
        );

        accept_record(short, &mut out, &mut errors, &mut last);
        accept_record(&[9, 0, 0, 0], &mut out, &mut errors, &mut last);
        assert_eq!(out.len(), 1);
        assert_eq!(errors, 3);
        assert!(matches!(
            last,
            Some(DecodeError::Short {
                len: 4,
                need: 16,
                ..
            })
        ));

        accept_record(&good, &mut out, &mut errors, &mut last);
        assert_eq!(
            (out.len(), errors),
            (2, 3),
            "a bad record does not stop the stream"
        );
    }
}
