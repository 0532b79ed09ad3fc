//! Property test: random namespaces driven through many plan → write → advance-time cycles,
//! with exporters changing state and clients releasing leases in between.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use super::condition::{self, ConditionStatus, PENDING, READY};
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
                    priority: None,
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
        prop::option::weighted(0.3, 6i64..30),
    )
        .prop_map(|(priority, spot_access, from, limited, idle)| AccessRule {
            description: format!("rule {priority} {from}"),
            priority,
            from: vec![parse(from).expect("fixed selectors parse")],
            maximum_duration: limited.then(|| Duration::seconds(20)),
            spot_access,
            idle_timeout: idle.map(Duration::seconds),
            ..AccessRule::default()
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
    /// The controller records a session on the lease now (if it holds an exporter).
    Activity(usize),
}

/// Records activity at `now` on `lease` as the controller does: only on a held lease under
/// an idle timeout, and only when the stored time is older than the activity interval.
fn record_activity(lease: &mut Lease, now: OffsetDateTime) -> bool {
    let status = &mut lease.status;
    let (Some(timeout), Some(begin), false) =
        (status.idle_timeout, status.begin_time, status.ended)
    else {
        return false;
    };
    let last = status.last_activity.unwrap_or(begin);
    if now - last < super::snapshot::activity_interval(timeout) {
        return false;
    }
    status.last_activity = Some(now);
    true
}

fn event_strategy(exporters: usize, leases: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        (0i64..4).prop_map(Event::Advance),
        Just(Event::JumpToWakeup),
        (0..exporters, any::<bool>()).prop_map(|(i, on)| Event::SetOnline(i, on)),
        (0..exporters, 0..EXPORTER_STATUSES.len()).prop_map(|(i, s)| Event::SetStatus(i, s)),
        (0..leases).prop_map(Event::Release),
        (0..leases).prop_map(Event::Activity),
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
                    settings: Settings::default(),
                };
                (snapshot, events)
            })
    })
}

/// `snapshot` with the statuses of `plan` written.
fn applied(snapshot: &Snapshot, plan: &Plan) -> Snapshot {
    let mut after = snapshot.clone();
    for update in &plan.updates {
        let lease = after
            .leases
            .iter_mut()
            .find(|l| l.name == update.name)
            .expect("updates name existing leases");
        lease.status = update.status.clone();
    }
    after
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
    for lease in &after.leases {
        let status = &lease.status;
        let preempted = status
            .conditions
            .iter()
            .any(|c| c.reason == condition::reason::PREEMPTED);
        if preempted || status.preemption_time.is_some() {
            prop_assert!(
                status.spot_access,
                "{} preempted without spot access",
                lease.name
            );
        }
    }
    for lease in &after.leases {
        // An idle end comes no sooner than the timeout after the last recorded activity
        // (or the start), and no later than the timeout plus the interval the record may
        // lag by: a plan at or past that instant ends the lease.
        let status = &lease.status;
        let (Some(timeout), Some(begin)) = (status.idle_timeout, status.begin_time) else {
            continue;
        };
        let since = status.last_activity.map_or(begin, |last| last.max(begin));
        let idle = status
            .conditions
            .iter()
            .any(|c| c.type_ == READY && c.reason == condition::reason::IDLE);
        if idle {
            let end = status.end_time.expect("an idle lease has ended");
            prop_assert!(end - since >= timeout, "{} ended idle early", lease.name);
        }
        let overdue = now >= since + timeout + super::snapshot::activity_interval(timeout);
        let expired_first = super::planner::started_expiry(&lease.spec, begin)
            .is_some_and(|expiry| expiry <= since + timeout);
        if overdue && !expired_first && status.preemption_time.is_none() {
            prop_assert!(status.ended, "{} is idle past its timeout", lease.name);
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
                Event::Activity(i) => {
                    record_activity(&mut snapshot.leases[i], now);
                }
            }
            let plan = plan(&snapshot, now);
            let after = applied(&snapshot, &plan);
            check(&snapshot, &plan, &after, now)?;
            wakeup = plan.next_wakeup;
            snapshot = after;
        }
    }
}

