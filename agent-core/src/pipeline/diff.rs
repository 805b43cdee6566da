//! What a new configuration changes, computed before any actor is touched
//! (Vector's `config/diff.rs`): per kind of actor, what is to be removed,
//! to be changed in place, and to be added. The supervisor then applies it
//! in order ([`super::apply`]).
use crate::config::{InfoTags, PipelinePlan, Plan};
use crate::metric::Str;

/// Names to remove, to change in place and to add. A name whose plugin
/// changed is removed and added (a new actor), never changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference<K> {
    pub to_remove: Vec<K>,
    pub to_change: Vec<K>,
    pub to_add: Vec<K>,
}

impl<K> Default for Difference<K> {
    fn default() -> Self {
        Difference {
            to_remove: Vec::new(),
            to_change: Vec::new(),
            to_add: Vec::new(),
        }
    }
}

impl<K> Difference<K> {
    pub fn is_empty(&self) -> bool {
        self.to_remove.is_empty() && self.to_change.is_empty() && self.to_add.is_empty()
    }
}

/// How a pipeline that stays (same input plugin) changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineChange {
    pub input: Str,
    /// The input's own keys changed: it gets a `Reconfigure`.
    pub input_config: bool,
    pub interval: bool,
    /// main.yaml's `info` changed: the input gets the new tags.
    pub info: bool,
    /// The chain behind the input is built anew (its outputs, an output it
    /// uses was replaced, the info tags, or its list of stages changed);
    /// the old chain drains.
    pub rebuild_chain: bool,
    /// Otherwise the stages (by position) whose keys changed.
    pub stages: Vec<usize>,
}

impl PipelineChange {
    fn is_empty(&self) -> bool {
        !(self.input_config || self.interval || self.info || self.rebuild_chain)
            && self.stages.is_empty()
    }
}

/// Everything a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Outputs by name; changed ones get their new config by message.
    pub outputs: Difference<String>,
    /// Pipelines by input name; `to_change` has the details in `changes`.
    pub pipelines: Difference<Str>,
    pub changes: Vec<PipelineChange>,
}

fn same_stages(a: &PipelinePlan, b: &PipelinePlan) -> bool {
    a.stages.len() == b.stages.len()
        && a.stages
            .iter()
            .zip(&b.stages)
            .all(|(x, y)| x.kind == y.kind && x.plugin == y.plugin)
}

impl ConfigDiff {
    /// The difference between the running plan (with its `info` tags) and
    /// a new one.
    pub fn new(old: &Plan, old_info: &InfoTags, new: &Plan, new_info: &InfoTags) -> ConfigDiff {
        let mut diff = ConfigDiff::default();
        let info_changed = old_info != new_info;
        // Outputs replaced by another plugin under the same name: the
        // pipelines that use them are re-wired.
        let mut replaced = Vec::new();
        for o in &old.outputs {
            match new.outputs.iter().find(|n| n.name == o.name) {
                Some(n) if n.plugin == o.plugin => {
                    if !n.config.same_value(&o.config) {
                        diff.outputs.to_change.push(o.name.clone());
                    }
                }
                Some(_) => {
                    replaced.push(o.name.clone());
                    diff.outputs.to_remove.push(o.name.clone());
                }
                None => diff.outputs.to_remove.push(o.name.clone()),
            }
        }
        for n in &new.outputs {
            let kept = old
                .outputs
                .iter()
                .any(|o| o.name == n.name && o.plugin == n.plugin);
            if !kept {
                diff.outputs.to_add.push(n.name.clone());
            }
        }
        for p in &old.pipelines {
            let Some(n) = new.pipelines.iter().find(|n| n.name == p.name) else {
                diff.pipelines.to_remove.push(p.name.clone());
                continue;
            };
            if n.plugin != p.plugin {
                diff.pipelines.to_remove.push(p.name.clone());
                diff.pipelines.to_add.push(p.name.clone());
                continue;
            }
            let outputs_changed =
                n.outputs != p.outputs || n.outputs.iter().any(|o| replaced.contains(o));
            let rebuild_chain = outputs_changed || info_changed || !same_stages(n, p);
            let change = PipelineChange {
                input: p.name.clone(),
                input_config: !n.config.same_value(&p.config),
                interval: n.interval != p.interval,
                info: info_changed,
                rebuild_chain,
                stages: if rebuild_chain {
                    Vec::new()
                } else {
                    (0..n.stages.len())
                        .filter(|&i| !n.stages[i].config.same_value(&p.stages[i].config))
                        .collect()
                },
            };
            if !change.is_empty() {
                diff.pipelines.to_change.push(p.name.clone());
                diff.changes.push(change);
            }
        }
        for n in &new.pipelines {
            if !old.pipelines.iter().any(|p| p.name == n.name) {
                diff.pipelines.to_add.push(n.name.clone());
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.pipelines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentConfig, Registry};

    fn plan(yaml: &str) -> (Plan, InfoTags) {
        let config = AgentConfig::from_yaml("main.yaml", yaml).unwrap();
        let plan = Plan::new(&config, &Registry::with_builtins()).unwrap();
        (plan, config.info)
    }

    const BASE: &str = "open: [demo, mem]\ninfo: {node_ip: 10.0.0.1, host_name: h}\n\
        common_output: [console]\noutput: {console: {}, file: {path: /dev/null}}\n";

    #[test]
    fn unchanged_config_is_an_empty_diff() {
        let (a, ai) = plan(BASE);
        let (b, bi) = plan(BASE);
        assert!(ConfigDiff::new(&a, &ai, &b, &bi).is_empty());
    }

    #[test]
    fn removed_changed_and_added_are_told_apart() {
        let (a, ai) = plan(BASE);
        let (b, bi) = plan(
            "open: [demo, cpu]\ninfo: {node_ip: 10.0.0.1, host_name: h}\n\
             common_output: [console, file]\ninput: {demo: {interval: 5}}\n\
             output: {console: {batch_size: 7}, file: {path: /dev/null}}\n",
        );
        let d = ConfigDiff::new(&a, &ai, &b, &bi);
        assert_eq!(d.outputs.to_change, ["console"]);
        assert!(d.outputs.to_remove.is_empty());
        assert_eq!(
            d.outputs.to_add,
            ["file"],
            "only outputs in use are planned"
        );
        assert_eq!(d.pipelines.to_remove, [Str::new("mem")]);
        assert_eq!(d.pipelines.to_add, [Str::new("cpu")]);
        assert_eq!(d.pipelines.to_change, [Str::new("demo")]);
        let demo = &d.changes[0];
        assert!(demo.input_config && demo.interval, "{demo:?}");
        assert!(demo.rebuild_chain, "its outputs changed: {demo:?}");
        assert!(!demo.info);
    }

    #[test]
    fn a_plugin_change_is_a_removal_and_an_addition() {
        let (a, ai) = plan(BASE);
        let (b, bi) = plan(
            "open: [demo, mem]\ninfo: {node_ip: 10.0.0.1, host_name: h}\n\
             common_output: [console]\noutput: {console: {plugin: file, path: /dev/null}, file: {path: /dev/null}}\n",
        );
        let d = ConfigDiff::new(&a, &ai, &b, &bi);
        assert_eq!(d.outputs.to_remove, ["console"]);
        assert_eq!(d.outputs.to_add, ["console"]);
        // Both pipelines send to the replaced output: their chains are re-wired.
        assert_eq!(d.changes.len(), 2);
        assert!(d.changes.iter().all(|c| c.rebuild_chain && !c.input_config));
    }
}
