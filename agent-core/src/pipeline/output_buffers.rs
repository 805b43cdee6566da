//! What an output accepted and has not delivered: a memory buffer and, with
//! `disk_buffer`, a disk log, both [`Buffer`]s, and the batch being written.
//! Owned by the supervisor and handed to every incarnation of the output's
//! actor, so an actor that dies loses nothing: the batch in flight stays
//! here until the backend acknowledged it, and the next incarnation sends it
//! again.
//!
//! With a disk log, new metrics go to the log; memory then only holds what
//! the log could not take (a disk error) or what waited before it opened,
//! so it is still delivered. Batches are taken from the log first, then
//! from memory: [`OutputBuffers::begin`] is the one way a flush (periodic,
//! retry or shutdown) gets its batch, and [`OutputBuffers::end`] the one
//! way it gives it back.
use super::buffer::{Buffer, MemoryBuffer, Transaction};
use super::disk_worker::DiskWorker;
use crate::config::DiskBufferSettings;
use crate::metric::Metric;
use slog::{error, Logger};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Size limit of a disk log whose settings give none.
const DEFAULT_DISK_BYTES: u64 = 256 << 20;

#[derive(Default)]
pub(crate) struct OutputBuffers {
    pub(crate) memory: MemoryBuffer,
    /// The disk log, on its own thread.
    pub(crate) disk: Option<DiskWorker>,
    /// The settings the open disk log was opened with.
    disk_settings: Option<DiskBufferSettings>,
    in_flight: Option<Transaction>,
    disk_dropped_seen: u64,
}

pub(crate) type SharedBuffers = Arc<Mutex<OutputBuffers>>;

pub(crate) fn lock(buffers: &SharedBuffers) -> MutexGuard<'_, OutputBuffers> {
    // The buffers hold no invariant a panic elsewhere could break.
    buffers.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the disk thread reported since the last look.
pub(crate) struct DiskNews {
    pub reports: Vec<String>,
    /// Records the log dropped (`max_bytes`) since the last look.
    pub newly_dropped: u64,
}

impl OutputBuffers {
    pub(crate) fn shared() -> SharedBuffers {
        Arc::new(Mutex::new(OutputBuffers::default()))
    }

    /// Metrics waiting to be written: in memory, and in the disk log
    /// (which counts its records until they are acknowledged). A batch in
    /// flight from memory is not counted (as `buffered` always showed).
    pub(crate) fn pending(&self) -> usize {
        self.memory.len() + self.disk.as_ref().map_or(0, |d| d.len())
    }

    /// Where new metrics go: the disk log when there is one.
    fn intake(&mut self) -> &mut dyn Buffer {
        match self.disk.as_mut() {
            Some(d) => d,
            None => &mut self.memory,
        }
    }

    /// Adds delivered metrics; returns how many of the oldest in memory were
    /// dropped to stay within `limit`.
    pub(crate) fn add(&mut self, metrics: Arc<Vec<Metric>>, limit: usize) -> usize {
        self.intake().add(metrics, limit)
    }

    /// Drops the oldest metrics in memory above `limit`; returns how many.
    pub(crate) fn enforce_limit(&mut self, limit: usize) -> usize {
        self.memory.enforce_limit(limit)
    }

    /// Starts the transaction of the next batch of up to `max` metrics:
    /// from the disk log while it has any, else from memory. The batch
    /// stays here (in flight) until [`end`](Self::end). `None` when there
    /// is nothing to write, or a batch is already in flight.
    pub(crate) async fn begin(buffers: &SharedBuffers, max: usize) -> Option<Arc<Vec<Metric>>> {
        for from_disk in [true, false] {
            let taking = {
                let mut b = lock(buffers);
                if b.in_flight.is_some() {
                    return None;
                }
                let buffer: &mut dyn Buffer = match (from_disk, b.disk.as_mut()) {
                    (true, Some(d)) => d,
                    (true, None) => continue,
                    (false, _) => &mut b.memory,
                };
                if buffer.len() == 0 {
                    continue;
                }
                buffer.begin(max)
            };
            let Some(tx) = taking.await else {
                continue;
            };
            let mut b = lock(buffers);
            if b.in_flight.is_some() {
                // Another flush won meanwhile: this batch goes back.
                b.give_back(tx, false);
                return None;
            }
            let batch = tx.batch.clone();
            b.in_flight = Some(tx);
            return Some(batch);
        }
        None
    }

    /// Ends the transaction in flight: `accepted` (the backend took the
    /// batch) deletes it, else it goes back to the front, in order.
    pub(crate) fn end(&mut self, accepted: bool) {
        if let Some(tx) = self.in_flight.take() {
            self.give_back(tx, accepted);
        }
    }

