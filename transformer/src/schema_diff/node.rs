//! Reading schema nodes: following local `$ref`s, folding `allOf`, the type set a node admits,
//! and the shallow merge both the comparison and the instance generator use.

use serde_json::{Map, Value};

use crate::error::pointer_push;

/// The JSON types of JSON Schema, in the order instances are tried.
pub(crate) const ALL_TYPES: [&str; 7] = [
    "object", "string", "integer", "number", "boolean", "array", "null",
];

/// Keywords that never change which instances a schema accepts.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

pub(crate) fn is_annotation(keyword: &str) -> bool {
    ANNOTATIONS.contains(&keyword) || keyword.starts_with("x-")
}

/// A schema node together with the JSON Pointer it was read from.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub pointer: String,
}

/// Follows a local `$ref` (`#`, `#/json/pointer`) inside `doc`. `None` for anything else.
pub(crate) fn resolve_ref<'d>(doc: &'d Value, reference: &str) -> Option<(&'d Value, String)> {
    let fragment = reference.strip_prefix('#')?;
    let decoded = percent_decode(fragment)?;
    if decoded.is_empty() {
        return Some((doc, String::new()));
    }
    if !decoded.starts_with('/') {
        return None;
    }
    doc.pointer(&decoded).map(|target| (target, decoded))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// True when `node` asserts nothing (`true`, `{}`, or only annotations).
pub(crate) fn is_unconstrained(node: &Value) -> bool {
    match node {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| is_annotation(k)),
        _ => false,
    }
}

/// The node with its local `$ref` chain followed and its `allOf` folded into it, so that the
/// comparison sees one set of keywords. Unresolvable references are left in place.
pub(crate) fn resolve(doc: &Value, node: &Value, pointer: &str) -> Node {
    resolve_depth(doc, node, pointer, 0)
}

fn resolve_depth(doc: &Value, node: &Value, pointer: &str, depth: usize) -> Node {
    const MAX_REF_CHAIN: usize = 32;
    let mut current = Node {
        value: node.clone(),
        pointer: pointer.to_string(),
    };
    if depth > MAX_REF_CHAIN {
        return current;
    }
    if let Some(reference) = current.value.get("$ref").and_then(Value::as_str) {
        if let Some((target, target_pointer)) = resolve_ref(doc, reference) {
            let target = resolve_depth(doc, target, &target_pointer, depth + 1);
            let mut siblings = current.value.as_object().cloned().unwrap_or_default();
            siblings.remove("$ref");
            // With siblings the pointer still names the target: that is where the definition's
            // properties live, so pointers below it stay real.
            current = if siblings.keys().all(|k| is_annotation(k)) {
                target
            } else {
                Node {
                    value: merge(&target.value, &Value::Object(siblings)),
                    pointer: target.pointer,
                }
            };
        }
    }
    let mut conditionals: Vec<Value> = Vec::new();
    if let Some(own) = conditional_of(&current.value, &current.pointer) {
        conditionals.push(own);
        current.value = without(&current.value, &["if", "then", "else"]);
    }
    if let Some(members) = current
        .value
        .get("allOf")
        .and_then(Value::as_array)
        .cloned()
    {
        let mut folded = without(&current.value, &["allOf"]);
        let all_of = pointer_push(&current.pointer, "allOf");
        for (i, member) in members.iter().enumerate() {
            let member = resolve_depth(
                doc,
                member,
                &pointer_push(&all_of, &i.to_string()),
                depth + 1,
            );
            let mut member_value = member.value;
            if let Some(list) = member_value.get(CONDITIONALS).and_then(Value::as_array) {
                conditionals.extend(list.iter().cloned());
                member_value = without(&member_value, &[CONDITIONALS]);
            }
            folded = merge(&folded, &member_value);
        }
        current.value = folded;
    }
    if !conditionals.is_empty() {
        if let Some(list) = current.value.get(CONDITIONALS).and_then(Value::as_array) {
            let mut all = list.clone();
            all.extend(conditionals);
            conditionals = all;
        }
        current.value = with(&current.value, CONDITIONALS, Value::Array(conditionals));
    }
    current
}

