//! The generated CRDs are equivalent to the ones jumpstarter 0.9.0 ships
//! (`tests/fixtures/crds-0.9.0`), under strict rules: every schema keyword counts except
//! `description`, `title`, `example` and `externalDocs`; `required` and `enum` compare as sets;
//! CEL rules match by whitespace-normalised text; printer columns match by name and order.
//!
//! Every difference is collected and printed as `<crd> <json path>: <what>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jumpstarter_controller::crd;
use serde_json::Value;

const IGNORED_SCHEMA_KEYS: [&str; 4] = ["description", "title", "example", "externalDocs"];
const SUBSCHEMA_KEYS: [&str; 2] = ["items", "not"];
const SUBSCHEMA_LIST_KEYS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
const PROPERTY_MAP_KEYS: [&str; 4] = [
    "properties",
    "patternProperties",
    "definitions",
    "dependencies",
];
/// Properties this project adds to the 0.9.0 schemas, as `(crd, end of the JSON path)`.
/// They are optional (never `required`, compared separately), so 0.9.0 objects stay valid
/// and a 0.9.0 controller, which prunes fields it does not know, works unchanged. Any other
/// property not in the reference is a difference.
const ADDITIONS: [(&str, &str); 8] = [
    (
        "exporteraccesspolicies.jumpstarter.dev",
        ".properties.spec.properties.policies.items.properties.spotGracePeriod",
    ),
    (
        "exporteraccesspolicies.jumpstarter.dev",
        ".properties.spec.properties.policies.items.properties.fairShare",
    ),
    (
        "leases.jumpstarter.dev",
        ".properties.status.properties.queuePosition",
    ),
    (
        "leases.jumpstarter.dev",
        ".properties.status.properties.estimatedStart",
    ),
    (
        "leases.jumpstarter.dev",
        ".properties.status.properties.preemptionTime",
    ),
    (
        "exporteraccesspolicies.jumpstarter.dev",
        ".properties.spec.properties.policies.items.properties.idleTimeout",
    ),
    (
        "leases.jumpstarter.dev",
        ".properties.status.properties.idleTimeout",
    ),
    (
        "leases.jumpstarter.dev",
        ".properties.status.properties.lastActivityTime",
    ),
];

const VALIDATION_KEYS: [&str; 5] = [
    "message",
    "messageExpression",
    "reason",
    "fieldPath",
    "optionalOldSelf",
];

