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
        match Event::try_from(&*item) {
            Ok(event) => out.push(event),
            Err(e) => {
                *errors += 1;
                *last = Some(e);
            }
        }
    }
}
