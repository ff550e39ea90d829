//! The paired walk: reads schema A and schema B side by side and lists every place where B
//! rejects something A accepts, each with the instance path that reaches it and leaf values that
//! are valid under A's node there. Run with A = OLD it finds narrowings; with A = NEW, widenings.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::generate::{item_schemas, property_schema, Generator, Step};
use super::node::{self, admits_type, Node, ALL_TYPES};
use super::pattern::sample_strings;
use crate::error::pointer_push;

/// What changed, named once; [`Rule::name`] gives the word for the side it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    Type,
    EnumValue,
    Enum,
    Const,
    ConstChanged,
    Minimum,
    Maximum,
    MultipleOf,
    MinLength,
    MaxLength,
    Pattern,
    PatternChanged,
    Format,
    FormatChanged,
    MinItems,
    MaxItems,
    UniqueItems,
    MinProperties,
    MaxProperties,
    Required,
    PropertyRemoved,
    AdditionalProperties,
    SchemaFalse,
    Branch,
    Keyword,
    Reference,
}

impl Rule {
    pub(crate) const ALL: [Rule; 26] = [
        Rule::Type,
        Rule::EnumValue,
        Rule::Enum,
        Rule::Const,
        Rule::ConstChanged,
        Rule::Minimum,
        Rule::Maximum,
        Rule::MultipleOf,
        Rule::MinLength,
        Rule::MaxLength,
        Rule::Pattern,
        Rule::PatternChanged,
        Rule::Format,
        Rule::FormatChanged,
        Rule::MinItems,
        Rule::MaxItems,
        Rule::UniqueItems,
        Rule::MinProperties,
        Rule::MaxProperties,
        Rule::Required,
        Rule::PropertyRemoved,
        Rule::AdditionalProperties,
        Rule::SchemaFalse,
        Rule::Branch,
        Rule::Keyword,
        Rule::Reference,
    ];

    /// The rule's name: `narrowing` is true when B (the side that rejects) is NEW.
    pub(crate) fn name(self, narrowing: bool) -> &'static str {
        let (narrow, widen) = match self {
            Rule::Type => ("type-narrowed", "type-widened"),
            Rule::EnumValue => ("enum-value-removed", "enum-value-added"),
            Rule::Enum => ("enum-added", "enum-removed"),
            Rule::Const => ("const-added", "const-removed"),
            Rule::ConstChanged => ("const-changed", "const-changed"),
            Rule::Minimum => ("minimum-raised", "minimum-lowered"),
            Rule::Maximum => ("maximum-lowered", "maximum-raised"),
            Rule::MultipleOf => ("multiple-of-narrowed", "multiple-of-widened"),
            Rule::MinLength => ("min-length-raised", "min-length-lowered"),
            Rule::MaxLength => ("max-length-lowered", "max-length-raised"),
            Rule::Pattern => ("pattern-added", "pattern-removed"),
            Rule::PatternChanged => ("pattern-changed", "pattern-changed"),
            Rule::Format => ("format-added", "format-removed"),
            Rule::FormatChanged => ("format-changed", "format-changed"),
            Rule::MinItems => ("min-items-raised", "min-items-lowered"),
            Rule::MaxItems => ("max-items-lowered", "max-items-raised"),
            Rule::UniqueItems => ("unique-items-added", "unique-items-removed"),
            Rule::MinProperties => ("min-properties-raised", "min-properties-lowered"),
            Rule::MaxProperties => ("max-properties-lowered", "max-properties-raised"),
            Rule::Required => ("required-added", "required-removed"),
            Rule::PropertyRemoved => ("property-removed", "property-added"),
            Rule::AdditionalProperties => (
                "additional-properties-closed",
                "additional-properties-opened",
            ),
            Rule::SchemaFalse => ("schema-became-false", "schema-was-false"),
            Rule::Branch => ("branch-removed", "branch-added"),
            Rule::Keyword => ("keyword-changed", "keyword-changed"),
            Rule::Reference => ("ref-changed", "ref-changed"),
        };
        if narrowing {
            narrow
        } else {
            widen
        }
    }
}

/// One place where B rejects something A accepts.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rule: Rule,
    pub a_pointer: String,
    pub b_pointer: String,
    /// The instance path of the leaf the candidates are values for.
    pub steps: Vec<Step>,
    /// The instance path where B is expected to complain (the leaf, or the object holding it).
    pub location: Vec<Step>,
    /// Values for the leaf, valid under A's node there as far as the generator knows.
    pub candidates: Vec<Value>,
    /// A sentence saying what changed, written from B's side.
    pub message: String,
    /// B is read with the object at `b_pointer` closed (`unevaluatedProperties: false`): the
    /// property is no longer declared, so a consumer built from B ignores it.
    pub closed_reading: bool,
    /// A second way to build the witness: edit the object at `location` inside a context
    /// instance (used when the candidates, generated without that context, do not fit in it).
    pub patch: Option<Patch>,
}

