//! What a test reads from a Lease object: Ready, ended, and the exporter it holds.

use jumpstarter_controller::crd::Lease;

/// Ready=True and not ended.
pub fn is_ready(lease: &Lease) -> bool {
    lease
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && !is_ended(lease)
}

/// `status.ended`.
pub fn is_ended(lease: &Lease) -> bool {
    lease.status.as_ref().is_some_and(|s| s.ended)
}

/// `status.exporterRef.name`, if any.
pub fn exporter_of(lease: &Lease) -> Option<String> {
    lease
        .status
        .as_ref()?
        .exporter_ref
        .as_ref()
        .map(|r| r.name.clone())
}
