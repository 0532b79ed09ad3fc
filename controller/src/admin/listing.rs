//! What `get` and `list` return ([`Objects`]) and how it is shown: a table, YAML, JSON or
//! names. Tables end with kubectl's `AGE` column, as of an explicit `now`; `get -l`
//! narrows the objects by label selector ([`Objects::retain_matching`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use jumpstarter_lease::selector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::Resource;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AdminError, Kind};
use crate::crd::vocabulary::lease_condition::{INVALID, READY, UNSATISFIABLE};
use crate::crd::vocabulary::{is_true, selector_from_k8s, time_of};
use crate::crd::{Client, Exporter, ExporterAccessPolicy, Lease};

/// The objects of one kind, as listed or got. Serialized as `{"kind": "clients", "items":
/// [...]}`, which is also how it travels between the admin CLI and a running service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "items", rename_all = "camelCase")]
pub enum Objects {
    Clients(Vec<Client>),
    Exporters(Vec<Exporter>),
    Leases(Vec<Lease>),
    Policies(Vec<ExporterAccessPolicy>),
}

/// Output format of `get` and `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned columns with a header.
    #[default]
    Table,
    Yaml,
    Json,
    /// `<resource>/<name>` per object, as `kubectl get -o name` prints it.
    Name,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<OutputFormat, String> {
        match text {
            "table" => Ok(OutputFormat::Table),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            "name" => Ok(OutputFormat::Name),
            other => Err(format!(
                "unknown output format {other:?}: use table, yaml, json or name"
            )),
        }
    }
}

