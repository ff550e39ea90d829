//! Instances for a schema: the minimal valid instance (required properties only, values closest to
//! zero, shortest strings, fewest items), longer candidate lists for the leaves a witness is drawn
//! from, and [`Generator::build_at`], which embeds a leaf value at an instance path inside a
//! minimal instance of the whole schema. Nothing here is trusted: every counterexample is checked
//! with jsonschema before it is reported.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde_json::{json, Map, Number, Value};

use super::node::{self, ALL_TYPES};
use super::pattern::sample_strings;

/// One step from an instance to a part of it, as the comparison walked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The value of an object property.
    Property(String),
    /// An array item.
    Item(usize),
    /// The instance taking branch `index` of the `anyOf` / `oneOf` named `keyword`.
    Branch(&'static str, usize),
    /// The instance satisfying the `if` of conditional `index` (see [`node::CONDITIONALS`]).
    Conditional(usize),
}

/// The JSON Pointer of an instance path.
pub(crate) fn instance_pointer(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Property(name) => out = crate::error::pointer_push(&out, name),
            Step::Item(index) => out = crate::error::pointer_push(&out, &index.to_string()),
            Step::Branch(..) | Step::Conditional(_) => {}
        }
    }
    out
}

const MAX_DEPTH: usize = 24;
const MAX_CANDIDATES: usize = 48;
const NODE_BUDGET: u32 = 1_000;

/// Scalar keywords a candidate is filtered with before it is offered.
const SCALAR_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// A canonical valid value per `format`, and one that is not.
fn format_example(format: &str) -> Option<&'static str> {
    Some(match format {
        "date-time" => "2024-01-01T00:00:00Z",
        "date" => "2024-01-01",
        "time" => "00:00:00Z",
        "duration" => "P1D",
        "email" | "idn-email" => "a@example.com",
        "hostname" | "idn-hostname" => "example.com",
        "ipv4" => "127.0.0.1",
        "ipv6" => "::1",
        "uri" | "iri" => "https://example.com/a",
        "uri-reference" | "iri-reference" => "a",
        "uri-template" => "https://example.com/{a}",
        "uuid" => "00000000-0000-4000-8000-000000000000",
        "json-pointer" => "/a",
        "relative-json-pointer" => "0",
        "regex" => "a",
        _ => return None,
    })
}

pub(crate) struct Generator<'d> {
    doc: &'d Value,
    /// Rotates the `anyOf`/`oneOf` branch tried first, so that retries explore other shapes.
    variant: usize,
    scalar_checks: RefCell<HashMap<String, Option<jsonschema::Validator>>>,
    /// Nodes one public call may still visit: recursive schemas with many branches would
    /// otherwise make the search exponential.
    budget: Cell<u32>,
}

impl<'d> Generator<'d> {
    pub(crate) fn new(doc: &'d Value, variant: usize) -> Self {
        Generator {
            doc,
            variant,
            scalar_checks: RefCell::new(HashMap::new()),
            budget: Cell::new(NODE_BUDGET),
        }
    }

    /// The minimal instance of `node`, if the generator finds one.
    #[cfg(test)]
    pub(crate) fn generate(&self, node: &Value) -> Option<Value> {
        self.budget.set(NODE_BUDGET);
        self.first(node)
    }

    fn first(&self, node: &Value) -> Option<Value> {
        self.candidates_at(node, 0, true).into_iter().next()
    }

    /// Many instances of `node`, simplest first (objects and arrays: the minimal one and one with
    /// every declared property or one more item).
    pub(crate) fn candidates(&self, node: &Value) -> Vec<Value> {
        self.budget.set(NODE_BUDGET);
        self.candidates_at(node, 0, false)
    }

    /// A minimal instance of `node` whose part at `steps` is `leaf`.
    pub(crate) fn build_at(&self, node: &Value, steps: &[Step], leaf: &Value) -> Option<Value> {
        self.budget.set(NODE_BUDGET);
        self.build_at_depth(node, steps, Some(leaf), 0)
    }