/// An edit of the object at a change's location.
#[derive(Debug, Clone)]
pub(crate) enum Patch {
    /// Set property `.0` to one of the values `.1`.
    Insert(String, Vec<Value>),
    /// Remove property `.0`.
    Remove(String),
}

/// Keywords the walk compares itself; any other assertion keyword that differs is a generic
/// `keyword-changed`.
const MODELLED: &[&str] = &[
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
];

const MAX_DEPTH: usize = 64;

pub(crate) struct Walk<'d> {
    a_doc: &'d Value,
    b_doc: &'d Value,
    /// A is OLD: B rejecting is a narrowing, and a property NEW stops declaring counts.
    a_is_old: bool,
    /// Emit `keyword-changed` for keywords the walk does not model (only in the breaking view).
    generic: bool,
    generator: Generator<'d>,
    visited: HashSet<(String, String)>,
    pub changes: Vec<Change>,
    /// `OLD` or `NEW`, for messages.
    a_name: &'static str,
    b_name: &'static str,
}

impl<'d> Walk<'d> {
    pub(crate) fn run(
        a_doc: &'d Value,
        b_doc: &'d Value,
        a_is_old: bool,
        generic: bool,
    ) -> Vec<Change> {
        let mut walk = Walk {
            a_doc,
            b_doc,
            a_is_old,
            generic,
            generator: Generator::new(a_doc, 0),
            visited: HashSet::new(),
            changes: Vec::new(),
            a_name: if a_is_old { "OLD" } else { "NEW" },
            b_name: if a_is_old { "NEW" } else { "OLD" },
        };
        walk.compare(a_doc, "", b_doc, "", &mut Vec::new(), 0);
        walk.changes
    }

    fn push(
        &mut self,
        rule: Rule,
        a: &Node,
        b: &Node,
        steps: &[Step],
        candidates: Vec<Value>,
        message: String,
    ) {
        self.changes.push(Change {
            rule,
            a_pointer: a.pointer.clone(),
            b_pointer: b.pointer.clone(),
            steps: steps.to_vec(),
            location: steps.to_vec(),
            candidates,
            message,
            closed_reading: false,
            patch: None,
        });
    }

    fn set_patch(&mut self, patch: Patch) {
        if let Some(last) = self.changes.last_mut() {
            last.patch = Some(patch);
        }
    }

    fn compare(
        &mut self,
        a: &Value,
        a_pointer: &str,
        b: &Value,
        b_pointer: &str,
        steps: &mut Vec<Step>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let a = node::resolve(self.a_doc, a, a_pointer);
        let b = node::resolve(self.b_doc, b, b_pointer);
        // Equal text is only the same schema when no reference inside it can point elsewhere.
        let same = a.value == b.value && !has_reference(&a.value);
        if !self.visited.insert((a.pointer.clone(), b.pointer.clone())) || same {
            return;
        }
        if a.value == Value::Bool(false) || node::is_unconstrained(&b.value) {
            return;
        }
        if b.value == Value::Bool(false) {
            let candidates = self.generator.candidates(&a.value);
            self.push(
                Rule::SchemaFalse,
                &a,
                &b,
                steps,
                candidates,
                format!("{} accepts nothing here", self.b_name),
            );
            return;
        }
        let a = as_object_node(a);
        let (a_conditionals, b_conditionals) =
            (node::conditionals(&a.value), node::conditionals(&b.value));
        if !a_conditionals.is_empty() || !b_conditionals.is_empty() {
            self.compare_conditionals(&a, &b, &a_conditionals, &b_conditionals, steps, depth);
            return;
        }
        let a_ref = a.value.get("$ref");
        let b_ref = b.value.get("$ref");
        if a_ref.is_some() || b_ref.is_some() {
            // Left in place by `resolve`: not a local reference this tool can follow.
            if a_ref != b_ref && self.generic {
                let candidates = self.generator.candidates(&a.value);
                let message = format!(
                    "reference is {} in {} and {} in {} (not a local reference)",
                    show(a_ref),
                    self.a_name,
                    show(b_ref),
                    self.b_name
                );
                self.push(Rule::Reference, &a, &b, steps, candidates, message);
            }
            return;
        }
        let a_branches = branches(&a);
        let b_branches = branches(&b);
        if a_branches.is_none() && b_branches.is_none() {
            self.compare_keywords(&a, &b, steps, depth);
            return;
        }
        if let (Some((a_keyword, _)), Some((b_keyword, _))) = (&a_branches, &b_branches) {
            if a_keyword != b_keyword && self.generic {
                let candidates = self.generator.candidates(&a.value);
                let message = format!(
                    "`{a_keyword}` in {} is `{b_keyword}` in {}",
                    self.a_name, self.b_name
                );
                self.push(Rule::Keyword, &a, &b, steps, candidates, message);
            }
        }
        let a_list: Vec<(Option<Step>, Node)> = match a_branches {
            Some((keyword, list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, n)| (Some(Step::Branch(keyword, i)), n))
                .collect(),
            None => vec![(None, a.clone())],
        };
        let b_list: Vec<Node> = match b_branches {
            Some((_, list)) => list,
            None => vec![b.clone()],
        };
        for (step, a_branch) in a_list {
            let scored = b_list
                .iter()
                .map(|b_branch| (branch_score(&a_branch.value, &b_branch.value), b_branch))
                .max_by_key(|(score, _)| *score);
            let Some((score, b_branch)) = scored else {
                continue;
            };
            if score == 0 && b_list.len() > 1 {
                let candidates = self.generator.candidates(&a_branch.value);
                let message = format!(
                    "no branch of {} at {} matches the shape of {}'s {}",
                    self.b_name,
                    b.pointer_text(),
                    self.a_name,
                    a_branch.pointer_text()
                );
                self.push(Rule::Branch, &a_branch, &b, steps, candidates, message);
                continue;
            }
            if let Some(step) = &step {
                steps.push(step.clone());
            }
            let b_branch = b_branch.clone();
            self.compare(
                &a_branch.value,
                &a_branch.pointer,
                &b_branch.value,
                &b_branch.pointer,
                steps,
                depth + 1,
            );
            if step.is_some() {
                steps.pop();
            }
        }
    }

