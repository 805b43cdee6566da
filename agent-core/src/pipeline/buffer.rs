//! One buffer interface for an output's undelivered metrics, after
//! Telegraf's `models/buffer.go`: metrics are added, a transaction takes a
//! batch of up to N of them, and the transaction ends accepted (the backend
//! took the batch: it is gone) or rejected (it goes back, in order, to be
//! sent again). [`MemoryBuffer`] keeps metrics in a bounded queue; the disk
//! log ([`super::disk_worker::DiskWorker`]) keeps them in checksummed
//! segments until accepted. The output actor's one flush path
//! ([`super::output_buffers`]) works on either through this trait.
use super::disk_buffer::ReadBatch;
use crate::metric::Metric;
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::Arc;

/// A batch taken out of a buffer by [`Buffer::begin`]. Until it is given
/// back to [`Buffer::end`], the buffer still owns its metrics (a disk log
/// keeps them on disk, unacknowledged).
pub(crate) struct Transaction {
    pub(crate) batch: Arc<Vec<Metric>>,
    /// Log positions when the batch came from the disk log.
    pub(crate) from_disk: Option<ReadBatch>,
}

/// The metrics an output has accepted and not delivered.
pub(crate) trait Buffer: Send {
    /// Metrics waiting (a batch in a transaction from memory not counted).
    fn len(&self) -> usize;

    /// Adds a batch at the back. A bounded buffer makes room by dropping
    /// its oldest metrics beyond `limit`; returns how many it dropped.
    fn add(&mut self, metrics: Arc<Vec<Metric>>, limit: usize) -> usize;

    /// Takes up to `max` metrics from the front: at once from memory, by a
    /// read on its own thread from the disk log. `None` when there was
    /// nothing to take.
    fn begin(&mut self, max: usize) -> BoxFuture<'static, Option<Transaction>>;

    /// Ends a transaction: `accepted` drops its metrics for good, else they
    /// go back to the front, in order.
    fn end(&mut self, tx: Transaction, accepted: bool);
}

/// The in-memory buffer: a queue of metrics, oldest first.
#[derive(Default)]
pub(crate) struct MemoryBuffer {
    queue: VecDeque<Metric>,
}

impl MemoryBuffer {
    /// Drops the oldest metrics above `limit`; returns how many.
    pub(crate) fn enforce_limit(&mut self, limit: usize) -> usize {
        let excess = self.queue.len().saturating_sub(limit);
        self.queue.drain(..excess);
        excess
    }

    /// Takes every metric out (to move them into a disk log).
    pub(crate) fn take_all(&mut self) -> Vec<Metric> {
        self.queue.drain(..).collect()
    }

    /// Puts metrics back at the front, in their order.
    pub(crate) fn push_front(&mut self, metrics: Vec<Metric>) {
        for m in metrics.into_iter().rev() {
            self.queue.push_front(m);
        }
    }

    /// Adds metrics at the back without a limit (ones a disk log refused).
    pub(crate) fn extend(&mut self, metrics: impl IntoIterator<Item = Metric>) {
        self.queue.extend(metrics);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Buffer for MemoryBuffer {
    fn len(&self) -> usize {
        self.queue.len()
    }

    fn add(&mut self, metrics: Arc<Vec<Metric>>, limit: usize) -> usize {
        match Arc::try_unwrap(metrics) {
            Ok(v) => self.queue.extend(v),
            Err(shared) => self.queue.extend(shared.iter().cloned()),
        }
        self.enforce_limit(limit)
    }

    fn begin(&mut self, max: usize) -> BoxFuture<'static, Option<Transaction>> {
        let n = max.min(self.queue.len());
        let tx = (n > 0).then(|| Transaction {
            batch: Arc::new(self.queue.drain(..n).collect()),
            from_disk: None,
        });
        Box::pin(std::future::ready(tx))
    }

    fn end(&mut self, tx: Transaction, accepted: bool) {
        if !accepted {
            let batch = Arc::try_unwrap(tx.batch).unwrap_or_else(|shared| (*shared).clone());
            self.push_front(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(range: std::ops::Range<u64>) -> Arc<Vec<Metric>> {
        Arc::new(
            range
                .map(|i| Metric::new("m", 0).with_field("i", i))
                .collect(),
        )
    }

    fn ids(batch: &[Metric]) -> Vec<String> {
        batch
            .iter()
            .map(|m| m.field("i").map(|v| v.to_string()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn memory_transactions_keep_order_and_limit() {
        let mut b = MemoryBuffer::default();
        assert_eq!(b.add(metrics(0..5), 4), 1, "the oldest goes");
        assert_eq!(b.len(), 4);
        let tx = futures::executor::block_on(b.begin(3)).unwrap();
        assert_eq!(ids(&tx.batch), ["1", "2", "3"]);
        assert_eq!(b.len(), 1, "a batch in a transaction is not counted");
        b.end(tx, false);
        assert_eq!(b.len(), 4, "a rejected batch comes back");
        let tx = futures::executor::block_on(b.begin(10)).unwrap();
        assert_eq!(
            ids(&tx.batch),
            ["1", "2", "3", "4"],
            "back at the front, in order"
        );
        b.end(tx, true);
        assert_eq!(b.len(), 0);
        assert!(futures::executor::block_on(b.begin(10)).is_none());
    }
}
