//! Properties of the request mapping, with strategies built from the typed C# model.
//!
//! (a) every generated valid C# request maps to a Python request valid under the v2 schema;
//! (b) C# → Python → C# keeps every mapped field;
//! (c) random re-casing of every property name gives the identical result;
//! (d) any JSON value and any byte string in → `Ok` or `Err`, never a panic;
//! (e) mapping the bytes (`transform_request`, which reads them without recording paths and
//! builds the report on demand) gives what mapping the parsed `Value` gives (message, report,
//! errors);
//! (f) a message checked as a [`Flat`] document gets the answer its `Value` gets, under every
//! schema, and is written as the same text;
//! and every v1-valid request is v2-valid.

use proptest::prelude::*;
use serde_json::{json, Value};
use transformer::csharp::{self, Casing, CsRequest, PromptWeighting};
use transformer::flat::Flat;
use transformer::request_map::{map_request, transform_request, MapOptions};
use transformer::reverse::python_to_csharp;
use transformer::{schedulers, Schema};

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(
        "[a-zA-Z0-9][a-zA-Z0-9 ,.:()\\[\\]东京é🌃_-]{{0,{max}}}"
    ))
    .unwrap()
}

fn path() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_/.-]{0,24}"
}

fn scheduler_name() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = schedulers::accepted_names();
    (proptest::sample::select(names), any::<u8>()).prop_map(|(name, casing)| match casing % 3 {
        0 => name.to_string(),
        1 => name.to_ascii_lowercase(),
        _ => name.to_ascii_uppercase(),
    })
}

fn lora() -> impl Strategy<Value = csharp::Lora> {
    (
        path(),
        -2.0f64..=2.0,
        any::<bool>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(name, weight, seed_shape, adapter)| {
            if seed_shape {
                csharp::Lora {
                    model_path: Some(name),
                    weight: Some(weight),
                    ..Default::default()
                }
            } else {
                csharp::Lora {
                    name: Some(name),
                    scale: Some(weight),
                    adapter_name: adapter,
                    ..Default::default()
                }
            }
        })
}

fn control_net() -> impl Strategy<Value = csharp::ControlNet> {
    (
        proptest::option::of(proptest::sample::select(vec!["canny", "depth", "openpose"])),
        proptest::option::of(path()),
        path(),
        any::<bool>(),
        proptest::option::of(0.0f64..=2.0),
        proptest::option::of((0.0f64..0.5, 0.5f64..=1.0)),
    )
        .prop_filter(
            "a unit needs a type or a model path",
            |(kind, model, ..)| kind.is_some() || model.is_some(),
        )
        .prop_map(
            |(kind, model_path, image, seed_shape, weight, window)| csharp::ControlNet {
                kind: kind.map(str::to_string),
                model_path,
                image: (!seed_shape).then(|| image.clone()),
                conditioning_image: seed_shape.then_some(image),
                weight,
                guidance_start: window.map(|w| w.0),
                guidance_end: window.map(|w| w.1),
            },
        )
}

fn textual_inversion() -> impl Strategy<Value = csharp::TextualInversion> {
    (proptest::option::of("<[a-z]{1,6}>"), path()).prop_map(|(token, path)| {
        csharp::TextualInversion {
            token,
            path: Some(path),
        }
    })
}

prop_compose! {
    fn model_and_scheduler()(
        base in path(),
        refiner in proptest::option::of(prop_oneof![Just(String::new()), path()]),
        vae in proptest::option::of(path()),
        kind in proptest::option::of(scheduler_name()),
        steps in proptest::option::of(1i64..=150),
        karras in proptest::option::of(any::<bool>()),
        spacing in proptest::option::of(proptest::sample::select(vec!["leading", "trailing", "linspace", "Trailing"])),
    ) -> (csharp::Model, csharp::Scheduler) {
        (
            csharp::Model { base: Some(base), refiner, vae, ..Default::default() },
            csharp::Scheduler {
                kind,
                steps,
                use_karras_sigmas: karras,
                timestep_spacing: spacing.map(str::to_string),
                ..Default::default()
            },
        )
    }
}