/// A change between two plans in the incremental comparison.
#[derive(Clone, Debug)]
enum Change {
    Event(Event),
    SetEnabled(usize, bool),
    Relabel(usize, bool),
    /// Removes the exporter, or brings it back.
    ToggleExporter(usize),
    /// Deletes the lease, or creates it again (fresh, as generated).
    ToggleLease(usize),
    /// Time advances by this many seconds and the writes of the next plan fail: nothing of
    /// it is stored.
    FailWrites(i64),
}

fn change_strategy(exporters: usize, leases: usize) -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => event_strategy(exporters, leases).prop_map(Change::Event),
        1 => (0..exporters, any::<bool>()).prop_map(|(i, on)| Change::SetEnabled(i, on)),
        1 => (0..exporters, any::<bool>()).prop_map(|(i, a)| Change::Relabel(i, a)),
        1 => (0..exporters).prop_map(Change::ToggleExporter),
        1 => (0..leases).prop_map(Change::ToggleLease),
        1 => (0i64..4).prop_map(Change::FailWrites),
    ]
}

/// The objects of the incremental comparison; absent ones are `None`.
#[derive(Clone, Debug)]
struct World {
    exporters: Vec<Option<Exporter>>,
    removed_exporters: Vec<Exporter>,
    leases: Vec<Option<Lease>>,
    generated_leases: Vec<Lease>,
    clients: Vec<Client>,
    policies: Vec<AccessPolicy>,
}

