//! The disk log of an output, run on a thread of its own: appends, reads,
//! acknowledgements and deletes are file I/O, and the actors' event loop
//! must never wait on a disk (a slow or full one would stall every
//! pipeline). One thread per disk-buffered output, not the tokio blocking
//! pool: its jobs must run one at a time and in order (an append, then a
//! read that sees it, an ack after the read), which a FIFO queue in front
//! of one thread gives for free.
use super::buffer::{Buffer, Transaction};
use super::disk_buffer::{DiskBuffer, DiskBufferError, ReadBatch};
use crate::metric::Metric;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

enum Job {
    Append(Arc<Vec<Metric>>),
    Read {
        max: usize,
        reply: oneshot::Sender<ReadBatch>,
    },
    Ack(ReadBatch),
    Rewind(ReadBatch),
    SetMaxBytes(u64),
    /// Read and acknowledge everything pending, close the log, let go of
    /// it, and reply with the metrics (moving the log elsewhere, or
    /// removing it). The thread ends.
    Empty {
        reply: oneshot::Sender<Vec<Metric>>,
    },
    /// Close the log cleanly and let go of it; reply with the records left
    /// in it. The thread ends.
    Close {
        reply: oneshot::Sender<u64>,
    },
}

/// What the thread has to tell: problems for the log, metrics it could not
/// take (to keep in memory), drops.
#[derive(Default)]
pub(crate) struct DiskNews {
    pub reports: Vec<String>,
    /// Records dropped because `max_bytes` was reached, in total.
    pub dropped: u64,
    /// Appends that failed: their metrics, for the memory buffer.
    pub refused: Vec<Arc<Vec<Metric>>>,
}

/// The handle the output holds; the thread ends when it is dropped.
pub(crate) struct DiskWorker {
    jobs: mpsc::Sender<Job>,
    counts: Arc<Counts>,
    news: Arc<Mutex<DiskNews>>,
}

#[derive(Default)]
struct Counts {
    /// Metrics in appends not yet written.
    queued: AtomicU64,
    /// Records in the log not yet acknowledged.
    on_disk: AtomicU64,
}

impl DiskWorker {
    /// Opens the log (here, once: start-up or a reconfigure) and hands it
    /// to its thread.
    pub(crate) fn open(
        path: &std::path::Path,
        max_bytes: u64,
    ) -> Result<DiskWorker, DiskBufferError> {
        let mut disk = DiskBuffer::open(path, max_bytes)?;
        let counts = Arc::new(Counts::default());
        counts.on_disk.store(disk.pending(), Relaxed);
        let news = Arc::new(Mutex::new(DiskNews {
            reports: disk.take_reports(),
            ..DiskNews::default()
        }));
        let (jobs, rx) = mpsc::channel();
        let (c, n) = (counts.clone(), news.clone());
        let spawned = std::thread::Builder::new()
            .name("disk-buffer".into())
            .stack_size(256 * 1024)
            .spawn(move || serve(disk, rx, c, n));
        if let Err(source) = spawned {
            return Err(DiskBufferError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(DiskWorker { jobs, counts, news })
    }

    /// Metrics not yet acknowledged: queued for the log or in it.
    pub(crate) fn pending(&self) -> u64 {
        self.counts.queued.load(Relaxed) + self.counts.on_disk.load(Relaxed)
    }

    pub(crate) fn append(&self, metrics: Arc<Vec<Metric>>) {
        if metrics.is_empty() {
            return;
        }
        self.counts.queued.fetch_add(metrics.len() as u64, Relaxed);
        // The thread is gone (the log was closed): keep them in memory.
        if let Err(mpsc::SendError(Job::Append(m))) = self.jobs.send(Job::Append(metrics)) {
            self.counts.queued.fetch_sub(m.len() as u64, Relaxed);
            lock(&self.news).refused.push(m);
        }
    }

    /// A new size limit, from the next append on.
    pub(crate) fn set_max_bytes(&self, max: u64) {
        let _ = self.jobs.send(Job::SetMaxBytes(max));
    }

    /// Up to `max` metrics from the read position on.
    pub(crate) fn read(&self, max: usize) -> oneshot::Receiver<ReadBatch> {
        let (reply, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::Read { max, reply });
        rx
    }

    pub(crate) fn ack(&self, batch: ReadBatch) {
        let _ = self.jobs.send(Job::Ack(batch));
    }

    pub(crate) fn rewind(&self, batch: ReadBatch) {
        let _ = self.jobs.send(Job::Rewind(batch));
    }

    pub(crate) fn empty(&self) -> oneshot::Receiver<Vec<Metric>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::Empty { reply });
        rx
    }

