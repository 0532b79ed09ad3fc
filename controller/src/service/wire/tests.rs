use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;
use time::macros::datetime;

use super::*;
use crate::crd::{ExporterSpec, ExporterStatus, LeaseSpec, LeaseStatus};

fn lease() -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("l1".into()),
            namespace: Some("lab".into()),
            ..ObjectMeta::default()
        },
        spec: LeaseSpec {
            client_ref: LocalObjectReference {
                name: "alice".into(),
            },
            duration: Some("10m0s".into()),
            ..LeaseSpec::default()
        },
        status: None,
    }
}

#[test]
fn pending_lease_shape() {
    let now = datetime!(2026-01-01 00:00 UTC);
    let proto = lease_to_proto(&lease(), &BTreeMap::new(), now);
    assert_eq!(proto.name, "namespaces/lab/leases/l1");
    assert_eq!(proto.selector, "<none>");
    assert_eq!(
        proto.client.as_deref(),
        Some("namespaces/lab/clients/alice")
    );
    assert_eq!(proto.exporter, None);
    assert_eq!(proto.duration.unwrap().seconds, 600);
    assert!(proto.effective_duration.is_none());
    assert!(proto.conditions.is_empty());
}

#[test]
fn active_lease_shape() {
    let now = datetime!(2026-01-01 00:05 UTC);
    let mut l = lease();
    l.spec.selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("board".into(), "mock".into())])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "env".into(),
            operator: "NotIn".into(),
            values: Some(vec!["b".into(), "a".into()]),
        }]),
    };
    l.status = Some(LeaseStatus {
        begin_time: Some(k8s_time(datetime!(2026-01-01 00:00 UTC)).unwrap()),
        exporter_ref: Some(LocalObjectReference {
            name: "exp1".into(),
        }),
        ..LeaseStatus::default()
    });
    let proto = lease_to_proto(&l, &BTreeMap::new(), now);
    assert_eq!(proto.selector, "board=mock,env notin (a,b)");
    assert_eq!(
        proto.exporter.as_deref(),
        Some("namespaces/lab/exporters/exp1")
    );
    assert_eq!(proto.effective_duration.unwrap().seconds, 300);
    assert_eq!(proto.effective_begin_time.unwrap().seconds, 1_767_225_600);
    assert!(proto.effective_end_time.is_none());
}

#[test]
fn a_spot_lease_under_notice_shows_its_end_pulled_in() {
    let now = datetime!(2026-01-01 00:05 UTC);
    let mut l = lease();
    l.status = Some(LeaseStatus {
        begin_time: Some(k8s_time(datetime!(2026-01-01 00:00 UTC)).unwrap()),
        exporter_ref: Some(LocalObjectReference {
            name: "exp1".into(),
        }),
        spot_access: Some(true),
        preemption_time: Some(k8s_time(datetime!(2026-01-01 00:06 UTC)).unwrap()),
        ..LeaseStatus::default()
    });
    let proto = lease_to_proto(&l, &BTreeMap::new(), now);
    // 0.9.0 reads the end as effective_begin_time + duration: the notice's end.
    assert_eq!(proto.duration.unwrap().seconds, 360);
    assert_eq!(proto.end_time.unwrap().seconds, 1_767_225_960);

    // Once ended, the lease is shown as requested.
    let status = l.status.as_mut().unwrap();
    status.ended = true;
    status.end_time = Some(k8s_time(datetime!(2026-01-01 00:06 UTC)).unwrap());
    let proto = lease_to_proto(&l, &BTreeMap::new(), now);
    assert_eq!(proto.duration.unwrap().seconds, 600);
    assert!(proto.end_time.is_none());
}

#[test]
fn exporter_shape_hides_labels() {
    let exporter = Exporter {
        metadata: ObjectMeta {
            name: Some("exp1".into()),
            namespace: Some("lab".into()),
            labels: Some(BTreeMap::from([
                ("board".into(), "mock".into()),
                ("secret".into(), "x".into()),
            ])),
            ..ObjectMeta::default()
        },
        spec: ExporterSpec::default(),
        status: Some(ExporterStatus {
            exporter_status: Some(ExporterStatusValue::Available),
            status_message: Some("ok".into()),
            ..ExporterStatus::default()
        }),
    };
    let hidden = vec!["secret".to_owned()];
    let proto = exporter_to_proto(&exporter, &hidden, &BTreeMap::new(), false);
    assert_eq!(proto.name, "namespaces/lab/exporters/exp1");
    assert_eq!(proto.labels.len(), 1);
    assert_eq!(proto.status, pb::ExporterStatus::Available as i32);
    assert_eq!(proto.enabled, Some(true));
    assert!(!proto.online);
    assert_eq!(
        exporter_to_proto(&exporter, &hidden, &BTreeMap::new(), true)
            .labels
            .len(),
        2
    );
}