    /// Compares the nodes without their conditionals, then each conditional of A with the one of B
    /// that has the same `if`, read under that `if`.
    fn compare_conditionals(
        &mut self,
        a: &Node,
        b: &Node,
        a_list: &[Value],
        b_list: &[Value],
        steps: &mut Vec<Step>,
        depth: usize,
    ) {
        let strip = |n: &Node| Node {
            value: node::without(&n.value, &[node::CONDITIONALS]),
            pointer: n.pointer.clone(),
        };
        let (a_base, b_base) = (strip(a), strip(b));
        self.visited.remove(&(a.pointer.clone(), b.pointer.clone()));
        self.compare(
            &a_base.value,
            &a_base.pointer,
            &b_base.value,
            &b_base.pointer,
            steps,
            depth + 1,
        );
        let then_pointer = |c: &Value| -> String {
            let at = c.get("pointer").and_then(Value::as_str).unwrap_or_default();
            if c.get("then").is_some() {
                pointer_push(at, "then")
            } else {
                at.to_string()
            }
        };
        for (i, a_conditional) in a_list.iter().enumerate() {
            let Some(a_read) = node::under_conditional(&a.value, i) else {
                continue;
            };
            let matching = b_list
                .iter()
                .position(|b_conditional| b_conditional.get("if") == a_conditional.get("if"));
            steps.push(Step::Conditional(i));
            match matching
                .and_then(|j| node::under_conditional(&b.value, j).map(|b_read| (j, b_read)))
            {
                Some((j, b_read)) => {
                    self.compare(
                        &a_read,
                        &then_pointer(a_conditional),
                        &b_read,
                        &then_pointer(&b_list[j]),
                        steps,
                        depth + 1,
                    );
                    if a_conditional.get("else") != b_list[j].get("else") && self.generic {
                        let candidates = self.generator.candidates(&a_base.value);
                        let (a_at, b_at) = (
                            Node {
                                value: a_read.clone(),
                                pointer: then_pointer(a_conditional),
                            },
                            Node {
                                value: b_read,
                                pointer: then_pointer(&b_list[j]),
                            },
                        );
                        steps.pop();
                        self.push(
                            Rule::Keyword,
                            &a_at,
                            &b_at,
                            steps,
                            candidates,
                            format!(
                                "the `else` of this conditional differs between {} and {}",
                                self.a_name, self.b_name
                            ),
                        );
                        steps.push(Step::Conditional(i));
                    }
                }
                None if self.generic => {
                    let candidates = self.generator.candidates(&a_read);
                    let a_at = Node {
                        value: a_read,
                        pointer: then_pointer(a_conditional),
                    };
                    let message = format!(
                        "{} has no conditional with the `if` of {}'s {}",
                        self.b_name,
                        self.a_name,
                        a_at.pointer_text()
                    );
                    self.push(Rule::Keyword, &a_at, b, steps, candidates, message);
                }
                None => {}
            }
            steps.pop();
        }
        if !self.generic {
            return;
        }
        for b_conditional in b_list {
            if a_list
                .iter()
                .any(|a_conditional| a_conditional.get("if") == b_conditional.get("if"))
            {
                continue;
            }
            let Some(condition) = b_conditional.get("if") else {
                continue;
            };
            let candidates = self
                .generator
                .candidates(&node::merge(&a_base.value, condition));
            let b_at = Node {
                value: b_conditional.clone(),
                pointer: then_pointer(b_conditional),
            };
            let message = format!(
                "{} has no conditional with the `if` of {}'s {}",
                self.a_name,
                self.b_name,
                b_at.pointer_text()
            );
            self.push(Rule::Keyword, &a_base, &b_at, steps, candidates, message);
        }
    }