#[test]
fn generated_crds_match_jumpstarter_0_9_0() {
    let errors = compare(&reference_crds(), &generated_crds());
    assert!(
        errors.is_empty(),
        "{} differences from the 0.9.0 CRDs:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn comparator_reports_a_changed_default_rule_and_column() {
    let mut project = generated_crds();

    let exporters = project
        .get_mut("exporters.jumpstarter.dev")
        .expect("exporters CRD");
    let version = &mut exporters["spec"]["versions"][0];
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["enabled"]["default"] =
        Value::Bool(false);
    let columns = version["additionalPrinterColumns"]
        .as_array_mut()
        .expect("columns");
    let message = columns
        .iter_mut()
        .find(|c| c["name"] == "Message")
        .expect("Message column");
    message["jsonPath"] = Value::from(".status.message");

    let leases = project
        .get_mut("leases.jumpstarter.dev")
        .expect("leases CRD");
    let rules = leases["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"]
        .as_array_mut()
        .expect("lease spec rules");
    let tags = rules
        .iter_mut()
        .find(|r| r["message"] == "tags are immutable after creation")
        .expect("tags rule");
    tags["rule"] = Value::from("self.tags == oldSelf.tags");

    let errors = compare(&reference_crds(), &project);
    let expected = [
        "exporters.jumpstarter.dev $.spec.versions[name=v1alpha1].schema.openAPIV3Schema.properties.spec.properties.enabled.default: project false, reference true",
        "exporters.jumpstarter.dev $.spec.versions[name=v1alpha1].additionalPrinterColumns[name=Message].jsonPath: project \".status.message\", reference \".status.statusMessage\"",
        "leases.jumpstarter.dev $.spec.versions[name=v1alpha1].schema.openAPIV3Schema.properties.spec.x-kubernetes-validations[rule=\"!has(oldSelf.tags) || self.tags == oldSelf.tags\"]: validation rule missing in project",
        "leases.jumpstarter.dev $.spec.versions[name=v1alpha1].schema.openAPIV3Schema.properties.spec.x-kubernetes-validations[rule=\"self.tags == oldSelf.tags\"]: validation rule not in reference",
    ];
    for line in expected {
        assert!(
            errors.iter().any(|e| e == line),
            "expected difference not reported: {line}\nreported:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(
        errors.len(),
        expected.len(),
        "reported:\n{}",
        errors.join("\n")
    );
}

#[test]
fn comparator_reports_missing_crd_and_property() {
    let mut project = generated_crds();
    project.remove("clients.jumpstarter.dev");
    let leases = project
        .get_mut("leases.jumpstarter.dev")
        .expect("leases CRD");
    let status =
        &mut leases["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    status["properties"]
        .as_object_mut()
        .expect("status properties")
        .remove("spotAccess");
    // An added property outside the list of compatible additions is reported.
    status["properties"]["spotNotice"] = serde_json::json!({"type": "string"});
    status["required"] = serde_json::json!(["ended", "priority"]);

    let errors = compare(&reference_crds(), &project);
    let prefix = "leases.jumpstarter.dev $.spec.versions[name=v1alpha1].schema.openAPIV3Schema.properties.status";
    let expected = [
        "clients.jumpstarter.dev $: CRD missing in project".to_string(),
        format!("{prefix}.properties.spotAccess: property missing in project"),
        format!("{prefix}.properties.spotNotice: property not in reference"),
        format!("{prefix}.required: \"priority\" not in reference"),
    ];
    assert_eq!(errors, expected);
}

#[test]
fn cel_rules_compare_modulo_whitespace() {
    assert_eq!(normalize_rule("a  >  0 &&\n b"), "a>0&&b");
    assert_eq!(normalize_rule("size( self.x ) > 0"), "size(self.x)>0");
    assert_eq!(normalize_rule("self.a == ' x  y '"), "self.a==' x  y '");
    assert_eq!(normalize_rule("has ( x ) ||\thas(y)"), "has(x)||has(y)");
}

// ------------------------------------------------------------------------------------ inputs

fn reference_crds() -> BTreeMap<String, Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds-0.9.0");
    let mut crds = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("fixture directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        let doc: Value = serde_norway::from_str(&text).expect("fixture is YAML");
        crds.insert(crd_name(&doc), doc);
    }
    assert_eq!(
        crds.len(),
        4,
        "expected four reference CRDs in {}",
        dir.display()
    );
    crds
}

fn generated_crds() -> BTreeMap<String, Value> {
    crd::render_all()
        .into_iter()
        .map(|(file, text)| {
            let doc: Value =
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            (crd_name(&doc), doc)
        })
        .collect()
}

fn crd_name(doc: &Value) -> String {
    doc["metadata"]["name"]
        .as_str()
        .expect("CRD has metadata.name")
        .to_string()
}

// -------------------------------------------------------------------------------- comparator

/// All differences between the reference CRDs and the project's, matched by name.
fn compare(reference: &BTreeMap<String, Value>, project: &BTreeMap<String, Value>) -> Vec<String> {
    let mut checker = Checker::default();
    for (name, ref_doc) in reference {
        match project.get(name) {
            Some(doc) => checker.crd(name, ref_doc, doc),
            None => checker.err(name, "$", "CRD missing in project".into()),
        }
    }
    checker.errors
}

#[derive(Default)]
struct Checker {
    errors: Vec<String>,
}

impl Checker {
    fn err(&mut self, crd: &str, path: &str, what: String) {
        self.errors.push(format!("{crd} {path}: {what}"));
    }

    fn cmp(&mut self, crd: &str, path: &str, reference: Option<&Value>, project: Option<&Value>) {
        if !strict_eq_opt(reference, project) {
            self.err(
                crd,
                path,
                format!(
                    "project {}, reference {}",
                    short_opt(project),
                    short_opt(reference)
                ),
            );
        }
    }

    fn crd(&mut self, label: &str, reference: &Value, project: &Value) {
        self.cmp(
            label,
            "$.apiVersion",
            reference.get("apiVersion"),
            project.get("apiVersion"),
        );
        let rs = reference.get("spec").unwrap_or(&Value::Null);
        let ps = project.get("spec").unwrap_or(&Value::Null);
        self.cmp(label, "$.spec.group", rs.get("group"), ps.get("group"));
        self.cmp(label, "$.spec.scope", rs.get("scope"), ps.get("scope"));

        let empty = serde_json::Map::new();
        let rnames = rs.get("names").and_then(Value::as_object).unwrap_or(&empty);
        let pnames = ps.get("names").and_then(Value::as_object).unwrap_or(&empty);
        let keys: BTreeSet<&String> = rnames.keys().chain(pnames.keys()).collect();
        for key in keys {
            self.cmp(
                label,
                &format!("$.spec.names.{key}"),
                rnames.get(key),
                pnames.get(key),
            );
        }
        for (key, default) in [
            ("preserveUnknownFields", Value::Bool(false)),
            ("conversion", serde_json::json!({ "strategy": "None" })),
        ] {
            if rs.get(key).is_some() || ps.get(key).is_some() {
                self.cmp(
                    label,
                    &format!("$.spec.{key}"),
                    Some(rs.get(key).unwrap_or(&default)),
                    Some(ps.get(key).unwrap_or(&default)),
                );
            }
        }

        let no_versions = Vec::new();
        let pversions = ps
            .get("versions")
            .and_then(Value::as_array)
            .unwrap_or(&no_versions);
        for rv in rs
            .get("versions")
            .and_then(Value::as_array)
            .unwrap_or(&no_versions)
        {
            let vname = rv.get("name").unwrap_or(&Value::Null);
            let vp = format!("$.spec.versions[name={}]", plain(vname));
            let Some(pv) = pversions.iter().find(|v| v.get("name") == Some(vname)) else {
                self.err(label, &vp, "version missing in project".into());
                continue;
            };
            for (key, default) in [
                ("served", Value::Null),
                ("storage", Value::Null),
                ("deprecated", Value::Bool(false)),
                ("deprecationWarning", Value::Null),
            ] {
                self.cmp(
                    label,
                    &format!("{vp}.{key}"),
                    Some(rv.get(key).unwrap_or(&default)),
                    Some(pv.get(key).unwrap_or(&default)),
                );
            }
            for key in ["subresources", "selectableFields"] {
                if rv.get(key).is_some() || pv.get(key).is_some() {
                    self.schema(
                        label,
                        &format!("{vp}.{key}"),
                        rv.get(key).unwrap_or(&Value::Null),
                        pv.get(key).unwrap_or(&Value::Null),
                    );
                }
            }
            self.columns(
                label,
                &format!("{vp}.additionalPrinterColumns"),
                rv.get("additionalPrinterColumns"),
                pv.get("additionalPrinterColumns"),
            );
            let sp = format!("{vp}.schema.openAPIV3Schema");
            match pv.get("schema").and_then(|s| s.get("openAPIV3Schema")) {
                None => self.err(label, &sp, "schema missing in project".into()),
                Some(pschema) => {
                    let rschema = rv
                        .get("schema")
                        .and_then(|s| s.get("openAPIV3Schema"))
                        .unwrap_or(&Value::Null);
                    self.schema(label, &sp, rschema, pschema);
                }
            }
        }
    }

    fn schema(&mut self, crd: &str, path: &str, reference: &Value, project: &Value) {
        let (Value::Object(r), Value::Object(q)) = (reference, project) else {
            if !strict_eq(reference, project) {
                self.err(
                    crd,
                    path,
                    format!("project {}, reference {}", short(project), short(reference)),
                );
            }
            return;
        };
        let keys: BTreeSet<&String> = r
            .keys()
            .chain(q.keys())
            .filter(|k| !IGNORED_SCHEMA_KEYS.contains(&k.as_str()))
            .collect();
        for key in keys {
            let p = json_key(path, key);
            let (rv, qv) = match (r.get(key), q.get(key)) {
                (_, None) => {
                    let rv = r.get(key).unwrap_or(&Value::Null);
                    self.err(
                        crd,
                        &p,
                        format!("missing in project (reference {})", short(rv)),
                    );
                    continue;
                }
                (None, Some(qv)) => {
                    // Tolerated like the shell checker does, but never produced by this crate
                    // (see the round-trip tests); anything else is an error.
                    if key == "nullable" && *qv == Value::Bool(true) {
                        continue;
                    }
                    self.err(crd, &p, format!("not in reference (project {})", short(qv)));
                    continue;
                }
                (Some(rv), Some(qv)) => (rv, qv),
            };
            let k = key.as_str();
            match (rv, qv) {
                (Value::Object(rm), Value::Object(qm)) if PROPERTY_MAP_KEYS.contains(&k) => {
                    for name in rm.keys().filter(|n| !qm.contains_key(*n)) {
                        self.err(
                            crd,
                            &json_key(&p, name),
                            "property missing in project".into(),
                        );
                    }
                    for name in qm.keys().filter(|n| !rm.contains_key(*n)) {
                        let path = json_key(&p, name);
                        let added = ADDITIONS
                            .iter()
                            .any(|(c, end)| *c == crd && path.ends_with(end));
                        if !added {
                            self.err(crd, &path, "property not in reference".into());
                        }
                    }
                    for (name, rsub) in rm {
                        if let Some(qsub) = qm.get(name) {
                            self.schema(crd, &json_key(&p, name), rsub, qsub);
                        }
                    }
                }
                _ if SUBSCHEMA_KEYS.contains(&k) => self.schema(crd, &p, rv, qv),
                (Value::Object(_), Value::Object(_)) if k == "additionalProperties" => {
                    self.schema(crd, &p, rv, qv)
                }
                (Value::Array(ra), Value::Array(qa)) if SUBSCHEMA_LIST_KEYS.contains(&k) => {
                    if ra.len() != qa.len() {
                        self.err(
                            crd,
                            &p,
                            format!("project has {} entries, reference {}", qa.len(), ra.len()),
                        );
                    }
                    for (i, (x, y)) in ra.iter().zip(qa).enumerate() {
                        self.schema(crd, &format!("{p}[{i}]"), x, y);
                    }
                }
                (Value::Array(ra), Value::Array(qa)) if k == "required" || k == "enum" => {
                    let rs: BTreeSet<String> = ra.iter().map(canonical).collect();
                    let qs: BTreeSet<String> = qa.iter().map(canonical).collect();
                    for x in rs.difference(&qs) {
                        self.err(crd, &p, format!("{x} missing in project"));
                    }
                    for x in qs.difference(&rs) {
                        self.err(crd, &p, format!("{x} not in reference"));
                    }
                }
                (Value::Array(ra), Value::Array(qa)) if k == "x-kubernetes-validations" => {
                    self.validations(crd, &p, ra, qa)
                }
                _ => {
                    if !strict_eq(rv, qv) {
                        self.err(
                            crd,
                            &p,
                            format!("project {}, reference {}", short(qv), short(rv)),
                        );
                    }
                }
            }
        }
    }

    fn validations(&mut self, crd: &str, path: &str, reference: &[Value], project: &[Value]) {
        let mut pending: Vec<&Value> = project.iter().collect();
        for rv in reference {
            let rule = rv.get("rule").and_then(Value::as_str);
            let found = pending.iter().position(|pv| {
                pv.is_object()
                    && pv.get("rule").and_then(Value::as_str).map(normalize_rule)
                        == rule.map(normalize_rule)
            });
            let shown = match rule {
                Some(rule) => norm_ws(rule),
                None => String::new(),
            };
            let p = format!("{path}[rule={}]", serde_json::Value::from(shown));
            let Some(index) = found else {
                self.err(crd, &p, "validation rule missing in project".into());
                continue;
            };
            let pv = pending.remove(index);
            for key in VALIDATION_KEYS {
                let (mut a, mut b) = (rv.get(key).cloned(), pv.get(key).cloned());
                if key == "message" || key == "messageExpression" {
                    a = a.map(|v| norm_ws_value(&v));
                    b = b.map(|v| norm_ws_value(&v));
                }
                if !strict_eq_opt(a.as_ref(), b.as_ref()) {
                    self.err(
                        crd,
                        &format!("{p}.{key}"),
                        format!(
                            "project {}, reference {}",
                            short_opt(b.as_ref()),
                            short_opt(a.as_ref())
                        ),
                    );
                }
            }
        }
        for pv in pending {
            let shown = match pv.get("rule").and_then(Value::as_str) {
                Some(rule) => Value::from(norm_ws(rule)),
                None => pv.clone(),
            };
            self.err(
                crd,
                &format!("{path}[rule={shown}]"),
                "validation rule not in reference".into(),
            );
        }
    }

    fn columns(
        &mut self,
        crd: &str,
        path: &str,
        reference: Option<&Value>,
        project: Option<&Value>,
    ) {
        let none = Vec::new();
        let rcols = reference.and_then(Value::as_array).unwrap_or(&none);
        let pcols = project.and_then(Value::as_array).unwrap_or(&none);
        let name_of = |c: &Value| c.get("name").map(plain).unwrap_or_default();
        let rnames: Vec<String> = rcols.iter().map(name_of).collect();
        let pnames: Vec<String> = pcols.iter().map(name_of).collect();
        for column in rcols {
            let name = name_of(column);
            let p = format!("{path}[name={name}]");
            let Some(q) = pcols.iter().find(|c| name_of(c) == name) else {
                self.err(crd, &p, "printer column missing in project".into());
                continue;
            };
            for (key, default) in [
                ("type", Value::Null),
                ("jsonPath", Value::Null),
                ("priority", Value::from(0)),
                ("format", Value::Null),
            ] {
                let a = column.get(key).unwrap_or(&default);
                let b = q.get(key).unwrap_or(&default);
                if !strict_eq(a, b) {
                    self.err(
                        crd,
                        &format!("{p}.{key}"),
                        format!("project {}, reference {}", short(b), short(a)),
                    );
                }
            }
        }
        for name in pnames.iter().filter(|n| !rnames.contains(n)) {
            self.err(
                crd,
                &format!("{path}[name={name}]"),
                "printer column not in reference".into(),
            );
        }
        let common_r: Vec<&String> = rnames.iter().filter(|n| pnames.contains(n)).collect();
        let common_p: Vec<&String> = pnames.iter().filter(|n| rnames.contains(n)).collect();
        if common_r != common_p {
            self.err(
                crd,
                path,
                format!("column order {common_p:?}, reference {common_r:?}"),
            );
        }
    }
}

// ------------------------------------------------------------------------------ value rules

/// Equality where a boolean never equals a number, and `1 == 1.0`.
fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| strict_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| strict_eq(v, w))
        }
        _ => a == b,
    }
}

