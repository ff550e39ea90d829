//! Python reply → C# response (PROTOCOL A.6, A.7, B.7, B.8, B.10): snapshots over
//! `fixtures/replies/**/*.json`, and properties over replies generated from the typed model.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use transformer::error::parse_json;
use transformer::reply_map::{
    file_name, map_reply, transform_reply, Dimensions, EnvelopeData, EnvelopeReply, ErrorReply,
    GenerationFacts, LegacyFileReply, LegacyImage, LegacyImagesReply, PythonReply, ReplyShape,
    Success, Timestamp, MAX_SEED, PIPELINE_TYPE,
};
use transformer::Schema;

/// Rules that come from the python-reply schema (or from shape detection), as opposed to the
/// mapping's own conflict checks.
const SCHEMA_RULES: &[&str] = &[
    "const",
    "maxItems",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "not",
    "pattern",
    "required",
    "type",
    "shape",
    "not_a_reply",
];

#[test]
fn reply_fixtures() {
    insta::glob!("../../fixtures/replies", "**/*.json", |path| {
        let bytes = std::fs::read(path).expect("fixture is readable");
        let input = parse_json(&bytes).expect("fixtures are JSON");
        let outcome = match map_reply(&input) {
            Ok(mapping) => {
                assert!(
                    Schema::PythonReply.is_valid(&input),
                    "{} mapped but is not valid under python-reply",
                    path.display()
                );
                let response = serde_json::to_value(&mapping.response).expect("serialises");
                Schema::CsharpResponse
                    .validate(&response)
                    .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.to_json_line()));
                assert_eq!(
                    transform_reply(&bytes).expect("same reply maps through the CLI entry"),
                    response
                );
                serde_json::to_value(&mapping).expect("serialises")
            }
            Err(errors) => {
                // Schema-rule errors iff the schema itself rejects the reply: shape detection
                // and the per-shape validators agree with the whole python-reply schema.
                let schema_rejected = errors.errors.iter().any(|e| SCHEMA_RULES.contains(&e.rule));
                assert_eq!(
                    !Schema::PythonReply.is_valid(&input),
                    schema_rejected,
                    "{}: {}",
                    path.display(),
                    errors.to_json_line()
                );
                for error in &errors.errors {
                    assert_ne!(error.rule, "internal", "{}", path.display());
                    assert!(
                        error.path.is_empty() || input.pointer(&error.path).is_some(),
                        "{}: error path {} is not a pointer into the reply",
                        path.display(),
                        error.path
                    );
                }
                serde_json::to_value(&errors).expect("serialises")
            }
        };
        insta::assert_json_snapshot!(outcome);
    });
}

#[test]
fn upstream_samples_are_rejected_with_reasons() {
    let c_sharp = include_str!(
        "../../fixtures/replies/upstream/structured_prompt_response.2_INFERENCE_CONTROLLER_SCHEMA_ALIGNMENT.json"
    );
    let errors = transform_reply(c_sharp.as_bytes()).expect_err("a C#-side reply");
    let shape = errors
        .errors
        .iter()
        .find(|e| e.rule == "shape")
        .expect("shape error");
    assert!(shape.message.contains("camelCase"), "{}", shape.message);
    assert!(errors
        .errors
        .iter()
        .any(|e| e.rule == "required" && e.message.contains("success")));

    let schema_doc = include_str!(
        "../../fixtures/replies/upstream/enhanced_sdxl_response_schema.PROPOSED.3_PHASE3.json"
    );
    let errors = transform_reply(schema_doc.as_bytes()).expect_err("a schema document");
    let shape = errors
        .errors
        .iter()
        .find(|e| e.rule == "shape")
        .expect("shape error");
    assert!(
        shape.message.contains("JSON Schema document"),
        "{}",
        shape.message
    );
}

#[test]
fn conflicts_name_both_paths() {
    let reply = json!({"request_id": "r", "success": true,
                       "data": {"images": ["a.png", "b.png"], "seeds": [1]}});
    let errors = map_reply(&reply).expect_err("seeds length mismatch");
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].path, "/data/seeds");
    assert!(errors.errors[0].message.contains("/data/images"));

    let reply = json!({"success": true, "output_path": "a.png",
                       "processing_time": 1.0, "generation_time_seconds": 2.0});
    let errors = map_reply(&reply).expect_err("timings disagree");
    assert_eq!(errors.errors[0].path, "/generation_time_seconds");
    assert!(errors.errors[0].message.contains("/processing_time"));
}

