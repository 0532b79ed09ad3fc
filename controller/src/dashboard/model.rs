//! What the dashboard shows, built from the stored objects alone (pure, no I/O): exporters
//! with their state, holder and queue, leases with their state and place in the queue,
//! clients with what they hold. The templates only print these rows.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use jumpstarter_lease::scheduler::condition::{PENDING, READY};
use jumpstarter_lease::selector::{self, LabelSelector};

use crate::crd::vocabulary::{is_true, selector_from_k8s, time_of};
use crate::crd::{Client, Exporter, Lease};
use crate::service::lease_certificate::LeaseFacts;

/// The whole page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overview {
    pub(crate) namespace: String,
    /// The label selector the exporters are filtered by, as typed (empty: all).
    pub(crate) filter: String,
    /// Why the filter was not applied, if it is malformed.
    pub(crate) filter_error: Option<String>,
    pub(crate) counts: Counts,
    pub(crate) exporters: Vec<ExporterRow>,
    pub(crate) leases: Vec<LeaseRow>,
    pub(crate) clients: Vec<ClientRow>,
    /// When the page was built (RFC 3339).
    pub(crate) generated: String,
}

/// Exporters by state, over the exporters shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) free: usize,
    pub(crate) leased: usize,
    pub(crate) offline: usize,
    pub(crate) waiting: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExporterRow {
    pub(crate) name: String,
    pub(crate) labels: String,
    pub(crate) online: bool,
    pub(crate) enabled: bool,
    /// `free`, `leased`, `offline` or `disabled`.
    pub(crate) state: &'static str,
    /// The lease holding it, its client and its end.
    pub(crate) lease: String,
    pub(crate) holder: String,
    pub(crate) lease_end: String,
    /// Waiting leases that may use this exporter.
    pub(crate) waiting: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRow {
    pub(crate) name: String,
    pub(crate) client: String,
    pub(crate) exporter: String,
    pub(crate) selector: String,
    /// `active`, `waiting` or `scheduled` (a future begin time).
    pub(crate) state: &'static str,
    pub(crate) begin: String,
    pub(crate) end: String,
    /// The conditions, as `Type=Status (Reason): message`.
    pub(crate) conditions: Vec<String>,
    pub(crate) position: String,
    pub(crate) eta: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRow {
    pub(crate) name: String,
    pub(crate) labels: String,
    pub(crate) holding: usize,
    pub(crate) waiting: usize,
}

/// The page for `namespace` at `now`, exporters filtered by `filter` (label selector syntax,
/// as `jmp` takes it; the leases and clients shown are those of the exporters shown, and
/// every waiting lease).
pub(crate) fn overview(
    namespace: &str,
    exporters: &[&Exporter],
    leases: &[&Lease],
    clients: &[&Client],
    filter: &str,
    now: OffsetDateTime,
) -> Overview {
    let (wanted, filter_error) = match filter.trim() {
        "" => (None, None),
        text => match selector::parse(text) {
            Ok(parsed) => (Some(parsed), None),
            Err(e) => (None, Some(format!("invalid label selector {text:?}: {e}"))),
        },
    };
    let active: Vec<&Lease> = leases.iter().copied().filter(|l| !is_ended(l)).collect();
    let held: BTreeMap<&str, &Lease> = active
        .iter()
        .filter_map(|l| exporter_of(l).map(|e| (e, *l)))
        .collect();
    let waiting: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| exporter_of(l).is_none())
        .collect();

    let mut counts = Counts {
        waiting: waiting.len(),
        ..Counts::default()
    };
    let mut rows = Vec::new();
    for exporter in exporters {
        let labels = exporter.metadata.labels.clone().unwrap_or_default();
        if wanted
            .as_ref()
            .is_some_and(|w| !selector::matches(w, &labels))
        {
            continue;
        }
        let name = exporter.metadata.name.clone().unwrap_or_default();
        let status = exporter.status.clone().unwrap_or_default();
        let online = is_true(status.conditions.as_deref().unwrap_or_default(), "Online");
        let enabled = exporter.spec.enabled.unwrap_or(true);
        let holding = held.get(name.as_str());
        let state = match (holding, online, enabled) {
            (Some(_), _, _) => "leased",
            (None, false, _) => "offline",
            (None, true, false) => "disabled",
            (None, true, true) => "free",
        };
        match state {
            "leased" => counts.leased += 1,
            "offline" => counts.offline += 1,
            "free" => counts.free += 1,
            _ => {}
        }
        let queue = waiting
            .iter()
            .filter(|l| may_use(l, &name, &labels))
            .count();
        rows.push(ExporterRow {
            labels: format_labels(&labels),
            online,
            enabled,
            state,
            lease: holding
                .and_then(|l| l.metadata.name.clone())
                .unwrap_or_default(),
            holder: holding
                .map(|l| l.spec.client_ref.name.clone())
                .unwrap_or_default(),
            lease_end: holding.and_then(|l| expected_end(l)).unwrap_or_default(),
            waiting: queue,
            name,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));

    let shown: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let mut lease_rows: Vec<LeaseRow> = active
        .iter()
        .filter(|l| exporter_of(l).is_none_or(|e| shown.contains(&e)))
        .map(|l| lease_row(l, now))
        .collect();
    // Active first, then the queue in order, then bookings.
    lease_rows.sort_by(|a, b| {
        let rank = |r: &LeaseRow| match r.state {
            "active" => 0,
            "waiting" => 1,
            _ => 2,
        };
        let position = |r: &LeaseRow| r.position.parse::<i64>().unwrap_or(i64::MAX);
        (rank(a), position(a), &a.name).cmp(&(rank(b), position(b), &b.name))
    });

    let mut client_rows: Vec<ClientRow> = clients
        .iter()
        .map(|c| {
            let name = c.metadata.name.clone().unwrap_or_default();
            let mine = active.iter().filter(|l| l.spec.client_ref.name == name);
            let (holding, waiting) = mine.fold((0, 0), |(h, w), l| {
                if exporter_of(l).is_some() {
                    (h + 1, w)
                } else {
                    (h, w + 1)
                }
            });
            ClientRow {
                labels: format_labels(&c.metadata.labels.clone().unwrap_or_default()),
                holding,
                waiting,
                name,
            }
        })
        .collect();
    client_rows.sort_by(|a, b| a.name.cmp(&b.name));

    Overview {
        namespace: namespace.to_owned(),
        filter: filter.trim().to_owned(),
        filter_error,
        counts,
        exporters: rows,
        leases: lease_rows,
        clients: client_rows,
        generated: rfc3339(now),
    }
}

fn is_ended(lease: &Lease) -> bool {
    lease.status.as_ref().is_some_and(|s| s.ended)
}

fn exporter_of(lease: &Lease) -> Option<&str> {
    lease
        .status
        .as_ref()
        .and_then(|s| s.exporter_ref.as_ref())
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
}

/// Whether waiting `lease` may use exporter `name` with `labels` (by its pin or selector;
/// access policies aside).
fn may_use(lease: &Lease, name: &str, labels: &BTreeMap<String, String>) -> bool {
    if let Some(pinned) = lease.spec.exporter_ref.as_ref().map(|r| r.name.as_str())
        && !pinned.is_empty()
        && pinned != name
    {
        return false;
    }
    let wanted: LabelSelector = selector_from_k8s(&lease.spec.selector);
    selector::matches(&wanted, labels)
}

/// When a started lease is expected to end: its notice, or its requested end.
fn expected_end(lease: &Lease) -> Option<String> {
    let notice = lease.status.as_ref()?.preemption_time.as_ref().map(time_of);
    notice.or_else(|| LeaseFacts::of(lease).expiry).map(rfc3339)
}

fn lease_row(lease: &Lease, now: OffsetDateTime) -> LeaseRow {
    let status = lease.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let exporter = exporter_of(lease).unwrap_or_default().to_owned();
    let scheduled = lease
        .spec
        .begin_time
        .as_ref()
        .is_some_and(|b| time_of(b) > now);
    let state = match (exporter.is_empty(), scheduled) {
        (false, _) => "active",
        (true, true) => "scheduled",
        (true, false) => "waiting",
    };
    let begin = status
        .begin_time
        .as_ref()
        .or(lease.spec.begin_time.as_ref())
        .map(|t| rfc3339(time_of(t)))
        .unwrap_or_default();
    let end = if exporter.is_empty() {
        lease
            .spec
            .end_time
            .as_ref()
            .map(|t| rfc3339(time_of(t)))
            .unwrap_or_default()
    } else {
        expected_end(lease).unwrap_or_default()
    };
    let mut selector_text = selector::format(&selector_from_k8s(&lease.spec.selector));
    if let Some(pinned) = lease
        .spec
        .exporter_ref
        .as_ref()
        .filter(|r| !r.name.is_empty())
    {
        selector_text = if selector_text.is_empty() {
            format!("name={}", pinned.name)
        } else {
            format!("name={}, {selector_text}", pinned.name)
        };
    }
    LeaseRow {
        name: lease.metadata.name.clone().unwrap_or_default(),
        client: lease.spec.client_ref.name.clone(),
        exporter,
        selector: selector_text,
        state,
        begin,
        end,
        conditions: conditions
            .iter()
            .filter(|c| c.type_ == READY || c.type_ == PENDING || c.status == "True")
            .map(|c| {
                let mut text = format!("{}={}", c.type_, c.status);
                if !c.reason.is_empty() {
                    text.push_str(&format!(" ({})", c.reason));
                }
                if !c.message.is_empty() {
                    text.push_str(&format!(": {}", c.message));
                }
                text
            })
            .collect(),
        position: status
            .queue_position
            .map(|p| p.to_string())
            .unwrap_or_default(),
        eta: status
            .estimated_start
            .as_ref()
            .map(|t| rfc3339(time_of(t)))
            .unwrap_or_default(),
    }
}

fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::vocabulary::stored_time;
    use crate::crd::{ExporterSpec, ExporterStatus, LeaseSpec, LeaseStatus};
    use k8s_openapi::api::core::v1::LocalObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).expect("valid")
    }

    fn exporter(name: &str, labels: &[(&str, &str)], online: bool) -> Exporter {
        let mut e = Exporter::new(name, ExporterSpec::default());
        e.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        e.status = Some(ExporterStatus {
            conditions: Some(vec![meta::Condition {
                type_: "Online".to_owned(),
                status: if online { "True" } else { "False" }.to_owned(),
                reason: "Seen".to_owned(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: stored_time(at(0)),
            }]),
            ..ExporterStatus::default()
        });
        e
    }

    fn lease(name: &str, client: &str, selector: &str, exporter: Option<&str>) -> Lease {
        let mut l = Lease::new(
            name,
            LeaseSpec {
                client_ref: LocalObjectReference {
                    name: client.to_owned(),
                },
                duration: Some("1h".to_owned()),
                selector: crate::crd::vocabulary::selector_to_k8s(
                    &selector::parse(selector).expect("selector"),
                ),
                ..LeaseSpec::default()
            },
        );
        l.status = Some(LeaseStatus {
            exporter_ref: exporter.map(|e| LocalObjectReference { name: e.to_owned() }),
            begin_time: exporter.map(|_| stored_time(at(0))),
            queue_position: exporter.is_none().then_some(1),
            ..LeaseStatus::default()
        });
        l
    }

    #[test]
    fn exporters_show_state_holder_end_and_queue() {
        let e1 = exporter("board-1", &[("board", "mock")], true);
        let e2 = exporter("board-2", &[("board", "mock")], true);
        let e3 = exporter("board-3", &[("board", "other")], false);
        let l1 = lease("l1", "alice", "board=mock", Some("board-1"));
        let l2 = lease("l2", "bob", "board=mock", None);
        let page = overview("lab", &[&e3, &e1, &e2], &[&l2, &l1], &[], "", at(10));
        let names: Vec<&str> = page.exporters.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["board-1", "board-2", "board-3"]);
        let first = &page.exporters[0];
        assert_eq!(
            (first.state, first.holder.as_str(), first.lease.as_str()),
            ("leased", "alice", "l1")
        );
        assert_eq!(first.lease_end, "2027-01-15T09:00:00Z");
        assert_eq!(first.waiting, 1);
        assert_eq!(page.exporters[2].state, "offline");
        assert_eq!(page.exporters[2].waiting, 0);
        assert_eq!(
            page.counts,
            Counts {
                free: 1,
                leased: 1,
                offline: 1,
                waiting: 1
            }
        );
        let leases: Vec<(&str, &str, &str)> = page
            .leases
            .iter()
            .map(|l| (l.name.as_str(), l.state, l.position.as_str()))
            .collect();
        assert_eq!(leases, [("l1", "active", ""), ("l2", "waiting", "1")]);
    }

    #[test]
    fn a_selector_filters_exporters_and_a_bad_one_is_reported() {
        let e1 = exporter("board-1", &[("board", "mock")], true);
        let e3 = exporter("board-3", &[("board", "other")], true);
        let page = overview("lab", &[&e1, &e3], &[], &[], "board in (other)", at(0));
        let names: Vec<&str> = page.exporters.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["board-3"]);
        let page = overview("lab", &[&e1, &e3], &[], &[], "board in (", at(0));
        assert_eq!(page.exporters.len(), 2);
        assert!(
            page.filter_error
                .as_deref()
                .is_some_and(|e| e.starts_with("invalid label selector \"board in (\"")),
            "{:?}",
            page.filter_error
        );
    }

    #[test]
    fn clients_count_what_they_hold_and_wait_for() {
        let mut alice = Client::new("alice", Default::default());
        alice.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
        let l1 = lease("l1", "alice", "board=mock", Some("board-1"));
        let l2 = lease("l2", "alice", "board=mock", None);
        let page = overview("lab", &[], &[&l1, &l2], &[&alice], "", at(0));
        assert_eq!(
            page.clients,
            [ClientRow {
                name: "alice".to_owned(),
                labels: "team=a".to_owned(),
                holding: 1,
                waiting: 1,
            }]
        );
    }
}
