//! Wire compatibility of this crate's protocol with jumpstarter 0.9.0.
//!
//! The fixture `fixtures/jumpstarter-0.9.0.fds.pb` is the descriptor set of
//! the published 0.9.0 Python protocol package. The comparator below indexes
//! both descriptor sets by fully qualified name and reports every item of the
//! reference that is missing or different in the project. Items the project
//! adds are allowed, except fields that reuse a reserved name or number.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

/// Descriptor set of jumpstarter-protocol 0.9.0 as published on PyPI.
const REFERENCE: &[u8] = include_bytes!("fixtures/jumpstarter-0.9.0.fds.pb");

/// The packages whose shape must match; everything else (google.*) is ignored.
const PACKAGES: [&str; 2] = ["jumpstarter.v1", "jumpstarter.client.v1"];

#[test]
fn project_matches_jumpstarter_0_9_0() {
    let reference = decode(REFERENCE);
    let project = decode(jumpstarter_proto::FILE_DESCRIPTOR_SET);

    let reference_index = Index::build(&reference);
    // Guard against a fixture that silently indexes to nothing.
    assert_eq!(reference_index.services.len(), 4, "reference services");
    assert!(reference_index.messages.len() > 50, "reference messages");

    let differences = compare(&reference_index, &Index::build(&project));
    assert!(
        differences.is_empty(),
        "{} difference(s) from jumpstarter 0.9.0:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn comparator_reports_each_kind_of_difference() {
    let reference = decode(REFERENCE);
    assert!(compare(&Index::build(&reference), &Index::build(&reference)).is_empty());

    let mut project = reference.clone();
    field_mut(&mut project, "jumpstarter.v1", "DialRequest", "lease_name").number = Some(9);
    field_mut(
        &mut project,
        "jumpstarter.v1",
        "GetLeaseResponse",
        "selector",
    )
    .type_name = Some(".jumpstarter.v1.Condition".to_owned());
    field_mut(
        &mut project,
        "jumpstarter.v1",
        "ListLeasesResponse",
        "names",
    )
    .set_label(Label::Optional);
    field_mut(&mut project, "jumpstarter.v1", "StatusResponse", "leased").set_type(Type::Int32);
    field_mut(&mut project, "jumpstarter.client.v1", "Lease", "exporter").proto3_optional =
        Some(false);
    field_mut(&mut project, "jumpstarter.v1", "Endpoint", "certificate").json_name =
        Some("cert".to_owned());
    method_mut(&mut project, "RouterService", "Stream").client_streaming = Some(false);
    method_mut(&mut project, "ControllerService", "Dial").output_type =
        Some(".jumpstarter.v1.ListenResponse".to_owned());
    enum_mut(&mut project, "ExporterStatus")
        .value
        .iter_mut()
        .find(|value| value.name() == "EXPORTER_STATUS_AVAILABLE")
        .expect("value EXPORTER_STATUS_AVAILABLE")
        .number = Some(12);
    message_mut(&mut project, "jumpstarter.v1", "RegisterRequest").nested_type[0]
        .options
        .as_mut()
        .expect("map entry options")
        .map_entry = Some(false);
    message_mut(&mut project, "jumpstarter.v1", "ResetRequest").name = Some("Renamed".to_owned());
    file_mut(&mut project, "jumpstarter.v1", "ExporterService")
        .service
        .retain(|service| service.name() != "ExporterService");
    // Extra items are allowed ...
    message_mut(&mut project, "jumpstarter.v1", "ListenRequest")
        .field
        .push(extra_field("extra_ok", 7));
    // ... unless they reuse what the reference reserves.
    message_mut(&mut project, "jumpstarter.v1", "UnregisterRequest")
        .field
        .push(extra_field("gone", 1));
    let mut reference_with_reserved = reference.clone();
    message_mut(
        &mut reference_with_reserved,
        "jumpstarter.v1",
        "UnregisterRequest",
    )
    .reserved_range
    .push(prost_types::descriptor_proto::ReservedRange {
        start: Some(1),
        end: Some(2),
    });

    let differences = compare(
        &Index::build(&reference_with_reserved),
        &Index::build(&project),
    );
    let expected = [
        "field jumpstarter.v1.DialRequest.lease_name: number is 9, reference 1",
        "field jumpstarter.v1.GetLeaseResponse.selector: type_name is .jumpstarter.v1.Condition, reference .jumpstarter.v1.LabelSelector",
        "field jumpstarter.v1.ListLeasesResponse.names: label is Optional, reference Repeated",
        "field jumpstarter.v1.StatusResponse.leased: type is Int32, reference Bool",
        "field jumpstarter.client.v1.Lease.exporter: proto3_optional is false, reference true",
        // Without the proto3_optional flag its synthetic oneof becomes a real one.
        "field jumpstarter.client.v1.Lease.exporter: oneof is _exporter, reference none",
        "field jumpstarter.v1.Endpoint.certificate: json_name is cert, reference certificate",
        "method jumpstarter.v1.RouterService/Stream: client_streaming is false, reference true",
        "method jumpstarter.v1.ControllerService/Dial: output_type is .jumpstarter.v1.ListenResponse, reference .jumpstarter.v1.DialResponse",
        "enum jumpstarter.v1.ExporterStatus: value EXPORTER_STATUS_AVAILABLE is 12, reference 2",
        "message jumpstarter.v1.RegisterRequest.LabelsEntry: map_entry is false, reference true",
        "message jumpstarter.v1.ResetRequest: missing",
        "service jumpstarter.v1.ExporterService: missing",
        "field jumpstarter.v1.UnregisterRequest.gone (number 1): uses a reserved name or number",
        "message jumpstarter.v1.UnregisterRequest: reserved range 1..2 missing",
    ];
    for line in expected {
        assert!(
            differences.iter().any(|found| found == line),
            "expected difference not reported: {line}\nreported:\n{}",
            differences.join("\n")
        );
    }
    assert_eq!(
        differences.len(),
        expected.len(),
        "unexpected differences reported:\n{}",
        differences.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Comparator
// ---------------------------------------------------------------------------

/// The wire-relevant shape of one method.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MethodShape {
    input_type: String,
    output_type: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// The wire-relevant shape of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldShape {
    number: i32,
    r#type: Option<Type>,
    type_name: String,
    label: Option<Label>,
    proto3_optional: bool,
    /// Name of the real (non-synthetic) oneof the field belongs to.
    oneof: Option<String>,
    json_name: Option<String>,
}

/// The wire-relevant shape of one message.
#[derive(Debug, Clone, Default)]
struct MessageShape {
    map_entry: bool,
    fields: BTreeMap<String, FieldShape>,
    reserved_ranges: BTreeSet<(i32, i32)>,
    reserved_names: BTreeSet<String>,
}

/// Everything of [`PACKAGES`] in a descriptor set, keyed by full name.
#[derive(Debug, Default)]
struct Index {
    services: BTreeSet<String>,
    /// Keyed by `package.Service/Method`.
    methods: BTreeMap<String, MethodShape>,
    messages: BTreeMap<String, MessageShape>,
    /// Enum full name to value name to number.
    enums: BTreeMap<String, BTreeMap<String, i32>>,
}

impl Index {
    fn build(set: &FileDescriptorSet) -> Self {
        let mut index = Self::default();
        for file in &set.file {
            if !PACKAGES.contains(&file.package()) {
                continue;
            }
            let package = file.package();
            for message in &file.message_type {
                index.add_message(package, message);
            }
            for enumeration in &file.enum_type {
                index.add_enum(package, enumeration);
            }
            for service in &file.service {
                index.add_service(package, service);
            }
        }
        index
    }

    fn add_service(&mut self, package: &str, service: &ServiceDescriptorProto) {
        let service_name = format!("{package}.{}", service.name());
        for method in &service.method {
            self.methods.insert(
                format!("{service_name}/{}", method.name()),
                MethodShape {
                    input_type: method.input_type().to_owned(),
                    output_type: method.output_type().to_owned(),
                    client_streaming: method.client_streaming(),
                    server_streaming: method.server_streaming(),
                },
            );
        }
        self.services.insert(service_name);
    }

    fn add_enum(&mut self, scope: &str, enumeration: &EnumDescriptorProto) {
        let values = enumeration
            .value
            .iter()
            .map(|value| (value.name().to_owned(), value.number()))
            .collect();
        self.enums
            .insert(format!("{scope}.{}", enumeration.name()), values);
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let full_name = format!("{scope}.{}", message.name());
        let fields = message
            .field
            .iter()
            .map(|field| (field.name().to_owned(), field_shape(message, field)))
            .collect();
        let shape = MessageShape {
            map_entry: message
                .options
                .as_ref()
                .is_some_and(|options| options.map_entry()),
            fields,
            reserved_ranges: message
                .reserved_range
                .iter()
                .map(|range| (range.start(), range.end()))
                .collect(),
            reserved_names: message.reserved_name.iter().cloned().collect(),
        };
        for nested in &message.nested_type {
            self.add_message(&full_name, nested);
        }
        for enumeration in &message.enum_type {
            self.add_enum(&full_name, enumeration);
        }
        self.messages.insert(full_name, shape);
    }
}

fn field_shape(message: &DescriptorProto, field: &FieldDescriptorProto) -> FieldShape {
    let oneof = match field.oneof_index {
        Some(index) if !field.proto3_optional() => Some(
            usize::try_from(index)
                .ok()
                .and_then(|index| message.oneof_decl.get(index))
                .map_or_else(|| format!("#{index}"), |oneof| oneof.name().to_owned()),
        ),
        _ => None,
    };
    FieldShape {
        number: field.number(),
        r#type: field.r#type.and_then(|raw| Type::try_from(raw).ok()),
        type_name: field.type_name().to_owned(),
        label: field.label.and_then(|raw| Label::try_from(raw).ok()),
        proto3_optional: field.proto3_optional(),
        oneof,
        json_name: field.json_name.clone(),
    }
}

/// Lists every item of `reference` that `project` lacks or defines differently.
fn compare(reference: &Index, project: &Index) -> Vec<String> {
    let mut out = Vec::new();

    for service in &reference.services {
        if !project.services.contains(service) {
            out.push(format!("service {service}: missing"));
        }
    }
    for (name, expected) in &reference.methods {
        let service = name.split('/').next().unwrap_or_default();
        match project.methods.get(name) {
            // A missing service is reported once, not once per method.
            None if !project.services.contains(service) => {}
            None => out.push(format!("method {name}: missing")),
            Some(found) => compare_method(name, expected, found, &mut out),
        }
    }

    for (name, expected) in &reference.enums {
        let Some(found) = project.enums.get(name) else {
            out.push(format!("enum {name}: missing"));
            continue;
        };
        for (value, number) in expected {
            match found.get(value) {
                None => out.push(format!("enum {name}: value {value} = {number} missing")),
                Some(other) if other != number => out.push(format!(
                    "enum {name}: value {value} is {other}, reference {number}"
                )),
                Some(_) => {}
            }
        }
    }

    for (name, expected) in &reference.messages {
        match project.messages.get(name) {
            None => out.push(format!("message {name}: missing")),
            Some(found) => compare_message(name, expected, found, &mut out),
        }
    }
    out
}

fn compare_method(name: &str, expected: &MethodShape, found: &MethodShape, out: &mut Vec<String>) {
    let mut check = |what: &str, found: String, expected: String| {
        if found != expected {
            out.push(format!(
                "method {name}: {what} is {found}, reference {expected}"
            ));
        }
    };
    check(
        "input_type",
        found.input_type.clone(),
        expected.input_type.clone(),
    );
    check(
        "output_type",
        found.output_type.clone(),
        expected.output_type.clone(),
    );
    check(
        "client_streaming",
        found.client_streaming.to_string(),
        expected.client_streaming.to_string(),
    );
    check(
        "server_streaming",
        found.server_streaming.to_string(),
        expected.server_streaming.to_string(),
    );
}

fn compare_message(
    name: &str,
    expected: &MessageShape,
    found: &MessageShape,
    out: &mut Vec<String>,
) {
    if expected.map_entry != found.map_entry {
        out.push(format!(
            "message {name}: map_entry is {}, reference {}",
            found.map_entry, expected.map_entry
        ));
    }
    for (start, end) in &expected.reserved_ranges {
        if !found.reserved_ranges.contains(&(*start, *end)) {
            out.push(format!(
                "message {name}: reserved range {start}..{end} missing"
            ));
        }
    }
    for reserved in &expected.reserved_names {
        if !found.reserved_names.contains(reserved) {
            out.push(format!("message {name}: reserved name {reserved} missing"));
        }
    }
    for (field, want) in &expected.fields {
        match found.fields.get(field) {
            None => out.push(format!(
                "field {name}.{field} (number {}): missing",
                want.number
            )),
            Some(have) => compare_field(&format!("{name}.{field}"), want, have, out),
        }
    }
    for (field, have) in &found.fields {
        if expected.fields.contains_key(field) {
            continue;
        }
        let reserved_number = expected
            .reserved_ranges
            .iter()
            .any(|(start, end)| (*start..*end).contains(&have.number));
        if reserved_number || expected.reserved_names.contains(field) {
            out.push(format!(
                "field {name}.{field} (number {}): uses a reserved name or number",
                have.number
            ));
        }
    }
}

fn compare_field(name: &str, want: &FieldShape, have: &FieldShape, out: &mut Vec<String>) {
    let mut check = |what: &str, have: String, want: String| {
        if have != want {
            out.push(format!("field {name}: {what} is {have}, reference {want}"));
        }
    };
    check("number", have.number.to_string(), want.number.to_string());
    check("type", shown(have.r#type), shown(want.r#type));
    check("type_name", have.type_name.clone(), want.type_name.clone());
    check("label", shown(have.label), shown(want.label));
    check(
        "proto3_optional",
        have.proto3_optional.to_string(),
        want.proto3_optional.to_string(),
    );
    check(
        "oneof",
        have.oneof.clone().unwrap_or_else(|| "none".to_owned()),
        want.oneof.clone().unwrap_or_else(|| "none".to_owned()),
    );
    if let (Some(have_json), Some(want_json)) = (&have.json_name, &want.json_name) {
        check("json_name", have_json.clone(), want_json.clone());
    }
}

/// Renders an optional descriptor enum by its variant name, or `unset`.
fn shown<T: std::fmt::Debug>(value: Option<T>) -> String {
    value.map_or_else(|| "unset".to_owned(), |inner| format!("{inner:?}"))
}

// ---------------------------------------------------------------------------
// Helpers for building and mutating descriptor sets
// ---------------------------------------------------------------------------

fn decode(bytes: &[u8]) -> FileDescriptorSet {
    FileDescriptorSet::decode(bytes).expect("a valid encoded FileDescriptorSet")
}

/// The file of `package` that defines the top-level message or service `name`.
fn file_mut<'a>(
    set: &'a mut FileDescriptorSet,
    package: &str,
    name: &str,
) -> &'a mut prost_types::FileDescriptorProto {
    set.file
        .iter_mut()
        .find(|file| {
            file.package() == package
                && (file.message_type.iter().any(|m| m.name() == name)
                    || file.service.iter().any(|s| s.name() == name))
        })
        .unwrap_or_else(|| panic!("no file in {package} defines {name}"))
}

fn message_mut<'a>(
    set: &'a mut FileDescriptorSet,
    package: &str,
    name: &str,
) -> &'a mut DescriptorProto {
    file_mut(set, package, name)
        .message_type
        .iter_mut()
        .find(|message| message.name() == name)
        .unwrap_or_else(|| panic!("no message {package}.{name}"))
}