#[test]
fn batch_without_seeds_uses_seed_plus_i() {
    let reply = json!({"request_id": "r", "success": true,
                       "data": {"images": ["a.png", "b.png", "c.png"], "seed": 41}});
    let mapping = map_reply(&reply).expect("maps");
    let seeds: Vec<Option<i64>> = mapping.response.images.iter().map(|i| i.seed).collect();
    assert_eq!(seeds, [Some(41), Some(42), Some(43)]);
}

#[test]
fn the_error_text_is_kept_verbatim() {
    let text = "  line one\n\tline two \u{1F4A5} \"quoted\"  ";
    let reply = json!({"success": false, "error": text});
    let response = transform_reply(reply.to_string().as_bytes()).expect("maps");
    assert_eq!(response["error"], text);
    assert_eq!(response["success"], false);
    assert_eq!(response["images"], json!([]));
    assert_eq!(response["metrics"]["pipelineType"], PIPELINE_TYPE);
}

#[test]
fn the_wire_order_of_the_response_is_fixed() {
    let response = transform_reply(br#"{"success":true,"output_path":"a.png"}"#).expect("maps");
    let keys: Vec<&String> = response.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "success",
            "message",
            "error",
            "images",
            "metrics",
            "featuresUsed"
        ]
    );
    let metric_keys: Vec<&String> = response["metrics"]
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(
        metric_keys,
        [
            "generationTimeSeconds",
            "loadTimeSeconds",
            "preprocessingTimeSeconds",
            "postprocessingTimeSeconds",
            "inferenceSteps",
            "pipelineType",
            "memoryUsage"
        ]
    );
}

#[test]
fn a_full_csharp_response_round_trips_through_the_typed_model() {
    let full = json!({
        "success": true,
        "message": "ok",
        "error": null,
        "images": [{"path": "/o/a.png", "filename": "a.png", "width": 1024, "height": 1024,
                    "seed": 5, "metadata": {"k": [1, 2]}}],
        "metrics": {
            "generationTimeSeconds": 1.5, "loadTimeSeconds": 0.25,
            "preprocessingTimeSeconds": 0.0, "postprocessingTimeSeconds": 0.5,
            "inferenceSteps": 25, "pipelineType": "enhanced_sdxl",
            "memoryUsage": {"gpuMemoryMB": 8192.0, "systemMemoryMB": 1024.5, "peakMemoryMB": 9000.0}
        },
        "featuresUsed": {"lora": true}
    });
    Schema::CsharpResponse
        .validate(&full)
        .expect("the example is a valid C# response");
    let typed: transformer::reply_map::CsharpResponse =
        serde_json::from_value(full.clone()).expect("fits the typed model");
    assert_eq!(typed.to_value().expect("serialises"), full);
}

#[test]
fn the_csharp_response_schema_rejects_broken_responses() {
    let valid =
        transform_reply(br#"{"success":true,"output_path":"a.png","seed":1}"#).expect("maps");
    type Damage = fn(&mut Value);
    let broken: [(&str, Damage); 7] = [
        ("missing featuresUsed", |v| {
            v.as_object_mut().map(|o| o.remove("featuresUsed"));
        }),
        ("unknown property", |v| v["requestId"] = json!("r")),
        ("negative seed", |v| v["images"][0]["seed"] = json!(-1)),
        ("seed beyond int", |v| {
            v["images"][0]["seed"] = json!(2147483648u64)
        }),
        ("empty filename", |v| v["images"][0]["filename"] = json!("")),
        ("error text on success", |v| v["error"] = json!("boom")),
        ("images on failure", |v| v["success"] = json!(false)),
    ];
    for (what, damage) in broken {
        let mut response = valid.clone();
        damage(&mut response);
        assert!(
            !Schema::CsharpResponse.is_valid(&response),
            "{what} was accepted"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies built from the typed reply model
// ---------------------------------------------------------------------------------------------

fn image_path() -> impl Strategy<Value = String> {
    let dir = prop_oneof![
        Just(String::new()),
        Just("/srv/sdxl/outputs/".to_owned()),
        Just("C:\\sdxl\\out put\\".to_owned()),
        Just("relative/dir\\mixed/".to_owned()),
        Just("/tmp/ünïcødé/дир/".to_owned()),
    ];
    (
        dir,
        "[a-zA-Z0-9_ .-]{0,12}[a-zA-Z0-9_]",
        prop::sample::select(vec!["png", "jpg", "webp"]),
    )
        .prop_map(|(dir, stem, ext)| format!("{dir}{stem}.{ext}"))
}

fn seed() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), Just(MAX_SEED), 0..=MAX_SEED]
}

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![(32u32..=256).prop_map(|n| n * 8), 1u32..=16384]
}

