//! The one mapping of [`LeaseError`] to the gRPC status clients see: the code per rule, the
//! error's text as the message (0.9.0's texts).

use tonic::{Code, Status};

use jumpstarter_lease::LeaseError;

/// `err` as the gRPC status of the call it refuses.
pub(crate) fn status(err: LeaseError) -> Status {
    let code = match &err {
        LeaseError::ExporterResourceName(_)
        | LeaseError::InvalidExporterName { .. }
        | LeaseError::TargetRequired
        | LeaseError::SelectorRequired
        | LeaseError::TooManyTags { .. }
        | LeaseError::ReservedTagKey { .. }
        | LeaseError::TagKeyWithSlash { .. }
        | LeaseError::InvalidTag(_)
        | LeaseError::InvalidSelector(_)
        | LeaseError::Times(_)
        | LeaseError::DurationTooLong
        | LeaseError::InvalidLeaseId { .. }
        | LeaseError::TransferAcrossNamespaces { .. } => Code::InvalidArgument,
        LeaseError::NotOwner { .. } => Code::PermissionDenied,
        LeaseError::NotHolder { .. }
        | LeaseError::AlreadyReleased { .. }
        | LeaseError::Ended { .. }
        | LeaseError::BeginTimeFixed { .. }
        | LeaseError::TransferInactive { .. } => Code::FailedPrecondition,
    };
    Status::new(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_the_ones_clients_see() {
        let denied = status(LeaseError::NotOwner {
            lease: "l1".into(),
            caller: "bob".into(),
        });
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(denied.message(), "permission denied");
        let released = status(LeaseError::AlreadyReleased { lease: "l1".into() });
        assert_eq!(released.code(), Code::FailedPrecondition);
        assert_eq!(released.message(), "lease l1 is already released");
        let target = status(LeaseError::TargetRequired);
        assert_eq!(target.code(), Code::InvalidArgument);
        assert_eq!(
            target.message(),
            "one of selector or exporter_name is required"
        );
    }
}