/// Where [`resolve`] keeps a node's `if`/`then`/`else` triples (its own and those of its `allOf`
/// members): each `{"if", "then", "else", "pointer"}`. An `x-` name, so comparisons skip it.
pub(crate) const CONDITIONALS: &str = "x-schema-diff-conditionals";

fn conditional_of(node: &Value, pointer: &str) -> Option<Value> {
    let condition = node.get("if")?;
    let mut out = Map::new();
    out.insert("if".into(), condition.clone());
    for keyword in ["then", "else"] {
        if let Some(schema) = node.get(keyword) {
            out.insert(keyword.into(), schema.clone());
        }
    }
    out.insert("pointer".into(), Value::String(pointer.to_string()));
    Some(Value::Object(out))
}

/// A node's conditionals (see [`CONDITIONALS`]).
pub(crate) fn conditionals(node: &Value) -> Vec<Value> {
    node.get(CONDITIONALS)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The node as it reads for instances that satisfy conditional `index`'s `if`: base, `if` and
/// `then` merged.
pub(crate) fn under_conditional(node: &Value, index: usize) -> Option<Value> {
    let conditional = conditionals(node).get(index)?.clone();
    let base = without(node, &[CONDITIONALS]);
    let with_if = merge(&base, conditional.get("if")?);
    Some(match conditional.get("then") {
        Some(then) => merge(&with_if, then),
        None => with_if,
    })
}

/// The types a node admits, or `None` when it does not say.
pub(crate) fn types(node: &Value) -> Option<Vec<String>> {
    match node.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(list) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        _ => None,
    }
}

/// True when a node with type set `types` accepts instances of type `t`.
pub(crate) fn admits_type(types: &Option<Vec<String>>, t: &str) -> bool {
    match types {
        None => true,
        Some(list) => list
            .iter()
            .any(|x| x == t || (t == "integer" && x == "number")),
    }
}

/// The JSON type name of an instance (`integer` for whole numbers).
pub(crate) fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                "integer"
            } else {
                "number"
            }
        }
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The values a node is limited to by `const` or `enum`.
pub(crate) fn allowed_values(node: &Value) -> Option<Vec<Value>> {
    if let Some(c) = node.get("const") {
        return Some(vec![c.clone()]);
    }
    node.get("enum").and_then(Value::as_array).cloned()
}

pub(crate) fn number(node: &Value, keyword: &str) -> Option<f64> {
    node.get(keyword).and_then(Value::as_f64)
}

pub(crate) fn count(node: &Value, keyword: &str) -> Option<u64> {
    node.get(keyword).and_then(Value::as_u64)
}

pub(crate) fn object<'v>(node: &'v Value, keyword: &str) -> Option<&'v Map<String, Value>> {
    node.get(keyword).and_then(Value::as_object)
}