#[test]
fn deprecated_exporter_labels_are_reported_and_dropped_unless_hidden_ones_are_shown() {
    let exporter = Exporter {
        metadata: ObjectMeta {
            name: Some("exp1".into()),
            namespace: Some("lab".into()),
            labels: Some(BTreeMap::from([
                ("board".into(), "mock".into()),
                ("pool".into(), "staging".into()),
                ("old-key".into(), "v".into()),
                ("secret".into(), "x".into()),
            ])),
            ..ObjectMeta::default()
        },
        spec: ExporterSpec::default(),
        status: None,
    };
    let hidden = vec!["secret".to_owned()];
    let deprecated = BTreeMap::from([
        ("pool".to_owned(), "use env instead".to_owned()),
        ("old-key".to_owned(), String::new()),
        ("absent".to_owned(), "not on this exporter".to_owned()),
    ]);
    let proto = exporter_to_proto(&exporter, &hidden, &deprecated, false);
    let labels: BTreeMap<_, _> = proto.labels.into_iter().collect();
    assert_eq!(labels, BTreeMap::from([("board".into(), "mock".into())]));
    let reported: BTreeMap<_, _> = proto.deprecated_labels.into_iter().collect();
    assert_eq!(
        reported,
        BTreeMap::from([
            ("old-key".into(), String::new()),
            ("pool".into(), "use env instead".into()),
        ])
    );
    let shown = exporter_to_proto(&exporter, &hidden, &deprecated, true);
    assert_eq!(shown.labels.len(), 4);
    assert_eq!(shown.deprecated_labels.len(), 2);
    // Nothing configured: nothing reported.
    let plain = exporter_to_proto(&exporter, &[], &BTreeMap::new(), false);
    assert_eq!(plain.labels.len(), 4);
    assert!(plain.deprecated_labels.is_empty());
}

#[test]
fn deprecated_selector_keys_of_a_lease_are_reported() {
    let mut l = lease();
    l.spec.selector = LabelSelector {
        match_labels: Some(BTreeMap::from([
            ("legacy-board".into(), "rpi4".into()),
            ("board".into(), "rpi4".into()),
        ])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "old-pool".into(),
            operator: "In".into(),
            values: Some(vec!["a".into(), "b".into()]),
        }]),
    };
    let deprecated = BTreeMap::from([
        ("legacy-board".to_owned(), "use board instead".to_owned()),
        ("old-pool".to_owned(), "removed".to_owned()),
        ("unused".to_owned(), "x".to_owned()),
    ]);
    let now = datetime!(2026-01-01 00:00 UTC);
    let reported: BTreeMap<_, _> = lease_to_proto(&l, &deprecated, now)
        .deprecated_labels
        .into_iter()
        .collect();
    assert_eq!(
        reported,
        BTreeMap::from([
            ("legacy-board".into(), "use board instead".into()),
            ("old-pool".into(), "removed".into()),
        ])
    );
    // The selector itself is shown unchanged.
    assert_eq!(
        lease_to_proto(&l, &deprecated, now).selector,
        "board=rpi4,legacy-board=rpi4,old-pool in (a,b)"
    );
    assert!(
        lease_to_proto(&lease(), &deprecated, now)
            .deprecated_labels
            .is_empty()
    );
}

#[test]
fn status_values_round_trip() {
    for v in 0..8 {
        let value = status_from_proto(v).unwrap();
        assert_eq!(status_to_proto(value) as i32, v);
    }
    assert!(status_from_proto(99).is_err());
}

#[test]
fn proto_durations_and_times_are_checked() {
    let ok = duration_from_proto(
        &prost_types::Duration {
            seconds: 1,
            nanos: 5,
        },
        "d",
    )
    .unwrap();
    assert_eq!(ok, Duration::seconds(1) + Duration::nanoseconds(5));
    assert!(
        duration_from_proto(
            &prost_types::Duration {
                seconds: 1,
                nanos: -5
            },
            "d"
        )
        .is_err()
    );
    assert!(
        duration_from_proto(
            &prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0
            },
            "d"
        )
        .is_err()
    );
    assert!(
        time_from_proto(
            &prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            },
            "t"
        )
        .is_err()
    );
    assert!(
        time_from_proto(
            &prost_types::Timestamp {
                seconds: 0,
                nanos: -1
            },
            "t"
        )
        .is_err()
    );
    let t = time_from_proto(
        &prost_types::Timestamp {
            seconds: 10,
            nanos: 7,
        },
        "t",
    )
    .unwrap();
    assert_eq!(
        timestamp_of(&k8s_time(t).unwrap()),
        prost_types::Timestamp {
            seconds: 10,
            nanos: 7
        }
    );
}
