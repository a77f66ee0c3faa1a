//! The wire contract: the descriptors compiled from proto/ must match, field
//! by field, the descriptors of the official `tensorflow-serving-api` and
//! `tensorflow` 2.21 packages (extracted into tests/data/ by
//! scripts/extract_reference_descriptors.py).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};

const REFERENCE: &[u8] = include_bytes!("data/tensorflow_serving_2.21.fds.binpb");

/// Every message and enum of a descriptor set, by fully qualified name
/// (with a leading dot, as `type_name` fields spell them).
#[derive(Default)]
struct Types<'a> {
    messages: BTreeMap<String, &'a DescriptorProto>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
}

fn collect_message<'a>(types: &mut Types<'a>, scope: &str, m: &'a DescriptorProto) {
    let name = format!("{scope}.{}", m.name());
    for nested in &m.nested_type {
        collect_message(types, &name, nested);
    }
    for e in &m.enum_type {
        types.enums.insert(format!("{name}.{}", e.name()), e);
    }
    types.messages.insert(name, m);
}

fn types_of(fds: &FileDescriptorSet) -> Types<'_> {
    let mut types = Types::default();
    for file in &fds.file {
        let scope = if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
        for m in &file.message_type {
            collect_message(&mut types, &scope, m);
        }
        for e in &file.enum_type {
            types.enums.insert(format!("{scope}.{}", e.name()), e);
        }
    }
    types
}