fn seconds() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..1e5]
}

fn unknown_properties() -> impl Strategy<Value = Map<String, Value>> {
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
        Just(json!({"nested": [1, 2, {"deep": true}]})),
    ];
    prop::collection::btree_map("x_[a-z]{1,6}", value, 0..3)
        .prop_map(|entries| entries.into_iter().collect())
}

fn features() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        "[a-z_]{1,10}",
        prop_oneof![
            any::<bool>().prop_map(Value::from),
            (0.0..8.0f64).prop_map(Value::from),
            Just(json!({"count": 2, "names": ["a", "b"]})),
        ],
        0..4,
    )
    .prop_map(|entries| entries.into_iter().collect())
}

/// One timing reported under zero to three of its synonyms, always agreeing.
fn facts() -> impl Strategy<Value = GenerationFacts> {
    (
        (seconds(), any::<[bool; 3]>()),
        proptest::option::of(0u32..=1000),
        proptest::option::of(-50.0..50.0f64),
        proptest::option::of("[A-Za-z]{1,30}Scheduler"),
        proptest::option::of("[a-z0-9/_.-]{1,40}"),
        proptest::option::of(features()),
    )
        .prop_map(
            |(
                (time, [p, t, g]),
                inference_steps,
                guidance_scale,
                scheduler,
                model_used,
                features_used,
            )| {
                GenerationFacts {
                    processing_time: p.then_some(time),
                    total_time: t.then_some(time),
                    generation_time_seconds: g.then_some(time),
                    inference_steps,
                    guidance_scale,
                    scheduler,
                    model_used,
                    features_used,
                }
            },
        )
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    proptest::option::of(prop_oneof![
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z"
            .prop_map(Timestamp::Text),
        (0.0..4e9f64).prop_map(Timestamp::UnixSeconds),
    ])
}

/// Per-image seeds: explicit `seeds`, or a base `seed` whose `seed + i` stays a C# int, or none.
fn batch_seeds(count: usize) -> impl Strategy<Value = (Option<i64>, Option<Vec<i64>>)> {
    let last_offset = count as i64 - 1;
    prop_oneof![
        (
            proptest::option::of(seed()),
            prop::collection::vec(seed(), count)
        )
            .prop_map(|(seed, seeds)| (seed, Some(seeds))),
        (0..=MAX_SEED - last_offset).prop_map(|seed| (Some(seed), None)),
        Just((None, None)),
    ]
}

fn envelope() -> impl Strategy<Value = PythonReply> {
    prop::collection::vec(image_path(), 1..=8)
        .prop_flat_map(|images| {
            let count = images.len();
            (
                Just(images),
                batch_seeds(count),
                proptest::option::of(prop::collection::vec("[A-Za-z0-9+/]{0,16}={0,2}", count)),
                proptest::option::of((size(), size(), unknown_properties())),
                facts(),
                unknown_properties(),
                (
                    "[0-9a-f]{16}",
                    timestamp(),
                    proptest::option::of(".{0,20}"),
                    unknown_properties(),
                ),
            )
        })
        .prop_map(
            |(images, (seed, seeds), images_base64, dimensions, facts, data_extra, top)| {
                let (request_id, timestamp, message, extra) = top;
                PythonReply::Envelope(EnvelopeReply {
                    request_id,
                    success: Success,
                    timestamp,
                    message,
                    data: EnvelopeData {
                        images,
                        images_base64,
                        seed,
                        seeds,
                        dimensions: dimensions.map(|(width, height, extra)| Dimensions {
                            width,
                            height,
                            extra,
                        }),
                        facts,
                        extra: data_extra,
                    },
                    extra,
                })
            },
        )
}

fn error_reply() -> impl Strategy<Value = PythonReply> {
    (
        ".{0,80}",
        proptest::option::of("[0-9a-f]{16}"),
        timestamp(),
        proptest::option::of(".{0,20}"),
        unknown_properties(),
    )
        .prop_map(|(error, request_id, timestamp, message, extra)| {
            PythonReply::Error(ErrorReply {
                success: Success,
                error,
                request_id,
                timestamp,
                message,
                extra,
            })
        })
}

fn legacy_file() -> impl Strategy<Value = PythonReply> {
    (
        image_path(),
        proptest::option::of(seed()),
        proptest::option::of(size()),
        proptest::option::of(size()),
        proptest::option::of(".{0,20}"),
        facts(),
        unknown_properties(),
    )
        .prop_map(
            |(output_path, seed, width, height, message, facts, extra)| {
                PythonReply::LegacyFile(LegacyFileReply {
                    success: Success,
                    output_path,
                    message,
                    seed,
                    width,
                    height,
                    facts,
                    extra,
                })
            },
        )
}

