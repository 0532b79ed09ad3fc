//! The queue of waiting leases: the order they are served in, and where each one stands.
//!
//! Order, first key first:
//!
//! 1. booked leases (a `beginTime` that has come) before the others;
//! 2. higher [effective priority](effective_priority): the admitting rule's priority (lowered
//!    to what the request asks for), plus one per full aging interval waited;
//! 3. fair share, among leases of equal effective priority whose rule asks for it: the
//!    client or group holding the fewest exporters first (each lease ahead counted as
//!    served); leases without fair share count as holding none;
//! 4. older first (creation time, then name).
//!
//! **The bound aging gives.** Let `A` be the aging interval, `P` the highest priority of any
//! rule, and `L` a lease of priority `p` created at `c`. A lease `M` created at `c + d` with
//! priority `q ≤ P` ranks ahead of `L` at time `t` only if
//! `q + ⌊(t − c − d)/A⌋ ≥ p + ⌊(t − c)/A⌋`, which needs `⌊d/A⌋ ≤ q − p`, so `d < A·(P − p + 1)`.
//! Leases created later than that never rank ahead of `L`, however many arrive and whatever
//! their priority. From `c + A·(P − p + 1)` on, `L` waits only for the finitely many leases
//! already ahead of it, each of which holds an exporter for at most its requested duration.
//! (Booked leases are outside this bound: a booking keeps its slot by design.)
//!
//! The estimate: each waiting lease ahead is assumed to take, among the exporters it may
//! use, the one that frees up first, and to hold it for its requested duration.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use super::planner::rfc3339;

/// What ranks a waiting lease, besides fair share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rank<'a> {
    /// A booked lease whose begin time has come.
    pub booked: bool,
    /// The effective priority at planning time.
    pub priority: i64,
    pub creation_time: OffsetDateTime,
    pub name: &'a str,
}

/// One waiting lease to order.
pub(crate) struct Queued<'a, T> {
    pub item: T,
    pub rank: Rank<'a>,
    /// The fair-share group, for leases whose rule asks for fair share.
    pub group: Option<String>,
}

/// `priority`, plus one for every full `aging` interval since `since` (saturating; no aging
/// when `aging` is `None` or not positive).
pub(crate) fn effective_priority(
    priority: i64,
    since: OffsetDateTime,
    now: OffsetDateTime,
    aging: Option<Duration>,
) -> i64 {
    let Some(aging) = aging.filter(|a| a.is_positive()) else {
        return priority;
    };
    let waited = now - since;
    if !waited.is_positive() {
        return priority;
    }
    let steps = waited.whole_nanoseconds() / aging.whole_nanoseconds();
    let steps = i64::try_from(steps).unwrap_or(i64::MAX);
    priority.saturating_add(steps)
}

/// `queued` in serving order (see the module documentation); `holdings` counts the
/// exporters each fair-share group holds now.
pub(crate) fn order<'a, T>(
    mut queued: Vec<Queued<'a, T>>,
    mut holdings: BTreeMap<String, usize>,
) -> Vec<T> {
    queued.sort_by(|a, b| {
        let key = |q: &Queued<'a, T>| {
            (
                !q.rank.booked,
                std::cmp::Reverse(q.rank.priority),
                q.rank.creation_time,
                q.rank.name,
            )
        };
        key(a).cmp(&key(b))
    });
    let mut ordered = Vec::with_capacity(queued.len());
    let mut rest = queued.into_iter().peekable();
    while let Some(first) = rest.next() {
        let band_key = (first.rank.booked, first.rank.priority);
        let mut band = vec![first];
        while let Some(next) = rest.next_if(|q| (q.rank.booked, q.rank.priority) == band_key) {
            band.push(next);
        }
        if band.iter().all(|q| q.group.is_none()) {
            ordered.extend(band.into_iter().map(|q| q.item));
            continue;
        }
        // Fair share: repeatedly the lease whose group holds the fewest, then the oldest.
        let mut band: Vec<Option<Queued<'_, T>>> = band.into_iter().map(Some).collect();
        for _ in 0..band.len() {
            let next = band
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.as_ref().map(|q| (i, q)))
                .min_by_key(|(i, q)| {
                    let held = q
                        .group
                        .as_ref()
                        .map_or(0, |g| holdings.get(g).copied().unwrap_or(0));
                    (held, *i)
                })
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let Some(q) = band[i].take() else { break };
            if let Some(group) = q.group {
                *holdings.entry(group).or_insert(0) += 1;
            }
            ordered.push(q.item);
        }
    }
    ordered
}

/// Where a waiting lease stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Estimate {
    /// 1 + the waiting leases ahead that are expected to take one of its exporters.
    pub position: i64,
    /// When it is expected to get an exporter; `None`: cannot be estimated.
    pub start: Option<OffsetDateTime>,
}

impl Estimate {
    /// The text added to the `Pending` message.
    pub(crate) fn describe(&self, now: OffsetDateTime) -> String {
        match self.start {
            Some(start) if start > now => format!(
                "position {} in the queue, estimated start {}",
                self.position,
                rfc3339(start)
            ),
            Some(_) => format!("position {} in the queue", self.position),
            None => format!(
                "position {} in the queue, start not estimated",
                self.position
            ),
        }
    }
}

