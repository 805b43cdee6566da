//! `console`: prints each metric as PyAgent's console line.
use crate::format::console;
use crate::metric::Metric;
use crate::plugin::{Output, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;
use std::io::Write;

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

/// Lines are written out whenever this much text is waiting: a batch of a
/// thousand probe metrics would otherwise keep a half-megabyte string.
const CHUNK_BYTES: usize = 64 * 1024;

impl Output for Console {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        // One lock for the whole batch; a closed pipe is an error to retry.
        match self.target {
            Target::Stdout => write_chunked(batch, &mut self.buf, &mut std::io::stdout().lock())?,
            Target::Stderr => write_chunked(batch, &mut self.buf, &mut std::io::stderr().lock())?,
        }
        Ok(())
    }
}

/// Formats `batch` into `buf` and writes it in chunks of about
/// [`CHUNK_BYTES`], then flushes.
fn write_chunked(batch: &[Metric], buf: &mut String, out: &mut impl Write) -> std::io::Result<()> {
    buf.clear();
    for m in batch {
        console::write_line(m, buf);
        if buf.len() >= CHUNK_BYTES {
            out.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    out.write_all(buf.as_bytes())?;
    buf.clear();
    if buf.capacity() > 2 * CHUNK_BYTES {
        buf.shrink_to(2 * CHUNK_BYTES);
    }
    out.flush()
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

    /// Records the size of every write.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: Vec<usize>,
        flushes: usize,
    }

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(b);
            self.writes.push(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn big_batches_are_written_in_chunks_with_every_line_in_order() {
        let batch: Vec<Metric> = (0..2000)
            .map(|i| {
                Metric::new("curl", 1_795_601_723_000_000_000)
                    .with_tag("host_name", "web1")
                    .with_field("tag", format!("T{i}"))
                    .with_field("response", "x".repeat(200))
            })
            .collect();
        let mut buf = String::new();
        let mut out = Recorder::default();
        write_chunked(&batch, &mut buf, &mut out).unwrap();
        let expected: String = batch.iter().map(|m| console::line(m) + "\n").collect();
        assert_eq!(String::from_utf8(out.bytes).unwrap(), expected);
        assert!(
            out.writes.len() > 1,
            "one write of {} bytes",
            expected.len()
        );
        let longest = batch
            .iter()
            .map(|m| console::line(m).len() + 1)
            .max()
            .unwrap();
        assert!(out.writes.iter().all(|&w| w < CHUNK_BYTES + longest));
        assert_eq!(out.flushes, 1);
        assert!(buf.capacity() <= 2 * CHUNK_BYTES);
    }
}