/// protoc's default JSON name: lowerCamelCase of the field name.
fn default_json_name(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The comparable facts of a field.
fn field_facts(m: &DescriptorProto, f: &FieldDescriptorProto) -> String {
    let oneof =
        f.oneof_index.and_then(|i| m.oneof_decl.get(i as usize)).map(|o| o.name().to_string()).unwrap_or_default();
    let json = f.json_name.clone().unwrap_or_else(|| default_json_name(f.name()));
    let packed = f.options.as_ref().and_then(|o| o.packed);
    format!(
        "name={} number={} type={:?} type_name={} label={:?} json_name={} oneof={} proto3_optional={} packed={:?} default={:?}",
        f.name(),
        f.number(),
        f.r#type(),
        f.type_name(),
        f.label(),
        json,
        oneof,
        f.proto3_optional(),
        packed,
        f.default_value,
    )
}

fn compare_message(name: &str, ours: &DescriptorProto, theirs: &DescriptorProto, diffs: &mut Vec<String>) {
    let by_number = |m: &DescriptorProto| -> BTreeMap<i32, String> {
        m.field.iter().map(|f| (f.number(), field_facts(m, f))).collect()
    };
    let (o, t) = (by_number(ours), by_number(theirs));
    for (number, facts) in &t {
        match o.get(number) {
            None => diffs.push(format!("{name}: field #{number} missing ({facts})")),
            Some(mine) if mine != facts => {
                diffs.push(format!("{name}: field #{number}\n  ours:   {mine}\n  theirs: {facts}"))
            }
            Some(_) => {}
        }
    }
    for number in o.keys().filter(|n| !t.contains_key(n)) {
        diffs.push(format!("{name}: extra field #{number}"));
    }
    let oneofs = |m: &DescriptorProto| -> Vec<String> { m.oneof_decl.iter().map(|o| o.name().to_string()).collect() };
    if oneofs(ours) != oneofs(theirs) {
        diffs.push(format!("{name}: oneofs {:?} != {:?}", oneofs(ours), oneofs(theirs)));
    }
    let map_entry = |m: &DescriptorProto| m.options.as_ref().and_then(|o| o.map_entry).unwrap_or(false);
    if map_entry(ours) != map_entry(theirs) {
        diffs.push(format!("{name}: map_entry differs"));
    }
}

fn compare_enum(name: &str, ours: &EnumDescriptorProto, theirs: &EnumDescriptorProto, diffs: &mut Vec<String>) {
    let values = |e: &EnumDescriptorProto| -> Vec<(String, i32)> {
        e.value.iter().map(|v| (v.name().to_string(), v.number())).collect()
    };
    if values(ours) != values(theirs) {
        diffs.push(format!("{name}: enum values {:?} != {:?}", values(ours), values(theirs)));
    }
}

fn reference() -> FileDescriptorSet {
    FileDescriptorSet::decode(REFERENCE).expect("reference descriptor set decodes")
}

fn ours() -> FileDescriptorSet {
    FileDescriptorSet::decode(ferroserve::proto::FILE_DESCRIPTOR_SET).expect("our descriptor set decodes")
}

#[test]
fn every_reference_file_exists_with_the_same_package_and_imports() {
    let (reference, ours) = (reference(), ours());
    let mine: BTreeMap<&str, _> = ours.file.iter().map(|f| (f.name(), f)).collect();
    let mut diffs = Vec::new();
    for theirs in &reference.file {
        match mine.get(theirs.name()) {
            None => diffs.push(format!("file {} is missing", theirs.name())),
            Some(f) => {
                if f.package() != theirs.package() {
                    diffs.push(format!("{}: package {} != {}", f.name(), f.package(), theirs.package()));
                }
                if f.dependency != theirs.dependency || f.public_dependency != theirs.public_dependency {
                    diffs.push(format!("{}: imports differ", f.name()));
                }
            }
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn every_reference_message_and_enum_matches_field_by_field() {
    let (reference, ours) = (reference(), ours());
    let (theirs, mine) = (types_of(&reference), types_of(&ours));
    let mut diffs = Vec::new();
    for (name, t) in &theirs.messages {
        match mine.messages.get(name) {
            None => diffs.push(format!("message {name} is missing")),
            Some(o) => compare_message(name, o, t, &mut diffs),
        }
    }
    for (name, t) in &theirs.enums {
        match mine.enums.get(name) {
            None => diffs.push(format!("enum {name} is missing")),
            Some(o) => compare_enum(name, o, t, &mut diffs),
        }
    }
    assert!(theirs.messages.len() > 200, "the reference set looks truncated");
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn everything_reachable_from_the_rpcs_and_signature_maps_is_defined() {
    let reference = reference();
    let ours = ours();
    let mine = types_of(&ours);
    let theirs = types_of(&reference);
    // Roots: the request and response of the seven RPCs of the two services,
    // and the messages that travel inside an Any in GetModelMetadata.
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut methods = 0;
    for file in &reference.file {
        for service in &file.service {
            if !["PredictionService", "ModelService"].contains(&service.name()) {
                continue;
            }
            for m in &service.method {
                methods += 1;
                queue.push_back(m.input_type().to_string());
                queue.push_back(m.output_type().to_string());
            }
        }
    }
    assert_eq!(methods, 7, "PredictionService has five RPCs and ModelService two");
    for root in [".tensorflow.serving.SignatureDefMap", ".tensorflow.SignatureDef", ".tensorflow.TensorInfo"] {
        queue.push_back(root.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if theirs.enums.contains_key(&name) {
            if !mine.enums.contains_key(&name) {
                missing.push(name);
            }
            continue;
        }
        let Some(message) = theirs.messages.get(&name) else {
            panic!("reference set lacks {name}");
        };
        if !mine.messages.contains_key(&name) {
            missing.push(name.clone());
        }
        for f in &message.field {
            if !f.type_name().is_empty() {
                queue.push_back(f.type_name().to_string());
            }
        }
    }
    assert!(seen.len() > 50, "only {} types reachable", seen.len());
    assert!(missing.is_empty(), "missing: {missing:?}");
}

#[test]
fn the_services_have_upstream_method_paths_and_types() {
    let ours = ours();
    let reference = reference();
    let methods = |fds: &FileDescriptorSet| -> BTreeSet<String> {
        fds.file
            .iter()
            .flat_map(|f| {
                f.service.iter().flat_map(move |s| {
                    s.method.iter().map(move |m| {
                        format!(
                            "/{}.{}/{} {} -> {} client_streaming={} server_streaming={}",
                            f.package(),
                            s.name(),
                            m.name(),
                            m.input_type(),
                            m.output_type(),
                            m.client_streaming(),
                            m.server_streaming()
                        )
                    })
                })
            })
            .collect()
    };
    assert_eq!(methods(&ours), methods(&reference));
    assert!(methods(&ours).contains(
        "/tensorflow.serving.PredictionService/Predict .tensorflow.serving.PredictRequest -> .tensorflow.serving.PredictResponse client_streaming=false server_streaming=false"
    ));
}

/// monitoring_config.proto is not in the official wheels, so it is written
/// by hand: pin its names and numbers to upstream's here.
#[test]
fn the_handwritten_monitoring_config_has_upstream_names_and_numbers() {
    let ours = ours();
    let file = ours
        .file
        .iter()
        .find(|f| f.name() == "tensorflow_serving/config/monitoring_config.proto")
        .expect("monitoring_config.proto is compiled");
    assert_eq!(file.package(), "tensorflow.serving");
    let fields = |message: &str| -> Vec<String> {
        let m = file.message_type.iter().find(|m| m.name() == message).expect(message);
        m.field.iter().map(|f| format!("{} {} {:?} {}", f.name(), f.number(), f.r#type(), f.type_name())).collect()
    };
    assert_eq!(fields("PrometheusConfig"), ["enable 1 Bool ", "path 2 String "]);
    assert_eq!(fields("MonitoringConfig"), ["prometheus_config 1 Message .tensorflow.serving.PrometheusConfig"]);
}

/// ssl_config.proto is not in the official wheels either.
#[test]
fn the_handwritten_ssl_config_has_upstream_names_and_numbers() {
    let ours = ours();
    let file = ours
        .file
        .iter()
        .find(|f| f.name() == "tensorflow_serving/config/ssl_config.proto")
        .expect("ssl_config.proto is compiled");
    assert_eq!(file.package(), "tensorflow.serving");
    let m = file.message_type.iter().find(|m| m.name() == "SSLConfig").expect("SSLConfig");
    let fields: Vec<String> = m.field.iter().map(|f| format!("{} {} {:?}", f.name(), f.number(), f.r#type())).collect();
    assert_eq!(fields, ["server_key 1 String", "server_cert 2 String", "custom_ca 3 String", "client_verify 4 Bool"]);
}