impl World {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            exporters: self.exporters.iter().flatten().cloned().collect(),
            clients: self.clients.clone(),
            leases: self.leases.iter().flatten().cloned().collect(),
            policies: self.policies.clone(),
            settings: Settings::default(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The incremental planner, fed only the objects that change, reaches the same plan
    /// (updates and wake-up) as a full plan of the same objects at every step, including
    /// after plans whose writes failed; and, driving the simulation, it never gives one
    /// exporter to two leases.
    #[test]
    fn incremental_planning_equals_the_full_plan(
        (snapshot, changes) in world_strategy().prop_flat_map(|(snapshot, _)| {
            let (e, l) = (snapshot.exporters.len(), snapshot.leases.len());
            (Just(snapshot), prop::collection::vec(change_strategy(e, l), 1..60))
        })
    ) {
        let mut world = World {
            exporters: snapshot.exporters.iter().cloned().map(Some).collect(),
            removed_exporters: snapshot.exporters.clone(),
            leases: snapshot.leases.iter().cloned().map(Some).collect(),
            generated_leases: snapshot.leases.clone(),
            clients: snapshot.clients.clone(),
            policies: snapshot.policies.clone(),
        };
        let mut index = Index::from_snapshot(&snapshot);
        let mut now = t(0);
        let mut wakeup = None;
        for change in changes {
            let mut fail = false;
            let mut touched_exporter = None;
            let mut touched_lease = None;
            match change {
                Change::Event(Event::Advance(seconds)) => now += Duration::seconds(seconds),
                Change::Event(Event::JumpToWakeup) => now = wakeup.unwrap_or(now),
                Change::Event(Event::SetOnline(i, online)) => {
                    if let Some(e) = &mut world.exporters[i] { e.online = online; }
                    touched_exporter = Some(i);
                }
                Change::Event(Event::SetStatus(i, s)) => {
                    if let Some(e) = &mut world.exporters[i] {
                        e.exporter_status = EXPORTER_STATUSES[s].to_owned();
                    }
                    touched_exporter = Some(i);
                }
                Change::Event(Event::Release(i)) => {
                    if let Some(l) = &mut world.leases[i] { l.spec.release = true; }
                    touched_lease = Some(i);
                }
                Change::Event(Event::Activity(i)) => {
                    if let Some(l) = &mut world.leases[i] { record_activity(l, now); }
                    touched_lease = Some(i);
                }
                Change::SetEnabled(i, enabled) => {
                    if let Some(e) = &mut world.exporters[i] { e.enabled = enabled; }
                    touched_exporter = Some(i);
                }
                Change::Relabel(i, a) => {
                    if let Some(e) = &mut world.exporters[i] {
                        e.labels.insert("board".to_owned(), if a { "a" } else { "b" }.to_owned());
                    }
                    touched_exporter = Some(i);
                }
                Change::ToggleExporter(i) => {
                    world.exporters[i] = match world.exporters[i].take() {
                        Some(e) => {
                            world.removed_exporters[i] = e;
                            None
                        }
                        None => Some(world.removed_exporters[i].clone()),
                    };
                    touched_exporter = Some(i);
                }
                Change::ToggleLease(i) => {
                    world.leases[i] = match world.leases[i].take() {
                        Some(_) => None,
                        None => Some(world.generated_leases[i].clone()),
                    };
                    touched_lease = Some(i);
                }
                Change::FailWrites(seconds) => {
                    now += Duration::seconds(seconds);
                    fail = true;
                }
            }
            if let Some(i) = touched_exporter {
                match &world.exporters[i] {
                    Some(e) => index.put_exporter(e.clone()),
                    None => index.remove_exporter(&format!("exp{i}")),
                }
            }
            if let Some(i) = touched_lease {
                match &world.leases[i] {
                    Some(l) => index.put_lease(l.clone()),
                    None => index.remove_lease(&format!("lease{i}")),
                }
            }

            let before = world.snapshot();
            let full = plan(&before, now);
            let incremental = index.plan(now);
            prop_assert_eq!(&incremental, &full, "at {}", now);

            if fail {
                continue;
            }
            for update in &incremental.updates {
                let lease = world
                    .leases
                    .iter_mut()
                    .flatten()
                    .find(|l| l.name == update.name)
                    .expect("updates name existing leases");
                lease.status = update.status.clone();
                index.put_lease(lease.clone());
            }
            check(&before, &incremental, &world.snapshot(), now)?;
            wakeup = incremental.next_wakeup;
        }
    }
}

/// The queue's world: clients of priority 0..=3, one rule per priority, leases arriving over
/// time (each appears in the namespace at its creation time), exporters going offline and
/// busy. No spot access and no bookings: only ranking decides who is served first.
#[derive(Clone, Debug)]
struct Arrival {
    created: i64,
    client: usize,
    pinned: Option<usize>,
    duration: i64,
    asked: Option<i64>,
}

const AGING: i64 = 10;
const TOP_PRIORITY: i64 = 3;

fn arrival_strategy(exporters: usize) -> impl Strategy<Value = Arrival> {
    (
        0i64..200,
        0usize..4,
        prop::option::weighted(0.2, 0..exporters),
        1i64..40,
        prop::option::weighted(0.2, 0i64..4),
    )
        .prop_map(|(created, client, pinned, duration, asked)| Arrival {
            created,
            client,
            pinned,
            duration,
            asked,
        })
}

fn queue_world() -> impl Strategy<Value = (usize, Vec<Arrival>, Vec<Event>)> {
    (1usize..4).prop_flat_map(|exporters| {
        (
            Just(exporters),
            prop::collection::vec(arrival_strategy(exporters), 1..25),
            prop::collection::vec(event_strategy(exporters, 1), 1..120),
        )
    })
}

fn queue_snapshot(exporters: usize) -> Snapshot {
    let exporters = (0..exporters)
        .map(|i| Exporter {
            name: format!("exp{i}"),
            labels: [("board".to_owned(), "a".to_owned())].into_iter().collect(),
            enabled: true,
            registered: true,
            online: true,
            exporter_status: "Available".to_owned(),
        })
        .collect();
    let clients = (0..4)
        .map(|p| Client {
            name: format!("c{p}"),
            labels: [("prio".to_owned(), p.to_string())].into_iter().collect(),
        })
        .collect();
    let rules = (0..=TOP_PRIORITY)
        .map(|p| AccessRule {
            description: format!("priority {p}"),
            priority: p,
            from: vec![parse(&format!("prio={p}")).expect("fixed selectors parse")],
            ..AccessRule::default()
        })
        .collect();
    Snapshot {
        exporters,
        clients,
        leases: Vec::new(),
        policies: vec![AccessPolicy {
            exporter_selector: parse("board=a").expect("fixed selectors parse"),
            rules,
        }],
        settings: Settings {
            aging_interval: Some(Duration::seconds(AGING)),
        },
    }
}

fn arrival_lease(index: usize, arrival: &Arrival) -> Lease {
    Lease {
        name: format!("lease{index:02}"),
        uid: None,
        generation: 1,
        creation_time: t(arrival.created),
        client: format!("c{}", arrival.client),
        spec: LeaseSpec {
            selector: parse("board=a").expect("fixed selectors parse"),
            exporter_ref: arrival.pinned.map(|i| format!("exp{i}")),
            duration: Some(Duration::seconds(arrival.duration)),
            priority: arrival.asked,
            ..LeaseSpec::default()
        },
        status: LeaseStatus::default(),
    }
}

/// Whether `lease` may be served by `exporter` (selector and pin; no policy differences
/// between exporters in these worlds).
fn admits(lease: &Lease, exporter: &str) -> bool {
    lease
        .spec
        .exporter_ref
        .as_deref()
        .is_none_or(|pinned| pinned == exporter)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The aging bound of `queue`: while a lease `L` of priority `p`, created at `c`, waits,
    /// no exporter it may use goes to a lease created at or after `c + A·(P − p + 1)`, however
    /// many higher-priority leases arrive. Leases keep arriving, exporters go offline and
    /// busy, and clients lower their priority by request.
    #[test]
    fn no_lease_is_overtaken_by_one_created_past_the_aging_bound(
        (exporters, arrivals, events) in queue_world()
    ) {
        let mut world = queue_snapshot(exporters);
        let mut now = t(0);
        let mut wakeup = None;
        let mut next = 0;
        let mut arrivals: Vec<(usize, Arrival)> = arrivals.into_iter().enumerate().collect();
        arrivals.sort_by_key(|(i, a)| (a.created, *i));
        for event in events {
            match event {
                Event::Advance(seconds) => now += Duration::seconds(seconds * 3),
                Event::JumpToWakeup => now = wakeup.unwrap_or(now).max(now),
                Event::SetOnline(i, online) => world.exporters[i].online = online,
                Event::SetStatus(i, s) => {
                    world.exporters[i].exporter_status = EXPORTER_STATUSES[s].to_owned();
                }
                Event::Release(_) | Event::Activity(_) => {}
            }
            while let Some((i, arrival)) = arrivals.get(next) {
                if t(arrival.created) > now {
                    break;
                }
                world.leases.push(arrival_lease(*i, arrival));
                next += 1;
            }
            let plan = plan(&world, now);
            let after = applied(&world, &plan);
            for granted in &plan.updates {
                let before = world.leases.iter().find(|l| l.name == granted.name).expect("exists");
                let (None, Some(exporter)) = (&before.status.exporter, &granted.status.exporter)
                else { continue };
                for waiting in &after.leases {
                    if waiting.status.ended || waiting.status.exporter.is_some()
                        || !admits(waiting, exporter)
                    {
                        continue;
                    }
                    let rule = waiting.client[1..].parse::<i64>().expect("client cN");
                    let p = waiting.spec.priority.map_or(rule, |asked| asked.min(rule));
                    let bound = waiting.creation_time
                        + Duration::seconds(AGING * (TOP_PRIORITY - p + 1));
                    prop_assert!(
                        before.creation_time < bound,
                        "{} (created {}) got {exporter} at {now} ahead of {} (priority {p}, \
                         created {}, bound {bound})",
                        granted.name, before.creation_time, waiting.name, waiting.creation_time
                    );
                }
            }
            check(&world, &plan, &after, now)?;
            wakeup = plan.next_wakeup;
            world = after;
        }
    }
}

/// The bookings' world: leases pinned to an exporter with a begin time (bookings) and
/// leases by selector, all created at the start; exporters go offline and busy.
fn booking_world() -> impl Strategy<Value = (Snapshot, Vec<Event>)> {
    (1usize..3, 1usize..7).prop_flat_map(|(exporters, leases)| {
        let lease_list: Vec<_> = (0..leases)
            .map(|i| {
                (any::<bool>(), 0..exporters, 5i64..60, 1i64..40, 0i64..5).prop_map(
                    move |(booking, pinned, begin, duration, created)| {
                        let mut lease = Lease {
                            name: format!("lease{i}"),
                            uid: None,
                            generation: 1,
                            creation_time: t(created),
                            client: "c0".to_owned(),
                            spec: LeaseSpec {
                                selector: parse("board=a").expect("fixed selectors parse"),
                                duration: Some(Duration::seconds(duration)),
                                ..LeaseSpec::default()
                            },
                            status: LeaseStatus::default(),
                        };
                        if booking {
                            lease.spec.exporter_ref = Some(format!("exp{pinned}"));
                            lease.spec.begin_time = Some(t(begin));
                        }
                        lease
                    },
                )
            })
            .collect();
        (
            lease_list,
            prop::collection::vec(event_strategy(exporters, leases), 1..60),
        )
            .prop_map(move |(leases, events)| {
                let mut snapshot = queue_snapshot(exporters);
                snapshot.policies.clear();
                snapshot.leases = leases;
                (snapshot, events)
            })
    })
}

/// Whether `other` is a booking of the same exporter that comes before `booking` (earlier
/// begin, then older) and whose window overlaps it: it may keep the exporter instead.
fn comes_first(other: &Lease, booking: &Lease) -> bool {
    let (Some(b1), Some(b2)) = (other.spec.begin_time, booking.spec.begin_time) else {
        return false;
    };
    let key = |l: &Lease, b| (b, l.creation_time, l.name.clone());
    let end = |l: &Lease, b: OffsetDateTime| b + l.spec.duration.unwrap_or(Duration::ZERO);
    other.spec.exporter_ref == booking.spec.exporter_ref
        && key(other, b1) < key(booking, b2)
        && b1 < end(booking, b2)
        && b2 < end(other, b1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A booking keeps its exporter from its begin time: once the begin time has come,
    /// its exporter is held by no other lease still running past that time (bar an earlier
    /// overlapping booking of the same exporter), and a booking whose exporter is online,
    /// ready and free gets it in that plan.
    #[test]
    fn a_booking_starts_on_time_when_its_exporter_is_online(
        (mut world, events) in booking_world()
    ) {
        let mut now = t(0);
        let mut wakeup = None;
        for event in events {
            match event {
                Event::Advance(seconds) => now += Duration::seconds(seconds * 2),
                Event::JumpToWakeup => now = wakeup.unwrap_or(now).max(now),
                Event::SetOnline(i, online) => world.exporters[i].online = online,
                Event::SetStatus(i, s) => {
                    world.exporters[i].exporter_status = EXPORTER_STATUSES[s].to_owned();
                }
                Event::Release(i) => world.leases[i].spec.release = true,
                Event::Activity(i) => {
                    record_activity(&mut world.leases[i], now);
                }
            }
            let plan = plan(&world, now);
            let after = applied(&world, &plan);
            for booking in &after.leases {
                let (Some(begin), Some(exporter)) =
                    (booking.spec.begin_time, booking.spec.exporter_ref.as_deref())
                else { continue };
                if begin > now || booking.status.ended || booking.spec.release
                    || booking.status.exporter.is_some()
                {
                    continue;
                }
                let mut free = true;
                for holder in &world.leases {
                    if holder.status.ended || holder.status.exporter.as_deref() != Some(exporter) {
                        continue;
                    }
                    free = false;
                    if comes_first(holder, booking) {
                        continue;
                    }
                    let started = holder.status.begin_time.expect("holders have begun");
                    let expiry = super::planner::started_expiry(&holder.spec, started)
                        .expect("finite");
                    prop_assert!(
                        expiry <= begin,
                        "{} holds {exporter} until {expiry}, past the begin {begin} of {}",
                        holder.name, booking.name
                    );
                }
                let first = world.leases.iter().any(|other| {
                    !other.status.ended && !other.spec.release && comes_first(other, booking)
                });
                let e = world.exporters.iter().find(|e| e.name == exporter).expect("exists");
                let ready = e.online && e.registered && e.enabled
                    && ["", "Available", "Unspecified"].contains(&e.exporter_status.as_str());
                prop_assert!(
                    !(free && ready && !first),
                    "{} waits at {now} (begin {begin}) although {exporter} is free and ready",
                    booking.name
                );
            }
            check(&world, &plan, &after, now)?;
            wakeup = plan.next_wakeup;
            world = after;
        }
    }
}