pub(crate) fn required(node: &Value) -> Vec<String> {
    node.get("required")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `node` with `keyword` set to `value` (a boolean schema becomes an object first).
pub(crate) fn with(node: &Value, keyword: &str, value: Value) -> Value {
    let mut map = match node {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    map.insert(keyword.to_string(), value);
    Value::Object(map)
}

/// `node` without the listed keywords.
pub(crate) fn without(node: &Value, keywords: &[&str]) -> Value {
    match node {
        Value::Object(map) => {
            let mut map = map.clone();
            for k in keywords {
                map.remove(*k);
            }
            Value::Object(map)
        }
        other => other.clone(),
    }
}

/// A shallow intersection of two schemas, good enough to generate instances from and to compare:
/// properties merge recursively, `required` unites, `type` intersects, bounds take the tighter.
/// Whatever it gets wrong, the jsonschema check of every counterexample catches.
pub(crate) fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
        (Value::Bool(true), other) | (other, Value::Bool(true)) => other.clone(),
        (Value::Object(a), Value::Object(b)) => {
            let mut out = a.clone();
            for (key, b_value) in b {
                let merged = match (key.as_str(), out.get(key)) {
                    (_, None) => b_value.clone(),
                    (
                        "properties" | "patternProperties" | "$defs",
                        Some(Value::Object(a_props)),
                    ) => {
                        let mut props = a_props.clone();
                        if let Value::Object(b_props) = b_value {
                            for (name, schema) in b_props {
                                let value = match props.get(name) {
                                    Some(existing) => merge(existing, schema),
                                    None => schema.clone(),
                                };
                                props.insert(name.clone(), value);
                            }
                        }
                        Value::Object(props)
                    }
                    ("required", Some(Value::Array(a_list))) => {
                        let mut list = a_list.clone();
                        if let Value::Array(b_list) = b_value {
                            for item in b_list {
                                if !list.contains(item) {
                                    list.push(item.clone());
                                }
                            }
                        }
                        Value::Array(list)
                    }
                    ("type", Some(a_type)) => intersect_types(a_type, b_value),
                    (
                        "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties",
                        Some(a_n),
                    ) => pick_number(a_n, b_value, f64::max),
                    (
                        "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties",
                        Some(a_n),
                    ) => pick_number(a_n, b_value, f64::min),
                    (
                        "items" | "additionalProperties" | "contains" | "propertyNames",
                        Some(a_s),
                    ) => merge(a_s, b_value),
                    (_, Some(_)) => b_value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (a, _) => a.clone(),
    }
}

fn pick_number(a: &Value, b: &Value, choose: fn(f64, f64) -> f64) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => {
            if choose(x, y) == x {
                a.clone()
            } else {
                b.clone()
            }
        }
        _ => b.clone(),
    }
}

fn intersect_types(a: &Value, b: &Value) -> Value {
    let a_types = types(&serde_json::json!({ "type": a }));
    let b_types = types(&serde_json::json!({ "type": b }));
    let (Some(a_types), Some(b_types)) = (a_types, b_types) else {
        return b.clone();
    };
    let mut out: Vec<Value> = Vec::new();
    for t in &a_types {
        if admits_type(&Some(b_types.clone()), t) {
            out.push(Value::String(t.clone()));
        } else if t == "number" && b_types.iter().any(|x| x == "integer") {
            out.push(Value::String("integer".into()));
        }
    }
    match out.len() {
        1 => out.remove(0),
        _ => Value::Array(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_with_escapes_resolve() {
        let doc = json!({"$defs": {"a/b": {"type": "string"}}});
        let (target, pointer) = resolve_ref(&doc, "#/$defs/a~1b").unwrap();
        assert_eq!(target, &json!({"type": "string"}));
        assert_eq!(pointer, "/$defs/a~1b");
        assert!(resolve_ref(&doc, "other.json#/x").is_none());
    }

    #[test]
    fn all_of_folds_into_one_node() {
        let doc = json!({"$defs": {"named": {"type": "object", "required": ["name"]}}});
        let node = json!({"allOf": [{"$ref": "#/$defs/named"}, {"required": ["id"], "properties": {"id": {"type": "integer"}}}]});
        let resolved = resolve(&doc, &node, "/x");
        assert_eq!(resolved.value["required"], json!(["name", "id"]));
        assert_eq!(resolved.value["type"], "object");
    }

    #[test]
    fn integer_is_a_number() {
        assert!(admits_type(&Some(vec!["number".into()]), "integer"));
        assert!(!admits_type(&Some(vec!["integer".into()]), "number"));
        assert_eq!(type_of(&json!(2.0)), "integer");
        assert_eq!(type_of(&json!(2.5)), "number");
    }
}
