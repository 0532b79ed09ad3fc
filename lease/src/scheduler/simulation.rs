//! Property test: random namespaces driven through many plan → write → advance-time cycles,
//! with exporters changing state and clients releasing leases in between.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use super::condition::{ConditionStatus, PENDING, READY};
use super::*;
use crate::selector::parse;

const EXPORTER_STATUSES: [&str; 5] = ["", "Available", "LeaseReady", "AfterLeaseHook", "Offline"];

fn t(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("valid")
}

fn exporter_strategy(index: usize) -> impl Strategy<Value = Exporter> {
    (
        prop_oneof![Just("a"), Just("b")],
        any::<bool>(),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        0..EXPORTER_STATUSES.len(),
    )
        .prop_map(
            move |(board, spot, enabled, registered, online, status)| Exporter {
                name: format!("exp{index}"),
                labels: [
                    ("board".to_owned(), board.to_owned()),
                    (
                        "spot".to_owned(),
                        if spot { "yes" } else { "no" }.to_owned(),
                    ),
                ]
                .into_iter()
                .collect(),
                enabled,
                registered,
                online,
                exporter_status: EXPORTER_STATUSES[status].to_owned(),
            },
        )
}

fn lease_strategy(index: usize, exporters: usize) -> impl Strategy<Value = Lease> {
    (
        0i64..20,
        prop_oneof![
            Just("board=a"),
            Just("board=b"),
            Just("board in (a,b)"),
            Just("spot=no"),
            Just("")
        ],
        prop::option::weighted(0.2, 0..exporters + 1),
        1i64..30,
        prop::option::weighted(0.2, 0i64..20),
        any::<bool>(),
        prop_oneof![Just("c0"), Just("c1"), Just("ghost")],
    )
        .prop_map(
            move |(created, selector, pinned, duration, begin, allow_disabled, client)| Lease {
                name: format!("lease{index}"),
                uid: None,
                generation: 1,
                creation_time: t(created),
                client: client.to_owned(),
                spec: LeaseSpec {
                    selector: parse(selector).expect("fixed selectors parse"),
                    exporter_ref: pinned.map(|i| format!("exp{i}")),
                    allow_disabled,
                    duration: Some(Duration::seconds(duration)),
                    begin_time: begin.map(|b| t(created + b)),
                    end_time: None,
                    release: false,
                },
                status: LeaseStatus::default(),
            },
        )
}

fn policy_strategy() -> impl Strategy<Value = Vec<AccessPolicy>> {
    let rule = (
        0i64..3,
        prop::bool::weighted(0.2),
        prop_oneof![Just("team=x"), Just("")],
        any::<bool>(),
    )
        .prop_map(|(priority, spot_access, from, limited)| AccessRule {
            description: format!("rule {priority} {from}"),
            priority,
            from: vec![parse(from).expect("fixed selectors parse")],
            maximum_duration: limited.then(|| Duration::seconds(20)),
            spot_access,
        });
    let policy = (
        prop_oneof![Just("spot=yes"), Just("spot=no"), Just("")],
        prop::collection::vec(rule, 1..3),
    )
        .prop_map(|(selector, rules)| AccessPolicy {
            exporter_selector: parse(selector).expect("fixed selectors parse"),
            rules,
        });
    prop::collection::vec(policy, 0..3)
}

#[derive(Clone, Debug)]
enum Event {
    Advance(i64),
    JumpToWakeup,
    SetOnline(usize, bool),
    SetStatus(usize, usize),
    Release(usize),
}

fn event_strategy(exporters: usize, leases: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        (0i64..4).prop_map(Event::Advance),
        Just(Event::JumpToWakeup),
        (0..exporters, any::<bool>()).prop_map(|(i, on)| Event::SetOnline(i, on)),
        (0..exporters, 0..EXPORTER_STATUSES.len()).prop_map(|(i, s)| Event::SetStatus(i, s)),
        (0..leases).prop_map(Event::Release),
    ]
}

