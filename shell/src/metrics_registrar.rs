//! Registration of a binary's Prometheus metrics: each metric is created where its field
//! is initialised and registered under its name and help text in the same expression, so
//! a metrics struct cannot hold a metric the registry does not know.

use prometheus_client::registry::{Metric, Registry};

/// Registers metrics in one registry (or one prefixed sub-registry).
#[derive(Debug)]
pub struct Registrar<'a>(&'a mut Registry);

impl<'a> Registrar<'a> {
    /// Registers in `registry`.
    pub fn new(registry: &'a mut Registry) -> Self {
        Registrar(registry)
    }

    /// Registers in `registry` under `prefix` (`<prefix>_<name>`).
    pub fn with_prefix(registry: &'a mut Registry, prefix: &str) -> Self {
        Registrar(registry.sub_registry_with_prefix(prefix))
    }

    /// `metric`, registered as `name` with `help`.
    pub fn with<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    /// A new default metric, registered as `name` with `help`.
    pub fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.with(name, help, M::default())
    }
}