impl Objects {
    /// The kind of the objects.
    pub fn kind(&self) -> Kind {
        match self {
            Objects::Clients(_) => Kind::Client,
            Objects::Exporters(_) => Kind::Exporter,
            Objects::Leases(_) => Kind::Lease,
            Objects::Policies(_) => Kind::Policy,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Objects::Clients(items) => items.len(),
            Objects::Exporters(items) => items.len(),
            Objects::Leases(items) => items.len(),
            Objects::Policies(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names of the objects, in order.
    pub fn names(&self) -> Vec<String> {
        fn names<K: Resource>(items: &[K]) -> Vec<String> {
            items
                .iter()
                .map(|o| o.meta().name.clone().unwrap_or_default())
                .collect()
        }
        match self {
            Objects::Clients(items) => names(items),
            Objects::Exporters(items) => names(items),
            Objects::Leases(items) => names(items),
            Objects::Policies(items) => names(items),
        }
    }

    /// Keeps the objects whose labels `selector` matches (`get -l`).
    pub fn retain_matching(&mut self, selector: &selector::LabelSelector) {
        fn retain<K: Resource>(items: &mut Vec<K>, selector: &selector::LabelSelector) {
            let none = BTreeMap::new();
            items
                .retain(|o| selector::matches(selector, o.meta().labels.as_ref().unwrap_or(&none)));
        }
        match self {
            Objects::Clients(items) => retain(items, selector),
            Objects::Exporters(items) => retain(items, selector),
            Objects::Leases(items) => retain(items, selector),
            Objects::Policies(items) => retain(items, selector),
        }
    }

    /// Renders the objects; a table's `AGE` column counts up to `now`. With `single`, YAML
    /// and JSON show the one object itself; otherwise a `List` of them.
    /// `metadata.managedFields` is left out.
    pub fn render(
        &self,
        format: OutputFormat,
        single: bool,
        now: OffsetDateTime,
    ) -> Result<String, AdminError> {
        match format {
            OutputFormat::Table => Ok(self.table(now)),
            OutputFormat::Name => {
                let resource = self.kind().resource();
                Ok(self
                    .names()
                    .iter()
                    .map(|name| format!("{resource}/{name}\n"))
                    .collect())
            }
            OutputFormat::Json => {
                let value = self.document(single)?;
                let mut text = serde_json::to_string_pretty(&value)
                    .map_err(|e| AdminError::Render(e.to_string()))?;
                text.push('\n');
                Ok(text)
            }
            OutputFormat::Yaml => {
                let value = self.document(single)?;
                serde_norway::to_string(&value).map_err(|e| AdminError::Render(e.to_string()))
            }
        }
    }

    fn document(&self, single: bool) -> Result<serde_json::Value, AdminError> {
        fn values<K: Serialize>(items: &[K]) -> Result<Vec<serde_json::Value>, AdminError> {
            items
                .iter()
                .map(|item| {
                    let mut value = serde_json::to_value(item)
                        .map_err(|e| AdminError::Render(e.to_string()))?;
                    if let Some(meta) = value
                        .get_mut("metadata")
                        .and_then(serde_json::Value::as_object_mut)
                    {
                        meta.remove("managedFields");
                    }
                    Ok(value)
                })
                .collect()
        }
        let mut items = match self {
            Objects::Clients(items) => values(items)?,
            Objects::Exporters(items) => values(items)?,
            Objects::Leases(items) => values(items)?,
            Objects::Policies(items) => values(items)?,
        };
        if single && items.len() == 1 {
            return Ok(items.remove(0));
        }
        Ok(serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": items,
        }))
    }

    fn table(&self, now: OffsetDateTime) -> String {
        let (header, rows): (&[&str], Vec<Vec<String>>) = match self {
            Objects::Clients(items) => (
                &["NAME", "ENDPOINT", "LABELS", "AGE"],
                items
                    .iter()
                    .map(|c| {
                        let status = c.status.as_ref();
                        vec![
                            name_of(c),
                            dash(status.and_then(|s| s.endpoint.clone())),
                            labels_of(c),
                            age_of(c, now),
                        ]
                    })
                    .collect(),
            ),
            Objects::Exporters(items) => (
                &[
                    "NAME", "ENABLED", "STATUS", "LEASE", "LABELS", "ENDPOINT", "AGE",
                ],
                items
                    .iter()
                    .map(|e| {
                        let status = e.status.as_ref();
                        vec![
                            name_of(e),
                            e.spec.is_enabled().to_string(),
                            dash(status.and_then(|s| s.exporter_status).and_then(|v| {
                                serde_json::to_value(v)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_owned))
                            })),
                            dash(
                                status
                                    .and_then(|s| s.lease_ref.as_ref())
                                    .map(|r| r.name.clone()),
                            ),
                            labels_of(e),
                            dash(status.and_then(|s| s.endpoint.clone())),
                            age_of(e, now),
                        ]
                    })
                    .collect(),
            ),
            Objects::Leases(items) => (
                &[
                    "NAME", "CLIENT", "SELECTOR", "EXPORTER", "DURATION", "STATE", "POSITION",
                    "ETA", "AGE",
                ],
                items
                    .iter()
                    .map(|l| {
                        let status = l.status.as_ref();
                        let exporter = status
                            .and_then(|s| s.exporter_ref.as_ref())
                            .or(l.spec.exporter_ref.as_ref())
                            .map(|r| r.name.clone());
                        vec![
                            name_of(l),
                            l.spec.client_ref.name.clone(),
                            dash(Some(format_selector(&l.spec.selector))),
                            dash(exporter),
                            dash(l.spec.duration.clone()),
                            lease_state(l).to_owned(),
                            dash(status.and_then(|s| s.queue_position).map(|p| p.to_string())),
                            dash(status.and_then(|s| s.estimated_start.as_ref()).map(utc)),
                            age_of(l, now),
                        ]
                    })
                    .collect(),
            ),
            Objects::Policies(items) => (
                &["NAME", "EXPORTERS", "RULES", "PRIORITIES", "AGE"],
                items
                    .iter()
                    .map(|p| {
                        let rules = p.spec.policies.as_deref().unwrap_or_default();
                        vec![
                            name_of(p),
                            exporters_of(p),
                            rules.len().to_string(),
                            dash(Some(priorities(rules))),
                            age_of(p, now),
                        ]
                    })
                    .collect(),
            ),
        };
        table(header, &rows)
    }
}

fn name_of<K: Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

/// The `AGE` cell: how long before `now` the object was created, as kubectl shows it;
/// `<unknown>` without `metadata.creationTimestamp`.
fn age_of<K: Resource>(object: &K, now: OffsetDateTime) -> String {
    match object.meta().creation_timestamp.as_ref() {
        Some(created) => human_duration(now - time_of(created)),
        None => "<unknown>".to_owned(),
    }
}