fn world_strategy() -> impl Strategy<Value = (Snapshot, Vec<Event>)> {
    (1usize..5, 1usize..8).prop_flat_map(|(exporters, leases)| {
        let exporter_list: Vec<_> = (0..exporters).map(exporter_strategy).collect();
        let lease_list: Vec<_> = (0..leases).map(|i| lease_strategy(i, exporters)).collect();
        (
            exporter_list,
            lease_list,
            policy_strategy(),
            prop::collection::vec(event_strategy(exporters, leases), 1..40),
        )
            .prop_map(|(exporters, leases, policies, events)| {
                let clients = vec![
                    Client {
                        name: "c0".to_owned(),
                        labels: [("team".to_owned(), "x".to_owned())].into_iter().collect(),
                    },
                    Client {
                        name: "c1".to_owned(),
                        labels: BTreeMap::new(),
                    },
                ];
                let snapshot = Snapshot {
                    exporters,
                    clients,
                    leases,
                    policies,
                };
                (snapshot, events)
            })
    })
}

/// Invariants over one plan applied to `before`, giving `after`.
fn check(
    before: &Snapshot,
    plan: &Plan,
    after: &Snapshot,
    now: OffsetDateTime,
) -> Result<(), TestCaseError> {
    let mut holders = BTreeSet::new();
    for lease in &after.leases {
        let status = &lease.status;
        if let (false, Some(exporter)) = (status.ended, &status.exporter) {
            prop_assert!(
                holders.insert(exporter.clone()),
                "{exporter} held twice: {after:#?}"
            );
        }
        let types: BTreeSet<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        prop_assert_eq!(
            types.len(),
            status.conditions.len(),
            "duplicate condition types"
        );
        prop_assert_eq!(status.ended, status.end_time.is_some());
        if status.exporter.is_some() {
            prop_assert!(status.begin_time.is_some());
            prop_assert!(status.conditions.iter().any(|c| c.type_ == READY));
        }
    }
    for (old, new) in before.leases.iter().zip(&after.leases) {
        let (old, new) = (&old.status, &new.status);
        if old.ended {
            prop_assert_eq!(old, new, "an ended lease changed");
        }
        if old.exporter.is_some() {
            prop_assert_eq!(
                &old.exporter,
                &new.exporter,
                "an assigned lease changed exporter"
            );
        }
        let pending_was_true = old
            .conditions
            .iter()
            .any(|c| c.type_ == PENDING && c.status == ConditionStatus::True);
        if pending_was_true {
            prop_assert!(
                new.conditions
                    .iter()
                    .any(|c| c.type_ == PENDING && c.status == ConditionStatus::True),
                "Pending went back"
            );
        }
    }
    for update in &plan.updates {
        let old = before
            .leases
            .iter()
            .find(|l| l.name == update.name)
            .expect("updates name existing leases");
        prop_assert_ne!(&old.status, &update.status, "an update without a change");
    }
    if let Some(wakeup) = plan.next_wakeup {
        prop_assert!(wakeup > now, "wakeup {wakeup} not after now {now}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn exporters_are_never_shared_and_history_is_kept((mut snapshot, events) in world_strategy()) {
        let mut now = t(0);
        let mut wakeup = None;
        for event in events {
            match event {
                Event::Advance(seconds) => now += Duration::seconds(seconds),
                Event::JumpToWakeup => now = wakeup.unwrap_or(now),
                Event::SetOnline(i, online) => snapshot.exporters[i].online = online,
                Event::SetStatus(i, s) => {
                    snapshot.exporters[i].exporter_status = EXPORTER_STATUSES[s].to_owned();
                }
                Event::Release(i) => snapshot.leases[i].spec.release = true,
            }
            let plan = plan(&snapshot, now);
            let mut after = snapshot.clone();
            for update in &plan.updates {
                let lease = after
                    .leases
                    .iter_mut()
                    .find(|l| l.name == update.name)
                    .expect("updates name existing leases");
                lease.status = update.status.clone();
            }
            check(&snapshot, &plan, &after, now)?;
            wakeup = plan.next_wakeup;
            snapshot = after;
        }
    }
}
