//! Blocking work off the event loop.
//!
//! Every actor runs on one thread (one actix `System`), so a call that can
//! block (a write to a pipe nobody reads, `statvfs` on a hung mount, a child
//! process that never answers, a full disk) would stall every pipeline, the
//! status socket and signal handling. Such calls run on a [`Worker`]: a
//! dedicated thread per resource (stdout, one output's file, one blocking
//! processor stage, one `statvfs` prober) fed by a bounded queue, each call
//! answered through a oneshot channel the actor awaits.
//!
//! Why dedicated threads rather than tokio's `spawn_blocking` or an actix
//! `SyncArbiter` (measured, see the pipeline module docs for figures):
//! - dropping a tokio runtime waits for every running `spawn_blocking` task,
//!   so one write stuck on a pipe forever would hang the agent's exit past its
//!   shutdown deadline; a detached thread does not (the process exits);
//! - a thread per resource keeps that resource's calls in order for free and a
//!   stuck resource holds only its own thread; a shared pool (or a
//!   `SyncArbiter` of N threads) is exhausted by N stuck calls, after which
//!   every other resource waits too;
//! - the queue is bounded and never waited on: a full queue is an error the
//!   caller reports (the output core retries later), so a stuck resource never
//!   makes threads or memory grow.
use crate::pipeline::panic_message;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;
use tokio::sync::oneshot;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a call to a [`Worker`] gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}: still busy with an earlier call")]
    Busy(String),
    #[error("{0}: the worker thread is gone")]
    Gone(String),
    #[error("{0}: panicked: {1}")]
    Panicked(String, String),
    #[error("{0}: no answer within {1:.1?}")]
    TimedOut(String, Duration),
    #[error("cannot start thread {0}: {1}")]
    Spawn(String, std::io::Error),
}

/// A thread that owns a state `S` and runs calls on it one at a time, in
/// the order they were queued. Dropping the handle lets the thread finish
/// the call it is in, then end (dropping `S` there, off the event loop).
pub struct Worker<S> {
    tx: SyncSender<Job<S>>,
    name: String,
}

impl<S: Send + 'static> Worker<S> {
    /// Starts the thread `name` with room for `queue` calls waiting behind
    /// the running one.
    pub fn spawn(name: &str, queue: usize, state: S) -> Result<Self, WorkerError> {
        let (tx, rx) = sync_channel::<Job<S>>(queue);
        std::thread::Builder::new()
            .name(thread_name(name))
            .spawn(move || {
                let mut state = state;
                while let Ok(job) = rx.recv() {
                    job(&mut state);
                }
            })
            .map_err(|e| WorkerError::Spawn(name.to_string(), e))?;
        Ok(Worker {
            tx,
            name: name.to_string(),
        })
    }

    /// Queues `f` without waiting: a full queue is [`WorkerError::Busy`].
    /// The answer comes through the returned [`Reply`]; a caller that drops
    /// it before the call started cancels the call.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<Reply<R>, WorkerError> {
        let (reply, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |state: &mut S| {
            // Nobody waits any more (timed out): do not run a stale call.
            if reply.is_closed() {
                return;
            }
            let result =
                catch_unwind(AssertUnwindSafe(|| f(state))).map_err(|p| panic_message(&*p));
            let _ = reply.send(result);
        });
        match self.tx.try_send(job) {
            Ok(()) => Ok(Reply {
                rx,
                name: self.name.clone(),
            }),
            Err(TrySendError::Full(_)) => Err(WorkerError::Busy(self.name.clone())),
            Err(TrySendError::Disconnected(_)) => Err(WorkerError::Gone(self.name.clone())),
        }
    }

    /// [`Worker::submit`], then waits at most `timeout` for the answer.
    pub async fn call<R: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, WorkerError> {
        self.submit(f)?.wait(timeout).await
    }
}

/// The pending answer of one [`Worker`] call.
pub struct Reply<R> {
    rx: oneshot::Receiver<Result<R, String>>,
    name: String,
}

impl<R> Reply<R> {
    /// The call's result, or why there is none.
    pub async fn wait(self, timeout: Duration) -> Result<R, WorkerError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(panic))) => Err(WorkerError::Panicked(self.name, panic)),
            Ok(Err(_)) => Err(WorkerError::Gone(self.name)),
            Err(_) => Err(WorkerError::TimedOut(self.name, timeout)),
        }
    }

    /// The call's result whenever it comes.
    pub async fn wait_forever(self) -> Result<R, WorkerError> {
        match self.rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(panic)) => Err(WorkerError::Panicked(self.name, panic)),
            Err(_) => Err(WorkerError::Gone(self.name)),
        }
    }
}

/// The process's standard streams, written by one thread each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    Stdout,
    Stderr,
}

