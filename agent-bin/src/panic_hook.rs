//! The process's panic hook.
use slog::{error, Logger};

/// Panics inside plugins are caught and restarted by the core; log them as
/// one line instead of the default multi-line stderr dump.
///
/// A panic inside the hook would abort the process, so the hook logs only
/// through a logger that cannot panic or block: it formats into memory and
/// queues for the logging thread; a full queue or a failed write is counted
/// (`agent status`), never a panic (see agent_core::logging).
pub fn install(log: Logger) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        error!(log, "panic"; "message" => msg, "at" => location);
    }));
}
