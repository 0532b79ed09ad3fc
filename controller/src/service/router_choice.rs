//! Which router a Dial goes through.
//!
//! Score as 0.9.0: for each router, the number of exporter labels the router carries with
//! the same value, or −1 as soon as one exporter label is missing from the router. The
//! best score wins. Ties (in practice every router scores −1) are broken by a stable hash
//! of the lease, so one lease keeps using one router while leases spread across routers.

use std::collections::BTreeMap;

use crate::settings::RouterEntry;

/// The 0.9.0 label score of one router for an exporter.
pub(crate) fn score(router: &BTreeMap<String, String>, exporter: &BTreeMap<String, String>) -> i64 {
    let mut count = 0;
    for (key, value) in exporter {
        match router.get(key) {
            None => return -1,
            Some(v) if v == value => count += 1,
            Some(_) => {}
        }
    }
    count
}

/// The router for `lease` (`<namespace>/<name>`), or `None` when there are none.
pub(crate) fn choose<'a>(
    routers: &'a [RouterEntry],
    exporter_labels: &BTreeMap<String, String>,
    lease: &str,
) -> Option<&'a RouterEntry> {
    let best = routers
        .iter()
        .map(|r| score(&r.labels, exporter_labels))
        .max()?;
    let mut tied: Vec<&RouterEntry> = routers
        .iter()
        .filter(|r| score(&r.labels, exporter_labels) == best)
        .collect();
    tied.sort_by(|a, b| a.name.cmp(&b.name));
    let index = usize::try_from(fnv1a(lease.as_bytes()) % tied.len() as u64).unwrap_or(0);
    tied.get(index).copied()
}

/// FNV-1a, 64 bit: stable across builds and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn router(name: &str, pairs: &[(&str, &str)]) -> RouterEntry {
        RouterEntry {
            name: name.into(),
            endpoint: format!("{name}:443"),
            labels: labels(pairs),
            quic_endpoint: None,
        }
    }

    #[test]
    fn score_counts_matches_and_penalises_missing_keys() {
        let exporter = labels(&[("a", "1"), ("b", "2")]);
        assert_eq!(score(&labels(&[("a", "1"), ("b", "2")]), &exporter), 2);
        assert_eq!(score(&labels(&[("a", "1"), ("b", "x")]), &exporter), 1);
        assert_eq!(score(&labels(&[("a", "1")]), &exporter), -1);
        assert_eq!(score(&labels(&[]), &labels(&[])), 0);
    }

    #[test]
    fn best_score_wins() {
        let routers = [router("r0", &[]), router("r1", &[("a", "1")])];
        let chosen = choose(&routers, &labels(&[("a", "1")]), "ns/l").unwrap();
        assert_eq!(chosen.name, "r1");
    }

    #[test]
    fn ties_are_stable_per_lease_and_spread() {
        let routers = [router("r2", &[]), router("r0", &[]), router("r1", &[])];
        let exporter = labels(&[("board", "x")]);
        let first = choose(&routers, &exporter, "ns/lease-1")
            .unwrap()
            .name
            .clone();
        for _ in 0..5 {
            assert_eq!(
                choose(&routers, &exporter, "ns/lease-1").unwrap().name,
                first
            );
        }
        let used: std::collections::BTreeSet<_> = (0..30)
            .map(|i| {
                choose(&routers, &exporter, &format!("ns/lease-{i}"))
                    .unwrap()
                    .name
                    .clone()
            })
            .collect();
        assert!(used.len() > 1, "{used:?}");
        assert!(choose(&[], &exporter, "ns/l").is_none());
    }
}
