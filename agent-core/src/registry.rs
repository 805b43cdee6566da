//! Plugins by name. Each plugin folder has a `register` function that adds
//! itself here with one call; [`Registry::with_builtins`] calls them all.
use crate::config::{ConfigError, PluginConfig};
use crate::plugin::{
    Aggregator, DynInput, DynOutput, Input, Output, PluginError, PluginResult, Processor,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The four kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    Input,
    Processor,
    Aggregator,
    Output,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Input => "input",
            PluginKind::Processor => "processor",
            PluginKind::Aggregator => "aggregator",
            PluginKind::Output => "output",
        })
    }
}

/// Builds a plugin from its config. Construction must be cheap and have no
/// side effects (no sockets, no files): the core builds plugins to validate a
/// config and rebuilds them after failures. Open connections in
/// `gather`/`connect`.
pub type Factory<T> = Arc<dyn Fn(&PluginConfig) -> PluginResult<T> + Send + Sync>;

/// A registered plugin: its name, a one-line description, a commented
/// sample config and its factory.
pub struct Entry<T: ?Sized> {
    pub name: &'static str,
    pub description: &'static str,
    pub sample: &'static str,
    pub(crate) factory: Factory<Box<T>>,
}

impl<T: ?Sized> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            name: self.name,
            description: self.description,
            sample: self.sample,
            factory: self.factory.clone(),
        }
    }
}

pub(crate) type InputEntry = Entry<dyn DynInput>;
pub(crate) type ProcessorEntry = Entry<dyn Processor>;
pub(crate) type AggregatorEntry = Entry<dyn Aggregator>;
pub(crate) type OutputEntry = Entry<dyn DynOutput>;

/// Every plugin the agent can run, by kind and name.
#[derive(Clone, Default)]
pub struct Registry {
    pub(crate) inputs: BTreeMap<&'static str, InputEntry>,
    pub(crate) processors: BTreeMap<&'static str, ProcessorEntry>,
    pub(crate) aggregators: BTreeMap<&'static str, AggregatorEntry>,
    pub(crate) outputs: BTreeMap<&'static str, OutputEntry>,
}

/// A short description of one registered plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub kind: PluginKind,
    pub name: &'static str,
    pub description: &'static str,
    pub sample: &'static str,
}

impl Registry {
    /// An empty registry: for embedding programs that want only their own
    /// plugins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every plugin shipped with agent-core.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::plugins::register_all(&mut r);
        r
    }

    /// Registers an input. `build` turns the config into the plugin,
    /// usually `|cfg| Ok(MyInput::new(cfg.parse()?))`.
    pub fn add_input<T, F>(
        &mut self,
        name: &'static str,
        description: &'static str,
        sample: &'static str,
        build: F,
    ) where
        T: Input,
        F: Fn(&PluginConfig) -> PluginResult<T> + Send + Sync + 'static,
    {
        let factory: Factory<Box<dyn DynInput>> =
            Arc::new(move |c| build(c).map(|p| Box::new(p) as Box<dyn DynInput>));
        self.inputs.insert(
            name,
            Entry {
                name,
                description,
                sample,
                factory,
            },
        );
    }

    pub fn add_processor<T, F>(
        &mut self,
        name: &'static str,
        description: &'static str,
        sample: &'static str,
        build: F,
    ) where
        T: Processor,
        F: Fn(&PluginConfig) -> PluginResult<T> + Send + Sync + 'static,
    {
        let factory: Factory<Box<dyn Processor>> =
            Arc::new(move |c| build(c).map(|p| Box::new(p) as Box<dyn Processor>));
        self.processors.insert(
            name,
            Entry {
                name,
                description,
                sample,
                factory,
            },
        );
    }

    pub fn add_aggregator<T, F>(
        &mut self,
        name: &'static str,
        description: &'static str,
        sample: &'static str,
        build: F,
    ) where
        T: Aggregator,
        F: Fn(&PluginConfig) -> PluginResult<T> + Send + Sync + 'static,
    {
        let factory: Factory<Box<dyn Aggregator>> =
            Arc::new(move |c| build(c).map(|p| Box::new(p) as Box<dyn Aggregator>));
        self.aggregators.insert(
            name,
            Entry {
                name,
                description,
                sample,
                factory,
            },
        );
    }

    pub fn add_output<T, F>(
        &mut self,
        name: &'static str,
        description: &'static str,
        sample: &'static str,
        build: F,
    ) where
        T: Output,
        F: Fn(&PluginConfig) -> PluginResult<T> + Send + Sync + 'static,
    {
        let factory: Factory<Box<dyn DynOutput>> =
            Arc::new(move |c| build(c).map(|p| Box::new(p) as Box<dyn DynOutput>));
        self.outputs.insert(
            name,
            Entry {
                name,
                description,
                sample,
                factory,
            },
        );
    }

    /// Every registered plugin, sorted by kind then name.
    pub fn list(&self) -> Vec<PluginInfo> {
        fn infos<'a, T: ?Sized>(
            kind: PluginKind,
            m: &'a BTreeMap<&'static str, Entry<T>>,
        ) -> impl Iterator<Item = PluginInfo> + 'a {
            m.values().map(move |e| PluginInfo {
                kind,
                name: e.name,
                description: e.description,
                sample: e.sample,
            })
        }
        infos(PluginKind::Input, &self.inputs)
            .chain(infos(PluginKind::Processor, &self.processors))
            .chain(infos(PluginKind::Aggregator, &self.aggregators))
            .chain(infos(PluginKind::Output, &self.outputs))
            .collect()
    }

    /// Names of the registered plugins of one kind, for error messages.
    pub fn names(&self, kind: PluginKind) -> Vec<&'static str> {
        match kind {
            PluginKind::Input => self.inputs.keys().copied().collect(),
            PluginKind::Processor => self.processors.keys().copied().collect(),
            PluginKind::Aggregator => self.aggregators.keys().copied().collect(),
            PluginKind::Output => self.outputs.keys().copied().collect(),
        }
    }
}

/// Turns a build failure into a config error at the plugin's key, unless
/// it already is one.
pub(crate) fn build_error(cfg: &PluginConfig, e: PluginError) -> ConfigError {
    match e {
        PluginError::Config(c) => c,
        other => cfg.error("", other.to_string()),
    }
}
