//! The protocol change gate: a direction-aware comparison of two JSON Schemas that proves every
//! break it reports with a counterexample.
//!
//! - `request` direction (the schema a consumer accepts, while producers keep sending messages
//!   valid under OLD): a change breaks when NEW rejects something OLD accepted.
//! - `reply` direction (the schema of what a producer sends, while consumers were written against
//!   OLD): a change breaks when NEW allows something OLD did not.
//!
//! One walk (`walk`) lists the places where schema B rejects something schema A accepts; run
//! with A = OLD it finds narrowings, with A = NEW widenings. For each place in the breaking
//! direction the gate builds candidate instances (`generate`) and keeps the first one
//! jsonschema confirms (`verify`); without one the finding is `unknown`, never `compatible`.
//! The changes of the other direction are listed as `compatible`.
//!
//! Reading conventions, chosen to match how the protocol's two sides behave:
//! - `format` asserts (the other side may validate it).
//! - Producers may send properties no schema declares, but not ones a later schema declares with
//!   another meaning; so adding an optional property to an open object is compatible, while
//!   closing an object (`additionalProperties: false`) breaks requests.
//! - In the request direction a property NEW stops declaring breaks even when NEW's object is
//!   open: NEW still lets the value through, but a consumer built from NEW ignores it (the silent
//!   drop the protocol forbids). Its counterexample is checked against NEW read as not accepting
//!   that property at that object, and the finding says so.

mod canonical;
mod generate;
mod node;
mod pattern;
mod verify;
mod walk;

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Errors, FieldError};
use generate::{instance_pointer, Generator, Step};
use walk::{Change, Walk};

/// Which way a change breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The schema of what a consumer accepts: narrowing breaks.
    Request,
    /// The schema of what a producer sends: widening breaks.
    Reply,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "request" => Some(Direction::Request),
            "reply" => Some(Direction::Reply),
            _ => None,
        }
    }

    /// The `x-direction` annotation of a schema document.
    pub fn declared(doc: &Value) -> Option<Direction> {
        doc.get("x-direction")
            .and_then(Value::as_str)
            .and_then(Direction::parse)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Proven by a counterexample that jsonschema confirmed.
    Breaking,
    /// Looks like a break in the breaking direction, but no counterexample could be confirmed.
    Unknown,
    /// A change in the direction that cannot break the other side.
    Compatible,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Breaking => "breaking",
            Severity::Unknown => "unknown",
            Severity::Compatible => "compatible",
        }
    }
}

/// A counterexample: valid under one schema, rejected by the other, as jsonschema checked it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counterexample {
    /// The instance.
    pub instance: Value,
    /// `old` or `new`: the schema that accepts it.
    pub valid_under: &'static str,
    /// `old` or `new`: the schema that rejects it.
    pub invalid_under: &'static str,
    /// What the rejecting schema said (instance path: message).
    pub errors: Vec<String>,
    /// Set when the rejecting schema was read as no longer accepting one property it stopped
    /// declaring (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reading: Option<String>,
}

/// One difference between the two schemas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    /// JSON Pointer into OLD (`""` is the root).
    pub old_pointer: String,
    /// JSON Pointer into NEW.
    pub new_pointer: String,
    /// Where in an instance the difference shows (array items as index 0).
    pub instance_path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
}

/// The outcome of one comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub direction: Direction,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// True when nothing is proven or suspected to break (no `breaking`, no `unknown`).
    pub fn passes(&self) -> bool {
        self.count(Severity::Breaking) == 0 && self.count(Severity::Unknown) == 0
    }

    /// The human-readable form the CLI prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "(no x-version)".into());
        let _ = writeln!(
            out,
            "schema-diff, {} direction: OLD {} -> NEW {}",
            self.direction.as_str(),
            version(&self.old_version),
            version(&self.new_version)
        );
        for finding in &self.findings {
            let label = match finding.severity {
                Severity::Breaking => "BREAKING",
                Severity::Unknown => "UNKNOWN",
                Severity::Compatible => "compatible",
            };
            let at = if finding.instance_path.is_empty() {
                "(document)"
            } else {
                &finding.instance_path
            };
            let _ = writeln!(out, "\n{label} {} at {at}", finding.rule);
            let _ = writeln!(out, "  {}", finding.message);
            let _ = writeln!(out, "  old: #{}", finding.old_pointer);
            let _ = writeln!(out, "  new: #{}", finding.new_pointer);
            if let Some(example) = &finding.counterexample {
                let _ = writeln!(
                    out,
                    "  counterexample (valid under {}, invalid under {}):",
                    example.valid_under.to_uppercase(),
                    example.invalid_under.to_uppercase()
                );
                let _ = writeln!(out, "    {}", example.instance);
                if let Some(reading) = &example.reading {
                    let _ = writeln!(out, "  reading: {reading}");
                }
                for error in &example.errors {
                    let _ = writeln!(
                        out,
                        "  {} says: {error}",
                        example.invalid_under.to_uppercase()
                    );
                }
            } else if finding.severity == Severity::Unknown {
                let _ = writeln!(
                    out,
                    "  no counterexample could be confirmed; treated as possibly breaking"
                );
            }
        }
        let _ = writeln!(
            out,
            "\nsummary: {} breaking, {} unknown, {} compatible",
            self.count(Severity::Breaking),
            self.count(Severity::Unknown),
            self.count(Severity::Compatible)
        );
        out
    }
}

