//! The reconcile loop's watch-fed copies of the namespace (one [`Reflection`] per type a
//! pass reads), from which passes take what changed instead of listing the store.

use k8s_openapi::api::core::v1::Secret;

use crate::crd;
use crate::store::reflection::Reflection;

/// The copies of every type a pass reads.
#[derive(Debug)]
pub(crate) struct Reflections {
    pub(crate) clients: Reflection<crd::Client>,
    pub(crate) exporters: Reflection<crd::Exporter>,
    pub(crate) leases: Reflection<crd::Lease>,
    pub(crate) policies: Reflection<crd::ExporterAccessPolicy>,
    pub(crate) secrets: Reflection<Secret>,
}

impl Reflections {
    pub(crate) fn new() -> Self {
        Reflections {
            clients: Reflection::new(),
            exporters: Reflection::new(),
            leases: Reflection::new(),
            policies: Reflection::new(),
            secrets: Reflection::new(),
        }
    }
}
