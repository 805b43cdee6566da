//! The PipelineSupervisor: builds every actor from a [`Plan`], owns their
//! addresses and counters, drains them in order on shutdown, and reports
//! their state.
use super::input_actor::{GatherNow, InputSpec};
use super::output_actor::{FlushAndClose, ReconfigureOutput};
use super::output_buffers::{OutputBuffers, SharedBuffers};
use super::stage_actor::StageEntry;
use super::{
    ActorDied, Backoff, DeathGuard, Drain, InputActor, OutputActor, OutputSlot, PluginStats, Sink,
    Slot, StageActor, StageSlot, StatsSnapshot,
};
use crate::config::{AgentConfig, OutputPlan, PipelinePlan, Plan, PluginConfig, StageKind};

use crate::registry::Registry;
use actix::prelude::*;
use slog::{error, info, o, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An incarnation that lived this long before dying restarts without
/// waiting (its backoff starts over).
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Restart bookkeeping of one supervised actor.
struct Incarnation {
    /// Id of the running incarnation (its [`DeathGuard`] reports it).
    id: u64,
    started_at: Instant,
    backoff: Backoff,
}

impl Incarnation {
    fn new(id: u64) -> Self {
        Incarnation {
            id,
            started_at: Instant::now(),
            backoff: Backoff::default(),
        }
    }

    /// The delay before restarting after a death now.
    fn restart_delay(&mut self) -> Duration {
        if self.started_at.elapsed() >= STABLE_AFTER {
            self.backoff.reset();
        }
        self.backoff.next_delay()
    }

    fn reborn(&mut self, id: u64) {
        self.id = id;
        self.started_at = Instant::now();
    }
}

struct RunningStage {
    kind: StageKind,
    plugin: String,
    config: PluginConfig,
    slot: Arc<StageSlot>,
    /// Where the stage sends its metrics (given again to a restarted one).
    next: Sink,
    stats: Arc<PluginStats>,
    life: Incarnation,
}

struct RunningPipeline {
    plan: PipelinePlan,
    input: Addr<InputActor>,
    /// Where the input sends its metrics.
    input_next: Sink,
    stats: Arc<PluginStats>,
    stages: Vec<RunningStage>,
    life: Incarnation,
}

struct RunningOutput {
    plan: OutputPlan,
    slot: Arc<OutputSlot>,
    /// Outlives every incarnation: nothing accepted is lost with an actor.
    buffers: SharedBuffers,
    stats: Arc<PluginStats>,
    life: Incarnation,
}

/// Which actor an id belongs to.
#[derive(Clone, Copy)]
enum Located {
    Input(usize),
    Stage(usize, usize),
    Output(usize),
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
    /// Where death guards report; set when the supervisor starts.
    me: Option<Recipient<ActorDied>>,
    next_id: u64,
    /// No restarts once a shutdown began.
    shutting_down: bool,
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
            me: None,
            next_id: 1,
            shutting_down: false,
        }
    }

    /// A supervisor whose inputs gather only when told ([`GatherOnce`]).
    pub fn unscheduled(mut self) -> Self {
        self.scheduled = false;
        self
    }

    /// A guard for a new incarnation, and its id.
    fn guard(&mut self) -> (u64, DeathGuard) {
        let id = self.next_id;
        self.next_id += 1;
        (id, DeathGuard::new(id, self.me.clone()))
    }

    /// Starts an output actor on `slot` (re-wired to the new actor), or on
    /// a new slot; returns the incarnation's id and the slot.
    fn output_actor(
        &mut self,
        plan: &OutputPlan,
        buffers: &SharedBuffers,
        stats: &Arc<PluginStats>,
        slot: Option<&Arc<OutputSlot>>,
    ) -> Option<(u64, Arc<OutputSlot>)> {
        let Some(entry) = self.registry.outputs.get(plan.plugin.as_str()).cloned() else {
            warn!(self.log, "output plugin vanished from the registry"; "output" => &plan.name);
            return None;
        };
        let (id, guard) = self.guard();
        let log = self.log.new(o!("output" => plan.name.clone()));
        // The actor holds its slot, so the slot needs the address first.
        let ctx = Context::new();
        let addr = ctx.address();
        let slot = match slot {
            Some(s) => s.clone(),
            None => Slot::new(addr.clone(), stats.clone()),
        };
        let actor = OutputActor::new(
            entry,
            plan.config.clone(),
            plan.settings.clone(),
            buffers.clone(),
            stats.clone(),
            log,
            slot.clone(),
            guard,
        );
        ctx.run(actor);
        slot.replace(addr);
        Some((id, slot))
    }

    fn start_output(&mut self, plan: &OutputPlan) -> Option<RunningOutput> {
        let stats = Arc::new(PluginStats::default());
        let buffers = OutputBuffers::shared();
        let (id, slot) = self.output_actor(plan, &buffers, &stats, None)?;
        crate::selfstat::directory::register("output", "", &plan.name, &stats);
        Some(RunningOutput {
            plan: plan.clone(),
            slot,
            buffers,
            stats,
            life: Incarnation::new(id),
        })
    }

    /// The outputs a pipeline delivers to, as a sink.
    fn output_sink(&self, names: &[String]) -> Sink {
        let outs: Vec<Arc<OutputSlot>> = names
            .iter()
            .filter_map(|n| self.outputs.iter().find(|o| &o.plan.name == n))
            .map(|o| o.slot.clone())
            .collect();
        Sink::Outputs(outs.into())
    }

    fn stage_entry(&self, kind: StageKind, plugin: &str) -> Option<StageEntry> {
        match kind {
            StageKind::Processor => self
                .registry
                .processors
                .get(plugin)
                .cloned()
                .map(StageEntry::Processor),
            StageKind::Aggregator => self
                .registry
                .aggregators
                .get(plugin)
                .cloned()
                .map(StageEntry::Aggregator),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_actor(
        &mut self,
        pipeline: &PipelinePlan,
        kind: StageKind,
        plugin: &str,
        config: &PluginConfig,
        next: &Sink,
        stats: &Arc<PluginStats>,
        slot: Option<&Arc<StageSlot>>,
    ) -> Option<(u64, Arc<StageSlot>)> {
        let entry = self.stage_entry(kind, plugin)?;
        let (id, guard) = self.guard();
        let log = self
            .log
            .new(o!("input" => pipeline.name.to_string(), "stage" => plugin.to_string()));
        // The actor holds its slot, so the slot needs the address first.
        let ctx = Context::new();
        let addr = ctx.address();
        let slot = match slot {
            Some(s) => s.clone(),
            None => Slot::new(addr.clone(), stats.clone()),
        };
        let actor = StageActor::new(
            entry,
            config.clone(),
            self.config.info.clone(),
            next.clone(),
            stats.clone(),
            log,
            slot.clone(),
            guard,
        );
        ctx.run(actor);
        slot.replace(addr);
        Some((id, slot))
    }

    /// Starts a pipeline's stage actors, from the outputs back so each one
    /// knows its successor; returns the sink the input sends to.
    fn start_stages(&mut self, plan: &PipelinePlan) -> (Sink, Vec<RunningStage>) {
        let mut next = self.output_sink(&plan.outputs);
        let mut stages = Vec::new();
        for stage in plan.stages.iter().rev() {
            let stats = Arc::new(PluginStats::default());
            let Some((id, slot)) = self.stage_actor(
                plan,
                stage.kind,
                &stage.plugin,
                &stage.config,
                &next,
                &stats,
                None,
            ) else {
                continue;
            };
            let kind_name = match stage.kind {
                StageKind::Processor => "processor",
                StageKind::Aggregator => "aggregator",
            };
            crate::selfstat::directory::register(kind_name, &plan.name, &stage.plugin, &stats);
            stages.push(RunningStage {
                kind: stage.kind,
                plugin: stage.plugin.clone(),
                config: stage.config.clone(),
                slot: slot.clone(),
                next: std::mem::replace(&mut next, Sink::Stage(slot)),
                stats,
                life: Incarnation::new(id),
            });
        }
        stages.reverse();
        (next, stages)
    }

    fn input_actor(
        &mut self,
        plan: &PipelinePlan,
        next: &Sink,
        stats: &Arc<PluginStats>,
        start_after: Duration,
    ) -> Option<(u64, Addr<InputActor>)> {
        let Some(entry) = self.registry.inputs.get(plan.plugin.as_str()).cloned() else {
            warn!(self.log, "input plugin vanished from the registry"; "input" => plan.name.to_string());
            return None;
        };
        let (id, guard) = self.guard();
        let addr = InputActor::new(InputSpec {
            name: plan.name.clone(),
            entry,
            config: plan.config.clone(),
            interval: plan.interval,
            start_after,
            scheduled: self.scheduled,
            info: self.config.info.clone(),
            next: next.clone(),
            stats: stats.clone(),
            log: self.log.new(o!("input" => plan.name.to_string())),
            guard,
        })
        .start();
        Some((id, addr))
    }

    fn start_pipeline(
        &mut self,
        plan: &PipelinePlan,
        start_after: Duration,
    ) -> Option<RunningPipeline> {
        if !self.registry.inputs.contains_key(plan.plugin.as_str()) {
            warn!(self.log, "input plugin vanished from the registry"; "input" => plan.name.to_string());
            return None;
        }
        let (next, stages) = self.start_stages(plan);
        let stats = Arc::new(PluginStats::default());
        let (id, input) = self.input_actor(plan, &next, &stats, start_after)?;
        crate::selfstat::directory::register("input", &plan.name, &plan.name, &stats);
        Some(RunningPipeline {
            plan: plan.clone(),
            input,
            input_next: next,
            stats,
            stages,
            life: Incarnation::new(id),
        })
    }

    fn locate(&self, id: u64) -> Option<Located> {
        for (i, p) in self.pipelines.iter().enumerate() {
            if p.life.id == id {
                return Some(Located::Input(i));
            }
            if let Some(j) = p.stages.iter().position(|s| s.life.id == id) {
                return Some(Located::Stage(i, j));
            }
        }
        self.outputs
            .iter()
            .position(|o| o.life.id == id)
            .map(Located::Output)
    }

    /// Starts a new incarnation of the actor that died as `id`, unless it
    /// was removed or replaced meanwhile, and points every sender at it.
    fn restart(&mut self, id: u64) {
        if self.shutting_down {
            return;
        }
        let Some(at) = self.locate(id) else {
            return;
        };
        let restarted = match at {
            Located::Input(i) => {
                let plan = self.pipelines[i].plan.clone();
                let next = self.pipelines[i].input_next.clone();
                let stats = self.pipelines[i].stats.clone();
                self.input_actor(&plan, &next, &stats, Duration::ZERO)
                    .map(|(new_id, addr)| {
                        let p = &mut self.pipelines[i];
                        p.input = addr;
                        p.life.reborn(new_id);
                        (stats, format!("input:{}", plan.name))
                    })
            }
            Located::Stage(i, j) => {
                let plan = self.pipelines[i].plan.clone();
                let s = &self.pipelines[i].stages[j];
                let (kind, plugin, config, next, stats, slot) = (
                    s.kind,
                    s.plugin.clone(),
                    s.config.clone(),
                    s.next.clone(),
                    s.stats.clone(),
                    s.slot.clone(),
                );
                // The new incarnation continues with what waits in the slot.
                self.stage_actor(&plan, kind, &plugin, &config, &next, &stats, Some(&slot))
                    .map(|(new_id, _)| {
                        let s = &mut self.pipelines[i].stages[j];
                        s.life.reborn(new_id);
                        (stats, format!("stage:{}/{}", plan.name, plugin))
                    })
            }
            Located::Output(k) => {
                let plan = self.outputs[k].plan.clone();
                let buffers = self.outputs[k].buffers.clone();
                let stats = self.outputs[k].stats.clone();
                let slot = self.outputs[k].slot.clone();
                self.output_actor(&plan, &buffers, &stats, Some(&slot))
                    .map(|(new_id, _)| {
                        let o = &mut self.outputs[k];
                        o.life.reborn(new_id);
                        (stats, format!("output:{}", plan.name))
                    })
            }
        };
        if let Some((stats, name)) = restarted {
            PluginStats::add(&stats.actor_restarts, 1);
            info!(self.log, "actor restarted"; "actor" => name);
        }
    }
}

impl Actor for PipelineSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.me = Some(ctx.address().recipient());
        let output_plans = self.plan.outputs.clone();
        for plan in &output_plans {
            if let Some(o) = self.start_output(plan) {
                self.outputs.push(o);
            }
        }
        let delay = self.plan.start_delay;
        let pipeline_plans = self.plan.pipelines.clone();
        for (i, plan) in pipeline_plans.iter().enumerate() {
            if let Some(p) = self.start_pipeline(plan, delay * i as u32) {
                self.pipelines.push(p);
            }
        }
        info!(self.log, "pipelines started"; "inputs" => self.pipelines.len(), "outputs" => self.outputs.len(),
            "startup_us" => self.started_at.elapsed().as_micros() as u64);
    }
}

