//! A write-ahead segment log that keeps an output's metrics on disk until
//! the backend has acknowledged them, so they survive an agent restart or
//! crash while the backend is down.
//!
//! Layout of the directory:
//! - `<20-digit id>.seg`: segments, appended in order. A segment is a run of
//!   records `[len: u32 LE][crc32 of payload: u32 LE][payload]`, one metric
//!   per record, the payload being the metric as JSON.
//! - `lock`: held with `flock` while open, so two outputs (or two agents)
//!   never share one log.
//! - `ack`: `<segment> <offset>`, the position before which every record has
//!   been delivered; replaced atomically (write to `ack.tmp`, rename).
//!
//! Appends go to a fresh segment after every open (an old segment is never
//! appended to, so a record torn by a crash can only sit at the end of an
//! old segment). A segment rolls when it reaches `segment_bytes`. Reading
//! starts at the ack position; a batch is acknowledged with [`DiskBuffer::ack`]
//! after the backend took it, and segments wholly before the ack position are
//! deleted. A record whose checksum fails is reported and skipped; a
//! truncated or garbled length ends that segment's readable part (reported
//! with the bytes lost) and reading goes on with the next segment. When the
//! log outgrows `max_bytes`, the oldest segments are deleted and their
//! undelivered records counted as dropped.
//!
//! Delivery is exactly once unless the agent dies between the backend's
//! acknowledgement and the rename of `ack` (then that batch is sent again).
//! Records reach the OS on every append (a killed process loses nothing);
//! they are not fsynced, so a power cut may lose the last seconds.
use crate::metric::Metric;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A record larger than this is taken as a garbled length.
const MAX_RECORD: u32 = 64 * 1024 * 1024;
const HEADER: u64 = 8;

/// Where a record starts: segment id and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes on disk.
    bytes: u64,
    /// Bytes up to the end of the last well-framed record.
    valid_bytes: u64,
    /// Well-framed records (including ones whose checksum may fail).
    records: u64,
    /// Records of this segment already acknowledged.
    acked: u64,
}

/// Metrics read from the log, to acknowledge or give back.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub metrics: Vec<Metric>,
    pub start: Position,
    pub end: Position,
    /// Records consumed per segment (corrupt ones included).
    counts: Vec<(u64, u64)>,
}

impl ReadBatch {
    /// True when the read consumed no record at all.
    pub fn counts_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskBufferError {
    #[error("disk buffer {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk buffer {path} is in use by another output or agent process")]
    Locked { path: PathBuf },
    #[error("disk buffer {path}: metric cannot be encoded: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The segment log of one output.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    read: Position,
    ack: Position,
    pending: u64,
    dropped: u64,
    corrupt: u64,
    reports: Vec<String>,
    scratch: Vec<u8>,
    /// Id of the next segment: above every id ever used or acknowledged.
    next_id: u64,
    /// Holds the directory's lock until dropped.
    _lock: File,
}

fn seg_name(id: u64) -> String {
    format!("{id:020}.seg")
}

impl DiskBuffer {
    /// Opens (or creates) the log in `dir`, finding what earlier runs left.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self, DiskBufferError> {
        let dir = dir.into();
        let ioe = |source| DiskBufferError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(ioe)?;
        let lock = lock_dir(&dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ioe)? {
            let name = entry.map_err(ioe)?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut buf = DiskBuffer {
            segment_bytes: (max_bytes / 8).clamp(4096, 16 * 1024 * 1024),
            dir,
            max_bytes,
            segments: VecDeque::new(),
            writer: None,
            read: Position::default(),
            ack: Position::default(),
            pending: 0,
            dropped: 0,
            corrupt: 0,
            reports: Vec::new(),
            scratch: Vec::new(),
            next_id: 1,
            _lock: lock,
        };
        buf.ack = buf.read_ack();
        buf.next_id = ids.last().copied().unwrap_or(0).max(buf.ack.segment) + 1;
        for id in ids {
            let path = buf.dir.join(seg_name(id));
            if id < buf.ack.segment {
                // Acknowledged before a crash, not yet deleted.
                let _ = fs::remove_file(&path);
                continue;
            }
            let mut seg = scan(&path, id).map_err(|source| DiskBufferError::Io {
                path: path.clone(),
                source,
            })?;
            if seg.valid_bytes < seg.bytes {
                buf.reports.push(format!(
                    "segment {} is truncated or garbled after byte {}: {} bytes skipped",
                    path.display(),
                    seg.valid_bytes,
                    seg.bytes - seg.valid_bytes
                ));
            }
            if id == buf.ack.segment {
                seg.acked = count_before(&path, buf.ack.offset.min(seg.valid_bytes)).unwrap_or(0);
            }
            buf.pending += seg.records - seg.acked;
            buf.segments.push_back(seg);
        }
        buf.read = match buf.segments.front() {
            Some(s) if s.id == buf.ack.segment => buf.ack,
            Some(s) => Position {
                segment: s.id,
                offset: 0,
            },
            None => buf.ack,
        };
        buf.ack = buf.read;
        Ok(buf)
    }

