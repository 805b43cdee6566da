//! Applying a new configuration: the [`ConfigDiff`] is computed first,
//! then applied in order, as Vector's running topology does: shut down what
//! is removed, reconfigure what changed, spawn what is added, connect the
//! inputs to their new chains. A removed output is flushed only once every
//! pipeline that fed it acknowledged its drain (or its re-wiring), not
//! after a fixed sleep.
use super::{PipelineSupervisor, RunningPipeline, RunningStage, StopActor};
use crate::config::{AgentConfig, Plan};
use crate::pipeline::diff::ConfigDiff;
use crate::pipeline::input_actor::{SetInfo, SetInterval, SetNext};
use crate::pipeline::output_actor::{FlushAndClose, ReconfigureOutput};
use crate::pipeline::{Drain, Reconfigure, StageActor};
use actix::prelude::*;
use futures::future::BoxFuture;
use slog::info;
use std::time::{Duration, Instant};

/// How long a removed output waits for the pipelines that fed it to drain,
/// and then how long it may take to flush.
const REMOVED_OUTPUT_WAIT: Duration = Duration::from_secs(10);

/// Apply a new, already validated configuration to the running actors:
/// unchanged actors are not touched (their timers keep their cadence),
/// changed ones get a `Reconfigure` message, new ones start, removed ones
/// drain and stop.
#[derive(Message)]
#[rtype(result = "ApplyReport")]
pub struct ApplyConfig {
    pub config: AgentConfig,
    pub plan: Plan,
}

/// What a reload changed, by instance (`input:cpu`, `stage:cpu/alarm`,
/// `output:es`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub reconfigured: Vec<String>,
    pub failed: Vec<String>,
}

impl ApplyReport {
    pub fn is_noop(&self) -> bool {
        self.started.is_empty()
            && self.stopped.is_empty()
            && self.reconfigured.is_empty()
            && self.failed.is_empty()
    }
}

/// Drains a removed pipeline from its input down, then stops its actors.
fn stop_pipeline(p: RunningPipeline) -> BoxFuture<'static, ()> {
    let stages: Vec<Addr<StageActor>> = p.stages.iter().map(|s| s.slot.addr()).collect();
    let input = p.input;
    Box::pin(async move {
        let _ = input.send(Drain).await;
        input.do_send(StopActor);
        for s in stages {
            s.do_send(StopActor);
        }
    })
}

/// Drains a replaced chain (its input already sends to the new one), then
/// stops its actors.
fn stop_stages(stages: Vec<RunningStage>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        if let Some(first) = stages.first() {
            let _ = first.slot.addr().send(Drain).await;
        }
        for s in stages {
            s.slot.addr().do_send(StopActor);
        }
    })
}

impl Handler<ApplyConfig> for PipelineSupervisor {
    type Result = MessageResult<ApplyConfig>;

