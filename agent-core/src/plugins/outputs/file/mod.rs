//! `file`: JSON lines or InfluxDB line protocol to a file (rotated by size)
//! or to stdout.
use crate::blocking::{write_std_stream, StdStream, Worker, WorkerError};
use crate::config::Size;
use crate::format::{json, line_protocol};
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One flat JSON object per line (with `kind`).
    #[default]
    #[serde(alias = "jsonl", alias = "json_lines")]
    Json,
    /// InfluxDB line protocol, nanosecond timestamps.
    #[serde(alias = "line_protocol", alias = "influxdb")]
    Influx,
}

fn d_path() -> String {
    "stdout".into()
}
fn d_keep() -> usize {
    5
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileConfig {
    /// A file path, or `stdout` / `-`.
    #[serde(default = "d_path")]
    pub path: String,
    #[serde(default)]
    pub format: Format,
    /// Rotate when the file would grow past this size (`50 MB`); 0 = never.
    #[serde(default)]
    pub rotate_max_bytes: Option<Size>,
    /// Rotated files kept (`path.1` newest … `path.N`), at most 1000.
    #[serde(default = "d_keep")]
    pub rotate_keep: usize,
}

pub struct FileOutput {
    path: Option<PathBuf>,
    format: Format,
    max_bytes: u64,
    keep: usize,
    /// The file's writer thread (started at the first use); `None` for stdout.
    writer: Option<Worker<FileSink>>,
    json: json::Encoder,
    buf: String,
}

/// How long one file operation (open, a batch's write, fsync at close) may
/// take before the write fails and the core retries it: a hung NFS mount or
/// a disk stalled under load holds only the writer thread.
const FILE_OP_TIMEOUT: Duration = Duration::from_secs(30);

impl FileOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let c: FileConfig = cfg.parse()?;
        let max_bytes = c.rotate_max_bytes.map_or(0, Size::bytes);
        if c.rotate_keep > 1000 {
            return Err(cfg
                .error(
                    "rotate_keep",
                    format!("must be at most 1000, got {}", c.rotate_keep),
                )
                .into());
        }
        if c.path.is_empty() {
            return Err(cfg.error("path", "must be a file path or `stdout`").into());
        }
        let path = match c.path.as_str() {
            "stdout" | "-" => None,
            p => Some(PathBuf::from(p)),
        };
        Ok(FileOutput {
            path,
            format: c.format,
            max_bytes,
            keep: c.rotate_keep,
            writer: None,
            json: json::Encoder::new(true),
            buf: String::new(),
        })
    }

    /// The writer thread of the file, started on first use.
    fn writer(&mut self, path: &Path) -> PluginResult<&Worker<FileSink>> {
        if self.writer.is_none() {
            let sink = FileSink {
                path: path.to_path_buf(),
                file: None,
                size: 0,
                max_bytes: self.max_bytes,
                keep: self.keep,
            };
            let w = Worker::spawn("file-writer", 1, sink)
                .map_err(|e| PluginError::context("file output", e))?;
            self.writer = Some(w);
        }
        self.writer
            .as_ref()
            .ok_or_else(|| PluginError::msg("file writer not started"))
    }
}

/// The open file, owned by the writer thread.
struct FileSink {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl FileSink {
    fn open(&mut self) -> PluginResult {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PluginError::context(format!("cannot open {}", path.display()), e))?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// `path` → `path.1` → … → `path.keep` (the oldest is deleted).
    fn rotate(&mut self) -> PluginResult {
        self.file = None;
        let path = &self.path;
        let numbered = |n: usize| {
            let mut s = path.as_os_str().to_owned();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        if self.keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(path, numbered(1))?;
        }
        self.open()
    }

    fn write(&mut self, text: &str) -> PluginResult {
        if self.file.is_none() {
            self.open()?;
        }
        if self.max_bytes > 0 && self.size > 0 && self.size + text.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| PluginError::msg("file not open"))?;
        if let Err(e) = f.write_all(text.as_bytes()) {
            // Reopen next time: the file may have been removed or the disk filled.
            self.file = None;
            return Err(PluginError::context(
                format!("cannot write {}", self.path.display()),
                e,
            ));
        }
        self.size += text.len() as u64;
        Ok(())
    }