impl Handler<ActorDied> for PipelineSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ActorDied, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let id = msg.0;
        let (life, name) = match self.locate(id) {
            None => return,
            Some(Located::Input(i)) => {
                let p = &mut self.pipelines[i];
                (&mut p.life, format!("input:{}", p.plan.name))
            }
            Some(Located::Stage(i, j)) => {
                let p = &mut self.pipelines[i];
                let s = &mut p.stages[j];
                (&mut s.life, format!("stage:{}/{}", p.plan.name, s.plugin))
            }
            Some(Located::Output(k)) => {
                let o = &mut self.outputs[k];
                (&mut o.life, format!("output:{}", o.plan.name))
            }
        };
        let delay = life.restart_delay();
        error!(self.log, "actor died; restarting it"; "actor" => name,
            "backoff_ms" => delay.as_millis() as u64);
        ctx.run_later(delay, move |act, _| act.restart(id));
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
        let inputs: Vec<Addr<InputActor>> =
            self.pipelines.iter().map(|p| p.input.clone()).collect();
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
        self.shutting_down = true;
        let deadline = Instant::now() + msg.deadline;
        let inputs: Vec<Addr<InputActor>> =
            self.pipelines.iter().map(|p| p.input.clone()).collect();
        let outputs: Vec<Addr<OutputActor>> = self.outputs.iter().map(|o| o.slot.addr()).collect();
        let log = self.log.clone();
        let work = async move {
            // Inputs first: in-flight gathers finish and flow down.
            let drains = inputs.iter().map(|i| i.send(Drain));
            let _ =
                tokio::time::timeout_at(deadline.into(), futures::future::join_all(drains)).await;
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
                    s.slot.addr().do_send(StopActor);
                }
            }
            for o in &act.outputs {
                o.slot.addr().do_send(StopActor);
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
                // Ordered: the supervisor does not restart it.
                self.guard.disarm();
                ctx.stop();
            }
        }
    )*};
}
stop_handler!(InputActor, StageActor, OutputActor);