    /// A minimal instance of `node` in which the part at `steps` exists (generated in its
    /// context), for witnesses that edit that part rather than replace it.
    pub(crate) fn build_context(&self, node: &Value, steps: &[Step]) -> Option<Value> {
        self.budget.set(NODE_BUDGET);
        self.build_at_depth(node, steps, None, 0)
    }

    fn build_at_depth(
        &self,
        node: &Value,
        steps: &[Step],
        leaf: Option<&Value>,
        depth: usize,
    ) -> Option<Value> {
        let Some((step, rest)) = steps.split_first() else {
            return match leaf {
                Some(leaf) => Some(leaf.clone()),
                None => self.first(node),
            };
        };
        if depth > MAX_DEPTH * 4 {
            return None;
        }
        let mut node = node::resolve(self.doc, node, "").value;
        let conditionals = node::conditionals(&node).len();
        if conditionals > 0 && matches!(step, Step::Property(_) | Step::Item(_)) {
            // Read the part under one conditional, the same one the context is generated under.
            node = node::under_conditional(&node, self.variant % conditionals)?;
        }
        match step {
            Step::Branch(keyword, index) => {
                let branch = node.get(*keyword)?.get(*index)?;
                let merged = node::merge(&node::without(&node, &[keyword]), branch);
                self.build_at_depth(&merged, rest, leaf, depth + 1)
            }
            Step::Conditional(index) => {
                let merged = node::under_conditional(&node, *index)?;
                self.build_at_depth(&merged, rest, leaf, depth + 1)
            }
            Step::Property(name) => {
                let typed = node::with(&node, "type", json!("object"));
                let mut base = match self.first(&typed) {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                let child_schema = property_schema(&node, name);
                let child = self.build_at_depth(&child_schema, rest, leaf, depth + 1)?;
                base.insert(name.clone(), child);
                Some(Value::Object(base))
            }
            Step::Item(index) => {
                let typed = node::with(&node, "type", json!("array"));
                let mut base = match self.first(&typed) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                while base.len() <= *index {
                    let filler = self
                        .first(&item_schema(&node, base.len()))
                        .unwrap_or(Value::Null);
                    base.push(filler);
                }
                let child =
                    self.build_at_depth(&item_schema(&node, *index), rest, leaf, depth + 1)?;
                base[*index] = child;
                Some(Value::Array(base))
            }
        }
    }

    fn candidates_at(&self, node: &Value, depth: usize, one: bool) -> Vec<Value> {
        if depth > MAX_DEPTH || self.budget.get() == 0 {
            return Vec::new();
        }
        self.budget.set(self.budget.get() - 1);
        let node = node::resolve(self.doc, node, "").value;
        match &node {
            Value::Bool(false) => return Vec::new(),
            Value::Bool(true) => return unconstrained_values(one),
            Value::Object(_) => {}
            _ => return Vec::new(),
        }
        let conditionals = node::conditionals(&node);
        if !conditionals.is_empty() {
            // Read like a union: each `if` with its `then`, then the node without any.
            let mut out = Vec::new();
            for k in 0..conditionals.len() {
                if let Some(merged) =
                    node::under_conditional(&node, (k + self.variant) % conditionals.len())
                {
                    out.extend(self.candidates_at(&merged, depth + 1, one));
                }
                if one && !out.is_empty() {
                    return out;
                }
            }
            out.extend(self.candidates_at(
                &node::without(&node, &[node::CONDITIONALS]),
                depth + 1,
                one,
            ));
            return dedup(out);
        }
        for keyword in ["oneOf", "anyOf"] {
            if let Some(branches) = node.get(keyword).and_then(Value::as_array) {
                let base = node::without(&node, &[keyword]);
                let mut out = Vec::new();
                for k in 0..branches.len() {
                    let branch = &branches[(k + self.variant) % branches.len()];
                    let merged = node::merge(&base, branch);
                    out.extend(self.candidates_at(&merged, depth + 1, one));
                    if one && !out.is_empty() {
                        break;
                    }
                }
                return dedup(out);
            }
        }
        if let Some(values) = node::allowed_values(&node) {
            return if one {
                values.into_iter().take(1).collect()
            } else {
                values
            };
        }
        let types = node::types(&node).unwrap_or_else(|| inferred_types(&node));
        let mut out = Vec::new();
        for t in &types {
            let found = match t.as_str() {
                "object" => self.object_candidates(&node, depth, one),
                "array" => self.array_candidates(&node, depth, one),
                "string" => self.filtered(&node, string_candidates(&node)),
                "integer" => self.filtered(&node, number_candidates(&node, true)),
                "number" => self.filtered(&node, number_candidates(&node, false)),
                "boolean" => vec![json!(false), json!(true)],
                "null" => vec![Value::Null],
                _ => Vec::new(),
            };
            out.extend(found);
            if one && !out.is_empty() {
                out.truncate(1);
                return out;
            }
        }
        out.truncate(MAX_CANDIDATES);
        dedup(out)
    }

    fn object_candidates(&self, node: &Value, depth: usize, one: bool) -> Vec<Value> {
        let properties = node::object(node, "properties")
            .cloned()
            .unwrap_or_default();
        let mut minimal = Map::new();
        for name in node::required(node) {
            let schema = property_schema(node, &name);
            match self
                .candidates_at(&schema, depth + 1, true)
                .into_iter()
                .next()
            {
                Some(value) => {
                    minimal.insert(name, value);
                }
                None => return Vec::new(),
            }
        }
        let min_properties = node::count(node, "minProperties").unwrap_or(0) as usize;
        for (name, schema) in &properties {
            if minimal.len() >= min_properties {
                break;
            }
            if !minimal.contains_key(name) {
                if let Some(value) = self
                    .candidates_at(schema, depth + 1, true)
                    .into_iter()
                    .next()
                {
                    minimal.insert(name.clone(), value);
                }
            }
        }
        let mut filler = 0;
        while minimal.len() < min_properties && filler < 64 {
            let name = format!("extra{filler}");
            filler += 1;
            if let Some(value) = self
                .candidates_at(&property_schema(node, &name), depth + 1, true)
                .into_iter()
                .next()
            {
                minimal.insert(name, value);
            }
        }
        let mut out = vec![Value::Object(minimal.clone())];
        if !one {
            let mut full = minimal;
            for (name, schema) in &properties {
                if !full.contains_key(name) {
                    if let Some(value) = self
                        .candidates_at(schema, depth + 1, true)
                        .into_iter()
                        .next()
                    {
                        full.insert(name.clone(), value);
                    }
                }
            }
            out.push(Value::Object(full));
        }
        dedup(out)
    }

    fn array_candidates(&self, node: &Value, depth: usize, one: bool) -> Vec<Value> {
        let min_items = node::count(node, "minItems").unwrap_or(0).min(64) as usize;
        let unique = node.get("uniqueItems") == Some(&Value::Bool(true));
        let mut items: Vec<Value> = Vec::new();
        for index in 0..min_items {
            let schema = item_schema(node, index);
            let value = if unique {
                self.candidates_at(&schema, depth + 1, false)
                    .into_iter()
                    .find(|candidate| !items.contains(candidate))
            } else {
                self.candidates_at(&schema, depth + 1, true)
                    .into_iter()
                    .next()
            };
            match value {
                Some(value) => items.push(value),
                None => return Vec::new(),
            }
        }
        if let Some(contains) = node.get("contains") {
            let schema = node::merge(&item_schema(node, 0), contains);
            if let Some(value) = self
                .candidates_at(&schema, depth + 1, true)
                .into_iter()
                .next()
            {
                if items.is_empty() {
                    items.push(value);
                } else {
                    items[0] = value;
                }
            }
        }
        let mut out = vec![Value::Array(items.clone())];
        let max_items = node::count(node, "maxItems").unwrap_or(u64::MAX) as usize;
        if !one && items.len() < max_items {
            if let Some(value) = self
                .candidates_at(&item_schema(node, items.len()), depth + 1, true)
                .into_iter()
                .next()
            {
                if !(unique && items.contains(&value)) {
                    items.push(value);
                    out.push(Value::Array(items));
                }
            }
        }
        out
    }

    /// Keeps the scalar candidates that satisfy the node's own scalar keywords, checked with
    /// jsonschema (so that `pattern` and `format` are read exactly as the validator reads them).
    fn filtered(&self, node: &Value, candidates: Vec<Value>) -> Vec<Value> {
        let mut local = Map::new();
        for keyword in SCALAR_KEYWORDS {
            if let Some(value) = node.get(*keyword) {
                local.insert((*keyword).to_string(), value.clone());
            }
        }
        let local = Value::Object(local);
        let key = local.to_string();
        let mut cache = self.scalar_checks.borrow_mut();
        let validator = cache.entry(key).or_insert_with(|| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&local)
                .ok()
        });
        let kept: Vec<Value> = match validator {
            Some(validator) => candidates
                .into_iter()
                .filter(|c| validator.is_valid(c))
                .collect(),
            None => candidates,
        };
        dedup(kept)
    }
}