    fn close(&mut self) -> PluginResult {
        if let Some(f) = self.file.take() {
            f.sync_data()?;
        }
        Ok(())
    }
}

fn worker_error(e: WorkerError) -> PluginError {
    PluginError::context("file output", e)
}

impl Output for FileOutput {
    async fn connect(&mut self) -> PluginResult {
        if let Some(p) = self.path.clone() {
            self.writer(&p)?
                .call(FILE_OP_TIMEOUT, |sink: &mut FileSink| sink.open())
                .await
                .map_err(worker_error)??;
        }
        Ok(())
    }

    /// Formats here, writes on the file's writer thread (or the shared
    /// stdout writer), so a slow or stuck disk never blocks the actors.
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.format {
            Format::Json => {
                for m in batch {
                    self.json.write_object(m, &mut buf);
                    buf.push('\n');
                }
            }
            Format::Influx => {
                line_protocol::write_batch(batch, &line_protocol::Options::dimensional(), &mut buf);
            }
        }
        let Some(path) = self.path.clone() else {
            self.buf = write_std_stream(StdStream::Stdout, buf, true).await?;
            return Ok(());
        };
        let written = self
            .writer(&path)?
            .call(FILE_OP_TIMEOUT, move |sink: &mut FileSink| {
                sink.write(&buf).map(|()| buf)
            })
            .await
            .map_err(worker_error)??;
        self.buf = written;
        Ok(())
    }

    async fn close(&mut self) -> PluginResult {
        if let Some(w) = self.writer.as_ref() {
            w.call(FILE_OP_TIMEOUT, |sink: &mut FileSink| sink.close())
                .await
                .map_err(worker_error)??;
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "file",
        "Writes JSON lines or InfluxDB line protocol to a file (rotated by size) or stdout",
        include_str!("sample.yaml"),
        FileOutput::new,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    fn output(yaml: &str) -> FileOutput {
        FileOutput::new(&PluginConfig::from_value(
            "file",
            serde_yaml_ng::from_str(yaml).unwrap(),
        ))
        .unwrap()
    }

    fn batch(from: u64, n: u64) -> Vec<Metric> {
        (from..from + n)
            .map(|i| {
                Metric::new("demo", 1_000_000_000)
                    .with_tag("t", "a b")
                    .with_field("seq", i)
            })
            .collect()
    }

    #[actix_rt::test]
    async fn json_lines_append_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let yaml = format!("path: {}\n", path.display());
        let mut out = output(&yaml);
        out.connect().await.unwrap();
        out.write(&batch(0, 2)).await.unwrap();
        out.close().await.unwrap();
        let mut out = output(&yaml);
        out.connect().await.unwrap();
        out.write(&batch(2, 1)).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert!(text
            .lines()
            .all(|l| l.contains("\"kind\":\"METRIC\"") && l.contains("\"t\":\"a b\"")));
    }

    #[actix_rt::test]
    async fn line_protocol_with_size_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.lp");
        let mut out = output(&format!(
            "path: {}\nformat: influx\nrotate_max_bytes: 100\nrotate_keep: 2\n",
            path.display()
        ));
        out.connect().await.unwrap();
        // Each line is `demo,t=a\ b seq=Nu 1000000000` plus newline: 32-33 bytes.
        for i in 0..10 {
            out.write(&batch(i * 2, 2)).await.unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let current = read(&path);
        assert_eq!(
            current,
            "demo,t=a\\ b seq=18u 1000000000\ndemo,t=a\\ b seq=19u 1000000000\n"
        );
        let one = dir.path().join("out.lp.1");
        let two = dir.path().join("out.lp.2");
        assert!(read(&one).contains("seq=17u"));
        assert!(read(&two).contains("seq=15u"));
        assert!(!dir.path().join("out.lp.3").exists());
        for p in [&path, &one, &two] {
            assert!(std::fs::metadata(p).unwrap().len() <= 100);
        }
    }

    #[test]
    fn bad_rotation_size_names_the_key() {
        let e = FileOutput::new(&PluginConfig::from_value(
            "file",
            serde_yaml_ng::from_str("rotate_max_bytes: lots").unwrap(),
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("rotate_max_bytes"), "{e}");
    }
}
