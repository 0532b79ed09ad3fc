//! Registration of the controller's Prometheus metrics: each metric is created where its
//! field is initialised, registered under its name and help text.

use prometheus_client::registry::{Metric, Registry};

/// Registers metrics in one registry.
#[derive(Debug)]
pub(crate) struct Registrar<'a>(pub(crate) &'a mut Registry);

impl Registrar<'_> {
    /// `metric`, registered as `name` with `help`.
    pub(crate) fn with<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    /// A new default metric, registered as `name` with `help`.
    pub(crate) fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.with(name, help, M::default())
    }
}