prop_compose! {
    fn hyperparameters()(
        guidance in proptest::option::of(1.0f64..=30.0),
        seed in proptest::option::of(prop_oneof![Just(-1i64), 0i64..=2_147_483_647]),
        batch in proptest::option::of(1i64..=8),
        width in proptest::option::of((32i64..=256).prop_map(|n| n * 8)),
        height in proptest::option::of((32i64..=256).prop_map(|n| n * 8)),
        weighting in proptest::option::of(prop_oneof![
            any::<bool>().prop_map(PromptWeighting::Enabled),
            proptest::sample::select(vec!["none", "a1111", "compel", "A1111"]).prop_map(|s| PromptWeighting::Syntax(s.into())),
        ]),
    ) -> csharp::Hyperparameters {
        csharp::Hyperparameters {
            guidance_scale: guidance,
            seed,
            batch_size: batch,
            width,
            height,
            prompt_weighting: weighting,
            ..Default::default()
        }
    }
}

prop_compose! {
    fn conditioning()(
        loras in proptest::option::of(proptest::collection::vec(lora(), 0..3)),
        control_nets in proptest::option::of(proptest::collection::vec(control_net(), 0..3)),
        tis in proptest::option::of(proptest::collection::vec(textual_inversion(), 0..3)),
        init in proptest::option::of(path()),
        mask in any::<bool>(),
        strength in proptest::option::of(0.0f64..=1.0),
    ) -> csharp::Conditioning {
        csharp::Conditioning {
            loras,
            control_nets,
            textual_inversions: tis,
            inpaint_mask: (mask && init.is_some()).then(|| "mask.png".to_string()),
            init_image: init,
            img2img_strength: strength,
            ..Default::default()
        }
    }
}

prop_compose! {
    fn performance()(
        dtype in proptest::option::of(proptest::sample::select(vec!["fp16", "bf16", "fp32", "FP16", "float32"])),
        flags in proptest::collection::vec(proptest::option::of(any::<bool>()), 4),
        mem in proptest::option::of(proptest::collection::vec(proptest::sample::select(vec!["vae_slicing", "attention_slicing"]), 0..2)),
    ) -> csharp::Performance {
        csharp::Performance {
            dtype: dtype.map(str::to_string),
            xformers: flags[0],
            attention_slicing: flags[1].filter(|b| *b || mem.is_none()),
            cpu_offload: flags[2],
            sequential_cpu_offload: flags[3],
            memory_optimizations: mem.map(|m| m.into_iter().map(str::to_string).collect()),
            ..Default::default()
        }
    }
}

prop_compose! {
    fn output_settings()(
        upscale_list in any::<bool>(),
        upscaler in proptest::option::of(prop_oneof![Just("none".to_string()), "[A-Za-z]{1,12}"]),
        factor in proptest::option::of(1.0f64..=8.0),
        format in proptest::option::of(proptest::sample::select(vec!["PNG", "png", "jpeg", "jpg", "WEBP"])),
        format_in_output in any::<bool>(),
        quality in proptest::option::of(1i64..=100),
        save_path in proptest::option::of(path()),
    ) -> (csharp::Postprocessing, Option<Vec<csharp::PostProcessingStep>>, csharp::Output) {
        let mut pp = csharp::Postprocessing::default();
        let mut steps = None;
        let mut output = csharp::Output { save_path, ..Default::default() };
        if upscale_list {
            steps = Some(match factor {
                Some(f) => vec![csharp::PostProcessingStep { kind: Some("Upscale".into()), factor: Some(f), model: Some("ESRGAN".into()) }],
                None => vec![],
            });
        } else {
            pp.upscaler = upscaler;
            pp.upscale_factor = factor;
        }
        if format_in_output || upscale_list {
            output.format = format.map(str::to_string);
            output.quality = quality;
        } else {
            pp.output_format = format.map(str::to_string);
            pp.quality = quality;
        }
        (pp, steps, output)
    }
}

prop_compose! {
    fn request()(
        (model, scheduler) in model_and_scheduler(),
        mut hyperparameters in hyperparameters(),
        mut conditioning in conditioning(),
        performance in performance(),
        (postprocessing, post_processing_steps, output) in output_settings(),
        prompt in text(60),
        prompt_in_hyper in any::<bool>(),
        negative in proptest::option::of(prop_oneof![Just(String::new()), text(30)]),
    ) -> CsRequest {
        if prompt_in_hyper {
            hyperparameters.prompt = Some(prompt);
            hyperparameters.negative_prompt = negative;
        } else {
            conditioning.prompt = Some(prompt);
            conditioning.negative_prompt = negative;
        }
        CsRequest { model, scheduler, hyperparameters, conditioning, performance, postprocessing, post_processing_steps, output }
    }
}