    fn handle(&mut self, msg: ApplyConfig, _: &mut Context<Self>) -> Self::Result {
        let diff = ConfigDiff::new(&self.plan, &self.config.info, &msg.plan, &msg.config.info);
        let mut report = ApplyReport::default();
        self.config = msg.config;
        crate::plugins::common::resolver::set_cache_ttl(
            self.config.main.dns_cache_sec.as_duration(),
        );
        let new = msg.plan;
        // Acknowledgements a removed output waits for: the drains of
        // removed pipelines and replaced chains, the inputs re-wired.
        let mut settled: Vec<BoxFuture<'static, ()>> = Vec::new();

        // 1. Shut down what is removed. Outputs leave service now (no chain
        //    built below points at them) and are flushed at the end.
        let mut removed_outputs = Vec::new();
        for name in &diff.outputs.to_remove {
            if let Some(i) = self.outputs.iter().position(|o| &o.plan.name == name) {
                removed_outputs.push(self.outputs.remove(i).slot.addr());
                report.stopped.push(format!("output:{name}"));
            }
        }
        for name in &diff.pipelines.to_remove {
            if let Some(i) = self.pipelines.iter().position(|p| &p.plan.name == name) {
                settled.push(stop_pipeline(self.pipelines.remove(i)));
                report.stopped.push(format!("input:{name}"));
            }
        }

        // 2. Reconfigure what changed, by message: the actors keep their
        //    timers and buffers.
        for o in &mut self.outputs {
            let Some(plan) = new.outputs.iter().find(|n| n.name == o.plan.name) else {
                continue;
            };
            if diff.outputs.to_change.contains(&plan.name) {
                o.slot.addr().do_send(ReconfigureOutput {
                    config: plan.config.clone(),
                    settings: plan.settings.clone(),
                });
                report.reconfigured.push(format!("output:{}", plan.name));
            }
            o.plan = plan.clone();
        }
        let mut rebuilt = Vec::new();
        for change in &diff.changes {
            let (Some(i), Some(plan)) = (
                self.pipelines
                    .iter()
                    .position(|p| p.plan.name == change.input),
                new.pipelines.iter().find(|n| n.name == change.input),
            ) else {
                continue;
            };
            let p = &mut self.pipelines[i];
            if change.input_config {
                p.input.do_send(Reconfigure(plan.config.clone()));
                report.reconfigured.push(format!("input:{}", plan.name));
            }
            if change.interval {
                p.input.do_send(SetInterval(plan.interval));
                report
                    .reconfigured
                    .push(format!("input:{} interval", plan.name));
            }
            if change.info {
                p.input.do_send(SetInfo(self.config.info.clone()));
            }
            for &j in &change.stages {
                let (stage, stage_plan) = (&mut p.stages[j], &plan.stages[j]);
                stage.config = stage_plan.config.clone();
                stage
                    .slot
                    .addr()
                    .do_send(Reconfigure(stage_plan.config.clone()));
                report
                    .reconfigured
                    .push(format!("stage:{}/{}", plan.name, stage_plan.plugin));
            }
            if change.rebuild_chain {
                rebuilt.push(i);
            }
        }
        for p in &mut self.pipelines {
            if let Some(plan) = new.pipelines.iter().find(|n| n.name == p.plan.name) {
                p.plan = plan.clone();
            }
        }

        // 3. Spawn what is added: outputs first, so the chains can point at
        //    them.
        for name in &diff.outputs.to_add {
            let Some(plan) = new.outputs.iter().find(|o| &o.name == name) else {
                continue;
            };
            if let Some(o) = self.start_output(plan) {
                report.started.push(format!("output:{name}"));
                self.outputs.push(o);
            }
        }
        for &i in &rebuilt {
            let plan = self.pipelines[i].plan.clone();
            let (next, stages) = self.start_stages(&plan);
            // 4. Connect: the input sends to the new chain from its next
            //    batch on (the message is queued now, its answer awaited
            //    below); the old chain drains and stops.
            let p = &mut self.pipelines[i];
            let rewired = p.input.send(SetNext(next.clone()));
            p.input_next = next;
            let old = std::mem::replace(&mut p.stages, stages);
            settled.push(Box::pin(async move {
                let _ = rewired.await;
                stop_stages(old).await;
            }));
            report.reconfigured.push(format!("pipeline:{}", plan.name));
        }
        for name in &diff.pipelines.to_add {
            let Some(plan) = new.pipelines.iter().find(|p| &p.name == name) else {
                continue;
            };
            if let Some(p) = self.start_pipeline(plan, Duration::ZERO) {
                report.started.push(format!("input:{name}"));
                self.pipelines.push(p);
            }
        }
        self.plan = new;

        // Removed outputs flush what reached them once everything upstream
        // acknowledged (bounded: a stuck drain cannot keep them forever).
        actix::spawn(async move {
            let upstream = futures::future::join_all(settled);
            let _ = tokio::time::timeout(REMOVED_OUTPUT_WAIT, upstream).await;
            let deadline = Instant::now() + REMOVED_OUTPUT_WAIT;
            let flushes = removed_outputs.iter().map(|addr| async move {
                let _ = addr.send(FlushAndClose { deadline }).await;
                addr.do_send(StopActor);
            });
            futures::future::join_all(flushes).await;
        });
        info!(self.log, "configuration applied"; "started" => report.started.len(),
            "stopped" => report.stopped.len(), "reconfigured" => report.reconfigured.len());
        MessageResult(report)
    }
}
