//! `console`: prints each metric as PyAgent's console line.
use crate::blocking::{write_std_stream, StdStream};
use crate::format::console;
use crate::metric::Metric;
use crate::plugin::{Output, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;

/// Where the lines go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsoleConfig {
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub target: Target,
}

pub struct Console {
    target: Target,
    buf: String,
}

impl Console {
    pub fn new(config: ConsoleConfig) -> Self {
        Console {
            target: config.target,
            buf: String::new(),
        }
    }
}

/// Lines are handed to the writer whenever this much text is waiting: a
/// batch of a thousand probe metrics would otherwise keep a half-megabyte
/// string.
const CHUNK_BYTES: usize = 64 * 1024;

impl Output for Console {
    /// The lines are formatted here and written by the stream's writer
    /// thread ([`write_std_stream`]): a stdout nobody reads blocks that
    /// thread, and this write fails after a timeout (the core keeps the
    /// batch and retries), instead of blocking every actor.
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let stream = match self.target {
            Target::Stdout => StdStream::Stdout,
            Target::Stderr => StdStream::Stderr,
        };
        let mut rest = batch;
        while !rest.is_empty() {
            let mut buf = std::mem::take(&mut self.buf);
            let taken = format_chunk(rest, &mut buf);
            rest = &rest[taken..];
            let mut buf = write_std_stream(stream, buf, rest.is_empty()).await?;
            if buf.capacity() > 2 * CHUNK_BYTES {
                buf.shrink_to(2 * CHUNK_BYTES);
            }
            self.buf = buf;
        }
        Ok(())
    }
}

/// Formats lines of `batch` into `buf` until about [`CHUNK_BYTES`] are
/// waiting or the batch ends; returns how many metrics it took (at least
/// one of a non-empty batch).
fn format_chunk(batch: &[Metric], buf: &mut String) -> usize {
    buf.clear();
    for (i, m) in batch.iter().enumerate() {
        console::write_line(m, buf);
        if buf.len() >= CHUNK_BYTES {
            return i + 1;
        }
    }
    batch.len()
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "console",
        "Prints metrics and alarms in PyAgent's console line format",
        include_str!("sample.yaml"),
        |cfg| Ok(Console::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_batches_are_formatted_in_chunks_with_every_line_in_order() {
        let batch: Vec<Metric> = (0..2000)
            .map(|i| {
                Metric::new("curl", 1_795_601_723_000_000_000)
                    .with_tag("host_name", "web1")
                    .with_field("tag", format!("T{i}"))
                    .with_field("response", "x".repeat(200))
            })
            .collect();
        let mut buf = String::new();
        let mut chunks: Vec<String> = Vec::new();
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let taken = format_chunk(rest, &mut buf);
            assert!(taken > 0);
            rest = &rest[taken..];
            chunks.push(buf.clone());
        }
        let expected: String = batch.iter().map(|m| console::line(m) + "\n").collect();
        assert_eq!(chunks.concat(), expected);
        assert!(chunks.len() > 1, "one chunk of {} bytes", expected.len());
        let longest = batch
            .iter()
            .map(|m| console::line(m).len() + 1)
            .max()
            .unwrap();
        assert!(chunks.iter().all(|c| c.len() < CHUNK_BYTES + longest));
    }

    #[actix_rt::test]
    async fn writes_go_through_the_stderr_writer() {
        // A test's stderr is always writable: the write completes through
        // the writer thread and the buffer comes back for reuse.
        let mut c = Console::new(ConsoleConfig {
            target: Target::Stderr,
        });
        let batch = vec![Metric::new("demo", 1_000_000_000).with_field("x", 1u64)];
        c.write(&batch).await.unwrap();
        assert!(c.buf.is_empty() && c.buf.capacity() > 0);
    }
}
