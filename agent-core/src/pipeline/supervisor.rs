//! The PipelineSupervisor: builds every actor from a [`Plan`], owns their
//! addresses and counters, drains them in order on shutdown, and reports
//! their state. Applying a reload is in `supervisor/apply.rs`, `agent
//! status` in `supervisor/status.rs`.
use super::input_actor::{GatherNow, InputSpec};
use super::output_actor::FlushAndClose;
use super::output_buffers::{OutputBuffers, SharedBuffers};
use super::stage_actor::StageEntry;
use super::{
    ActorDied, Backoff, DeathGuard, Drain, InputActor, OutputActor, OutputSlot, PluginStats, Sink,
    Slot, StageActor, StageSlot,
};
use crate::config::{AgentConfig, OutputPlan, PipelinePlan, Plan, PluginConfig, StageKind};

use crate::registry::Registry;
use actix::prelude::*;
use slog::{error, info, o, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod apply;
mod status;

pub use apply::{ApplyConfig, ApplyReport};
pub use status::{ActorStatus, PipelineStatus, Status, StatusReport};

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
        crate::plugins::common::resolver::set_cache_ttl(config.main.dns_cache_sec.as_duration());
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