/// The request in one of the C# wire dialects.
fn wire(request: &CsRequest, dialect: u8) -> Value {
    match dialect % 4 {
        0 => csharp::to_json(request, Casing::Camel),
        1 => csharp::to_json(request, Casing::Pascal),
        2 => {
            json!({"action": "generate_sdxl_enhanced", "request": csharp::to_json(request, Casing::Pascal), "session_id": "0123456789abcdef"})
        }
        _ => {
            json!({"action": "generate_sdxl_enhanced", "request_data": csharp::to_json(request, Casing::Camel)})
        }
    }
}

fn fixed_id() -> MapOptions {
    MapOptions {
        request_id: Some("fixedfixedfixed0".into()),
    }
}

fn without_ids(mut message: Value) -> Value {
    message["request_id"] = Value::Null;
    if let Some(meta) = message["data"].get_mut("metadata") {
        meta["request_id"] = Value::Null;
    }
    message
}

fn recase(value: Value, bits: &mut impl Iterator<Item = bool>) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key: String = k
                        .chars()
                        .map(|c| {
                            if bits.next().unwrap_or(false) {
                                c.to_ascii_uppercase()
                            } else {
                                c.to_ascii_lowercase()
                            }
                        })
                        .collect();
                    (key, recase(v, bits))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| recase(v, bits)).collect()),
        other => other,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z_]{1,16}",
                    proptest::sample::select(vec![
                        "model",
                        "scheduler",
                        "hyperparameters",
                        "conditioning",
                        "postprocessing",
                        "action",
                        "request",
                        "parameters",
                        "prompt",
                        "loras",
                        "controlNets",
                        "steps",
                        "seed",
                        "base",
                    ])
                    .prop_map(str::to_string)
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at the `n`-th node (pre-order) of `value` with `replacement`.
fn replace_nth(value: &mut Value, n: &mut usize, replacement: &Value) -> bool {
    if *n == 0 {
        *value = replacement.clone();
        return true;
    }
    *n -= 1;
    match value {
        Value::Object(map) => map.values_mut().any(|v| replace_nth(v, n, replacement)),
        Value::Array(items) => items.iter_mut().any(|v| replace_nth(v, n, replacement)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_requests_map_to_v2_valid_messages(r in request(), dialect in any::<u8>()) {
        let input = wire(&r, dialect);
        let mapping = map_request(&input, &MapOptions::default())
            .map_err(|e| TestCaseError::fail(format!("{}\n{input:#}", e.to_json_line())))?;
        let message = mapping.message_json();
        prop_assert!(Schema::PythonRequest.is_valid(&message), "{message:#}");
    }

    #[test]
    fn b_round_trip_keeps_every_mapped_field(r in request(), dialect in any::<u8>()) {
        let first = map_request(&wire(&r, dialect), &fixed_id()).unwrap().message_json();
        let back = python_to_csharp(&first).map_err(|e| TestCaseError::fail(e.to_json_line()))?;
        let again = map_request(&back.message, &fixed_id())
            .map_err(|e| TestCaseError::fail(format!("{}\n{:#}", e.to_json_line(), back.message)))?
            .message_json();
        prop_assert_eq!(without_ids(first), without_ids(again));
    }

    #[test]
    fn c_recasing_property_names_changes_nothing(r in request(), dialect in any::<u8>(), bits in proptest::collection::vec(any::<bool>(), 64..512)) {
        let input = wire(&r, dialect);
        let recased = recase(input.clone(), &mut bits.into_iter().cycle());
        let a = map_request(&input, &fixed_id()).unwrap();
        let b = map_request(&recased, &fixed_id()).map_err(|e| TestCaseError::fail(e.to_json_line()))?;
        prop_assert_eq!(a.message_json(), b.message_json());
        let lower = |m: &transformer::request_map::Mapping| serde_json::to_string(&m.report).unwrap().to_ascii_lowercase();
        prop_assert_eq!(lower(&a), lower(&b));
    }

    #[test]
    fn d_any_json_value_is_ok_or_err(value in arb_json()) {
        let _ = map_request(&value, &MapOptions::default());
        let _ = python_to_csharp(&value);
    }

    #[test]
    fn d_any_bytes_are_ok_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = transform_request(&bytes, &MapOptions::default());
    }

    #[test]
    fn d_a_valid_request_with_any_subtree_replaced_is_ok_or_err(r in request(), dialect in any::<u8>(), at in 0usize..80, replacement in arb_json()) {
        let mut input = wire(&r, dialect);
        let mut n = at;
        replace_nth(&mut input, &mut n, &replacement);
        if let Ok(mapping) = map_request(&input, &MapOptions::default()) {
            prop_assert!(Schema::PythonRequest.is_valid(&mapping.message_json()));
        }
    }

    #[test]
    fn e_bytes_map_as_the_value_does(r in request(), dialect in any::<u8>(), replace in any::<bool>(), at in 0usize..80, replacement in arb_json()) {
        let mut input = wire(&r, dialect);
        if replace {
            let mut n = at;
            replace_nth(&mut input, &mut n, &replacement);
        }
        let bytes = serde_json::to_vec(&input).unwrap();
        prop_assert_eq!(
            transform_request(&bytes, &MapOptions::default()),
            map_request(&input, &MapOptions::default())
        );
    }

    #[test]
    fn f_flat_documents_validate_as_their_values_do(r in request(), dialect in any::<u8>(), replace in any::<bool>(), at in 0usize..80, replacement in arb_json()) {
        let mut message = map_request(&wire(&r, dialect), &MapOptions::default()).unwrap().message_json();
        if replace {
            let mut n = at;
            replace_nth(&mut message, &mut n, &replacement);
        }
        let flat = Flat::from_serialize(&message, 8).unwrap();
        prop_assert_eq!(&flat.to_value(), &message);
        for schema in Schema::ALL {
            prop_assert_eq!(
                schema.is_valid_flat(&flat),
                schema.is_valid(&message),
                "{} on {:#}", schema.cli_name(), message
            );
        }
    }

    #[test]
    fn f_the_typed_message_is_written_as_its_envelope(r in request(), dialect in any::<u8>()) {
        let mapping = map_request(&wire(&r, dialect), &MapOptions::default()).unwrap();
        for pretty in [false, true] {
            let mut written = Vec::new();
            mapping.write_json(&mut written, pretty).unwrap();
            let expected = if pretty {
                serde_json::to_vec_pretty(mapping.message())
            } else {
                serde_json::to_vec(mapping.message())
            };
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected.unwrap()).unwrap());
        }
        let flat = Flat::from_serialize(mapping.typed(), 8).unwrap();
        prop_assert_eq!(flat.to_value(), mapping.message_json());
    }

    #[test]
    fn v1_valid_requests_stay_v2_valid(r in request()) {
        let mut message = map_request(&wire(&r, 0), &MapOptions::default()).unwrap().message_json();
        // Reduce the v2 message to v1: drop what v2 added.
        let data = message["data"].as_object_mut().unwrap();
        for added in ["scheduler_options", "controlnets", "textual_inversions", "clip_skip", "prompt_attention", "init_image", "mask_image", "refiner"] {
            data.remove(added);
        }
        if let Some(models) = data.get_mut("models").and_then(Value::as_object_mut) {
            for k in ["refiner", "vae"] {
                if models.contains_key(k) { models.insert(k.into(), Value::Null); }
            }
        }
        if let Some(unit) = data.get_mut("controlnet").and_then(Value::as_object_mut) {
            unit.remove("model_path");
        }
        if matches!(data.get("scheduler").and_then(Value::as_str), Some("PNDMScheduler" | "DDPMScheduler")) {
            data.remove("scheduler");
        }
        prop_assert!(Schema::PythonRequestV1.is_valid(&message), "not v1-valid: {message:#}");
        prop_assert!(Schema::PythonRequest.is_valid(&message));
    }
}

/// (e) over every request fixture, valid or not.
#[test]
fn e_fixture_bytes_map_as_their_value_does() {
    fn walk(dir: &std::path::Path, seen: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, seen);
            } else if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).unwrap();
                let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                let from_bytes = transform_request(&bytes, &MapOptions::default());
                assert_eq!(
                    from_bytes,
                    map_request(&value, &MapOptions::default()),
                    "{}",
                    path.display()
                );
                *seen += 1;
            }
        }
    }
    let mut seen = 0;
    walk(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/requests")),
        &mut seen,
    );
    assert!(seen > 20, "{seen} fixtures");
}

#[test]
fn twenty_thousand_deep_nesting_is_an_error() {
    let deep = "{\"a\":".repeat(20_000) + "1" + &"}".repeat(20_000);
    let errors = transform_request(deep.as_bytes(), &MapOptions::default()).unwrap_err();
    assert_eq!(errors.errors[0].rule, "json_syntax");
}