    fn compare_keywords(&mut self, a: &Node, b: &Node, steps: &mut Vec<Step>, depth: usize) {
        let a_types = node::types(&a.value);
        let b_types = node::types(&b.value);
        self.compare_types(a, b, &a_types, &b_types, steps);
        self.compare_values(a, b, steps);
        let both = |t: &str| admits_type(&a_types, t) && admits_type(&b_types, t);
        if both("integer") {
            self.compare_numbers(a, b, &a_types, steps);
        }
        if both("string") {
            self.compare_strings(a, b, steps);
        }
        if both("array") {
            self.compare_arrays(a, b, steps, depth);
        }
        if both("object") {
            self.compare_objects(a, b, steps, depth);
        }
        if self.generic {
            self.compare_unmodelled(a, b, steps);
        }
    }

    fn compare_types(
        &mut self,
        a: &Node,
        b: &Node,
        a_types: &Option<Vec<String>>,
        b_types: &Option<Vec<String>>,
        steps: &[Step],
    ) {
        let offered: Vec<String> = match a_types {
            Some(list) => list.clone(),
            None => ALL_TYPES
                .iter()
                .filter(|t| **t != "integer")
                .map(|t| t.to_string())
                .collect(),
        };
        let mut lost = Vec::new();
        let mut candidates = Vec::new();
        for t in &offered {
            if admits_type(b_types, t) {
                continue;
            }
            if t == "number" && admits_type(b_types, "integer") {
                lost.push("non-integer number".to_string());
                let numbers =
                    self.generator
                        .candidates(&node::with(&a.value, "type", json!("number")));
                candidates.extend(numbers.into_iter().filter(|v| node::type_of(v) == "number"));
            } else {
                lost.push(t.clone());
                candidates.extend(self.generator.candidates(&node::with(
                    &a.value,
                    "type",
                    json!(t),
                )));
            }
        }
        if !lost.is_empty() {
            let message = format!(
                "{} rejects type {} (its type: {})",
                self.b_name,
                lost.join(", "),
                show(b.value.get("type"))
            );
            self.push(Rule::Type, a, b, steps, candidates, message);
        }
    }

    fn compare_values(&mut self, a: &Node, b: &Node, steps: &[Step]) {
        let Some(b_values) = node::allowed_values(&b.value) else {
            return;
        };
        match node::allowed_values(&a.value) {
            Some(a_values) => {
                let both_const = a.value.get("const").is_some() && b.value.get("const").is_some();
                for value in a_values.iter().filter(|v| !contains_value(&b_values, v)) {
                    let (rule, message) = if both_const {
                        (
                            Rule::ConstChanged,
                            format!(
                                "const is {value} in {} and {} in {}",
                                self.a_name, b_values[0], self.b_name
                            ),
                        )
                    } else {
                        (
                            Rule::EnumValue,
                            format!("{} rejects value {value}", self.b_name),
                        )
                    };
                    self.push(rule, a, b, steps, vec![value.clone()], message);
                }
            }
            None => {
                let candidates: Vec<Value> = self
                    .generator
                    .candidates(&a.value)
                    .into_iter()
                    .filter(|v| !contains_value(&b_values, v))
                    .collect();
                let (rule, message) = if b.value.get("const").is_some() {
                    (
                        Rule::Const,
                        format!("{} accepts only {}", self.b_name, b_values[0]),
                    )
                } else {
                    (
                        Rule::Enum,
                        format!(
                            "{} accepts only {}",
                            self.b_name,
                            Value::Array(b_values.clone())
                        ),
                    )
                };
                self.push(rule, a, b, steps, candidates, message);
            }
        }
    }

    fn compare_numbers(
        &mut self,
        a: &Node,
        b: &Node,
        a_types: &Option<Vec<String>>,
        steps: &[Step],
    ) {
        let numeric: Vec<Value> = match a_types {
            Some(list) => list
                .iter()
                .filter(|t| *t == "number" || *t == "integer")
                .map(|t| json!(t))
                .collect(),
            None => vec![json!("number")],
        };
        let a_numeric = node::with(&a.value, "type", Value::Array(numeric));
        if let Some((bound, exclusive)) =
            tighter(lower_bound(&b.value), lower_bound(&a.value), true)
        {
            let below = if exclusive {
                node::with(&a_numeric, "maximum", json!(bound))
            } else {
                node::with(&a_numeric, "exclusiveMaximum", json!(bound))
            };
            let candidates = self.generator.candidates(&below);
            let message = format!(
                "{} rejects values {} {}",
                self.b_name,
                if exclusive { "<=" } else { "<" },
                number_text(bound)
            );
            self.push(Rule::Minimum, a, b, steps, candidates, message);
        }
        if let Some((bound, exclusive)) =
            tighter(upper_bound(&b.value), upper_bound(&a.value), false)
        {
            let above = if exclusive {
                node::with(&a_numeric, "minimum", json!(bound))
            } else {
                node::with(&a_numeric, "exclusiveMinimum", json!(bound))
            };
            let candidates = self.generator.candidates(&above);
            let message = format!(
                "{} rejects values {} {}",
                self.b_name,
                if exclusive { ">=" } else { ">" },
                number_text(bound)
            );
            self.push(Rule::Maximum, a, b, steps, candidates, message);
        }
        if let Some(b_multiple) = node::number(&b.value, "multipleOf").filter(|m| *m > 0.0) {
            let covered = node::number(&a.value, "multipleOf").is_some_and(|a_multiple| {
                let ratio = a_multiple / b_multiple;
                (ratio - ratio.round()).abs() < 1e-9
            });
            if !covered {
                let candidates = self.generator.candidates(&a_numeric);
                let message = format!(
                    "{} accepts only multiples of {}",
                    self.b_name,
                    number_text(b_multiple)
                );
                self.push(Rule::MultipleOf, a, b, steps, candidates, message);
            }
        }
    }