fn strict_eq_opt(a: Option<&Value>, b: Option<&Value>) -> bool {
    strict_eq(a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null))
}

/// Whitespace-normalises a CEL expression outside string literals: whitespace runs become one
/// space, whitespace next to punctuation disappears.
fn normalize_rule(rule: &str) -> String {
    let mut out = String::new();
    let mut code = String::new();
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let mut literal = String::from(c);
            let mut closed = false;
            let mut escaped = false;
            let mut rest = chars.clone();
            for d in rest.by_ref() {
                literal.push(d);
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    closed = true;
                    break;
                }
            }
            if closed {
                out.push_str(&squeeze_code(&code));
                code.clear();
                out.push_str(&literal);
                chars = rest;
                continue;
            }
        }
        code.push(c);
    }
    out.push_str(&squeeze_code(&code));
    out.trim().to_string()
}

fn squeeze_code(code: &str) -> String {
    let mut collapsed: Vec<char> = Vec::new();
    for c in code.chars() {
        if c.is_whitespace() {
            if collapsed.last() != Some(&' ') {
                collapsed.push(' ');
            }
        } else {
            collapsed.push(c);
        }
    }
    let punct =
        |c: Option<&char>| c.is_some_and(|c| !(c.is_alphanumeric() || *c == '_' || *c == ' '));
    let mut out = String::new();
    for (i, c) in collapsed.iter().enumerate() {
        if *c == ' '
            && (punct(i.checked_sub(1).and_then(|j| collapsed.get(j)))
                || punct(collapsed.get(i + 1)))
        {
            continue;
        }
        out.push(*c);
    }
    out
}

fn norm_ws(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn norm_ws_value(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::from(norm_ws(s)),
        other => other.clone(),
    }
}

/// `path.key` for plain keys, `path["key"]` otherwise.
fn json_key(path: &str, key: &str) -> String {
    let mut chars = key.chars();
    let plain_key = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if plain_key {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::from(key))
    }
}

/// A value as JSON with sorted keys (the set element form used for `required` and `enum`).
fn canonical(value: &Value) -> String {
    serde_json::to_string(&sorted(value)).unwrap_or_default()
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::to_value(ordered).unwrap_or(Value::Null)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn short(value: &Value) -> String {
    let text = canonical(value);
    if text.chars().count() <= 120 {
        text
    } else {
        format!("{}...", text.chars().take(117).collect::<String>())
    }
}

fn short_opt(value: Option<&Value>) -> String {
    short(value.unwrap_or(&Value::Null))
}

/// A string as itself, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
