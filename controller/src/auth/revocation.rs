//! Revocation of client and exporter tokens by credential generation.
//!
//! A Client or Exporter carries its credential generation in the annotation
//! [`TOKEN_GENERATION_ANNOTATION`] (absent: 0); every internal token carries the generation
//! it was issued at (claim `gen`, absent: 0). A token is accepted only when its generation
//! is at least the object's. Rotating a credential raises the object's generation first,
//! then issues the new token at that generation: from the moment the object is written,
//! every replica refuses the old token, because authentication reads the object from the
//! store on every call (the verified-signature cache holds claims, not this decision).
//!
//! An administrator revokes the same way: raising the annotation on an Exporter or a
//! Client refuses every token below it, and the reconcile loop re-signs the credential
//! Secret at the new generation.

use kube::api::ObjectMeta;

use crate::crd::vocabulary::TOKEN_GENERATION_ANNOTATION;

/// Why the annotation could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {TOKEN_GENERATION_ANNOTATION} is {value:?}, not a non-negative integer; fix or raise it"
)]
pub struct GenerationError {
    pub value: String,
}

/// The credential generation of an object: its annotation, 0 when absent.
pub(crate) fn generation(meta: &ObjectMeta) -> Result<u64, GenerationError> {
    match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOKEN_GENERATION_ANNOTATION))
    {
        None => Ok(0),
        Some(value) => value.trim().parse().map_err(|_| GenerationError {
            value: value.clone(),
        }),
    }
}

/// Sets the object's generation to one above `current` (what [`generation`] read, or 0
/// when it was malformed); returns the new generation.
pub(crate) fn raise(meta: &mut ObjectMeta) -> u64 {
    let next = generation(meta).unwrap_or(0).saturating_add(1);
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(TOKEN_GENERATION_ANNOTATION.to_owned(), next.to_string());
    next
}

/// Whether a token of generation `presented` is still valid for an object at `required`.
pub(crate) fn is_current(presented: u64, required: u64) -> bool {
    presented >= required
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(value: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            annotations: value
                .map(|v| BTreeMap::from([(TOKEN_GENERATION_ANNOTATION.to_owned(), v.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn absent_is_zero_and_malformed_is_an_error() {
        assert_eq!(generation(&meta(None)), Ok(0));
        assert_eq!(generation(&meta(Some("7"))), Ok(7));
        assert_eq!(generation(&meta(Some(" 7 "))), Ok(7));
        for bad in ["", "-1", "x", "1.5"] {
            let err = generation(&meta(Some(bad))).expect_err(bad);
            assert!(err.to_string().contains("token-generation"), "{err}");
        }
    }

    #[test]
    fn raising_moves_past_every_older_token() {
        let mut m = meta(None);
        assert_eq!(raise(&mut m), 1);
        assert_eq!(raise(&mut m), 2);
        assert_eq!(generation(&m), Ok(2));
        assert!(!is_current(1, 2));
        assert!(!is_current(0, 2));
        assert!(is_current(2, 2));
        assert!(is_current(0, 0), "0.9.0 tokens stay valid until a rotation");
        let mut broken = meta(Some("junk"));
        assert_eq!(raise(&mut broken), 1);
    }
}