    fn read_ack(&self) -> Position {
        let text = fs::read_to_string(self.dir.join("ack")).unwrap_or_default();
        let mut it = text.split_whitespace().map(|s| s.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
            _ => Position::default(),
        }
    }

    /// A new size limit, enforced from the next append on.
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    /// Records appended and not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Records that were never delivered because `max_bytes` was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records skipped because their checksum or encoding was bad.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Problems found since the last call (corruption, drops), for the log.
    pub fn take_reports(&mut self) -> Vec<String> {
        std::mem::take(&mut self.reports)
    }

    fn io_err(&self, source: io::Error) -> DiskBufferError {
        DiskBufferError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    fn roll(&mut self) -> Result<(), DiskBufferError> {
        let id = self.next_id;
        self.next_id += 1;
        let path = self.dir.join(seg_name(id));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.io_err(e))?;
        self.writer = Some(file);
        self.segments.push_back(Segment {
            id,
            bytes: 0,
            valid_bytes: 0,
            records: 0,
            acked: 0,
        });
        Ok(())
    }

    /// Appends metrics, in order, as one write.
    pub fn append(&mut self, metrics: &[Metric]) -> Result<(), DiskBufferError> {
        if metrics.is_empty() {
            return Ok(());
        }
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        for m in metrics {
            let start = data.len();
            data.extend_from_slice(&[0u8; HEADER as usize]);
            if let Err(source) = serde_json::to_writer(&mut data, m) {
                return Err(DiskBufferError::Encode {
                    path: self.dir.clone(),
                    source,
                });
            }
            let len = (data.len() - start) as u64 - HEADER;
            let crc = crc32fast::hash(&data[start + HEADER as usize..]);
            data[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            data[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        let need_roll = match self.segments.back() {
            Some(s) => self.writer.is_none() || s.bytes >= self.segment_bytes,
            None => true,
        };
        if need_roll {
            self.roll()?;
        }
        let result = match self.writer.as_mut() {
            Some(w) => w.write_all(&data),
            None => Err(io::Error::other("no active segment")),
        };
        if let Err(e) = result {
            // The segment may now end in a torn record: never append to it
            // again; readers stop at its last good record.
            self.writer = None;
            self.scratch = data;
            return Err(self.io_err(e));
        }
        if let Some(seg) = self.segments.back_mut() {
            seg.bytes += data.len() as u64;
            seg.valid_bytes = seg.bytes;
            seg.records += metrics.len() as u64;
        }
        self.pending += metrics.len() as u64;
        self.scratch = data;
        self.enforce_max_bytes();
        Ok(())
    }

    fn enforce_max_bytes(&mut self) {
        let mut total = self.bytes();
        while total > self.max_bytes {
            if self.segments.len() == 1 {
                // Only the active segment: close it so it can go.
                self.writer = None;
            }
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                self.writer = None;
            }
            total -= seg.bytes;
            let lost = seg.records - seg.acked;
            self.pending -= lost;
            self.dropped += lost;
            let _ = fs::remove_file(self.dir.join(seg_name(seg.id)));
            self.reports.push(format!(
                "disk buffer over max_bytes ({}): oldest segment deleted, {lost} undelivered metrics dropped",
                self.max_bytes
            ));
            let next = Position {
                segment: seg.id + 1,
                offset: 0,
            };
            self.read = self.read.max(next);
            if self.ack < next {
                self.ack = next;
                self.write_ack();
            }
        }
    }

    /// Reads up to `max` metrics from the read position on.
    pub fn read_batch(&mut self, max: usize) -> ReadBatch {
        let mut batch = ReadBatch {
            start: self.read,
            end: self.read,
            ..Default::default()
        };
        let mut idx = self.segments.iter().position(|s| s.id >= self.read.segment);
        while let Some(i) = idx {
            if batch.metrics.len() >= max {
                break;
            }
            let (id, valid) = (self.segments[i].id, self.segments[i].valid_bytes);
            let mut pos = if id == self.read.segment {
                self.read.offset
            } else {
                0
            };
            let mut consumed = 0u64;
            if pos < valid {
                let path = self.dir.join(seg_name(id));
                match self.read_segment(
                    &path,
                    pos,
                    valid,
                    max - batch.metrics.len(),
                    &mut batch.metrics,
                ) {
                    Ok((p, n)) => {
                        pos = p;
                        consumed = n;
                    }
                    Err(e) => {
                        self.reports.push(format!(
                            "cannot read {}: {e}; segment skipped",
                            path.display()
                        ));
                        consumed = self.segments[i]
                            .records
                            .saturating_sub(self.segments[i].acked);
                        pos = valid;
                    }
                }
            }
            if consumed > 0 {
                batch.counts.push((id, consumed));
            }
            self.read = Position {
                segment: id,
                offset: pos,
            };
            let is_active = i + 1 == self.segments.len() && self.writer.is_some();
            if pos >= valid && !is_active && i + 1 < self.segments.len() {
                idx = Some(i + 1);
                self.read = Position {
                    segment: self.segments[i + 1].id,
                    offset: 0,
                };
            } else {
                idx = None;
            }
        }
        batch.end = self.read;
        batch
    }

    /// Decodes records of one segment from `pos` until `valid` or `max`
    /// metrics; returns the new position and the records consumed.
    fn read_segment(
        &mut self,
        path: &Path,
        mut pos: u64,
        valid: u64,
        max: usize,
        out: &mut Vec<Metric>,
    ) -> io::Result<(u64, u64)> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(pos))?;
        let mut r = BufReader::with_capacity(256 * 1024, f);
        let mut consumed = 0u64;
        let mut taken = 0usize;
        let mut payload = Vec::new();
        while pos + HEADER <= valid && taken < max {
            let mut header = [0u8; HEADER as usize];
            r.read_exact(&mut header)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            payload.resize(len as usize, 0);
            r.read_exact(&mut payload)?;
            pos += HEADER + len;
            consumed += 1;
            let decoded = if crc32fast::hash(&payload) == crc {
                serde_json::from_slice::<Metric>(&payload).map_err(|e| e.to_string())
            } else {
                Err("checksum mismatch".to_string())
            };
            match decoded {
                Ok(m) => {
                    out.push(m);
                    taken += 1;
                }
                Err(why) => {
                    self.corrupt += 1;
                    self.reports.push(format!(
                        "corrupt record in {} at byte {}: {why}; skipped",
                        path.display(),
                        pos - HEADER - len
                    ));
                }
            }
        }
        Ok((pos, consumed))
    }

