//! Certificate signing requests for lease certificates, which the controller signs for any
//! authenticated client or exporter holding a lease (DER or PEM).

use jumpstarter_certs::{Error, LeaseIdentity};

use crate::fixture;

pub(crate) fn check(data: &[u8]) {
    let identity = fixture::identity();
    let policy = fixture::lease_policy();
    match fixture::ca().sign_lease_csr(data, &identity, &policy, fixture::now()) {
        Ok(issued) => {
            // Whatever the request asked for, the certificate names the identity given.
            assert_eq!(issued.identity, identity);
            let leaf = issued.chain_der.first().expect("a chain has a leaf");
            assert_eq!(
                LeaseIdentity::from_cert_der(leaf).expect("the issued leaf reads back"),
                identity
            );
            assert!(issued.not_after <= policy.lease_end);
            assert!(issued.not_before < issued.not_after);
        }
        // The identity and policy are valid: the request is the only thing that can be wrong,
        // and the refusal must say so.
        Err(error) => assert!(
            matches!(
                error,
                Error::CsrParse { .. } | Error::CsrSignature | Error::CsrKeyAlgorithm(_)
            ),
            "a bad request was refused as {error:?}"
        ),
    }
}