/// A duration the way kubectl shows ages (apimachinery's `HumanDuration`): two units
/// while the larger is small (`3m20s`, `5h7m`, `2d3h`, `1y12d`), one unit after that
/// (`15m`, `10h`, `120d`). Up to a second in the future reads `0s` (clock skew);
/// further is `<invalid>`.
fn human_duration(duration: time::Duration) -> String {
    let seconds = duration.whole_seconds();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_rest(minutes, "m", seconds % 60, "s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_rest(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_rest(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `3m` when `rest` is 0, else `3m20s`.
fn with_rest(value: i64, unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{value}{unit}")
    } else {
        format!("{value}{unit}{rest}{rest_unit}")
    }
}

fn labels_of<K: Resource>(object: &K) -> String {
    let labels = object.meta().labels.clone().unwrap_or_default();
    dash(Some(format_labels(&labels)))
}

fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `k=v,...` for match labels, `key Op (values)` for expressions.
fn format_selector(selector: &LabelSelector) -> String {
    let labels = selector.match_labels.clone().unwrap_or_default();
    let expressions = selector.match_expressions.iter().flatten().map(|e| {
        let values = e.values.clone().unwrap_or_default().join(",");
        if values.is_empty() {
            format!("{} {}", e.key, e.operator)
        } else {
            format!("{} {} ({values})", e.key, e.operator)
        }
    });
    std::iter::once(format_labels(&labels))
        .filter(|l| !l.is_empty())
        .chain(expressions)
        .collect::<Vec<_>>()
        .join(",")
}

/// The exporters a policy applies to, as label-selector text (Kubernetes'
/// `FormatLabelSelector`); `<all>` when its selector is absent or empty.
fn exporters_of(policy: &ExporterAccessPolicy) -> String {
    let selector = policy
        .spec
        .exporter_selector
        .as_ref()
        .map(selector_from_k8s)
        .unwrap_or_default();
    if selector.is_empty() {
        "<all>".to_owned()
    } else {
        selector::format(&selector)
    }
}

/// Each rule's priority in order (0 when unset, as the scheduler reads it), `(spot)` after
/// a rule that grants only spot access: `100,10(spot)`.
fn priorities(rules: &[crate::crd::Policy]) -> String {
    rules
        .iter()
        .map(|rule| {
            let spot = if rule.spot_access == Some(true) {
                "(spot)"
            } else {
                ""
            };
            format!("{}{spot}", rule.priority.unwrap_or(0))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A time as RFC 3339 in UTC, to the second (`2025-01-31T09:00:00Z`).
fn utc(time: &Time) -> String {
    let time = time_of(time);
    let time = time.replace_nanosecond(0).unwrap_or(time);
    // Formatting a time whose year has four digits as RFC 3339 cannot fail; an unformattable
    // one shows as an empty cell.
    time.format(&Rfc3339).unwrap_or_default()
}

/// `-` for an absent or empty cell.
fn dash(cell: Option<String>) -> String {
    cell.filter(|c| !c.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// `Ended`, `Ready` or `Pending` (or the reason of an `Unsatisfiable`/`Invalid` lease).
fn lease_state(lease: &Lease) -> &'static str {
    let Some(status) = lease.status.as_ref() else {
        return "Pending";
    };
    if status.ended {
        return "Ended";
    }
    let holds = |type_: &str| is_true(status.conditions.as_deref().unwrap_or_default(), type_);
    if holds(READY) {
        READY
    } else if holds(INVALID) {
        INVALID
    } else if holds(UNSATISFIABLE) {
        UNSATISFIABLE
    } else {
        "Pending"
    }
}

/// Left-aligned columns separated by three spaces, like `kubectl get`.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                // Writing into a String cannot fail.
                let _ = write!(out, "{cell:<width$}   ");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClientSpec, ClientStatus};

    /// The tests' clock: 2030-02-01T00:00:00Z.
    fn now() -> OffsetDateTime {
        time::macros::datetime!(2030-02-01 00:00:00 UTC)
    }

    fn created(seconds_ago: i64) -> Time {
        crate::crd::vocabulary::stored_time(now() - time::Duration::seconds(seconds_ago))
    }

    fn client(name: &str, endpoint: Option<&str>) -> Client {
        let mut c = Client::new(name, ClientSpec::default());
        c.metadata.namespace = Some("lab".into());
        c.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        c.status = Some(ClientStatus {
            credential: None,
            endpoint: endpoint.map(str::to_owned),
        });
        c
    }

    #[test]
    fn table_aligns_columns_and_dashes_empty_cells() {
        let objects = Objects::Clients(vec![
            client("alice", Some("127.0.0.1:8082")),
            client("bob-the-builder", None),
        ]);
        let text = objects.render(OutputFormat::Table, false, now()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME              ENDPOINT"));
        assert!(lines[1].starts_with("alice             127.0.0.1:8082   team=a"));
        assert!(lines[2].starts_with("bob-the-builder   -                team=a"));
    }

    #[test]
    fn yaml_and_json_show_one_object_or_a_list() {
        let objects = Objects::Clients(vec![client("alice", None)]);
        let one: serde_json::Value =
            serde_json::from_str(&objects.render(OutputFormat::Json, true, now()).unwrap())
                .unwrap();
        assert_eq!(one["kind"], "Client");
        assert_eq!(one["metadata"]["name"], "alice");
        let list: serde_norway::Value =
            serde_norway::from_str(&objects.render(OutputFormat::Yaml, false, now()).unwrap())
                .unwrap();
        assert_eq!(list["kind"].as_str(), Some("List"));
        assert_eq!(list["items"][0]["metadata"]["name"].as_str(), Some("alice"));
    }

    #[test]
    fn objects_round_trip_through_json() {
        let objects = Objects::Clients(vec![client("alice", Some("e:1"))]);
        let text = serde_json::to_string(&objects).unwrap();
        assert!(text.starts_with(r#"{"kind":"clients","items":["#));
        let back: Objects = serde_json::from_str(&text).unwrap();
        assert_eq!(back, objects);
        assert_eq!(back.names(), vec!["alice".to_owned()]);
    }

    #[test]
    fn lease_tables_show_the_queue_position_and_expected_start() {
        use crate::crd::{LeaseSpec, LeaseStatus};
        use k8s_openapi::api::core::v1::LocalObjectReference;

        let lease = |name: &str, status: Option<LeaseStatus>| {
            let mut lease = Lease::new(
                name,
                LeaseSpec {
                    client_ref: LocalObjectReference {
                        name: "alice".into(),
                    },
                    duration: Some("30m".into()),
                    ..LeaseSpec::default()
                },
            );
            lease.status = status;
            lease
        };
        let start: Time =
            serde_json::from_value(serde_json::json!("2030-01-31T09:00:00Z")).unwrap();
        let waiting = LeaseStatus {
            queue_position: Some(2),
            estimated_start: Some(start),
            ..LeaseStatus::default()
        };
        let objects = Objects::Leases(vec![lease("l1", Some(waiting)), lease("l2", None)]);
        let text = objects.render(OutputFormat::Table, false, now()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("STATE     POSITION   ETA                    AGE"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("Pending   2          2030-01-31T09:00:00Z   <unknown>"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("Pending   -          -                      <unknown>"),
            "{text}"
        );
    }

    #[test]
    fn policy_tables_summarise_selector_rules_and_priorities() {
        use crate::crd::{ExporterAccessPolicySpec, Policy};

        let rules = vec![
            Policy {
                priority: Some(100),
                ..Policy::default()
            },
            Policy {
                spot_access: Some(true),
                ..Policy::default()
            },
        ];
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("board".into(), "mock".into())])),
            ..LabelSelector::default()
        };
        let mut lab = ExporterAccessPolicy::new(
            "lab",
            ExporterAccessPolicySpec {
                exporter_selector: Some(selector),
                policies: Some(rules),
            },
        );
        lab.metadata.creation_timestamp = Some(created(200));
        let objects = Objects::Policies(vec![
            lab,
            ExporterAccessPolicy::new("open", ExporterAccessPolicySpec::default()),
        ]);
        let text = objects.render(OutputFormat::Table, false, now()).unwrap();
        assert_eq!(
            text,
            "NAME   EXPORTERS    RULES   PRIORITIES    AGE\n\
             lab    board=mock   2       100,0(spot)   3m20s\n\
             open   <all>        0       -             <unknown>\n"
        );
        assert_eq!(
            objects.render(OutputFormat::Name, false, now()).unwrap(),
            "exporteraccesspolicy.jumpstarter.dev/lab\nexporteraccesspolicy.jumpstarter.dev/open\n"
        );
        let back: Objects =
            serde_json::from_str(&serde_json::to_string(&objects).unwrap()).unwrap();
        assert_eq!(back, objects);
    }

    #[test]
    fn ages_read_like_kubectl() {
        let minute = 60;
        let hour = 60 * minute;
        let day = 24 * hour;
        let year = 365 * day;
        for (seconds, age) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (2 * minute, "2m"),
            (3 * minute + 20, "3m20s"),
            (10 * minute + 59, "10m"),
            (3 * hour - 1, "179m"),
            (3 * hour, "3h"),
            (5 * hour + 7 * minute, "5h7m"),
            (8 * hour + 30 * minute, "8h"),
            (47 * hour, "47h"),
            (2 * day, "2d"),
            (4 * day + 3 * hour, "4d3h"),
            (8 * day + 3 * hour, "8d"),
            (2 * year - 1, "729d"),
            (2 * year + 12 * day, "2y12d"),
            (8 * year, "8y"),
            (20 * year + 100 * day, "20y"),
        ] {
            assert_eq!(
                human_duration(time::Duration::seconds(seconds)),
                age,
                "{seconds}s"
            );
        }
    }

    #[test]
    fn every_table_ends_with_the_age_of_each_object() {
        let mut alice = client("alice", None);
        alice.metadata.creation_timestamp = Some(created(5));
        let text = Objects::Clients(vec![alice, client("bob", None)])
            .render(OutputFormat::Table, false, now())
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("   AGE"), "{text}");
        assert!(lines[1].ends_with("team=a   5s"), "{text}");
        assert!(lines[2].ends_with("team=a   <unknown>"), "{text}");

        let mut exporter = Exporter::new("board-1", crate::crd::ExporterSpec::default());
        exporter.metadata.creation_timestamp = Some(created(4 * 24 * 3600));
        let text = Objects::Exporters(vec![exporter])
            .render(OutputFormat::Table, false, now())
            .unwrap();
        assert!(
            text.lines().next().unwrap().ends_with("ENDPOINT   AGE"),
            "{text}"
        );
        assert!(text.lines().nth(1).unwrap().ends_with("   4d"), "{text}");
    }

    #[test]
    fn a_selector_keeps_the_objects_whose_labels_match() {
        let mut bare = client("bare", None);
        bare.metadata.labels = None;
        let mut qa = client("qa", None);
        qa.metadata.labels = Some(BTreeMap::from([("team".into(), "b".into())]));
        let all = Objects::Clients(vec![client("alice", None), qa, bare]);
        let kept = |text: &str| {
            let mut objects = all.clone();
            objects.retain_matching(&selector::parse(text).unwrap());
            objects.names()
        };
        assert_eq!(kept("team=a"), ["alice"]);
        assert_eq!(kept("team!=a"), ["qa", "bare"]);
        assert_eq!(kept("team in (a,b)"), ["alice", "qa"]);
        assert_eq!(kept("!team"), ["bare"]);
        assert_eq!(kept("team"), ["alice", "qa"]);
        assert_eq!(kept(""), ["alice", "qa", "bare"]);
        assert_eq!(kept("team=c"), Vec::<String>::new());
    }

    #[test]
    fn output_formats_parse() {
        assert_eq!("yaml".parse::<OutputFormat>(), Ok(OutputFormat::Yaml));
        assert_eq!("name".parse::<OutputFormat>(), Ok(OutputFormat::Name));
        assert!("xml".parse::<OutputFormat>().is_err());
    }
}