    /// The backend took `batch`: advance the ack position, delete segments
    /// wholly before it.
    pub fn ack(&mut self, batch: &ReadBatch) {
        for &(id, n) in &batch.counts {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
                let n = n.min(seg.records - seg.acked);
                seg.acked += n;
                self.pending -= n;
            }
        }
        if batch.end > self.ack {
            self.ack = batch.end;
        }
        self.delete_acked_segments();
        self.write_ack();
    }

    /// Stops appending to the current segment and deletes every segment
    /// already delivered; for a clean shutdown.
    pub fn close(&mut self) {
        self.writer = None;
        if self.pending == 0 {
            // Everything delivered: the active segment's tail is acked too.
            if let Some(last) = self.segments.back() {
                let end = Position {
                    segment: last.id,
                    offset: last.valid_bytes,
                };
                self.ack = self.ack.max(end);
            }
        }
        self.delete_acked_segments();
        self.write_ack();
    }

    fn delete_acked_segments(&mut self) {
        while let Some(seg) = self.segments.front() {
            let active = self.segments.len() == 1 && self.writer.is_some();
            let done = seg.id < self.ack.segment
                || (seg.id == self.ack.segment && self.ack.offset >= seg.valid_bytes && !active);
            if !done {
                break;
            }
            let _ = fs::remove_file(self.dir.join(seg_name(seg.id)));
            self.segments.pop_front();
        }
    }

