//! The PipelineSupervisor: builds every actor from a [`Plan`], owns their
//! addresses and counters, drains them in order on shutdown, and reports
//! their state.
use super::input_actor::{GatherNow, InputSpec};
use super::output_actor::FlushAndClose;
use super::stage_actor::StageEntry;
use super::{Drain, InputActor, OutputActor, PluginStats, Sink, StageActor, StatsSnapshot};
use crate::config::{AgentConfig, OutputPlan, PipelinePlan, Plan, StageKind};
use crate::registry::Registry;
use actix::prelude::*;
use slog::{info, o, warn, Logger};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct RunningStage {
    kind: StageKind,
    plugin: String,
    addr: Addr<StageActor>,
    stats: Arc<PluginStats>,
}

struct RunningPipeline {
    plan: PipelinePlan,
    input: Addr<InputActor>,
    stats: Arc<PluginStats>,
    stages: Vec<RunningStage>,
}

struct RunningOutput {
    plan: OutputPlan,
    addr: Addr<OutputActor>,
    stats: Arc<PluginStats>,
}

/// Builds and owns every actor of every pipeline.
pub struct PipelineSupervisor {
    registry: Arc<Registry>,
    config: AgentConfig,
    plan: Plan,
    log: Logger,
    /// Inputs gather on their timers; false for `agent once`, where the
    /// caller sends [`GatherOnce`].
    scheduled: bool,
    pipelines: Vec<RunningPipeline>,
    outputs: Vec<RunningOutput>,
    started_at: Instant,
}

impl PipelineSupervisor {
    /// A supervisor whose inputs gather on their intervals.
    pub fn new(config: AgentConfig, plan: Plan, registry: Arc<Registry>, log: Logger) -> Self {
        PipelineSupervisor {
            registry,
            config,
            plan,
            log,
            scheduled: true,
            pipelines: Vec::new(),
            outputs: Vec::new(),
            started_at: Instant::now(),
        }
    }

    /// A supervisor whose inputs gather only when told ([`GatherOnce`]).
    pub fn unscheduled(mut self) -> Self {
        self.scheduled = false;
        self
    }

    fn start_outputs(&mut self) {
        for plan in &self.plan.outputs {
            let Some(entry) = self.registry.outputs.get(plan.plugin.as_str()) else {
                warn!(self.log, "output plugin vanished from the registry"; "output" => &plan.name);
                continue;
            };
            let stats = Arc::new(PluginStats::default());
            let log = self.log.new(o!("output" => plan.name.clone()));
            let addr = OutputActor::new(
                entry.clone(),
                plan.config.clone(),
                plan.settings.clone(),
                stats.clone(),
                log,
            )
            .start();
            self.outputs.push(RunningOutput {
                plan: plan.clone(),
                addr,
                stats,
            });
        }
    }

    fn start_pipeline(&mut self, plan: &PipelinePlan, start_after: Duration) {
        let by_name: HashMap<&str, &Addr<OutputActor>> = self
            .outputs
            .iter()
            .map(|o| (o.plan.name.as_str(), &o.addr))
            .collect();
        let outs: Vec<Addr<OutputActor>> = plan
            .outputs
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).map(|a| (*a).clone()))
            .collect();
        let mut next = Sink::Outputs(outs.into());
        let log = self.log.new(o!("input" => plan.name.to_string()));
        // Build from the outputs back, so each stage knows its successor.
        let mut stages = Vec::new();
        for stage in plan.stages.iter().rev() {
            let entry = match stage.kind {
                StageKind::Processor => self
                    .registry
                    .processors
                    .get(stage.plugin.as_str())
                    .cloned()
                    .map(StageEntry::Processor),
                StageKind::Aggregator => self
                    .registry
                    .aggregators
                    .get(stage.plugin.as_str())
                    .cloned()
                    .map(StageEntry::Aggregator),
            };
            let Some(entry) = entry else { continue };
            let stats = Arc::new(PluginStats::default());
            let actor = StageActor::new(
                entry,
                stage.config.clone(),
                self.config.info.clone(),
                next,
                stats.clone(),
                log.new(o!("stage" => stage.plugin.clone())),
            );
            let kind = actor.kind();
            let addr = actor.start();
            next = Sink::Stage(addr.clone());
            stages.push(RunningStage {
                kind,
                plugin: stage.plugin.clone(),
                addr,
                stats,
            });
        }
        stages.reverse();
        let Some(entry) = self.registry.inputs.get(plan.plugin.as_str()).cloned() else {
            warn!(log, "input plugin vanished from the registry");
            return;
        };
        let stats = Arc::new(PluginStats::default());
        let input = InputActor::new(InputSpec {
            name: plan.name.clone(),
            entry,
            config: plan.config.clone(),
            interval: plan.interval,
            start_after,
            scheduled: self.scheduled,
            info: self.config.info.clone(),
            next,
            stats: stats.clone(),
            log,
        })
        .start();
        self.pipelines.push(RunningPipeline {
            plan: plan.clone(),
            input,
            stats,
            stages,
        });
    }
}

impl Actor for PipelineSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.start_outputs();
        let plans = self.plan.pipelines.clone();
        let delay = self.plan.start_delay;
        for (i, plan) in plans.iter().enumerate() {
            self.start_pipeline(plan, delay * i as u32);
        }
        info!(self.log, "pipelines started"; "inputs" => self.pipelines.len(), "outputs" => self.outputs.len(),
            "startup_us" => self.started_at.elapsed().as_micros() as u64);
    }
}