fn unconstrained_values(one: bool) -> Vec<Value> {
    let all = vec![
        Value::Null,
        json!("a"),
        json!(0),
        json!(false),
        json!({}),
        json!([]),
    ];
    if one {
        all.into_iter().take(1).collect()
    } else {
        all
    }
}

fn dedup(values: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    for value in values {
        if !out.contains(&value) {
            out.push(value);
        }
    }
    out
}

/// The types a node without `type` implies through its keywords; all types when none do.
fn inferred_types(node: &Value) -> Vec<String> {
    let has = |keywords: &[&str]| keywords.iter().any(|k| node.get(*k).is_some());
    let mut out = Vec::new();
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
    ]) {
        out.push("object");
    }
    if has(&[
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
    ]) {
        out.push("array");
    }
    if has(&["minLength", "maxLength", "pattern", "format"]) {
        out.push("string");
    }
    if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        out.push("number");
    }
    if out.is_empty() {
        out = vec![
            "null", "string", "integer", "boolean", "object", "array", "number",
        ];
    }
    debug_assert!(out.iter().all(|t| ALL_TYPES.contains(t)));
    out.into_iter().map(str::to_string).collect()
}

/// The schema an object's property `name` is validated with.
pub(crate) fn property_schema(node: &Value, name: &str) -> Value {
    if let Some(schema) = node::object(node, "properties").and_then(|p| p.get(name)) {
        return schema.clone();
    }
    if let Some(patterns) = node::object(node, "patternProperties") {
        for (pattern, schema) in patterns {
            let matches = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&json!({"pattern": pattern}))
                .map(|v| v.is_valid(&json!(name)))
                .unwrap_or(false);
            if matches {
                return schema.clone();
            }
        }
    }
    node.get("additionalProperties")
        .cloned()
        .unwrap_or(Value::Bool(true))
}