fn legacy_image() -> impl Strategy<Value = LegacyImage> {
    (
        image_path(),
        any::<bool>(),
        proptest::option::of(size()),
        proptest::option::of(size()),
        proptest::option::of(seed()),
        unknown_properties(),
    )
        .prop_map(
            |(path, with_filename, width, height, seed, extra)| LegacyImage {
                filename: with_filename.then(|| file_name(&path).to_owned()),
                path,
                width,
                height,
                seed,
                extra,
            },
        )
}

fn legacy_images() -> impl Strategy<Value = PythonReply> {
    (
        prop::collection::vec(legacy_image(), 1..=8),
        proptest::option::of(".{0,20}"),
        facts(),
        unknown_properties(),
    )
        .prop_map(|(images, message, facts, extra)| {
            PythonReply::LegacyImages(LegacyImagesReply {
                success: Success,
                images,
                message,
                facts,
                extra,
            })
        })
}

fn python_reply() -> impl Strategy<Value = PythonReply> {
    prop_oneof![envelope(), error_reply(), legacy_file(), legacy_images()]
}

/// What a C# image must carry for a generated reply: (path, width, height, seed).
type ExpectedImage = (String, Option<u32>, Option<u32>, Option<i64>);

fn expected_images(reply: &PythonReply) -> Vec<ExpectedImage> {
    match reply {
        PythonReply::Envelope(r) => {
            let d = &r.data;
            let size = d.dimensions.as_ref().map(|d| (d.width, d.height));
            d.images
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    let seed = match (&d.seeds, d.seed) {
                        (Some(seeds), _) => Some(seeds[i]),
                        (None, Some(seed)) => Some(seed + i as i64),
                        (None, None) => None,
                    };
                    (path.clone(), size.map(|s| s.0), size.map(|s| s.1), seed)
                })
                .collect()
        }
        PythonReply::Error(_) => Vec::new(),
        PythonReply::LegacyFile(r) => vec![(r.output_path.clone(), r.width, r.height, r.seed)],
        PythonReply::LegacyImages(r) => r
            .images
            .iter()
            .map(|i| (i.path.clone(), i.width, i.height, i.seed))
            .collect(),
    }
}

/// JSON Pointers of the unknown properties a generated reply carries.
fn unknown_paths(reply: &PythonReply) -> BTreeSet<String> {
    fn under(base: &str, extra: &Map<String, Value>) -> Vec<String> {
        extra.keys().map(|k| format!("{base}/{k}")).collect()
    }
    let mut paths = Vec::new();
    match reply {
        PythonReply::Envelope(r) => {
            paths.extend(under("", &r.extra));
            paths.extend(under("/data", &r.data.extra));
            if let Some(d) = &r.data.dimensions {
                paths.extend(under("/data/dimensions", &d.extra));
            }
        }
        PythonReply::Error(r) => paths.extend(under("", &r.extra)),
        PythonReply::LegacyFile(r) => paths.extend(under("", &r.extra)),
        PythonReply::LegacyImages(r) => {
            paths.extend(under("", &r.extra));
            for (i, image) in r.images.iter().enumerate() {
                paths.extend(under(&format!("/images/{i}"), &image.extra));
            }
        }
    }
    paths.into_iter().collect()
}

fn facts_of(reply: &PythonReply) -> Option<&GenerationFacts> {
    match reply {
        PythonReply::Envelope(r) => Some(&r.data.facts),
        PythonReply::Error(_) => None,
        PythonReply::LegacyFile(r) => Some(&r.facts),
        PythonReply::LegacyImages(r) => Some(&r.facts),
    }
}

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "success",
            "data",
            "images",
            "output_path",
            "seed",
            "seeds",
            "error",
            "progress",
            "",
        ])
        .prop_map(Value::from),
        ".{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec![
                "success",
                "data",
                "images",
                "images_base64",
                "output_path",
                "seed",
                "seeds",
                "error",
                "type",
                "request_id",
                "dimensions",
                "width",
                "height",
                "path",
                "filename",
                "processing_time",
                "total_time",
                "generation_time_seconds",
                "features_used",
                "inference_steps",
            ])
            .prop_map(str::to_owned),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON Pointer of a document (the root excluded).