    pub(crate) fn close(&self) -> oneshot::Receiver<u64> {
        let (reply, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::Close { reply });
        rx
    }

    pub(crate) fn take_news(&self) -> (Vec<String>, u64, Vec<Arc<Vec<Metric>>>) {
        let mut n = lock(&self.news);
        (
            std::mem::take(&mut n.reports),
            n.dropped,
            std::mem::take(&mut n.refused),
        )
    }
}

/// The disk log as a [`Buffer`]: metrics stay in the log until a
/// transaction ending accepted acknowledges them. Its size is bounded by
/// `max_bytes` (the oldest segments go, counted in [`DiskWorker::take_news`]),
/// not by the metric limit.
impl Buffer for DiskWorker {
    fn len(&self) -> usize {
        self.pending() as usize
    }

    fn add(&mut self, metrics: Arc<Vec<Metric>>, _limit: usize) -> usize {
        self.append(metrics);
        0
    }

    fn begin(&mut self, max: usize) -> BoxFuture<'static, Option<Transaction>> {
        let read = self.read(max);
        let jobs = self.jobs.clone();
        Box::pin(async move {
            let mut read = read.await.ok()?;
            if read.metrics.is_empty() {
                // A batch of only corrupt records is still consumed.
                if !read.counts_empty() {
                    let _ = jobs.send(Job::Ack(read));
                }
                return None;
            }
            Some(Transaction {
                batch: Arc::new(std::mem::take(&mut read.metrics)),
                from_disk: Some(read),
            })
        })
    }

    fn end(&mut self, tx: Transaction, accepted: bool) {
        if let Some(read) = tx.from_disk {
            if accepted {
                self.ack(read);
            } else {
                self.rewind(read);
            }
        }
    }
}

fn lock(news: &Mutex<DiskNews>) -> std::sync::MutexGuard<'_, DiskNews> {
    news.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(
    mut disk: DiskBuffer,
    jobs: mpsc::Receiver<Job>,
    counts: Arc<Counts>,
    news: Arc<Mutex<DiskNews>>,
) {
    while let Ok(job) = jobs.recv() {
        let mut refused = None;
        match job {
            Job::Append(metrics) => {
                if let Err(e) = disk.append(&metrics) {
                    lock(&news)
                        .reports
                        .push(format!("append failed, metrics kept in memory: {e}"));
                    refused = Some(metrics.clone());
                }
                // In the log before leaving the queue: never counted as gone.
                counts.on_disk.store(disk.pending(), Relaxed);
                counts.queued.fetch_sub(metrics.len() as u64, Relaxed);
            }
            Job::Read { max, reply } => {
                // An actor that died waiting: the batch is read again later.
                if let Err(read) = reply.send(disk.read_batch(max)) {
                    disk.rewind(&read);
                }
            }
            Job::Ack(batch) => disk.ack(&batch),
            Job::Rewind(batch) => disk.rewind(&batch),
            Job::SetMaxBytes(max) => disk.set_max_bytes(max),
            Job::Empty { reply } => {
                let mut all = Vec::new();
                while disk.pending() > 0 {
                    let read = disk.read_batch(10_000);
                    if read.counts_empty() {
                        break;
                    }
                    all.extend(read.metrics.iter().cloned());
                    disk.ack(&read);
                }
                let left = finish(disk, &counts, &news);
                if left > 0 {
                    lock(&news).reports.push(format!(
                        "{left} records could not be read out of the old log"
                    ));
                }
                let _ = reply.send(all);
                return;
            }
            Job::Close { reply } => {
                // The lock is released before the answer: the next owner
                // (a reload, the next start) may open the log at once.
                let _ = reply.send(finish(disk, &counts, &news));
                return;
            }
        }
        counts.on_disk.store(disk.pending(), Relaxed);
        let mut n = lock(&news);
        n.reports.extend(disk.take_reports());
        n.dropped = disk.dropped();
        if let Some(m) = refused {
            n.refused.push(m);
        }
    }
}

/// Closes the log and lets go of it (and of its lock); returns the records
/// left in it.
fn finish(mut disk: DiskBuffer, counts: &Counts, news: &Mutex<DiskNews>) -> u64 {
    disk.close();
    let left = disk.pending();
    counts.on_disk.store(left, Relaxed);
    let mut n = lock(news);
    n.reports.extend(disk.take_reports());
    n.dropped = disk.dropped();
    drop(n);
    drop(disk);
    left
}
