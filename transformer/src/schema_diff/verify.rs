//! The check every counterexample passes before it is printed: valid under the accepting schema,
//! rejected by the other one at (or around) the place the finding names. Both are compiled with
//! `format` asserting, so that a format change is a change the check can see.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{json, Value};

pub(crate) fn compile(doc: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(doc)
        .map_err(|e| e.to_string())
}

pub(crate) struct Checker<'d> {
    accepting: jsonschema::Validator,
    rejecting: jsonschema::Validator,
    rejecting_doc: &'d Value,
    /// The rejecting schema with one property no longer accepted at one object, by (pointer, name).
    without_property: RefCell<HashMap<(String, String), Option<jsonschema::Validator>>>,
}

impl<'d> Checker<'d> {
    pub(crate) fn new(
        accepting: jsonschema::Validator,
        rejecting: jsonschema::Validator,
        rejecting_doc: &'d Value,
    ) -> Self {
        Checker {
            accepting,
            rejecting,
            rejecting_doc,
            without_property: RefCell::new(HashMap::new()),
        }
    }

    /// The rejecting schema's complaints about `instance` near `location`, when `instance` is a
    /// counterexample; `None` otherwise. With `dropped`, the rejecting schema is read as not
    /// accepting property `dropped.1` at the object `dropped.0`.
    pub(crate) fn check(
        &self,
        instance: &Value,
        location: &str,
        dropped: Option<(&str, &str)>,
    ) -> Option<Vec<String>> {
        if !self.accepting.is_valid(instance) {
            return None;
        }
        let complaints = match dropped {
            None => related_errors(&self.rejecting, instance, location),
            Some((pointer, name)) => {
                let mut cache = self.without_property.borrow_mut();
                let validator = cache
                    .entry((pointer.to_string(), name.to_string()))
                    .or_insert_with(|| self.compile_without(pointer, name));
                related_errors(validator.as_ref()?, instance, location)
            }
        };
        (!complaints.is_empty()).then_some(complaints)
    }

    fn compile_without(&self, pointer: &str, name: &str) -> Option<jsonschema::Validator> {
        let mut doc = self.rejecting_doc.clone();
        let target = doc.pointer_mut(pointer)?;
        let refusal = json!({"not": {"const": name}});
        match target {
            Value::Object(map) if !map.contains_key("propertyNames") => {
                map.insert("propertyNames".into(), refusal);
            }
            other => {
                let original = other.clone();
                *other = json!({"allOf": [original, {"propertyNames": refusal}]});
            }
        }
        compile(&doc).ok()
    }
}

fn related_errors(
    validator: &jsonschema::Validator,
    instance: &Value,
    location: &str,
) -> Vec<String> {
    validator
        .iter_errors(instance)
        .filter_map(|error| {
            let path = error.instance_path().to_string();
            let related = path == location
                || location.starts_with(&format!("{path}/"))
                || path.starts_with(&format!("{location}/"));
            related.then(|| {
                format!(
                    "{}: {error}",
                    if path.is_empty() { "(document)" } else { &path }
                )
            })
        })
        .collect()
}
