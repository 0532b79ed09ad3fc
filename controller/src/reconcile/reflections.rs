//! The reconcile loop's watch-fed copies of the namespace (one [`Reflection`] per type a
//! pass reads), which passes read instead of listing the store.

use k8s_openapi::api::core::v1::Secret;

use super::view::View;
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

    /// The namespace as the copies have it, once every copy is complete.
    pub(crate) fn view(&self) -> Option<View> {
        Some(View {
            exporters: self.exporters.objects()?,
            leases: self.leases.objects()?,
            clients: self.clients.objects()?,
            policies: self.policies.objects()?.into_values().collect(),
            secrets: self.secrets.objects()?,
        })
    }
}