    fn compare_strings(&mut self, a: &Node, b: &Node, steps: &[Step]) {
        let a_string = node::with(&a.value, "type", json!("string"));
        let a_min = node::count(&a.value, "minLength").unwrap_or(0);
        if let Some(b_min) = node::count(&b.value, "minLength").filter(|m| *m > a_min) {
            let candidates =
                self.generator
                    .candidates(&node::with(&a_string, "maxLength", json!(b_min - 1)));
            self.push(
                Rule::MinLength,
                a,
                b,
                steps,
                candidates,
                format!("{} rejects strings shorter than {b_min}", self.b_name),
            );
        }
        let a_max = node::count(&a.value, "maxLength");
        if let Some(b_max) =
            node::count(&b.value, "maxLength").filter(|m| a_max.is_none_or(|a_max| *m < a_max))
        {
            let candidates = self.generator.candidates(&node::with(
                &a_string,
                "minLength",
                json!(b_max.saturating_add(1)),
            ));
            self.push(
                Rule::MaxLength,
                a,
                b,
                steps,
                candidates,
                format!("{} rejects strings longer than {b_max}", self.b_name),
            );
        }
        let a_pattern = a.value.get("pattern");
        if let Some(b_pattern) = b.value.get("pattern").filter(|p| Some(*p) != a_pattern) {
            let (rule, message) = match a_pattern {
                None => (
                    Rule::Pattern,
                    format!("{} requires pattern {b_pattern}", self.b_name),
                ),
                Some(a_pattern) => (
                    Rule::PatternChanged,
                    format!(
                        "pattern is {a_pattern} in {} and {b_pattern} in {}",
                        self.a_name, self.b_name
                    ),
                ),
            };
            let candidates = self.generator.candidates(&a_string);
            self.push(rule, a, b, steps, candidates, message);
        }
        let a_format = a.value.get("format");
        if let Some(b_format) = b.value.get("format").filter(|f| Some(*f) != a_format) {
            let (rule, message) = match a_format {
                None => (
                    Rule::Format,
                    format!("{} requires format {b_format}", self.b_name),
                ),
                Some(a_format) => (
                    Rule::FormatChanged,
                    format!(
                        "format is {a_format} in {} and {b_format} in {}",
                        self.a_name, self.b_name
                    ),
                ),
            };
            let candidates = self.generator.candidates(&a_string);
            self.push(rule, a, b, steps, candidates, message);
        }
    }

    fn compare_arrays(&mut self, a: &Node, b: &Node, steps: &mut Vec<Step>, depth: usize) {
        let a_array = node::with(&a.value, "type", json!("array"));
        let a_min = node::count(&a.value, "minItems").unwrap_or(0);
        if let Some(b_min) = node::count(&b.value, "minItems").filter(|m| *m > a_min) {
            let candidates =
                self.generator
                    .candidates(&node::with(&a_array, "maxItems", json!(b_min - 1)));
            self.push(
                Rule::MinItems,
                a,
                b,
                steps,
                candidates,
                format!(
                    "{} rejects arrays with fewer than {b_min} items",
                    self.b_name
                ),
            );
        }
        let a_max = node::count(&a.value, "maxItems");
        if let Some(b_max) =
            node::count(&b.value, "maxItems").filter(|m| a_max.is_none_or(|a_max| *m < a_max))
        {
            let candidates = self.generator.candidates(&node::with(
                &a_array,
                "minItems",
                json!(b_max.saturating_add(1).min(1024)),
            ));
            self.push(
                Rule::MaxItems,
                a,
                b,
                steps,
                candidates,
                format!(
                    "{} rejects arrays with more than {b_max} items",
                    self.b_name
                ),
            );
        }
        let unique = |n: &Node| n.value.get("uniqueItems") == Some(&Value::Bool(true));
        if unique(b) && !unique(a) {
            let repeated = node::with(
                &node::without(&a_array, &["uniqueItems"]),
                "minItems",
                json!(a_min.max(2)),
            );
            let candidates = self.generator.candidates(&repeated);
            self.push(
                Rule::UniqueItems,
                a,
                b,
                steps,
                candidates,
                format!("{} rejects arrays with repeated items", self.b_name),
            );
        }
        let (a_prefix, a_rest) = item_schemas(&a.value);
        let (b_prefix, b_rest) = item_schemas(&b.value);
        let positional = a_prefix.len().max(b_prefix.len());
        let item_pointer = |n: &Node, prefix_len: usize, i: usize| -> String {
            if i < prefix_len {
                let keyword = if n.value.get("prefixItems").is_some() {
                    "prefixItems"
                } else {
                    "items"
                };
                pointer_push(&pointer_push(&n.pointer, keyword), &i.to_string())
            } else if n.value.get("prefixItems").is_some()
                || !n.value.get("items").is_some_and(Value::is_array)
            {
                pointer_push(&n.pointer, "items")
            } else {
                pointer_push(&n.pointer, "additionalItems")
            }
        };
        for i in 0..=positional {
            let a_item = a_prefix
                .get(i)
                .cloned()
                .or_else(|| a_rest.clone())
                .unwrap_or(Value::Bool(true));
            let b_item = b_prefix
                .get(i)
                .cloned()
                .or_else(|| b_rest.clone())
                .unwrap_or(Value::Bool(true));
            let a_item_pointer = item_pointer(a, a_prefix.len(), i);
            let b_item_pointer = item_pointer(b, b_prefix.len(), i);
            steps.push(Step::Item(i));
            self.compare(
                &a_item,
                &a_item_pointer,
                &b_item,
                &b_item_pointer,
                steps,
                depth + 1,
            );
            steps.pop();
        }
    }

