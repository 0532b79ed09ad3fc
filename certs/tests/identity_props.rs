//! Property tests of the lease identity URI encoding.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use jumpstarter_certs::{Error, LeaseIdentity, Role};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn subdomain() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
}

fn identity() -> impl Strategy<Value = LeaseIdentity> {
    (
        label(),
        subdomain(),
        "[a-f0-9-]{1,36}",
        prop_oneof![Just(Role::Client), Just(Role::Exporter)],
        subdomain(),
    )
        .prop_map(
            |(namespace, lease_name, lease_uid, role, holder)| LeaseIdentity {
                namespace,
                lease_name,
                lease_uid,
                role,
                holder,
            },
        )
}

/// Inserts `c` at a position chosen by `at` into one of the identity's fields chosen by `field`.
fn corrupt(mut id: LeaseIdentity, field: usize, at: usize, c: char) -> LeaseIdentity {
    let target = match field % 4 {
        0 => &mut id.namespace,
        1 => &mut id.lease_name,
        2 => &mut id.lease_uid,
        _ => &mut id.holder,
    };
    let at = at % (target.len() + 1);
    target.insert(at, c);
    id
}

proptest! {
    #[test]
    fn valid_identities_round_trip(id in identity()) {
        let uri = id.to_uri().unwrap();
        prop_assert_eq!(LeaseIdentity::parse_uri(&uri).unwrap(), id);
    }

    #[test]
    fn slashes_and_uppercase_are_rejected(
        id in identity(),
        field in 0usize..4,
        at in any::<usize>(),
        c in prop_oneof![Just('/'), prop::char::range('A', 'Z')],
    ) {
        let good_uri = id.to_uri().unwrap();
        let bad = corrupt(id, field, at, c);
        let is_invalid = matches!(bad.to_uri(), Err(Error::InvalidIdentity { .. }));
        prop_assert!(is_invalid);
        // The same string assembled by hand does not parse either.
        let bad_uri = format!(
            "spiffe://jumpstarter.dev/ns/{}/lease/{}/uid/{}/role/{}/holder/{}",
            bad.namespace, bad.lease_name, bad.lease_uid, bad.role, bad.holder
        );
        prop_assert_ne!(&bad_uri, &good_uri);
        let is_bad = matches!(LeaseIdentity::parse_uri(&bad_uri), Err(Error::BadIdentity { .. }));
        prop_assert!(is_bad);
        // Uppercasing the whole valid URI is rejected too.
        let shouted = good_uri.to_uppercase();
        prop_assert!(LeaseIdentity::parse_uri(&shouted).is_err());
    }
}