    /// The backend refused `batch`: read it again next time.
    pub fn rewind(&mut self, batch: &ReadBatch) {
        self.read = batch.start.max(self.ack);
    }

    fn write_ack(&mut self) {
        let tmp = self.dir.join("ack.tmp");
        let text = format!("{} {}\n", self.ack.segment, self.ack.offset);
        let result = fs::write(&tmp, text).and_then(|_| fs::rename(&tmp, self.dir.join("ack")));
        if let Err(e) = result {
            self.reports.push(format!(
                "cannot record acknowledged position in {}: {e}; delivered metrics may be sent again after a restart",
                self.dir.display()
            ));
        }
    }
}

/// Takes an exclusive, non-blocking lock on `dir/lock`; the OS releases it
/// when the file is closed or the process dies.
fn lock_dir(dir: &Path) -> Result<File, DiskBufferError> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DiskBufferError::Io {
            path: path.clone(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own for the duration of the call.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(DiskBufferError::Locked {
                path: dir.to_path_buf(),
            });
        }
    }
    Ok(f)
}

/// Walks a segment's framing: counts records, finds where framing breaks.
fn scan(path: &Path, id: u64) -> io::Result<Segment> {
    let f = File::open(path)?;
    let bytes = f.metadata()?.len();
    let mut r = BufReader::new(f);
    let mut pos = 0u64;
    let mut records = 0u64;
    while pos + HEADER <= bytes {
        let mut header = [0u8; HEADER as usize];
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if len > MAX_RECORD || pos + HEADER + len as u64 > bytes {
            break;
        }
        r.seek_relative(len as i64)?;
        pos += HEADER + len as u64;
        records += 1;
    }
    Ok(Segment {
        id,
        bytes,
        valid_bytes: pos,
        records,
        acked: 0,
    })
}