/// One actor's state, for `agent status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ActorStatus {
    /// `input`, `processor`, `aggregator` or `output`.
    pub kind: String,
    /// Instance name.
    pub name: String,
    /// Registered plugin name.
    pub plugin: String,
    /// False when the actor's mailbox is closed.
    pub alive: bool,
    pub stats: StatsSnapshot,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipelineStatus {
    pub input: String,
    pub interval_sec: f64,
    pub actors: Vec<ActorStatus>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
                    kind: "input".into(),
                    name: p.plan.name.to_string(),
                    plugin: p.plan.plugin.clone(),
                    alive: p.input.connected(),
                    stats: p.stats.snapshot(),
                }];
                actors.extend(p.stages.iter().map(|s| {
                    ActorStatus {
                        kind: match s.kind {
                            StageKind::Processor => "processor",
                            StageKind::Aggregator => "aggregator",
                        }
                        .into(),
                        name: s.plugin.clone(),
                        plugin: s.plugin.clone(),
                        alive: s.slot.connected(),
                        stats: s.stats.snapshot(),
                    }
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
                kind: "output".into(),
                name: o.plan.name.clone(),
                plugin: o.plan.plugin.clone(),
                alive: o.slot.connected(),
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

fn same_stages(a: &PipelinePlan, b: &PipelinePlan) -> bool {
    a.stages.len() == b.stages.len()
        && a.stages
            .iter()
            .zip(&b.stages)
            .all(|(x, y)| x.kind == y.kind && x.plugin == y.plugin)
}

fn stop_pipeline(p: RunningPipeline) {
    let stages: Vec<Addr<StageActor>> = p.stages.iter().map(|s| s.slot.addr()).collect();
    let input = p.input;
    actix::spawn(async move {
        let _ = input.send(Drain).await;
        input.do_send(StopActor);
        for s in stages {
            s.do_send(StopActor);
        }
    });
}

fn stop_stages(stages: Vec<RunningStage>) {
    actix::spawn(async move {
        if let Some(first) = stages.first() {
            let _ = first.slot.addr().send(Drain).await;
        }
        for s in stages {
            s.slot.addr().do_send(StopActor);
        }
    });
}

impl Handler<ApplyConfig> for PipelineSupervisor {
    type Result = MessageResult<ApplyConfig>;

    fn handle(&mut self, msg: ApplyConfig, _: &mut Context<Self>) -> Self::Result {
        let mut report = ApplyReport::default();
        let info_changed = msg.config.info != self.config.info;
        self.config = msg.config;

        // Outputs first, so pipelines can point at them.
        let mut replaced_outputs = Vec::new();
        let old_outputs = std::mem::take(&mut self.outputs);
        let mut kept = Vec::new();
        for old in old_outputs {
            match msg.plan.outputs.iter().find(|o| o.name == old.plan.name) {
                Some(new) if new.plugin == old.plan.plugin => {
                    if new.config.value() != old.plan.config.value() {
                        old.slot.addr().do_send(ReconfigureOutput {
                            config: new.config.clone(),
                            settings: new.settings.clone(),
                        });
                        report.reconfigured.push(format!("output:{}", new.name));
                    }
                    kept.push(RunningOutput {
                        plan: new.clone(),
                        ..old
                    });
                }
                other => {
                    if other.is_some() {
                        replaced_outputs.push(old.plan.name.clone());
                    }
                    report.stopped.push(format!("output:{}", old.plan.name));
                    let addr = old.slot.addr();
                    // Pipelines drain into it first; then it flushes.
                    actix::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let deadline = Instant::now() + Duration::from_secs(10);
                        let _ = addr.send(FlushAndClose { deadline }).await;
                        addr.do_send(StopActor);
                    });
                }
            }
        }
        self.outputs = kept;
        for plan in &msg.plan.outputs {
            if !self.outputs.iter().any(|o| o.plan.name == plan.name) {
                if let Some(o) = self.start_output(plan) {
                    report.started.push(format!("output:{}", plan.name));
                    self.outputs.push(o);
                }
            }
        }

        let old_pipelines = std::mem::take(&mut self.pipelines);
        let mut running = Vec::new();
        for old in old_pipelines {
            let Some(new) = msg.plan.pipelines.iter().find(|p| p.name == old.plan.name) else {
                report.stopped.push(format!("input:{}", old.plan.name));
                stop_pipeline(old);
                continue;
            };
            if new.plugin != old.plan.plugin {
                report.stopped.push(format!("input:{}", old.plan.name));
                stop_pipeline(old);
                continue; // started below as new
            }
            let mut p = old;
            if new.config.value() != p.plan.config.value() {
                p.input.do_send(super::Reconfigure(new.config.clone()));
                report.reconfigured.push(format!("input:{}", new.name));
            }
            if new.interval != p.plan.interval {
                p.input
                    .do_send(super::input_actor::SetInterval(new.interval));
                report
                    .reconfigured
                    .push(format!("input:{} interval", new.name));
            }
            if info_changed {
                p.input
                    .do_send(super::input_actor::SetInfo(self.config.info.clone()));
            }
            let outputs_changed = new.outputs != p.plan.outputs
                || new.outputs.iter().any(|o| replaced_outputs.contains(o));
            if outputs_changed || info_changed || !same_stages(new, &p.plan) {
                // Rebuild the chain behind the input; the old one drains.
                let (next, stages) = self.start_stages(new);
                p.input.do_send(super::input_actor::SetNext(next.clone()));
                p.input_next = next;
                stop_stages(std::mem::replace(&mut p.stages, stages));
                report.reconfigured.push(format!("pipeline:{}", new.name));
            } else {
                let pairs = p.stages.iter_mut().zip(&new.stages);
                for (stage, plan) in pairs {
                    if stage.config.value() != plan.config.value() {
                        stage.config = plan.config.clone();
                        stage
                            .slot
                            .addr()
                            .do_send(super::Reconfigure(plan.config.clone()));
                        report
                            .reconfigured
                            .push(format!("stage:{}/{}", new.name, plan.plugin));
                    }
                }
            }
            p.plan = new.clone();
            running.push(p);
        }
        self.pipelines = running;
        for plan in &msg.plan.pipelines {
            if !self.pipelines.iter().any(|p| p.plan.name == plan.name) {
                if let Some(p) = self.start_pipeline(plan, Duration::ZERO) {
                    report.started.push(format!("input:{}", plan.name));
                    self.pipelines.push(p);
                }
            }
        }
        self.plan = msg.plan;
        info!(self.log, "configuration applied"; "started" => report.started.len(),
            "stopped" => report.stopped.len(), "reconfigured" => report.reconfigured.len());
        MessageResult(report)
    }
}

/// Test hook: make one actor panic in its own handler code. `kind` is
/// `input`, `processor`, `aggregator` or `output`; `name` the input, stage
/// plugin or output name. `then_queue` (stages and outputs) is sent to the
/// actor right behind the panic, before it can run.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct PanicActor {
    pub kind: &'static str,
    pub name: String,
    pub then_queue: Vec<Vec<crate::metric::Metric>>,
}

#[cfg(test)]
impl Handler<PanicActor> for PipelineSupervisor {
    type Result = bool;

    fn handle(&mut self, msg: PanicActor, _: &mut Context<Self>) -> bool {
        use super::PanicNow;
        for p in &self.pipelines {
            if msg.kind == "input" && p.plan.name == msg.name.as_str() {
                p.input.do_send(PanicNow);
                return true;
            }
            for s in &p.stages {
                let kind = match s.kind {
                    StageKind::Processor => "processor",
                    StageKind::Aggregator => "aggregator",
                };
                if kind == msg.kind && s.plugin == msg.name {
                    s.slot.addr().do_send(PanicNow);
                    for batch in msg.then_queue {
                        s.slot.send(batch);
                    }
                    return true;
                }
            }
        }
        for o in &self.outputs {
            if msg.kind == "output" && o.plan.name == msg.name {
                o.slot.addr().do_send(PanicNow);
                for batch in msg.then_queue {
                    o.slot.send(Arc::new(batch));
                }
                return true;
            }
        }
        false
    }
}
