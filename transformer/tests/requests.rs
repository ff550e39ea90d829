//! Snapshot tests over `fixtures/requests/**/*.json`: every C# message (upstream samples, the
//! seed's example, one per dialect and per command, invalid ones) → the Python v2 envelope plus
//! the mapping report, or the errors. A new fixture file is a new test.

use serde_json::json;
use transformer::request_map::{transform_request, MapOptions};
use transformer::Schema;

#[test]
fn request_fixtures() {
    insta::glob!("../../fixtures/requests", "**/*.json", |path| {
        let bytes = std::fs::read(path).expect("fixture readable");
        let snapshot = match transform_request(&bytes, &MapOptions::default()) {
            Ok(mapping) => {
                let message = mapping.message_json();
                // Every accepted fixture maps to a schema-valid v2 message.
                assert!(
                    Schema::PythonRequest.is_valid(&message),
                    "{}",
                    path.display()
                );
                json!({ "python": message, "report": mapping.report })
            }
            Err(errors) => {
                assert!(!errors.errors.is_empty());
                json!(errors)
            }
        };
        insta::assert_json_snapshot!(snapshot);
    });
}

#[test]
fn upstream_samples_that_are_messages_map_and_the_others_are_rejected_clearly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/requests/upstream");
    let expected_ok = [
        "enhancedsdxl_http_request.api_test.e4789f8.json",
        "enhancedsdxl_http_request.test_api.e4789f8.json",
        "legacy_action_command_example.3_PHASE3.json",
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let result = transform_request(&bytes, &MapOptions::default());
        if expected_ok.contains(&name.as_str()) {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            let errors = result.expect_err(&name);
            for e in &errors.errors {
                assert!(!e.message.is_empty() && !e.rule.is_empty(), "{name}: {e:?}");
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 7);
}

#[test]
fn all_errors_of_a_request_are_reported_at_once() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/requests/invalid/many_errors_at_once.json"
    ))
    .unwrap();
    let errors = transform_request(&bytes, &MapOptions::default()).unwrap_err();
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "/scheduler/steps",
        "/scheduler/timestepSpacing",
        "/hyperparameters/guidanceScale",
        "/hyperparameters/seed",
        "/hyperparameters/batchSize",
        "/hyperparameters/width",
        "/hyperparameters/height",
        "/conditioning/prompt",
        "/conditioning/loras/0/scale",
        "/conditioning/controlNets/0/weight",
        "/conditioning/controlNets/0/guidanceEnd",
        "/conditioning/img2ImgStrength",
        "/postprocessing/quality",
        "/postprocessing/upscaleFactor",
        "/postprocessing/outputFormat",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn defaults_are_applied_and_listed() {
    let bytes = br#"{"model":{"base":"m"},"conditioning":{"prompt":"p"}}"#;
    let mapping = transform_request(bytes, &MapOptions::default()).unwrap();
    let data = &mapping.message_json()["data"];
    assert_eq!(data["hyperparameters"]["num_inference_steps"], 25);
    assert_eq!(data["hyperparameters"]["guidance_scale"], 7.5);
    assert_eq!(data["hyperparameters"]["seed"], -1);
    assert_eq!(data["dimensions"], json!({"width": 1024, "height": 1024}));
    assert_eq!(data["batch"]["size"], 1);
    assert_eq!(data["output"]["format"], "png");
    assert_eq!(data["output"]["quality"], 95);
    let defaulted: Vec<&str> = mapping
        .report
        .defaults
        .iter()
        .map(|d| d.to.as_str())
        .collect();
    for field in [
        "/data/hyperparameters/num_inference_steps",
        "/data/hyperparameters/guidance_scale",
        "/data/hyperparameters/seed",
        "/data/dimensions/width",
        "/data/dimensions/height",
        "/data/batch/size",
        "/data/output/format",
        "/data/output/quality",
    ] {
        assert!(
            defaulted.contains(&field),
            "{field} not listed in {defaulted:?}"
        );
    }
    assert!(
        data.get("negative_prompt").is_none(),
        "absent negative prompt stays absent (B.9)"
    );
}

#[test]
fn empty_negative_prompt_is_kept_as_empty_string() {
    let bytes = br#"{"model":{"base":"m"},"conditioning":{"prompt":"p","negativePrompt":""}}"#;
    let mapping = transform_request(bytes, &MapOptions::default()).unwrap();
    assert_eq!(mapping.message_json()["data"]["negative_prompt"], "");
}