/// Records that start before `offset`.
fn count_before(path: &Path, offset: u64) -> io::Result<u64> {
    let mut r = BufReader::new(File::open(path)?);
    let mut pos = 0u64;
    let mut n = 0;
    while pos < offset {
        let mut header = [0u8; HEADER as usize];
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        r.seek_relative(len as i64)?;
        pos += HEADER + len;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(from: u64, n: u64) -> Vec<Metric> {
        (from..from + n)
            .map(|i| {
                Metric::new("m", i as i64)
                    .with_tag("host", "h\"1,=")
                    .with_field("seq", i)
                    .with_field("s", "x y")
            })
            .collect()
    }

    fn seqs(batch: &ReadBatch) -> Vec<u64> {
        batch
            .metrics
            .iter()
            .map(|m| match m.field("seq") {
                Some(crate::FieldValue::Uint(v)) => *v,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn seg_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn append_and_replay_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.append(&metrics(0, 10)).unwrap();
        b.append(&metrics(10, 5)).unwrap();
        assert_eq!(b.pending(), 15);
        let first = b.read_batch(4);
        assert_eq!(seqs(&first), vec![0, 1, 2, 3]);
        assert_eq!(first.metrics[0], metrics(0, 1)[0], "round trip is exact");
        b.ack(&first);
        assert_eq!(b.pending(), 11);
        // A read that is never acknowledged (crash) is replayed after reopen.
        let lost = b.read_batch(3);
        assert_eq!(seqs(&lost), vec![4, 5, 6]);
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.pending(), 11);
        b.append(&metrics(15, 2)).unwrap();
        let all = b.read_batch(100);
        assert_eq!(seqs(&all), (4..17).collect::<Vec<_>>());
        b.ack(&all);
        assert_eq!(b.pending(), 0);
        assert!(b.read_batch(100).metrics.is_empty());
        assert!(b.take_reports().is_empty());
        b.close();
        assert!(
            seg_files(dir.path()).is_empty(),
            "close deletes delivered segments"
        );
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.pending(), 0);
        b.append(&metrics(17, 1)).unwrap();
        assert_eq!(seqs(&b.read_batch(10)), vec![17]);
    }

    #[test]
    fn one_log_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        let e = DiskBuffer::open(dir.path(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(first);
        assert!(DiskBuffer::open(dir.path(), 1 << 20).is_ok());
    }

    #[test]
    fn rewind_gives_the_batch_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.append(&metrics(0, 6)).unwrap();
        let a = b.read_batch(4);
        b.rewind(&a);
        let again = b.read_batch(4);
        assert_eq!(seqs(&again), vec![0, 1, 2, 3]);
        b.ack(&again);
        assert_eq!(seqs(&b.read_batch(4)), vec![4, 5]);
    }

    #[test]
    fn ack_deletes_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        // 8 KiB segments: several of them for 300 metrics.
        let mut b = DiskBuffer::open(dir.path(), 64 * 1024).unwrap();
        for i in 0..30 {
            b.append(&metrics(i * 10, 10)).unwrap();
        }
        assert_eq!(b.dropped(), 0);
        let before = seg_files(dir.path()).len();
        assert!(before >= 3, "{before} segments");
        let batch = b.read_batch(200);
        assert_eq!(seqs(&batch), (0..200).collect::<Vec<_>>());
        b.ack(&batch);
        let after = seg_files(dir.path()).len();
        assert!(
            after < before,
            "acked segments deleted: {before} -> {after}"
        );
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 64 * 1024).unwrap();
        assert_eq!(b.pending(), 100);
        assert_eq!(seqs(&b.read_batch(1000)), (200..300).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_record_is_skipped_and_reported_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.append(&metrics(0, 5)).unwrap();
        drop(b);
        let seg = seg_files(dir.path()).pop().unwrap();
        let mut data = fs::read(&seg).unwrap();
        // Flip a byte inside the third record's payload.
        let mut pos = 0usize;
        for _ in 0..2 {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 8 + len;
        }
        data[pos + 8 + 3] ^= 0x55;
        fs::write(&seg, &data).unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        let batch = b.read_batch(100);
        assert_eq!(seqs(&batch), vec![0, 1, 3, 4]);
        assert_eq!(b.corrupt(), 1);
        let reports = b.take_reports();
        assert!(
            reports.iter().any(|r| r.contains("checksum mismatch")),
            "{reports:?}"
        );
        b.ack(&batch);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn truncated_segment_skips_tail_and_reads_next_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.append(&metrics(0, 5)).unwrap();
        drop(b);
        // A second run writes to a new segment.
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.append(&metrics(5, 3)).unwrap();
        drop(b);
        let first = seg_files(dir.path()).remove(0);
        let len = fs::metadata(&first).unwrap().len();
        // Cut the last record in half, as a crash mid-write would.
        OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        let reports = b.take_reports();
        assert!(
            reports.iter().any(|r| r.contains("truncated")),
            "{reports:?}"
        );
        assert_eq!(b.pending(), 7);
        let batch = b.read_batch(100);
        assert_eq!(seqs(&batch), vec![0, 1, 2, 3, 5, 6, 7]);
        b.ack(&batch);
        assert_eq!(b.pending(), 0);
        assert!(seg_files(dir.path()).is_empty());
    }

    #[test]
    fn max_bytes_drops_oldest_segments_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let max = 16 * 1024;
        let mut b = DiskBuffer::open(dir.path(), max).unwrap();
        for i in 0..100 {
            b.append(&metrics(i * 10, 10)).unwrap();
            assert!(b.bytes() <= max, "{} bytes", b.bytes());
        }
        let dropped = b.dropped();
        assert!(dropped > 0);
        assert_eq!(b.pending() + dropped, 1000);
        assert!(b.take_reports().iter().any(|r| r.contains("dropped")));
        let batch = b.read_batch(10_000);
        let got = seqs(&batch);
        // What is left is the newest, contiguous, in order.
        assert_eq!(got.len() as u64, b.pending());
        assert_eq!(got, (dropped..1000).collect::<Vec<_>>());
    }

    #[test]
    fn drop_during_in_flight_batch_keeps_counts_right() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 16 * 1024).unwrap();
        b.append(&metrics(0, 10)).unwrap();
        let in_flight = b.read_batch(10);
        for i in 1..60 {
            b.append(&metrics(i * 10, 10)).unwrap();
        }
        b.ack(&in_flight);
        assert_eq!(b.pending() + b.dropped(), 600);
        let rest = b.read_batch(10_000);
        assert_eq!(rest.metrics.len() as u64, b.pending());
        assert_eq!(*seqs(&rest).last().unwrap(), 599);
    }
}