/// The schema array item `index` is validated with (2020-12 `prefixItems`/`items`, or draft-07
/// tuple `items`/`additionalItems`).
pub(crate) fn item_schema(node: &Value, index: usize) -> Value {
    let (prefix, rest) = item_schemas(node);
    prefix
        .get(index)
        .cloned()
        .or(rest)
        .unwrap_or(Value::Bool(true))
}

/// The positional item schemas and the schema for the items after them.
pub(crate) fn item_schemas(node: &Value) -> (Vec<Value>, Option<Value>) {
    if let Some(prefix) = node.get("prefixItems").and_then(Value::as_array) {
        return (prefix.clone(), node.get("items").cloned());
    }
    match node.get("items") {
        Some(Value::Array(tuple)) => (tuple.clone(), node.get("additionalItems").cloned()),
        Some(schema) => (Vec::new(), Some(schema.clone())),
        None => (Vec::new(), None),
    }
}

fn string_candidates(node: &Value) -> Vec<Value> {
    let min = node::count(node, "minLength").unwrap_or(0).min(4096) as usize;
    let max = node::count(node, "maxLength")
        .map(|m| m.min(8192) as usize)
        .unwrap_or(min.max(1) + 64);
    let mut bases: Vec<String> = Vec::new();
    if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
        bases.extend(sample_strings(pattern));
    }
    if let Some(example) = node
        .get("format")
        .and_then(Value::as_str)
        .and_then(format_example)
    {
        bases.push(example.to_string());
    }
    for base in [
        "",
        "a",
        "x",
        "A",
        "0",
        "-",
        " ",
        "a b",
        "not-a-value",
        "00000000-0000-4000-8000-000000000000",
    ] {
        bases.push(base.to_string());
    }
    let mut out = Vec::new();
    for base in &bases {
        for pad in ['a', '0', 'Z', ' ', '-'] {
            let mut text: String = base.chars().take(max).collect();
            let length = text.chars().count();
            if length < min {
                text.extend(std::iter::repeat_n(pad, min - length));
            }
            out.push(Value::String(text));
        }
    }
    dedup(out)
}