/// Every rule as (name when NEW narrows, name when NEW widens); the request direction breaks on
/// the first, the reply direction on the second. Some rules have one name for both.
pub fn rules() -> Vec<(&'static str, &'static str)> {
    walk::Rule::ALL
        .iter()
        .map(|rule| (rule.name(true), rule.name(false)))
        .collect()
}

/// Reads and checks one schema file (errors name the path).
pub fn load(path: &Path) -> Result<Value, Errors> {
    let bytes = std::fs::read(path).map_err(|e| {
        Errors::one(FieldError::new(
            "",
            "io",
            format!("cannot read {}: {e}", path.display()),
        ))
    })?;
    let doc = crate::error::parse_json(&bytes).map_err(|mut errors| {
        for error in &mut errors.errors {
            error.message = format!("{}: {}", path.display(), error.message);
        }
        errors
    })?;
    check_schema(&doc, &path.display().to_string())?;
    Ok(doc)
}

/// Fails when `doc` is not a schema jsonschema compiles.
pub fn check_schema(doc: &Value, label: &str) -> Result<(), Errors> {
    if !doc.is_object() && !doc.is_boolean() {
        return Err(FieldError::new(
            "",
            "schema",
            format!("{label}: a schema is an object or a boolean"),
        )
        .with_value(doc)
        .into());
    }
    verify::compile(doc).map(|_| ()).map_err(|e| {
        FieldError::new(
            "",
            "schema",
            format!("{label}: not a usable JSON Schema: {e}"),
        )
        .into()
    })
}

/// Compares OLD and NEW in `direction`.
pub fn diff(old: &Value, new: &Value, direction: Direction) -> Result<Report, Errors> {
    diff_with(old, new, direction, &Options::default())
}

/// Tuning of [`diff_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the canonical-form proof may take to clear `unknown` findings (zero: never try).
    pub proof_time_limit: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proof_time_limit: std::time::Duration::from_secs(20),
        }
    }
}

/// [`diff`] with explicit [`Options`].
pub fn diff_with(
    old: &Value,
    new: &Value,
    direction: Direction,
    options: &Options,
) -> Result<Report, Errors> {
    check_schema(old, "old")?;
    check_schema(new, "new")?;
    let request = direction == Direction::Request;
    let (accepting, rejecting) = if request { (old, new) } else { (new, old) };
    let (accepting_name, rejecting_name) = if request {
        ("old", "new")
    } else {
        ("new", "old")
    };
    let compile = |doc: &Value, label: &str| {
        verify::compile(doc)
            .map_err(|e| Errors::one(FieldError::new("", "schema", format!("{label}: {e}"))))
    };
    let checker = verify::Checker::new(
        compile(accepting, accepting_name)?,
        compile(rejecting, rejecting_name)?,
        rejecting,
    );

    let mut findings = Vec::new();
    let mut unproven = Vec::new();
    for change in Walk::run(accepting, rejecting, request, true) {
        match find_counterexample(accepting, &checker, &change, accepting_name, rejecting_name) {
            Some(counterexample) => findings.push(finding(
                &change,
                request,
                Severity::Breaking,
                Some(counterexample),
            )),
            None => unproven.push(change),
        }
    }
    // The set-algebra proof is slow, so it only runs when something is left unproven; findings
    // that rest on the closed reading of a dropped property are outside what it models.
    let proven_safe = unproven.iter().any(|c| !c.closed_reading)
        && !options.proof_time_limit.is_zero()
        && canonical::proves_no_break(accepting, rejecting, options.proof_time_limit);
    for change in unproven {
        if proven_safe && !change.closed_reading {
            let mut f = finding(&change, request, Severity::Compatible, None);
            f.message.push_str(&format!(
                " (no break: jsonschema's canonical form of {} minus {} accepts nothing)",
                accepting_name.to_uppercase(),
                rejecting_name.to_uppercase()
            ));
            findings.push(f);
        } else {
            findings.push(finding(&change, request, Severity::Unknown, None));
        }
    }
    for change in Walk::run(rejecting, accepting, !request, false) {
        findings.push(finding(&change, !request, Severity::Compatible, None));
    }
    findings.sort_by_key(|f| f.severity);
    let mut unique: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings {
        let seen = unique.iter().any(|u| {
            u.rule == f.rule && u.instance_path == f.instance_path && u.message == f.message
        });
        if !seen {
            unique.push(f);
        }
    }
    let version = |doc: &Value| {
        doc.get("x-version")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(Report {
        direction,
        old_version: version(old),
        new_version: version(new),
        findings: unique,
    })
}

/// `change` as a finding; `a_is_old` says which schema the walk read as A.
fn finding(
    change: &Change,
    a_is_old: bool,
    severity: Severity,
    counterexample: Option<Counterexample>,
) -> Finding {
    let (old_pointer, new_pointer) = if a_is_old {
        (change.a_pointer.clone(), change.b_pointer.clone())
    } else {
        (change.b_pointer.clone(), change.a_pointer.clone())
    };
    Finding {
        rule: change.rule.name(a_is_old),
        severity,
        old_pointer,
        new_pointer,
        instance_path: instance_pointer(&change.steps),
        message: change.message.clone(),
        counterexample,
    }
}

/// How many generator variants (rotations of the `anyOf`/`oneOf` branch and the `if`/`then`
/// conditional tried first) to try at least, and at most: enough to reach every branch of the
/// widest choice in the schema (the v2 request dispatches ten message types through `allOf`
/// conditionals), bounded so hostile schemas stay fast.
const MIN_VARIANTS: usize = 3;
const MAX_VARIANTS: usize = 32;

/// The number of alternatives of the widest `allOf`/`anyOf`/`oneOf` anywhere in `schema`.
fn widest_choice(schema: &Value) -> usize {
    match schema {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let own = match (key.as_str(), value) {
                    ("allOf" | "anyOf" | "oneOf", Value::Array(items)) => items.len(),
                    _ => 0,
                };
                own.max(widest_choice(value))
            })
            .max()
            .unwrap_or(0),
        Value::Array(items) => items.iter().map(widest_choice).max().unwrap_or(0),
        _ => 0,
    }
}
/// How many leaf candidates per variant.
const CANDIDATES: usize = 48;