    fn give_back(&mut self, tx: Transaction, accepted: bool) {
        match (tx.from_disk.is_some(), self.disk.as_mut()) {
            (true, Some(disk)) => disk.end(tx, accepted),
            // Taken from a log since closed: kept in memory if not accepted.
            (true, None) if !accepted => self
                .memory
                .push_front(Arc::try_unwrap(tx.batch).unwrap_or_else(|shared| (*shared).clone())),
            (true, None) => {}
            (false, _) => self.memory.end(tx, accepted),
        }
    }

    /// Takes what the disk thread has to tell; the metrics it could not
    /// write are kept in memory.
    pub(crate) fn disk_news(&mut self) -> Option<DiskNews> {
        let disk = self.disk.as_ref()?;
        let (reports, dropped, refused) = disk.take_news();
        let newly_dropped = dropped.saturating_sub(self.disk_dropped_seen);
        self.disk_dropped_seen = dropped;
        for batch in refused {
            self.memory.extend(batch.iter().cloned());
        }
        Some(DiskNews {
            reports,
            newly_dropped,
        })
    }

    /// Opens, moves or closes the disk log to match `wanted`. Metrics in
    /// memory move into a new log; what an old log holds comes back through
    /// the returned receiver (its thread reads it out), for the new log or
    /// memory. Call only with nothing in flight.
    pub(crate) fn set_disk(
        &mut self,
        wanted: Option<&DiskBufferSettings>,
    ) -> Result<Option<oneshot::Receiver<Vec<Metric>>>, String> {
        if self.disk_settings.as_ref() == wanted && (wanted.is_none() || self.disk.is_some()) {
            return Ok(None);
        }
        self.end(false);
        if let (Some(w), Some(old), Some(disk)) =
            (wanted, self.disk_settings.as_ref(), self.disk.as_ref())
        {
            if w.path == old.path {
                // Same log, new size limit.
                disk.set_max_bytes(w.max_bytes().unwrap_or(DEFAULT_DISK_BYTES));
                self.disk_settings = Some(w.clone());
                return Ok(None);
            }
        }
        let new = match wanted {
            // Opening scans the folder: once per start or reconfigure.
            Some(w) => match DiskWorker::open(&w.path, w.max_bytes().unwrap_or(DEFAULT_DISK_BYTES))
            {
                Ok(d) => Some(d),
                Err(e) => {
                    if self.disk.is_none() {
                        self.disk_settings = None;
                    }
                    // Keep the log we had.
                    return Err(e.to_string());
                }
            },
            None => None,
        };
        let old = std::mem::replace(&mut self.disk, new);
        self.disk_settings = wanted.cloned();
        self.disk_dropped_seen = 0;
        if let Some(to) = self.disk.as_ref() {
            if !self.memory.is_empty() {
                to.append(Arc::new(self.memory.take_all()));
            }
        }
        // The old thread reads its log out, closes it and ends.
        Ok(old.map(|from| from.empty()))
    }

    /// Metrics read out of an old log after a `disk_buffer` change: into
    /// the log now in use, or to the front of memory.
    pub(crate) fn take_migrated(&mut self, moved: Vec<Metric>) {
        if moved.is_empty() {
            return;
        }
        match self.disk.as_ref() {
            Some(to) => to.append(Arc::new(moved)),
            None => self.memory.push_front(moved),
        }
    }
}

/// Moves what is left in memory to the disk log (when there is one) and
/// closes the log; returns how many metrics are undelivered in total.
pub(crate) async fn park_on_disk(buffers: &SharedBuffers, log: &Logger) -> usize {
    let closed = {
        let mut b = lock(buffers);
        b.end(false);
        let b = &mut *b;
        let Some(d) = b.disk.as_ref() else {
            return b.memory.len();
        };
        if !b.memory.is_empty() {
            d.append(Arc::new(b.memory.take_all()));
        }
        d.close()
    };
    let left = closed.await.unwrap_or(0) as usize;
    let mut b = lock(buffers);
    if let Some(d) = b.disk.as_ref() {
        let (reports, _, refused) = d.take_news();
        for r in reports {
            error!(log, "disk buffer problem"; "detail" => r);
        }
        let lost: usize = refused.iter().map(|r| r.len()).sum();
        if lost > 0 {
            error!(log, "metrics could not be kept in the disk buffer"; "undelivered" => lost);
            b.memory
                .extend(refused.iter().flat_map(|r| r.iter().cloned()));
        }
    }
    left + b.memory.len()
}