fn field_mut<'a>(
    set: &'a mut FileDescriptorSet,
    package: &str,
    message: &str,
    field: &str,
) -> &'a mut FieldDescriptorProto {
    message_mut(set, package, message)
        .field
        .iter_mut()
        .find(|candidate| candidate.name() == field)
        .unwrap_or_else(|| panic!("no field {package}.{message}.{field}"))
}

fn method_mut<'a>(
    set: &'a mut FileDescriptorSet,
    service: &str,
    method: &str,
) -> &'a mut prost_types::MethodDescriptorProto {
    file_mut(set, "jumpstarter.v1", service)
        .service
        .iter_mut()
        .find(|candidate| candidate.name() == service)
        .and_then(|found| {
            found
                .method
                .iter_mut()
                .find(|candidate| candidate.name() == method)
        })
        .unwrap_or_else(|| panic!("no method {service}/{method}"))
}

fn enum_mut<'a>(set: &'a mut FileDescriptorSet, name: &str) -> &'a mut EnumDescriptorProto {
    set.file
        .iter_mut()
        .filter(|file| file.package() == "jumpstarter.v1")
        .flat_map(|file| file.enum_type.iter_mut())
        .find(|candidate| candidate.name() == name)
        .unwrap_or_else(|| panic!("no enum jumpstarter.v1.{name}"))
}

fn extra_field(name: &str, number: i32) -> FieldDescriptorProto {
    let mut field = FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        json_name: Some(name.to_owned()),
        ..FieldDescriptorProto::default()
    };
    field.set_label(Label::Optional);
    field.set_type(Type::String);
    field
}