fn number_candidates(node: &Value, integer: bool) -> Vec<Value> {
    let minimum = node::number(node, "minimum");
    let exclusive_minimum = node::number(node, "exclusiveMinimum");
    let maximum = node::number(node, "maximum");
    let exclusive_maximum = node::number(node, "exclusiveMaximum");
    let multiple_of = node::number(node, "multipleOf").filter(|m| *m > 0.0);
    let mut raw: Vec<f64> = vec![0.0];
    for bound in [minimum, exclusive_minimum].into_iter().flatten() {
        raw.extend([
            bound,
            bound + 1.0,
            bound + 0.5,
            bound + 0.25,
            bound.ceil(),
            bound.floor() + 1.0,
        ]);
    }
    for bound in [maximum, exclusive_maximum].into_iter().flatten() {
        raw.extend([
            bound,
            bound - 1.0,
            bound - 0.5,
            bound - 0.25,
            bound.floor(),
            bound.ceil() - 1.0,
        ]);
    }
    let low = minimum.or(exclusive_minimum);
    let high = maximum.or(exclusive_maximum);
    if let (Some(low), Some(high)) = (low, high) {
        let middle = (low + high) / 2.0;
        raw.extend([middle, middle.floor(), middle.ceil()]);
    }
    if let Some(m) = multiple_of {
        let start = low.map(|l| (l / m).ceil()).unwrap_or(0.0);
        raw.extend([
            start * m,
            (start + 1.0) * m,
            m,
            start * m + m / 2.0,
            m / 2.0,
        ]);
    }
    raw.extend([
        1.0,
        -1.0,
        0.5,
        2.0,
        3.0,
        7.0,
        1.5,
        -0.5,
        0.1,
        100.0,
        1_000_000.0,
        -1_000_000.0,
    ]);
    let mut out = Vec::new();
    for x in raw {
        if !x.is_finite() {
            continue;
        }
        let whole = x.fract() == 0.0 && x.abs() < 9.0e15;
        if integer && !whole {
            continue;
        }
        let value = if whole {
            Value::Number(Number::from(x as i64))
        } else {
            match Number::from_f64(x) {
                Some(n) => Value::Number(n),
                None => continue,
            }
        };
        out.push(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_instance_honours_required_and_bounds() {
        let schema = json!({
            "type": "object",
            "required": ["steps", "id", "size"],
            "properties": {
                "steps": {"type": "integer", "minimum": 1, "maximum": 150},
                "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "size": {"type": "integer", "minimum": 256, "multipleOf": 8},
                "note": {"type": "string"}
            }
        });
        let instance = Generator::new(&schema, 0).generate(&schema).unwrap();
        assert_eq!(
            instance,
            json!({"steps": 1, "id": "aaaaaaaaaaaaaaaa", "size": 256})
        );
        assert!(jsonschema::is_valid(&schema, &instance));
    }

    #[test]
    fn build_at_reaches_into_optional_parts() {
        let schema = json!({
            "type": "object",
            "properties": {"loras": {"type": "array", "items": {"$ref": "#/$defs/lora"}}},
            "$defs": {"lora": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "weight": {"type": "number"}}}}
        });
        let steps = [
            Step::Property("loras".into()),
            Step::Item(0),
            Step::Property("weight".into()),
        ];
        let instance = Generator::new(&schema, 0)
            .build_at(&schema, &steps, &json!(2.5))
            .unwrap();
        assert_eq!(instance, json!({"loras": [{"name": "", "weight": 2.5}]}));
        assert_eq!(instance_pointer(&steps), "/loras/0/weight");
    }
}
