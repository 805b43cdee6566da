//! The output's one flush path: [`deliver`] writes one batch (periodic,
//! retried and shutdown flushes all go through it), [`final_flush`] calls
//! it until the buffers are empty or the shutdown deadline passed.
use super::output_buffers::{lock, park_on_disk, OutputBuffers, SharedBuffers};
use super::{panic_message, Backoff, PluginStats};
use crate::plugin::{DynOutput, PluginError};
use futures::FutureExt;
use slog::{error, warn, Logger};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one flush step ended.
pub(super) enum Written {
    /// Nothing to write (or another write holds the batch).
    Nothing,
    /// The backend took `n` metrics.
    Delivered { n: usize, took: Duration },
    /// The write failed, timed out or panicked; its batch
    /// went back to the front of the buffers.
    Failed {
        error: String,
        panicked: bool,
        took: Duration,
    },
}

/// The one flush step, for periodic, retried and shutdown writes: begins a
/// transaction of up to `max` metrics on the buffers, writes it within
/// `timeout` (connecting first when not connected) and ends it: accepted
/// when the backend took the batch, else it goes back to the front, in
/// order. A panic in the plugin is caught: the plugin comes back with
/// `panicked` set, and should not be used again.
pub(super) async fn deliver(
    buffers: SharedBuffers,
    mut plugin: Box<dyn DynOutput>,
    connected: bool,
    max: usize,
    timeout: Duration,
) -> (Box<dyn DynOutput>, Written) {
    let Some(batch) = OutputBuffers::begin(&buffers, max).await else {
        return (plugin, Written::Nothing);
    };
    let started = Instant::now();
    let result = AssertUnwindSafe(tokio::time::timeout(timeout, async {
        if !connected {
            plugin.connect_boxed().await?;
        }
        plugin.write_boxed(&batch).await
    }))
    .catch_unwind()
    .await;
    let took = started.elapsed();
    let n = batch.len();
    drop(batch);
    let failure = match result {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some((format!("write failed: {e}"), false)),
        Ok(Err(_)) => Some((
            format!("write timed out after {}s", timeout.as_secs()),
            false,
        )),
        Err(p) => Some((format!("write panicked: {}", panic_message(&*p)), true)),
    };
    lock(&buffers).end(failure.is_none());
    let written = match failure {
        None => Written::Delivered { n, took },
        Some((error, panicked)) => Written::Failed {
            error,
            panicked,
            took,
        },
    };
    (plugin, written)
}

/// Writes the whole buffer (the disk log first, then memory) in batches,
/// retrying failed batches with a short backoff until the deadline. What is
/// left goes to the disk log when there is one. Returns how many metrics were
/// not delivered (those kept on disk included: they are sent on the next start).
pub(super) async fn final_flush(
    plugin: Option<Box<dyn DynOutput>>,
    buffers: SharedBuffers,
    batch_size: usize,
    mut connected: bool,
    deadline: Instant,
    log: Logger,
    stats: Arc<PluginStats>,
) -> usize {
    let Some(mut plugin) = plugin else {
        let left = park_on_disk(&buffers, &log).await;
        if left > 0 {
            error!(log, "output has no working plugin at shutdown"; "undelivered" => left);
        }
        return left;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    while lock(&buffers).pending() > 0 && Instant::now() < deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let written;
        (plugin, written) =
            deliver(buffers.clone(), plugin, connected, batch_size, remaining).await;
        match written {
            // Nothing readable although something is pending (unreadable log).
            Written::Nothing => break,
            Written::Delivered { n, .. } => {
                connected = true;
                PluginStats::add(&stats.calls, 1);
                PluginStats::add(&stats.metrics_out, n as u64);
                backoff.reset();
            }
            Written::Failed { panicked: true, .. } => break,
            Written::Failed { .. } => {
                connected = false;
                let wait = backoff
                    .next_delay()
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
            }
        }
    }
    let left = park_on_disk(&buffers, &log).await;
    stats.buffered.store(left as u64, Relaxed);
    if let Err(e) = AssertUnwindSafe(tokio::time::timeout(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100)),
        plugin.close_boxed(),
    ))
    .catch_unwind()
    .await
    .unwrap_or_else(|_| Ok(Err(PluginError::msg("close panicked"))))
    .unwrap_or_else(|_| Err(PluginError::msg("close timed out")))
    {
        warn!(log, "output close failed"; "error" => %e);
    }
    if left > 0 {
        let on_disk = lock(&buffers).disk.as_ref().map(|d| d.pending() as usize);
        match on_disk {
            Some(kept) if kept == left => {
                warn!(log, "metrics not delivered by the shutdown deadline kept in the disk buffer";
                    "kept_on_disk" => left)
            }
            _ => {
                error!(log, "metrics not delivered by the shutdown deadline"; "undelivered" => left)
            }
        }
    }
    left
}