/// Places waiting leases, in serving order, on the exporters they may use.
pub(crate) struct Estimator {
    now: OffsetDateTime,
    /// Exporter → when it is expected to be free; `None`: not known.
    free_at: BTreeMap<String, Option<OffsetDateTime>>,
    /// Exporter → waiting leases placed on it.
    placed: BTreeMap<String, i64>,
}

impl Estimator {
    pub(crate) fn new(now: OffsetDateTime) -> Self {
        Estimator {
            now,
            free_at: BTreeMap::new(),
            placed: BTreeMap::new(),
        }
    }

    /// Places the next waiting lease, which may use `candidates` and asks for `duration`;
    /// `initially_free` tells when an exporter not seen before is expected to be free.
    pub(crate) fn place(
        &mut self,
        candidates: &[&str],
        initially_free: impl Fn(&str) -> Option<OffsetDateTime>,
        duration: Duration,
    ) -> Estimate {
        let mut position = 1i64;
        let mut best: Option<(&str, OffsetDateTime)> = None;
        for &exporter in candidates {
            position = position.saturating_add(self.placed.get(exporter).copied().unwrap_or(0));
            let free = *self
                .free_at
                .entry(exporter.to_owned())
                .or_insert_with(|| initially_free(exporter));
            if let Some(free) = free
                && best.is_none_or(|(_, at)| free < at)
            {
                best = Some((exporter, free));
            }
        }
        let Some((exporter, free)) = best else {
            return Estimate {
                position,
                start: None,
            };
        };
        let start = free.max(self.now);
        self.free_at
            .insert(exporter.to_owned(), start.checked_add(duration));
        *self.placed.entry(exporter.to_owned()).or_insert(0) += 1;
        Estimate {
            position,
            start: Some(start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("valid")
    }

    #[test]
    fn aging_adds_one_per_full_interval() {
        let aging = Some(Duration::seconds(60));
        assert_eq!(effective_priority(5, t(0), t(59), aging), 5);
        assert_eq!(effective_priority(5, t(0), t(60), aging), 6);
        assert_eq!(effective_priority(5, t(0), t(3600), aging), 65);
        assert_eq!(effective_priority(5, t(10), t(0), aging), 5);
        assert_eq!(effective_priority(5, t(0), t(3600), None), 5);
        assert_eq!(
            effective_priority(5, t(0), t(3600), Some(Duration::ZERO)),
            5
        );
        let tiny = Some(Duration::nanoseconds(1));
        assert_eq!(
            effective_priority(i64::MAX - 1, t(0), t(10), tiny),
            i64::MAX
        );
    }

    fn queued(
        name: &'static str,
        priority: i64,
        created: i64,
        group: Option<&str>,
    ) -> Queued<'static, &'static str> {
        Queued {
            item: name,
            rank: Rank {
                booked: false,
                priority,
                creation_time: t(created),
                name,
            },
            group: group.map(str::to_owned),
        }
    }

    #[test]
    fn booked_then_priority_then_age() {
        let mut booked = queued("booked", -5, 9, None);
        booked.rank.booked = true;
        let list = vec![
            queued("old-low", 0, 0, None),
            queued("new-high", 3, 5, None),
            booked,
            queued("old-high", 3, 1, None),
        ];
        assert_eq!(
            order(list, BTreeMap::new()),
            ["booked", "old-high", "new-high", "old-low"]
        );
    }

    #[test]
    fn fair_share_serves_the_group_holding_fewest_first() {
        let list = vec![
            queued("a1", 1, 0, Some("team=a")),
            queued("a2", 1, 1, Some("team=a")),
            queued("b1", 1, 2, Some("team=b")),
            queued("b2", 1, 3, Some("team=b")),
            queued("high", 2, 9, Some("team=a")),
        ];
        let holdings = BTreeMap::from([("team=a".to_owned(), 1)]);
        // `high` counts for a (two now), so in the next band b goes first until it holds
        // as many, then the older lease of the tie.
        assert_eq!(order(list, holdings), ["high", "b1", "b2", "a1", "a2"]);
    }

    #[test]
    fn estimates_follow_the_exporter_that_frees_first() {
        let mut estimator = Estimator::new(t(0));
        let free = |e: &str| match e {
            "x" => Some(t(100)),
            "y" => Some(t(50)),
            _ => None,
        };
        let minute = Duration::seconds(60);
        let first = estimator.place(&["x", "y"], free, minute);
        assert_eq!(
            first,
            Estimate {
                position: 1,
                start: Some(t(50))
            }
        );
        // y is now expected free at 110, x at 100.
        let second = estimator.place(&["x", "y"], free, minute);
        assert_eq!(
            second,
            Estimate {
                position: 2,
                start: Some(t(100))
            }
        );
        // Only y: one lease placed on it ahead.
        let third = estimator.place(&["y"], free, minute);
        assert_eq!(
            third,
            Estimate {
                position: 2,
                start: Some(t(110))
            }
        );
        let unknown = estimator.place(&["z"], free, minute);
        assert_eq!(
            unknown,
            Estimate {
                position: 1,
                start: None
            }
        );
        assert_eq!(
            third.describe(t(0)),
            "position 2 in the queue, estimated start 2023-11-14T22:15:10Z"
        );
        assert_eq!(
            unknown.describe(t(0)),
            "position 1 in the queue, start not estimated"
        );
    }
}