fn pointers(value: &Value, base: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{base}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{base}/{i}");
                out.push(p.clone());
                pointers(v, &p, out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Property (e): every reply of every shape maps to a C# response that validates against the
    /// csharp-response schema, carrying each image, its size and its seed (B.8), the timing, the
    /// error text, and a report entry for every unknown property.
    #[test]
    fn every_python_reply_maps_to_a_valid_csharp_response(reply in python_reply()) {
        let input = reply.to_value().expect("serialises");
        prop_assert!(Schema::PythonReply.is_valid(&input), "generator made an invalid reply: {input}");
        prop_assert_eq!(transformer::reply_map::PythonReply::from_value(&input).map_err(|e| e.to_json_line()), Ok(reply.clone()));

        let mapping = map_reply(&input).map_err(|e| TestCaseError::fail(e.to_json_line()))?;
        let output = serde_json::to_value(&mapping.response).expect("serialises");
        if let Err(e) = Schema::CsharpResponse.validate(&output) {
            return Err(TestCaseError::fail(format!("{}\n{output}", e.to_json_line())));
        }

        let response = &mapping.response;
        prop_assert_eq!(mapping.report.shape, reply.shape());
        prop_assert_eq!(response.success, reply.shape() != ReplyShape::Error);
        let got: Vec<_> = response
            .images
            .iter()
            .map(|i| (i.path.clone(), i.width, i.height, i.seed))
            .collect();
        prop_assert_eq!(got, expected_images(&reply));
        for image in &response.images {
            prop_assert!(!image.filename.is_empty());
            prop_assert!(image.path.ends_with(&image.filename));
        }
        let metrics = response.metrics.as_ref().expect("metrics are always written");
        prop_assert_eq!(metrics.pipeline_type.as_deref(), Some(PIPELINE_TYPE));
        match (&reply, facts_of(&reply)) {
            (PythonReply::Error(e), _) => {
                prop_assert_eq!(response.error.as_deref(), Some(e.error.as_str()));
                prop_assert_eq!(metrics.generation_time_seconds, None);
            }
            (_, Some(facts)) => {
                prop_assert_eq!(response.error.as_deref(), None);
                let time = facts.processing_time.or(facts.total_time).or(facts.generation_time_seconds);
                prop_assert_eq!(metrics.generation_time_seconds, time);
                prop_assert_eq!(metrics.inference_steps, facts.inference_steps);
                prop_assert_eq!(&response.features_used, &facts.features_used);
            }
            (_, None) => unreachable!("every success shape has facts"),
        }
        let warned: BTreeSet<String> =
            mapping.report.warnings.iter().map(|w| w.path.clone()).collect();
        prop_assert_eq!(warned, unknown_paths(&reply));
    }

    /// Property (d), reply side: any JSON value in → Ok or Err, never a panic; an Ok is always a
    /// valid C# response and comes only from a schema-valid reply.
    #[test]
    fn any_json_maps_or_errs(value in any_json()) {
        if let Ok(mapping) = map_reply(&value) {
            prop_assert!(Schema::PythonReply.is_valid(&value));
            let output = serde_json::to_value(&mapping.response).expect("serialises");
            prop_assert!(Schema::CsharpResponse.is_valid(&output));
        }
    }

    /// Valid replies with one value replaced by arbitrary JSON: the near misses random JSON
    /// rarely reaches. Never a panic; every error points into the reply.
    #[test]
    fn damaged_replies_map_or_err(reply in python_reply(), pick in any::<prop::sample::Index>(), junk in any_json()) {
        let mut input = reply.to_value().expect("serialises");
        let mut all = Vec::new();
        pointers(&input, "", &mut all);
        if !all.is_empty() {
            let target = all[pick.index(all.len())].clone();
            if let Some(slot) = input.pointer_mut(&target) {
                *slot = junk;
            }
        }
        match map_reply(&input) {
            Ok(mapping) => {
                prop_assert!(Schema::PythonReply.is_valid(&input));
                let output = serde_json::to_value(&mapping.response).expect("serialises");
                prop_assert!(Schema::CsharpResponse.is_valid(&output));
            }
            Err(errors) => {
                prop_assert!(!errors.errors.is_empty());
                for error in &errors.errors {
                    prop_assert_ne!(error.rule, "internal");
                    prop_assert!(error.path.is_empty() || input.pointer(&error.path).is_some(),
                        "{} is not a pointer into {}", error.path, input);
                }
            }
        }
    }

    /// Any byte string through the CLI entry: Ok or Err, never a panic.
    #[test]
    fn any_bytes_map_or_err(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = transform_reply(&bytes);
    }
}
