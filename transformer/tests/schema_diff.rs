//! The schema gate: the corpus in `fixtures/schema-diff/` (one folder per OLD/NEW pair with its
//! expected verdict per direction), random narrowing mutations of the project's own schemas, and
//! the `schema-diff` command line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use serde_json::{json, Value};
use transformer::schema_diff::{self, Direction, Report, Severity};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn corpus() -> Vec<PathBuf> {
    let dir = root().join("fixtures/schema-diff");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("expected.json").is_file())
        .collect();
    cases.sort();
    cases
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn verdict(report: &Report) -> &'static str {
    if report.count(Severity::Breaking) > 0 {
        "breaking"
    } else if report.count(Severity::Unknown) > 0 {
        "unknown"
    } else {
        "compatible"
    }
}

fn validator(doc: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(doc)
        .expect("schema compiles")
}

/// Checks every counterexample of `report` again, independently of the gate: valid under the
/// accepting schema, and invalid under the other one (or, for a property the other schema stopped
/// declaring, carrying that property). Returns the problems found.
fn recheck_counterexamples(report: &Report, old: &Value, new: &Value) -> Vec<String> {
    let (old_validator, new_validator) = (validator(old), validator(new));
    let mut problems = Vec::new();
    for finding in &report.findings {
        let Some(example) = &finding.counterexample else {
            if finding.severity == Severity::Breaking {
                problems.push(format!(
                    "{}: breaking without a counterexample",
                    finding.rule
                ));
            }
            continue;
        };
        let pick = |name: &str| {
            if name == "old" {
                &old_validator
            } else {
                &new_validator
            }
        };
        let (accepting, rejecting) = (pick(example.valid_under), pick(example.invalid_under));
        let expected_accepting = match report.direction {
            Direction::Request => "old",
            Direction::Reply => "new",
        };
        if example.valid_under != expected_accepting {
            problems.push(format!(
                "{}: counterexample valid under {}",
                finding.rule, example.valid_under
            ));
        }
        if !accepting.is_valid(&example.instance) {
            problems.push(format!(
                "{}: {} is not valid under {}",
                finding.rule, example.instance, example.valid_under
            ));
        }
        match &example.reading {
            None if rejecting.is_valid(&example.instance) => problems.push(format!(
                "{}: {} is valid under {}",
                finding.rule, example.instance, example.invalid_under
            )),
            None => {}
            Some(_) => {
                let carries = example.instance.pointer(&finding.instance_path).is_some();
                if finding.rule != "property-removed" || !carries {
                    problems.push(format!(
                        "{}: closed reading used for {}",
                        finding.rule, finding.instance_path
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn corpus_verdicts_rules_and_counterexamples() {
    let cases = corpus();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let expected = read_json(&case.join("expected.json"));
        let old = schema_diff::load(&case.join("old.schema.json"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let new = schema_diff::load(&case.join("new.schema.json"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut rules_seen = BTreeSet::new();
        for direction in [Direction::Request, Direction::Reply] {
            let report =
                schema_diff::diff(&old, &new, direction).unwrap_or_else(|e| panic!("{name}: {e}"));
            let want = expected[direction.as_str()].as_str().unwrap_or("(missing)");
            if verdict(&report) != want {
                failures.push(format!(
                    "{name} ({}): expected {want}, got {}\n{}",
                    direction.as_str(),
                    verdict(&report),
                    report.to_text()
                ));
            }
            for problem in recheck_counterexamples(&report, &old, &new) {
                failures.push(format!("{name} ({}): {problem}", direction.as_str()));
            }
            rules_seen.extend(report.findings.iter().map(|f| f.rule.to_string()));
        }
        if let Some(rules) = expected.get("rules").and_then(Value::as_array) {
            let want: BTreeSet<String> = rules
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if want != rules_seen {
                failures.push(format!(
                    "{name}: expected rules {want:?}, found {rules_seen:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn corpus_breaks_every_rule_in_both_directions() {
    let mut breaking = [BTreeSet::new(), BTreeSet::new()];
    for case in corpus() {
        let old = schema_diff::load(&case.join("old.schema.json")).expect("old loads");
        let new = schema_diff::load(&case.join("new.schema.json")).expect("new loads");
        for (i, direction) in [Direction::Request, Direction::Reply]
            .into_iter()
            .enumerate()
        {
            let report = schema_diff::diff(&old, &new, direction).expect("diff");
            for f in report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Breaking)
            {
                breaking[i].insert(f.rule);
            }
        }
    }
    let mut missing = Vec::new();
    for (narrowing, widening) in schema_diff::rules() {
        // FIXME: `ref-changed` needs a reference this tool cannot follow, and jsonschema (built
        // without remote resolution) refuses to compile such a schema, so no pair can show it.
        if narrowing == "ref-changed" {
            continue;
        }
        if !breaking[0].contains(narrowing) {
            missing.push(format!("{narrowing} (request)"));
        }
        if !breaking[1].contains(widening) {
            missing.push(format!("{widening} (reply)"));
        }
    }
    assert!(missing.is_empty(), "no corpus case breaks: {missing:?}");
}

fn project_schemas() -> Vec<(String, Value)> {
    let dir = root().join("transformer/schemas");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("transformer/schemas")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".schema.json"))
        .map(|path| {
            (
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                read_json(&path),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn project_schemas_are_unchanged_against_themselves() {
    for (name, doc) in project_schemas() {
        for direction in [Direction::Request, Direction::Reply] {
            let report = schema_diff::diff(&doc, &doc, direction).expect("diff");
            assert!(report.findings.is_empty(), "{name}: {}", report.to_text());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random narrowing mutations of the project's schemas.

/// A narrowing edit at one subschema.
#[derive(Debug, Clone)]
enum Mutation {
    RemoveEnumValue(usize),
    RaiseMinimum,
    LowerMaximum,
    AddMultipleOf,
    RaiseMinLength,
    LowerMaxLength,
    AddPattern,
    AddFormat,
    DropType(usize),
    RequireProperty(usize),
    RemoveProperty(usize),
    CloseObject,
    RaiseMinItems,
    MakeFalse,
}

/// The subschemas an instance can reach (properties, items, `$defs` targets, branches and
/// conditionals), as JSON Pointers.
fn reachable_pointers(doc: &Value) -> Vec<String> {
    fn visit(
        doc: &Value,
        node: &Value,
        pointer: String,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(pointer.clone()) || !node.is_object() {
            return;
        }
        out.push(pointer.clone());
        let push = |p: &str, k: &str| format!("{p}/{}", k.replace('~', "~0").replace('/', "~1"));
        if let Some(target) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            if let Some(resolved) = doc.pointer(target) {
                visit(doc, resolved, target.to_string(), seen, out);
            }
        }
        for keyword in ["properties", "patternProperties"] {
            if let Some(map) = node.get(keyword).and_then(Value::as_object) {
                for (name, schema) in map {
                    visit(doc, schema, push(&push(&pointer, keyword), name), seen, out);
                }
            }
        }
        for keyword in ["items", "additionalProperties", "then", "else"] {
            if let Some(schema) = node.get(keyword) {
                visit(doc, schema, push(&pointer, keyword), seen, out);
            }
        }
        for keyword in ["allOf", "anyOf", "oneOf", "prefixItems"] {
            if let Some(list) = node.get(keyword).and_then(Value::as_array) {
                for (i, schema) in list.iter().enumerate() {
                    visit(
                        doc,
                        schema,
                        push(&push(&pointer, keyword), &i.to_string()),
                        seen,
                        out,
                    );
                }
            }
        }
    }
    let mut out = Vec::new();
    visit(doc, doc, String::new(), &mut BTreeSet::new(), &mut out);
    out
}

/// Applies `mutation` at `pointer`; `None` when it does not apply there or would not narrow.
fn mutate(doc: &Value, pointer: &str, mutation: &Mutation) -> Option<Value> {
    let mut out = doc.clone();
    let node = out.pointer_mut(pointer)?;
    let map = node.as_object_mut()?;
    let types: Vec<String> = match map.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let has = |t: &str| types.iter().any(|x| x == t);
    match mutation {
        Mutation::RemoveEnumValue(i) => {
            let list = map.get_mut("enum")?.as_array_mut()?;
            if list.len() < 2 {
                return None;
            }
            let index = i % list.len();
            list.remove(index);
        }
        Mutation::RaiseMinimum => {
            let (min, max) = (map.get("minimum")?.as_f64()?, map.get("maximum")?.as_f64()?);
            if max - min < 2.0 {
                return None;
            }
            map.insert("minimum".into(), json!((min + 1.0).round()));
        }
        Mutation::LowerMaximum => {
            let (min, max) = (map.get("minimum")?.as_f64()?, map.get("maximum")?.as_f64()?);
            if max - min < 2.0 {
                return None;
            }
            map.insert("maximum".into(), json!((max - 1.0).round()));
        }
        Mutation::AddMultipleOf => {
            if !has("integer") || map.contains_key("multipleOf") || map.contains_key("enum") {
                return None;
            }
            let (min, max) = (
                map.get("minimum").and_then(Value::as_f64),
                map.get("maximum").and_then(Value::as_f64),
            );
            if let (Some(min), Some(max)) = (min, max) {
                if max - min < 14.0 {
                    return None;
                }
            }
            map.insert("multipleOf".into(), json!(7));
        }
        Mutation::RaiseMinLength => {
            if !has("string")
                || map.contains_key("enum")
                || map.contains_key("pattern")
                || map.contains_key("format")
            {
                return None;
            }
            let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            let max = map
                .get("maxLength")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            if min + 1 > max {
                return None;
            }
            map.insert("minLength".into(), json!(min + 1));
        }
        Mutation::LowerMaxLength => {
            let max = map.get("maxLength")?.as_u64()?;
            let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            if max <= min || map.contains_key("pattern") {
                return None;
            }
            map.insert("maxLength".into(), json!(max - 1));
        }
        Mutation::AddPattern => {
            if !has("string")
                || map.contains_key("pattern")
                || map.contains_key("enum")
                || map.contains_key("format")
            {
                return None;
            }
            map.insert("pattern".into(), json!("^zq"));
        }
        Mutation::AddFormat => {
            if !has("string")
                || map.contains_key("format")
                || map.contains_key("enum")
                || map.contains_key("pattern")
            {
                return None;
            }
            map.insert("format".into(), json!("date-time"));
        }
        Mutation::DropType(i) => {
            if types.len() < 2 {
                return None;
            }
            let mut kept = types.clone();
            kept.remove(i % types.len());
            map.insert("type".into(), json!(kept));
        }
        Mutation::RequireProperty(i) => {
            // Only on object schemas: an `if`/`then` fragment may name a property the object
            // around it already requires, and requiring it again narrows nothing.
            if !has("object") {
                return None;
            }
            let properties: Vec<String> = map
                .get("properties")?
                .as_object()?
                .keys()
                .cloned()
                .collect();
            let required: Vec<String> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let optional: Vec<&String> = properties
                .iter()
                .filter(|p| !required.contains(p))
                .collect();
            if optional.is_empty() {
                return None;
            }
            let chosen = optional[i % optional.len()].clone();
            let mut list = required;
            list.push(chosen);
            map.insert("required".into(), json!(list));
        }
        Mutation::RemoveProperty(i) => {
            // Only from closed object schemas: from an open one, removing a property is a break
            // for requests only (a consumer built from NEW ignores it) and compatible for replies.
            if !has("object") || map.get("additionalProperties") != Some(&Value::Bool(false)) {
                return None;
            }
            let required: Vec<String> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let properties = map.get_mut("properties")?.as_object_mut()?;
            let optional: Vec<String> = properties
                .keys()
                .filter(|p| !required.contains(p))
                .cloned()
                .collect();
            if optional.is_empty() {
                return None;
            }
            properties.shift_remove(&optional[i % optional.len()]);
        }
        Mutation::CloseObject => {
            if !has("object")
                || map.contains_key("additionalProperties")
                || map.contains_key("patternProperties")
            {
                return None;
            }
            map.insert("additionalProperties".into(), json!(false));
        }
        Mutation::RaiseMinItems => {
            if !has("array") {
                return None;
            }
            let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            if map
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|max| max <= min)
            {
                return None;
            }
            map.insert("minItems".into(), json!(min + 1));
        }
        Mutation::MakeFalse => {
            if pointer.is_empty() || !pointer.contains("/properties/") || map.contains_key("const")
            {
                return None;
            }
            *node = Value::Bool(false);
        }
    }
    Some(out)
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::RemoveEnumValue),
        Just(Mutation::RaiseMinimum),
        Just(Mutation::LowerMaximum),
        Just(Mutation::AddMultipleOf),
        Just(Mutation::RaiseMinLength),
        Just(Mutation::LowerMaxLength),
        Just(Mutation::AddPattern),
        Just(Mutation::AddFormat),
        any::<usize>().prop_map(Mutation::DropType),
        any::<usize>().prop_map(Mutation::RequireProperty),
        any::<usize>().prop_map(Mutation::RemoveProperty),
        Just(Mutation::CloseObject),
        Just(Mutation::RaiseMinItems),
        Just(Mutation::MakeFalse),
    ]
}

/// Runs the gate on OLD = `doc`, NEW = its narrowed copy, in the request direction (and the swapped
/// pair in the reply direction): both must report a break with a counterexample that jsonschema
/// confirms. `Err` says why not.
fn gate_catches(doc: &Value, narrowed: &Value) -> Result<(), String> {
    // The canonical proof only ever clears `unknown` findings, which these cases must not have.
    let options = schema_diff::Options {
        proof_time_limit: std::time::Duration::ZERO,
    };
    for (direction, old, new) in [
        (Direction::Request, doc, narrowed),
        (Direction::Reply, narrowed, doc),
    ] {
        let report =
            schema_diff::diff_with(old, new, direction, &options).map_err(|e| e.to_string())?;
        if report.count(Severity::Breaking) == 0 {
            return Err(format!(
                "{}: no verified break\n{}",
                direction.as_str(),
                report.to_text()
            ));
        }
        let problems = recheck_counterexamples(&report, old, new);
        if !problems.is_empty() {
            return Err(format!("{}: {problems:?}", direction.as_str()));
        }
    }
    Ok(())
}

proptest! {
    // Each case runs the gate twice on a full project schema (about 0.2 s in a debug build); 48
    // cases keep this test well under a minute on two cores.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn narrowing_mutations_of_project_schemas_are_caught(
        schema_index in any::<usize>(),
        location_index in any::<usize>(),
        mutation in mutation_strategy(),
    ) {
        let schemas = project_schemas();
        prop_assume!(!schemas.is_empty());
        let (name, doc) = &schemas[schema_index % schemas.len()];
        let pointers = reachable_pointers(doc);
        // Try the mutation at the chosen location, then the following ones, so that most cases
        // test something instead of being rejected.
        let applied = (0..pointers.len())
            .map(|k| &pointers[(location_index + k) % pointers.len()])
            .find_map(|pointer| mutate(doc, pointer, &mutation).map(|narrowed| (pointer.clone(), narrowed)));
        prop_assume!(applied.is_some());
        let Some((pointer, narrowed)) = applied else { return Ok(()) };
        if let Err(why) = gate_catches(doc, &narrowed) {
            prop_assert!(false, "{name} {mutation:?} at #{pointer}: {why}");
        }
    }
}

/// Every applicable mutation at every reachable location of every project schema, counted: how
/// many the gate proves with a counterexample and how many it does not. A debug build checks
/// every `SCHEMA_DIFF_STRIDE`-th one (default 12, a fixed sample that keeps the test under a
/// minute on two cores); `SCHEMA_DIFF_STRIDE=1 cargo test --release …` checks them all.
#[test]
fn enumerated_narrowing_mutations_are_caught() {
    let stride: usize = std::env::var("SCHEMA_DIFF_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(12);
    let mut index = 0;
    let mutations = [
        Mutation::RemoveEnumValue(0),
        Mutation::RaiseMinimum,
        Mutation::LowerMaximum,
        Mutation::AddMultipleOf,
        Mutation::RaiseMinLength,
        Mutation::LowerMaxLength,
        Mutation::AddPattern,
        Mutation::AddFormat,
        Mutation::DropType(0),
        Mutation::RequireProperty(0),
        Mutation::RemoveProperty(0),
        Mutation::CloseObject,
        Mutation::RaiseMinItems,
        Mutation::MakeFalse,
    ];
    let (mut proven, mut unproven) = (0, Vec::new());
    for (name, doc) in project_schemas() {
        for pointer in reachable_pointers(&doc) {
            for mutation in &mutations {
                let Some(narrowed) = mutate(&doc, &pointer, mutation) else {
                    continue;
                };
                index += 1;
                if (index - 1) % stride != 0 {
                    continue;
                }
                match gate_catches(&doc, &narrowed) {
                    Ok(()) => proven += 1,
                    Err(why) => unproven.push(format!("{name} {mutation:?} at #{pointer}: {why}")),
                }
            }
        }
    }
    eprintln!(
        "narrowing mutations: {index} applicable, {} checked (stride {stride}): {proven} proven with a counterexample, {} not",
        proven + unproven.len(),
        unproven.len()
    );
    assert!(unproven.is_empty(), "{}", unproven.join("\n\n"));
}

/// Removing any one value of any enum of the project schemas (not only the first, which the
/// enumeration above uses) is a verified break. Found by the property test: removing
/// `validate_request` needs the tenth `if`/`then` branch of the v2 dispatch, which the generator
/// reached only once it tried as many variants as the widest choice has branches.
#[test]
fn every_enum_value_removal_is_caught() {
    let mut checked = 0;
    let mut unproven = Vec::new();
    for (name, doc) in project_schemas() {
        for pointer in reachable_pointers(&doc) {
            let Some(len) = doc
                .pointer(&pointer)
                .and_then(|n| n.get("enum"))
                .and_then(Value::as_array)
                .map(Vec::len)
            else {
                continue;
            };
            for i in 0..len {
                let Some(narrowed) = mutate(&doc, &pointer, &Mutation::RemoveEnumValue(i)) else {
                    continue;
                };
                checked += 1;
                if let Err(why) = gate_catches(&doc, &narrowed) {
                    unproven.push(format!("{name} RemoveEnumValue({i}) at #{pointer}: {why}"));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} enum removals found");
    assert!(unproven.is_empty(), "{}", unproven.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// The command line.

fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sdxl-transform"))
        .arg("schema-diff")
        .args(args)
        .current_dir(root())
        .output()
        .expect("sdxl-transform runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    );
    let code = output.status.code().unwrap_or(-1);
    (code, stdout, stderr)
}

fn case_files(name: &str) -> (String, String) {
    let dir = format!("fixtures/schema-diff/{name}");
    (
        format!("{dir}/old.schema.json"),
        format!("{dir}/new.schema.json"),
    )
}

#[test]
fn cli_exit_codes_follow_the_direction() {
    let (old, new) = case_files("enum-value-removed");
    let (code, stdout, stderr) = cli(&[&old, &new, "--direction", "request"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("BREAKING enum-value-removed at /data/scheduler"),
        "{stdout}"
    );
    let example_line = stdout
        .lines()
        .skip_while(|l| !l.contains("counterexample (valid under OLD, invalid under NEW)"))
        .nth(1)
        .unwrap_or_else(|| panic!("no counterexample in:\n{stdout}"));
    let example: Value =
        serde_json::from_str(example_line.trim()).expect("the counterexample line is JSON");
    assert_eq!(example["data"]["scheduler"], "DDIMScheduler");
    let (code, stdout, _) = cli(&[&old, &new, "--direction", "reply"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("summary: 0 breaking, 0 unknown, 1 compatible"),
        "{stdout}"
    );
}

#[test]
fn cli_json_report() {
    let (old, new) = case_files("required-added");
    let (code, stdout, stderr) = cli(&[&old, &new, "--direction", "request", "--json"]);
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    let finding = &report["findings"][0];
    assert_eq!(finding["rule"], "required-added");
    assert_eq!(finding["severity"], "breaking");
    assert_eq!(finding["new_pointer"], "/properties/data");
    let instance = &finding["counterexample"]["instance"];
    assert!(
        instance["data"].get("negative_prompt").is_none(),
        "{instance}"
    );
    let new_doc = read_json(&root().join(&new));
    assert!(!jsonschema::is_valid(&new_doc, instance));
}

#[test]
fn cli_reads_the_direction_from_the_schemas() {
    let dir = std::env::temp_dir().join(format!("schema-diff-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, value: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).expect("write");
        path.to_string_lossy().to_string()
    };
    let old = write(
        "old.json",
        &json!({"x-direction": "reply", "x-version": "1.0.0", "type": "object", "properties": {"code": {"enum": [1, 2]}}}),
    );
    let new = write(
        "new.json",
        &json!({"x-direction": "reply", "x-version": "1.1.0", "type": "object", "properties": {"code": {"enum": [1, 2, 3]}}}),
    );
    let (code, stdout, _) = cli(&[&old, &new]);
    assert_eq!(code, 1, "a reply enum that widens breaks:\n{stdout}");
    assert!(
        stdout.contains("reply direction: OLD 1.0.0 -> NEW 1.1.0"),
        "{stdout}"
    );
    let (code, stdout, _) = cli(&[&old, &new, "--direction", "request"]);
    assert_eq!(code, 0, "{stdout}");
    let undeclared = write("plain.json", &json!({"type": "object"}));
    let (code, stdout, stderr) = cli(&[&undeclared, &undeclared]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    let errors: Value = serde_json::from_str(stderr.trim()).expect("errors JSON");
    assert_eq!(errors["errors"][0]["rule"], "direction");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_bad_input_is_exit_2_with_errors_json() {
    let dir = std::env::temp_dir().join(format!("schema-diff-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = root()
        .join("fixtures/schema-diff/enum-value-removed/old.schema.json")
        .to_string_lossy()
        .to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-json.json", b"{\"type\": ".to_vec(), "json_truncated"),
        ("binary.json", vec![0xff, 0xfe, 0x00], "json_syntax"),
        ("bad-type.json", br#"{"type": 5}"#.to_vec(), "schema"),
        ("array.json", b"[1, 2]".to_vec(), "schema"),
        (
            "bad-pattern.json",
            br#"{"type": "string", "pattern": "(("}"#.to_vec(),
            "schema",
        ),
    ];
    for (name, bytes, rule) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let path = path.to_string_lossy().to_string();
        let (code, stdout, stderr) = cli(&[&good, &path, "--direction", "request"]);
        assert_eq!(code, 2, "{name}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        let errors: Value =
            serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stderr}"));
        assert_eq!(errors["errors"][0]["rule"], rule, "{name}: {stderr}");
    }
    let missing = dir.join("missing.json").to_string_lossy().to_string();
    let (code, _, stderr) = cli(&[&missing, &good, "--direction", "request"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("\"rule\":\"io\""), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Schemas written to hurt: recursion through `$ref` and branches, huge bounds, patterns the
/// generator cannot read, empty enums. Every pair must give a report or an error, never a panic
/// or a hang.
#[test]
fn hostile_schemas_give_a_report_or_an_error() {
    let hostile = [
        json!({"$ref": "#"}),
        json!({"$defs": {"tree": {"type": "object", "required": ["left", "right"], "properties": {
            "left": {"oneOf": [{"$ref": "#/$defs/tree"}, {"$ref": "#/$defs/tree"}, {"type": "array", "items": {"$ref": "#/$defs/tree"}, "minItems": 2}]},
            "right": {"anyOf": [{"$ref": "#/$defs/tree"}, {"$ref": "#"}]}}}}, "$ref": "#/$defs/tree"}),
        json!({"type": "string", "minLength": 1_000_000_000_000u64, "maxLength": 3}),
        json!({"type": "string", "pattern": "(?=x)(?<!y)\\1?"}),
        json!({"enum": []}),
        json!({"type": "array", "minItems": 100_000, "uniqueItems": true, "items": {"type": "boolean"}}),
        json!({"type": "object", "minProperties": 1_000_000, "patternProperties": {"^x-": {"type": "integer", "multipleOf": 0.0001}}}),
        json!({"type": "number", "minimum": 1e300, "exclusiveMaximum": -1e300}),
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "integer"}], "additionalItems": false}),
        json!(false),
    ];
    let options = schema_diff::Options {
        proof_time_limit: std::time::Duration::ZERO,
    };
    for old in &hostile {
        for new in &hostile {
            for direction in [Direction::Request, Direction::Reply] {
                if let Ok(report) = schema_diff::diff_with(old, new, direction, &options) {
                    let _ = report.to_text();
                    assert!(
                        recheck_counterexamples(&report, old, new).is_empty(),
                        "{old} -> {new}"
                    );
                }
            }
        }
    }
}