/// Gather every input once, run the metrics through their pipelines and
/// reply when every stage has passed them on (outputs still buffer them
/// until [`Shutdown`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct GatherOnce;

impl Handler<GatherOnce> for PipelineSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: GatherOnce, _: &mut Context<Self>) -> Self::Result {
        let inputs: Vec<Addr<InputActor>> = self.pipelines.iter().map(|p| p.input.clone()).collect();
        Box::pin(async move {
            futures::future::join_all(inputs.iter().map(|i| i.send(GatherNow))).await;
        })
    }
}

/// Stop gathering, drain every pipeline, flush every output within the
/// deadline and stop the actors.
#[derive(Message)]
#[rtype(result = "ShutdownReport")]
pub struct Shutdown {
    pub deadline: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Metrics still buffered in outputs when the deadline passed.
    pub undelivered: usize,
}

impl Handler<Shutdown> for PipelineSupervisor {
    type Result = ResponseActFuture<Self, ShutdownReport>;

    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let deadline = Instant::now() + msg.deadline;
        let inputs: Vec<Addr<InputActor>> = self.pipelines.iter().map(|p| p.input.clone()).collect();
        let outputs: Vec<Addr<OutputActor>> = self.outputs.iter().map(|o| o.addr.clone()).collect();
        let log = self.log.clone();
        let work = async move {
            // Inputs first: in-flight gathers finish and flow down.
            let drains = inputs.iter().map(|i| i.send(Drain));
            let _ = tokio::time::timeout_at(deadline.into(), futures::future::join_all(drains)).await;
            let flushes = outputs.iter().map(|o| o.send(FlushAndClose { deadline }));
            let undelivered: usize = futures::future::join_all(flushes)
                .await
                .into_iter()
                .map(|r| r.unwrap_or(0))
                .sum();
            info!(log, "shutdown complete"; "undelivered" => undelivered);
            ShutdownReport { undelivered }
        };
        Box::pin(work.into_actor(self).map(|report, act, ctx| {
            for p in &act.pipelines {
                p.input.do_send(StopActor);
                for s in &p.stages {
                    s.addr.do_send(StopActor);
                }
            }
            for o in &act.outputs {
                o.addr.do_send(StopActor);
            }
            act.pipelines.clear();
            act.outputs.clear();
            ctx.stop();
            report
        }))
    }
}

/// Stops any of the plugin actors.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopActor;

macro_rules! stop_handler {
    ($($t:ty),*) => {$(
        impl Handler<StopActor> for $t {
            type Result = ();
            fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
                ctx.stop();
            }
        }
    )*};
}
stop_handler!(InputActor, StageActor, OutputActor);

/// One actor's state, for `agent status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActorStatus {
    /// `input`, `processor`, `aggregator` or `output`.
    pub kind: &'static str,
    /// Instance name.
    pub name: String,
    /// Registered plugin name.
    pub plugin: String,
    /// False when the actor's mailbox is closed.
    pub alive: bool,
    pub stats: StatsSnapshot,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineStatus {
    pub input: String,
    pub interval_sec: f64,
    pub actors: Vec<ActorStatus>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    pub uptime_sec: f64,
    pub pipelines: Vec<PipelineStatus>,
    pub outputs: Vec<ActorStatus>,
}

impl StatusReport {
    /// Every actor, pipelines first then outputs.
    pub fn actors(&self) -> impl Iterator<Item = &ActorStatus> {
        self.pipelines
            .iter()
            .flat_map(|p| p.actors.iter())
            .chain(self.outputs.iter())
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&ActorStatus> {
        self.actors().find(|a| a.kind == kind && a.name == name)
    }
}

#[derive(Message)]
#[rtype(result = "StatusReport")]
pub struct Status;

impl Handler<Status> for PipelineSupervisor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        let pipelines = self
            .pipelines
            .iter()
            .map(|p| {
                let mut actors = vec![ActorStatus {
                    kind: "input",
                    name: p.plan.name.to_string(),
                    plugin: p.plan.plugin.clone(),
                    alive: p.input.connected(),
                    stats: p.stats.snapshot(),
                }];
                actors.extend(p.stages.iter().map(|s| ActorStatus {
                    kind: match s.kind {
                        StageKind::Processor => "processor",
                        StageKind::Aggregator => "aggregator",
                    },
                    name: s.plugin.clone(),
                    plugin: s.plugin.clone(),
                    alive: s.addr.connected(),
                    stats: s.stats.snapshot(),
                }));
                PipelineStatus {
                    input: p.plan.name.to_string(),
                    interval_sec: p.plan.interval.as_secs_f64(),
                    actors,
                    outputs: p.plan.outputs.clone(),
                }
            })
            .collect();
        let outputs = self
            .outputs
            .iter()
            .map(|o| ActorStatus {
                kind: "output",
                name: o.plan.name.clone(),
                plugin: o.plan.plugin.clone(),
                alive: o.addr.connected(),
                stats: o.stats.snapshot(),
            })
            .collect();
        MessageResult(StatusReport {
            uptime_sec: self.started_at.elapsed().as_secs_f64(),
            pipelines,
            outputs,
        })
    }
}
