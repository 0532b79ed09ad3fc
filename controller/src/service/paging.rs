//! Pages of a list call, cut from a name-ordered copy of the objects. Sans-IO.
//!
//! The page token is this service's own, opaque to callers (0.9.0 clients only send back
//! the `next_page_token` they were given, until it is empty): the name of the last object
//! returned, encoded. So a token never expires, works on any replica, and a listing that
//! runs across changes returns every object that existed throughout it exactly once.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube::Resource;
use tonic::Status;

/// Largest page a list call returns, whatever the caller asks for.
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

/// Marks a token of this format (so a later format can tell it apart).
const TOKEN_PREFIX: &str = "n1:";

/// Which part of the list a call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// The page's size; `None` lists everything (`page_size` 0, as 0.9.0).
    limit: Option<usize>,
    /// Objects up to and including this name were on earlier pages.
    after: Option<String>,
}

impl Window {
    /// The window of a request's `page_size` and `page_token`.
    pub(crate) fn parse(page_size: i32, page_token: &str) -> Result<Window, Status> {
        if page_size < 0 {
            return Err(Status::invalid_argument("page_size must not be negative"));
        }
        let limit = usize::try_from(page_size)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.min(MAX_PAGE_SIZE));
        let after = (!page_token.is_empty())
            .then(|| decode(page_token))
            .transpose()?;
        Ok(Window { limit, after })
    }
}

/// One page of objects.
#[derive(Debug)]
pub(crate) struct Page<K> {
    pub(crate) items: Vec<Arc<K>>,
    /// Empty on the last page.
    pub(crate) next_page_token: String,
}

/// The page of `objects` (sorted by name) in `window`, of those `selected` keeps.
pub(crate) fn page<K: Resource>(
    objects: Vec<Arc<K>>,
    window: &Window,
    selected: impl Fn(&K) -> bool,
) -> Page<K> {
    let name = |o: &K| o.meta().name.clone().unwrap_or_default();
    let mut rest = objects
        .into_iter()
        .filter(|o| window.after.as_ref().is_none_or(|after| name(o) > *after))
        .filter(|o| selected(o));
    let items: Vec<Arc<K>> = match window.limit {
        Some(limit) => rest.by_ref().take(limit).collect(),
        None => rest.by_ref().collect(),
    };
    let more = rest.next().is_some();
    let next_page_token = match items.last() {
        Some(last) if more => encode(&name(last)),
        _ => String::new(),
    };
    Page {
        items,
        next_page_token,
    }
}

fn encode(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{after}"))
}

fn decode(token: &str) -> Result<String, Status> {
    let invalid = || {
        Status::invalid_argument(
            "page_token is not valid: pass the next_page_token of the previous page",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(TOKEN_PREFIX)
        .map(str::to_owned)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn objects(names: &[&str]) -> Vec<Arc<ConfigMap>> {
        names
            .iter()
            .map(|n| {
                let mut o = ConfigMap::default();
                o.metadata.name = Some((*n).to_owned());
                Arc::new(o)
            })
            .collect()
    }

    fn names(page: &Page<ConfigMap>) -> Vec<String> {
        page.items
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn pages_cover_every_selected_object_once_and_the_last_has_no_token() {
        let all = objects(&["a", "b", "c", "d", "e"]);
        let odd = |o: &ConfigMap| o.metadata.name.as_deref() != Some("b");
        let mut token = String::new();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let window = Window::parse(2, &token).expect("window");
            let page = page(all.clone(), &window, odd);
            seen.extend(names(&page));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(seen, ["a", "c", "d", "e"]);
        assert!(token.is_empty());
    }

    #[test]
    fn a_full_last_page_has_no_token_and_size_zero_lists_everything() {
        let all = objects(&["a", "b"]);
        let page2 = page(all.clone(), &Window::parse(2, "").expect("w"), |_| true);
        assert_eq!(names(&page2), ["a", "b"]);
        assert!(page2.next_page_token.is_empty());
        let everything = page(all, &Window::parse(0, "").expect("w"), |_| true);
        assert_eq!(names(&everything), ["a", "b"]);
    }

    #[test]
    fn a_listing_survives_changes_between_pages() {
        let first = page(
            objects(&["a", "b", "c"]),
            &Window::parse(2, "").expect("w"),
            |_| true,
        );
        // "b" deleted, "ab" and "d" created meanwhile: resumes after "b".
        let second = page(
            objects(&["a", "ab", "c", "d"]),
            &Window::parse(2, &first.next_page_token).expect("w"),
            |_| true,
        );
        assert_eq!(names(&second), ["c", "d"]);
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        for (size, token) in [(-1, ""), (10, "not a token!"), (10, "bjE")] {
            let err = Window::parse(size, token).expect_err("refused");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{size} {token}");
        }
        assert_eq!(
            Window::parse(5000, "").expect("w").limit,
            Some(MAX_PAGE_SIZE)
        );
    }
}
