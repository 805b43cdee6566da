//! `agent status`: every actor's state and counters.
use super::PipelineSupervisor;
use crate::config::StageKind;
use crate::selfstat::StatsSnapshot;
use actix::prelude::*;

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