    fn compare_objects(&mut self, a: &Node, b: &Node, steps: &mut Vec<Step>, depth: usize) {
        let a_object = node::with(&a.value, "type", json!("object"));
        let a_properties = node::object(&a.value, "properties")
            .cloned()
            .unwrap_or_default();
        let b_properties = node::object(&b.value, "properties")
            .cloned()
            .unwrap_or_default();
        let b_additional = b.value.get("additionalProperties");
        let a_additional = a.value.get("additionalProperties");
        let properties_of = |n: &Node| pointer_push(&n.pointer, "properties");
        for (name, a_schema) in &a_properties {
            let a_pointer = pointer_push(&properties_of(a), name);
            let b_schema = property_schema(&b.value, name);
            let b_declares = b_properties.contains_key(name) || declared_by_pattern(&b.value, name);
            if b_declares || matches!(b_additional, Some(s) if s.is_object()) {
                let b_pointer = if b_properties.contains_key(name) {
                    pointer_push(&properties_of(b), name)
                } else {
                    pointer_push(&b.pointer, "additionalProperties")
                };
                steps.push(Step::Property(name.clone()));
                self.compare(
                    a_schema,
                    &a_pointer,
                    &b_schema,
                    &b_pointer,
                    steps,
                    depth + 1,
                );
                steps.pop();
                continue;
            }
            let closed = b_additional == Some(&Value::Bool(false));
            if !closed && !self.a_is_old {
                // NEW declares a property OLD's open object never named: old consumers ignore it.
                continue;
            }
            let mut leaf_steps = steps.clone();
            leaf_steps.push(Step::Property(name.clone()));
            let candidates = self.generator.candidates(a_schema);
            let candidates_for_patch = candidates.clone();
            let message = if closed {
                format!(
                    "{} rejects property `{name}` (additionalProperties: false)",
                    self.b_name
                )
            } else {
                format!("{} no longer declares property `{name}`; it still lets it through as an undeclared property, which a consumer built from {} ignores", self.b_name, self.b_name)
            };
            self.changes.push(Change {
                rule: Rule::PropertyRemoved,
                a_pointer,
                b_pointer: b.pointer.clone(),
                steps: leaf_steps,
                location: steps.clone(),
                candidates,
                message,
                closed_reading: !closed,
                patch: Some(Patch::Insert(name.clone(), candidates_for_patch)),
            });
        }
        for (name, b_schema) in &b_properties {
            if a_properties.contains_key(name) {
                continue;
            }
            if let Some(a_schema) = a_additional.filter(|s| s.is_object()) {
                steps.push(Step::Property(name.clone()));
                let a_pointer = pointer_push(&a.pointer, "additionalProperties");
                let b_pointer = pointer_push(&properties_of(b), name);
                self.compare(a_schema, &a_pointer, b_schema, &b_pointer, steps, depth + 1);
                steps.pop();
            }
        }
        let a_required = node::required(&a.value);
        for name in node::required(&b.value)
            .into_iter()
            .filter(|n| !a_required.contains(n))
        {
            let candidates: Vec<Value> = self
                .generator
                .candidates(&a_object)
                .into_iter()
                .filter(|c| c.get(&name).is_none())
                .collect();
            self.push(
                Rule::Required,
                a,
                b,
                steps,
                candidates,
                format!("{} requires property `{name}`", self.b_name),
            );
            self.set_patch(Patch::Remove(name));
        }
        self.compare_additional(a, b, &a_object, &a_properties, &b_properties, steps, depth);
        self.compare_pattern_properties(a, b, steps, depth);
        let a_min = node::count(&a.value, "minProperties").unwrap_or(0);
        if let Some(b_min) = node::count(&b.value, "minProperties").filter(|m| *m > a_min) {
            let candidates = self.generator.candidates(&node::with(
                &a_object,
                "maxProperties",
                json!(b_min - 1),
            ));
            self.push(
                Rule::MinProperties,
                a,
                b,
                steps,
                candidates,
                format!(
                    "{} rejects objects with fewer than {b_min} properties",
                    self.b_name
                ),
            );
        }
        let a_max = node::count(&a.value, "maxProperties");
        if let Some(b_max) =
            node::count(&b.value, "maxProperties").filter(|m| a_max.is_none_or(|a_max| *m < a_max))
        {
            let candidates = self.generator.candidates(&node::with(
                &a_object,
                "minProperties",
                json!(b_max.saturating_add(1).min(256)),
            ));
            self.push(
                Rule::MaxProperties,
                a,
                b,
                steps,
                candidates,
                format!(
                    "{} rejects objects with more than {b_max} properties",
                    self.b_name
                ),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_additional(
        &mut self,
        a: &Node,
        b: &Node,
        a_object: &Value,
        a_properties: &serde_json::Map<String, Value>,
        b_properties: &serde_json::Map<String, Value>,
        steps: &mut Vec<Step>,
        depth: usize,
    ) {
        let Some(b_additional) = b.value.get("additionalProperties") else {
            return;
        };
        let a_additional = a
            .value
            .get("additionalProperties")
            .cloned()
            .unwrap_or(Value::Bool(true));
        if a_additional == Value::Bool(false) {
            return;
        }
        let fresh = fresh_property_name(a_properties, b_properties, &b.value);
        if *b_additional == Value::Bool(false) {
            let value_schema = a_additional.clone();
            let filler = self.generator.candidates(&value_schema);
            let candidates: Vec<Value> = self
                .generator
                .candidates(a_object)
                .into_iter()
                .filter_map(|c| match c {
                    Value::Object(mut map) => {
                        map.insert(
                            fresh.clone(),
                            filler.first().cloned().unwrap_or(Value::Null),
                        );
                        Some(Value::Object(map))
                    }
                    _ => None,
                })
                .collect();
            let message = format!(
                "{} rejects undeclared properties (such as `{fresh}`)",
                self.b_name
            );
            self.push(Rule::AdditionalProperties, a, b, steps, candidates, message);
            self.set_patch(Patch::Insert(fresh, filler));
            return;
        }
        steps.push(Step::Property(fresh));
        let a_pointer = pointer_push(&a.pointer, "additionalProperties");
        let b_pointer = pointer_push(&b.pointer, "additionalProperties");
        self.compare(
            &a_additional,
            &a_pointer,
            b_additional,
            &b_pointer,
            steps,
            depth + 1,
        );
        steps.pop();
    }

    fn compare_pattern_properties(
        &mut self,
        a: &Node,
        b: &Node,
        steps: &mut Vec<Step>,
        depth: usize,
    ) {
        let Some(b_patterns) = node::object(&b.value, "patternProperties").cloned() else {
            return;
        };
        let a_patterns = node::object(&a.value, "patternProperties")
            .cloned()
            .unwrap_or_default();
        for (pattern, b_schema) in &b_patterns {
            let declared = |name: &str| {
                node::object(&a.value, "properties").is_some_and(|p| p.contains_key(name))
                    || node::object(&b.value, "properties").is_some_and(|p| p.contains_key(name))
            };
            let Some(name) = sample_strings(pattern).into_iter().find(|n| !declared(n)) else {
                continue;
            };
            let (a_schema, a_pointer) = match a_patterns.get(pattern) {
                Some(schema) => (
                    schema.clone(),
                    pointer_push(&pointer_push(&a.pointer, "patternProperties"), pattern),
                ),
                None => match a.value.get("additionalProperties") {
                    Some(schema) => (
                        schema.clone(),
                        pointer_push(&a.pointer, "additionalProperties"),
                    ),
                    None if self.a_is_old || a.value.get("patternProperties").is_some() => {
                        (Value::Bool(true), a.pointer.clone())
                    }
                    None => continue,
                },
            };
            let b_pointer = pointer_push(&pointer_push(&b.pointer, "patternProperties"), pattern);
            steps.push(Step::Property(name));
            self.compare(
                &a_schema,
                &a_pointer,
                b_schema,
                &b_pointer,
                steps,
                depth + 1,
            );
            steps.pop();
        }
    }

    fn compare_unmodelled(&mut self, a: &Node, b: &Node, steps: &[Step]) {
        let keys = |n: &Node| -> Vec<String> {
            n.value
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut keywords = keys(a);
        for k in keys(b) {
            if !keywords.contains(&k) {
                keywords.push(k);
            }
        }
        for keyword in keywords {
            if node::is_annotation(&keyword) || MODELLED.contains(&keyword.as_str()) {
                continue;
            }
            let (a_value, b_value) = (a.value.get(&keyword), b.value.get(&keyword));
            if a_value != b_value {
                let candidates = self.generator.candidates(&a.value);
                let message = format!(
                    "`{keyword}` is {} in {} and {} in {}",
                    show(a_value),
                    self.a_name,
                    show(b_value),
                    self.b_name
                );
                self.push(Rule::Keyword, a, b, steps, candidates, message);
            }
        }
    }
}

impl Node {
    fn pointer_text(&self) -> String {
        format!("#{}", self.pointer)
    }
}

fn has_reference(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "$ref" || k == "$dynamicRef" || has_reference(v)),
        Value::Array(items) => items.iter().any(has_reference),
        _ => false,
    }
}

fn show(value: Option<&Value>) -> String {
    value
        .map(Value::to_string)
        .unwrap_or_else(|| "(absent)".into())
}

/// A boolean schema as the equivalent object, so keyword lookups work on it.
fn as_object_node(node: Node) -> Node {
    match node.value {
        Value::Bool(true) => Node {
            value: json!({}),
            pointer: node.pointer,
        },
        _ => node,
    }
}

/// The `anyOf`/`oneOf` branches of a node, each merged with the node's other keywords.
fn branches(n: &Node) -> Option<(&'static str, Vec<Node>)> {
    for keyword in ["oneOf", "anyOf"] {
        if let Some(list) = n.value.get(keyword).and_then(Value::as_array) {
            let base = node::without(&n.value, &[keyword]);
            let keyword_pointer = pointer_push(&n.pointer, keyword);
            let merged = list
                .iter()
                .enumerate()
                .map(|(i, branch)| Node {
                    value: node::merge(&base, branch),
                    pointer: pointer_push(&keyword_pointer, &i.to_string()),
                })
                .collect();
            return Some((keyword, merged));
        }
    }
    None
}

/// How alike two branches look: equal, same types, same discriminating `const`s, shared properties.
fn branch_score(a: &Value, b: &Value) -> u32 {
    if a == b {
        return 100;
    }
    let mut score = 0;
    let (a_types, b_types) = (node::types(a), node::types(b));
    if a_types == b_types {
        score += 2;
    } else if a_types
        .as_ref()
        .is_some_and(|list| list.iter().any(|t| admits_type(&b_types, t)))
    {
        score += 1;
    }
    if node::allowed_values(a).is_some() && node::allowed_values(a) == node::allowed_values(b) {
        score += 4;
    }
    if let (Some(a_props), Some(b_props)) =
        (node::object(a, "properties"), node::object(b, "properties"))
    {
        for (name, a_prop) in a_props {
            if let Some(b_prop) = b_props.get(name) {
                score += 1;
                if a_prop.get("const").is_some() && a_prop.get("const") == b_prop.get("const") {
                    score += 8;
                }
            }
        }
    }
    if a.get("$ref").is_some() && a.get("$ref") == b.get("$ref") {
        score += 8;
    }
    score
}

fn contains_value(list: &[Value], value: &Value) -> bool {
    list.iter()
        .any(|v| v == value || (v.is_number() && value.is_number() && v.as_f64() == value.as_f64()))
}

/// The lower bound of a node: (value, exclusive).
fn lower_bound(node: &Value) -> Option<(f64, bool)> {
    let inclusive = node::number(node, "minimum").map(|v| (v, false));
    let exclusive = node::number(node, "exclusiveMinimum").map(|v| (v, true));
    tighter(inclusive, exclusive, true)
        .or(inclusive)
        .or(exclusive)
}

fn upper_bound(node: &Value) -> Option<(f64, bool)> {
    let inclusive = node::number(node, "maximum").map(|v| (v, false));
    let exclusive = node::number(node, "exclusiveMaximum").map(|v| (v, true));
    tighter(inclusive, exclusive, false)
        .or(inclusive)
        .or(exclusive)
}

/// `candidate` when it is strictly tighter than `current` (a lower bound when `lower`).
fn tighter(
    candidate: Option<(f64, bool)>,
    current: Option<(f64, bool)>,
    lower: bool,
) -> Option<(f64, bool)> {
    let (value, exclusive) = candidate?;
    let Some((current_value, current_exclusive)) = current else {
        return candidate;
    };
    let beyond = if lower {
        value > current_value
    } else {
        value < current_value
    };
    if beyond || (value == current_value && exclusive && !current_exclusive) {
        Some((value, exclusive))
    } else {
        None
    }
}

fn declared_by_pattern(node: &Value, name: &str) -> bool {
    node::object(node, "patternProperties").is_some_and(|patterns| {
        patterns.keys().any(|pattern| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&json!({"pattern": pattern}))
                .map(|v| v.is_valid(&json!(name)))
                .unwrap_or(false)
        })
    })
}

/// A property name neither schema declares, for witnesses that need an undeclared property.
fn fresh_property_name(
    a_properties: &serde_json::Map<String, Value>,
    b_properties: &serde_json::Map<String, Value>,
    b: &Value,
) -> String {
    (0..)
        .map(|i| {
            if i == 0 {
                "undeclared_property".to_string()
            } else {
                format!("undeclared_property_{i}")
            }
        })
        .find(|name| {
            !a_properties.contains_key(name)
                && !b_properties.contains_key(name)
                && !declared_by_pattern(b, name)
        })
        .unwrap_or_default()
}

/// A bound as the schema author wrote it: `8`, not `8.0`.
fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}