#[test]
fn every_scheduler_alias_maps_to_its_class() {
    for entry in transformer::schedulers::SCHEDULERS {
        for name in entry
            .aliases
            .iter()
            .chain(std::iter::once(&entry.class_name))
        {
            for spelled in [
                name.to_string(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                let request = json!({"model": {"base": "m"}, "scheduler": {"type": spelled}, "conditioning": {"prompt": "p"}});
                let mapping =
                    transformer::request_map::map_request(&request, &MapOptions::default())
                        .unwrap_or_else(|e| panic!("{spelled}: {e:?}"));
                assert_eq!(
                    mapping.message_json()["data"]["scheduler"],
                    entry.class_name,
                    "{spelled}"
                );
            }
        }
    }
}

#[test]
fn unknown_scheduler_lists_every_accepted_name() {
    let request = json!({"model": {"base": "m"}, "scheduler": {"type": "Euler Karras"}, "conditioning": {"prompt": "p"}});
    let errors =
        transformer::request_map::map_request(&request, &MapOptions::default()).unwrap_err();
    assert_eq!(errors.errors[0].path, "/scheduler/type");
    assert_eq!(errors.errors[0].rule, "unknown_scheduler");
    for name in transformer::schedulers::accepted_names() {
        assert!(errors.errors[0].message.contains(name), "{name}");
    }
}

#[test]
fn all_control_nets_are_kept_and_the_first_is_repeated_for_v1() {
    let request = json!({"model": {"base": "m"}, "conditioning": {"prompt": "p", "controlNets": [
        {"type": "canny", "image": "a.png", "weight": 0.5},
        {"type": "depth", "image": "b.png", "weight": 0.7},
        {"type": "pose", "image": "c.png", "weight": 0.9}
    ]}});
    let mapping = transformer::request_map::map_request(&request, &MapOptions::default()).unwrap();
    let data = &mapping.message_json()["data"];
    assert_eq!(data["controlnets"].as_array().unwrap().len(), 3);
    assert_eq!(data["controlnets"][2]["type"], "pose");
    assert_eq!(data["controlnet"], data["controlnets"][0]);
}

#[test]
fn session_id_becomes_the_request_id() {
    let request = json!({"action": "get_status", "session_id": "0123456789abcdef"});
    let mapping = transformer::request_map::map_request(&request, &MapOptions::default()).unwrap();
    assert_eq!(mapping.message().request_id, "0123456789abcdef");
    assert_eq!(mapping.message().message_type, "status_request");
}

#[test]
fn coverage_maps_all_seventeen_seed_fields_and_every_schema_field() {
    let coverage = transformer::coverage::compute();
    assert_eq!(coverage.seed_fields_total, 17);
    assert_eq!(
        coverage.seed_fields_mapped, 17,
        "{:#?}",
        coverage.seed_fields
    );
    for f in &coverage.fields {
        assert!(
            !f.reason
                .as_deref()
                .unwrap_or("")
                .starts_with("probe rejected"),
            "{f:?}"
        );
    }
    // Every leaf property of the C# request schema appears in the table: the parser, the
    // mapping and the schema agree on the field list.
    let listed: Vec<&str> = coverage
        .fields
        .iter()
        .filter(|f| f.message == "request")
        .map(|f| f.csharp.as_str())
        .collect();
    let mut leaves = Vec::new();
    schema_leaves(Schema::CsharpRequest.document(), "", &mut leaves);
    for leaf in &leaves {
        assert!(
            listed
                .iter()
                .any(|l| l == leaf || l.starts_with(&format!("{leaf}/"))),
            "schema field {leaf} is neither mapped nor reported: {listed:#?}"
        );
    }
    for l in &listed {
        assert!(
            leaves
                .iter()
                .any(|leaf| l == leaf || l.starts_with(&format!("{leaf}/"))),
            "coverage lists {l}, which the C# request schema does not describe"
        );
    }
}

/// Leaf property pointers of a schema (`*` for array items; `anyOf` branches merged).
fn schema_leaves(schema: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    if let Some(branches) = schema.get("anyOf").and_then(|b| b.as_array()) {
        let before = out.len();
        for branch in branches {
            schema_leaves(branch, at, out);
        }
        if out.len() > before || at.is_empty() {
            return;
        }
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, sub) in props {
            schema_leaves(sub, &format!("{at}/{name}"), out);
        }
        return;
    }
    if let Some(items) = schema.get("items") {
        let has_structure = items.get("properties").is_some()
            || items.get("anyOf").is_some_and(|b| {
                b.as_array()
                    .is_some_and(|b| b.iter().any(|x| x.get("properties").is_some()))
            });
        if has_structure {
            if let Some(branches) = items.get("anyOf").and_then(|b| b.as_array()) {
                for branch in branches {
                    if branch.get("properties").is_some() {
                        schema_leaves(branch, &format!("{at}/*"), out);
                    }
                }
            } else {
                schema_leaves(items, &format!("{at}/*"), out);
            }
            return;
        }
    }
    if !out.contains(&at.to_string()) {
        out.push(at.to_string());
    }
}