/// How long one write to stdout/stderr (a chunk of at most a few hundred
/// kilobytes) may take before the output reports the stream as stuck.
pub const STD_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `buf` to `stream` on that stream's writer thread (flushing when
/// `flush`), and gives the buffer back, cleared, for reuse. Every output
/// writing to stdout shares one thread: the pipe is one resource, so a
/// reader that stops costs one thread however many outputs use it.
pub async fn write_std_stream(
    stream: StdStream,
    buf: String,
    flush: bool,
) -> Result<String, std::io::Error> {
    use std::io::Write;
    static STDOUT: std::sync::OnceLock<Result<Worker<()>, String>> = std::sync::OnceLock::new();
    static STDERR: std::sync::OnceLock<Result<Worker<()>, String>> = std::sync::OnceLock::new();
    let (cell, name) = match stream {
        StdStream::Stdout => (&STDOUT, "stdout-writer"),
        StdStream::Stderr => (&STDERR, "stderr-writer"),
    };
    // Two calls: the running one and one waiting behind it (two outputs on
    // stdout); beyond that the stream is stuck and the caller retries later.
    let worker = cell
        .get_or_init(|| Worker::spawn(name, 1, ()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))?;
    let call = move |_: &mut ()| -> std::io::Result<String> {
        let mut buf = buf;
        match stream {
            StdStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf.as_bytes())?;
                if flush {
                    out.flush()?;
                }
            }
            StdStream::Stderr => std::io::stderr().lock().write_all(buf.as_bytes())?,
        }
        buf.clear();
        Ok(buf)
    };
    match worker.call(STD_WRITE_TIMEOUT, call).await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(match e {
            WorkerError::Busy(_) | WorkerError::TimedOut(..) => format!(
                "{e}: is anything reading {}?",
                if stream == StdStream::Stdout {
                    "stdout"
                } else {
                    "stderr"
                }
            ),
            e => e.to_string(),
        })),
    }
}

/// Linux keeps 15 bytes of a thread name; keep the start, on a char boundary.
fn thread_name(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[actix_rt::test]
    async fn calls_run_in_order_on_the_state() {
        let w = Worker::spawn("test-order", 4, Vec::<u32>::new()).unwrap();
        let replies: Vec<_> = (0..4)
            .map(|i| {
                w.submit(move |v: &mut Vec<u32>| {
                    v.push(i);
                    v.clone()
                })
                .unwrap()
            })
            .collect();
        let mut last = Vec::new();
        for r in replies {
            last = r.wait(Duration::from_secs(10)).await.unwrap();
        }
        assert_eq!(last, vec![0, 1, 2, 3]);
    }

    #[actix_rt::test]
    async fn a_stuck_call_times_out_fills_the_queue_and_stale_calls_are_skipped() {
        let w = Worker::spawn("test-stuck", 1, 0u32).unwrap();
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let stuck = w
            .submit(move |n: &mut u32| {
                g.wait();
                *n += 1;
            })
            .unwrap();
        // The thread is inside the first call: the second waits in the
        // queue; the third finds the queue full and is refused at once.
        let mut queued = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queued.is_none() && std::time::Instant::now() < deadline {
            queued = w.submit(|n: &mut u32| *n += 10).ok();
        }
        let queued = queued.expect("second call queued");
        assert!(matches!(
            w.submit(|n: &mut u32| *n += 100),
            Err(WorkerError::Busy(_))
        ));
        assert!(matches!(
            queued.wait(Duration::from_millis(50)).await,
            Err(WorkerError::TimedOut(..))
        ));
        drop(stuck);
        gate.wait();
        // The timed-out call was cancelled: only the first one counted. (The
        // queue frees once the thread has taken the cancelled call.)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let reply = loop {
            match w.submit(|n: &mut u32| *n) {
                Ok(r) => break r,
                Err(WorkerError::Busy(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(reply.wait(Duration::from_secs(10)).await.unwrap(), 1);
    }

    #[actix_rt::test]
    async fn a_panicking_call_is_an_error_and_the_worker_lives_on() {
        let w = Worker::spawn("test-panic", 1, ()).unwrap();
        let r = w
            .call(Duration::from_secs(10), |_: &mut ()| -> u32 {
                panic!("boom")
            })
            .await;
        assert!(
            matches!(r, Err(WorkerError::Panicked(_, ref m)) if m == "boom"),
            "{r:?}"
        );
        let r = w.call(Duration::from_secs(10), |_: &mut ()| 7).await;
        assert_eq!(r.unwrap(), 7);
    }

    #[test]
    fn thread_names_fit_linux() {
        assert_eq!(thread_name("console-stdout-writer"), "console-stdout-");
        assert_eq!(thread_name("dé".repeat(10).as_str()).len(), 15);
    }
}
