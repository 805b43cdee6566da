//! Health from the data `agent status` shows: one component per actor
//! (`input/cpu`, `output/es`, ...), unhealthy while it is not running, while
//! it keeps failing (errors grew and no call succeeded since the last
//! report), or while an output's buffer drops metrics.
use super::proto;
use crate::pipeline::StatusReport;
use crate::selfstat::StatsSnapshot;
use std::collections::HashMap;

/// What the previous report saw of each actor, to tell growth from history.
#[derive(Debug, Default)]
pub struct HealthTracker {
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    errors: u64,
    dropped: u64,
    last_ok_ns: i64,
    failing: bool,
}

impl HealthTracker {
    /// The health to report now. `reload_result` is the reloader's
    /// `last_result` (`ok` or why the last changed config was rejected):
    /// a rejected config is shown in the status text, the agent stays
    /// healthy on the one it runs.
    pub fn report(
        &mut self,
        status: &StatusReport,
        start_ns: u64,
        now_ns: u64,
        reload_result: &str,
    ) -> proto::ComponentHealth {
        let mut components = HashMap::new();
        let mut problems = Vec::new();
        let mut next = HashMap::new();
        for a in status.actors() {
            let key = format!("{}/{}", a.kind, a.name);
            let before = self.seen.get(&key).copied().unwrap_or_default();
            let s: &StatsSnapshot = &a.stats;
            let succeeded = s.last_ok_ns > before.last_ok_ns;
            let failing = if succeeded {
                false
            } else {
                before.failing || s.errors > before.errors
            };
            let dropping = s.dropped > before.dropped;
            let mut reasons = Vec::new();
            if !a.alive {
                reasons.push("not running".to_string());
            }
            if failing {
                reasons.push(match &s.last_error {
                    Some(e) => format!("failing: {e}"),
                    None => "failing".to_string(),
                });
            }
            if dropping {
                reasons.push(format!(
                    "buffer full: dropped {} metrics since the last report ({} in all)",
                    s.dropped - before.dropped,
                    s.dropped
                ));
            }
            next.insert(
                key.clone(),
                Seen {
                    errors: s.errors,
                    dropped: s.dropped,
                    last_ok_ns: s.last_ok_ns,
                    failing,
                },
            );
            let healthy = reasons.is_empty();
            let text = reasons.join("; ");
            if !healthy {
                problems.push(format!("{key}: {text}"));
            }
            components.insert(
                key,
                proto::ComponentHealth {
                    healthy,
                    start_time_unix_nano: start_ns,
                    last_error: text,
                    status: if healthy { "running" } else { "unhealthy" }.into(),
                    status_time_unix_nano: now_ns,
                    ..Default::default()
                },
            );
        }
        self.seen = next;
        let healthy = problems.is_empty();
        let mut status_text = if healthy {
            format!("running: {} pipelines", status.pipelines.len())
        } else {
            format!("degraded: {}", problems.join("; "))
        };
        if reload_result != "ok" && !reload_result.is_empty() {
            status_text.push_str(&format!(
                "; last configuration change rejected, running the previous one: {reload_result}"
            ));
        }
        proto::ComponentHealth {
            healthy,
            start_time_unix_nano: start_ns,
            last_error: problems.join("; "),
            status: status_text,
            status_time_unix_nano: now_ns,
            component_health_map: components,
            attributes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{ActorStatus, PipelineStatus};

    fn report(input: StatsSnapshot, output: StatsSnapshot) -> StatusReport {
        let actor = |kind: &str, stats| ActorStatus {
            kind: kind.into(),
            name: "x".into(),
            plugin: "x".into(),
            alive: true,
            stats,
        };
        StatusReport {
            uptime_sec: 1.0,
            pipelines: vec![PipelineStatus {
                input: "x".into(),
                interval_sec: 1.0,
                actors: vec![actor("input", input)],
                outputs: vec!["x".into()],
            }],
            outputs: vec![actor("output", output)],
        }
    }

    #[test]
    fn failing_until_a_success_and_dropping_while_drops_grow() {
        let mut t = HealthTracker::default();
        let ok = StatsSnapshot {
            last_ok_ns: 10,
            ..Default::default()
        };
        let h = t.report(&report(ok.clone(), ok.clone()), 1, 2, "ok");
        assert!(h.healthy, "{h:?}");
        // Errors without a success: failing, and still failing on the next
        // report with no new calls.
        let failing = StatsSnapshot {
            errors: 2,
            last_ok_ns: 10,
            last_error: Some("connection refused".into()),
            ..Default::default()
        };
        let h = t.report(&report(failing.clone(), ok.clone()), 1, 3, "ok");
        assert!(!h.healthy);
        assert!(
            h.last_error
                .contains("input/x: failing: connection refused"),
            "{}",
            h.last_error
        );
        assert!(
            !t.report(&report(failing.clone(), ok.clone()), 1, 4, "ok")
                .healthy
        );
        let recovered = StatsSnapshot {
            last_ok_ns: 20,
            ..failing
        };
        assert!(
            t.report(&report(recovered.clone(), ok.clone()), 1, 5, "ok")
                .healthy
        );
        // Drops: unhealthy while they grow.
        let dropping = StatsSnapshot {
            dropped: 5,
            ..ok.clone()
        };
        let h = t.report(&report(recovered.clone(), dropping.clone()), 1, 6, "ok");
        assert!(
            h.last_error.contains("output/x: buffer full: dropped 5"),
            "{}",
            h.last_error
        );
        let h = t.report(&report(recovered, dropping), 1, 7, "bad file");
        assert!(h.healthy, "{h:?}");
        assert!(
            h.status.contains("rejected") && h.status.contains("bad file"),
            "{}",
            h.status
        );
    }
}