fn find_counterexample(
    accepting: &Value,
    checker: &verify::Checker<'_>,
    change: &Change,
    accepting_name: &'static str,
    rejecting_name: &'static str,
) -> Option<Counterexample> {
    let location = instance_pointer(&change.location);
    let dropped_name = match change.steps.last() {
        Some(Step::Property(name)) if change.closed_reading => Some(name.clone()),
        _ => None,
    };
    let dropped = dropped_name
        .as_deref()
        .map(|name| (change.b_pointer.as_str(), name));
    let counterexample = |instance: Value, errors: Vec<String>| {
        let reading = dropped.map(|(pointer, name)| {
            format!(
                "{} no longer declares `{name}` at #{pointer}, so it is read as not accepting it there",
                rejecting_name.to_uppercase()
            )
        });
        Counterexample {
            instance,
            valid_under: accepting_name,
            invalid_under: rejecting_name,
            errors,
            reading,
        }
    };
    let variants = widest_choice(accepting).clamp(MIN_VARIANTS, MAX_VARIANTS);
    let mut tried: Vec<Value> = Vec::new();
    for variant in 0..variants {
        let generator = Generator::new(accepting, variant);
        for leaf in change.candidates.iter().take(CANDIDATES) {
            let Some(instance) = generator.build_at(accepting, &change.steps, leaf) else {
                continue;
            };
            if tried.contains(&instance) {
                continue;
            }
            if let Some(errors) = checker.check(&instance, &location, dropped) {
                return Some(counterexample(instance, errors));
            }
            tried.push(instance);
        }
    }
    // The minimal instance in context, unedited: it is the witness when the change makes every
    // instance of that context invalid (a closed object whose properties a conditional declares).
    for variant in 0..variants {
        let generator = Generator::new(accepting, variant);
        let Some(instance) = generator.build_context(accepting, &change.steps) else {
            continue;
        };
        if !tried.contains(&instance) {
            if let Some(errors) = checker.check(&instance, &location, dropped) {
                return Some(counterexample(instance, errors));
            }
            tried.push(instance);
        }
    }
    let patch = change.patch.as_ref()?;
    for variant in 0..variants {
        let generator = Generator::new(accepting, variant);
        let Some(context) = generator.build_context(accepting, &change.location) else {
            continue;
        };
        let edits: Vec<Value> = match patch {
            walk::Patch::Insert(_, values) => values.iter().take(8).cloned().collect(),
            walk::Patch::Remove(_) => vec![Value::Null],
        };
        for value in edits {
            let mut instance = context.clone();
            let Some(object) = instance
                .pointer_mut(&location)
                .and_then(Value::as_object_mut)
            else {
                break;
            };
            match patch {
                walk::Patch::Insert(name, _) => {
                    object.insert(name.clone(), value);
                }
                walk::Patch::Remove(name) => {
                    object.shift_remove(name);
                }
            }
            if tried.contains(&instance) {
                continue;
            }
            if let Some(errors) = checker.check(&instance, &location, dropped) {
                return Some(counterexample(instance, errors));
            }
            tried.push(instance);
        }
    }
    None
}
