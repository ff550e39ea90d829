//! Python v2 → C#: the inverse of [`crate::request_map`], for round trips and for C# clients of
//! a Python worker. An `inference_request` becomes the camelCase HTTP body; every other message
//! becomes the stdin action envelope. Python fields with no C# place are reported.

use serde_json::{json, Map, Value};

use crate::csharp::{self, Casing, CsRequest, PromptWeighting};
use crate::error::{Errors, FieldError, Result};
use crate::report::Reported;
use crate::{commands, Schema};

/// The C# message and the Python fields that have no C# counterpart.
#[derive(Debug, Clone, PartialEq)]
pub struct Reversed {
    pub message: Value,
    pub reported: Vec<Reported>,
}

pub fn python_to_csharp(input: &Value) -> Result<Reversed> {
    Schema::PythonRequest.validate(input)?;
    let message_type = input["message_type"].as_str().unwrap_or_default();
    let request_id = input["request_id"].as_str().unwrap_or_default();
    let data = &input["data"];
    let mut reported = Vec::new();
    let command = commands::by_message_type(message_type).ok_or_else(|| {
        Errors::one(FieldError::new(
            "/message_type",
            "enum",
            format!("no C# action for message type `{message_type}`"),
        ))
    })?;
    let message = match message_type {
        "inference_request" => {
            reported.push(Reported {
                path: "/request_id".into(),
                value: json!(request_id),
                reason: "the C# HTTP body has no request id (the stdin envelope's session_id is set by the C# side)",
            });
            let request = inference_to_csharp(data, "/data", &mut reported);
            csharp::to_json(&request, Casing::Camel)
        }
        "validate_request" => {
            let request = inference_to_csharp(&data["request"], "/data/request", &mut reported);
            json!({
                "action": command.action,
                "session_id": request_id,
                "request": csharp::to_json(&request, Casing::Camel),
            })
        }
        _ => {
            let mut envelope = Map::new();
            envelope.insert("action".into(), json!(command.action));
            envelope.insert("session_id".into(), json!(request_id));
            if let Value::Object(fields) = data {
                for (k, v) in fields {
                    envelope.insert(k.clone(), v.clone());
                }
            }
            Value::Object(envelope)
        }
    };
    Ok(Reversed { message, reported })
}

fn s(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn f(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn i(value: &Value) -> Option<i64> {
    value.as_i64()
}

fn b(value: &Value) -> Option<bool> {
    value.as_bool()
}

/// `data` of a v2 inference request (already schema-valid) → the C# request model.
fn inference_to_csharp(d: &Value, at: &str, reported: &mut Vec<Reported>) -> CsRequest {
    let mut report = |field: &str, reason: &'static str| {
        let value = d.pointer(field).cloned().unwrap_or(Value::Null);
        if !value.is_null() {
            reported.push(Reported {
                path: format!("{at}{field}"),
                value,
                reason,
            });
        }
    };
    report("/worker_type", "C# does not choose the worker type");
    report("/clip_skip", "the C# request has no clip skip field");
    report(
        "/refiner",
        "the C# request has no refiner denoising_start field",
    );
    report(
        "/output/return_base64",
        "the C# request has no base64 output switch",
    );
    report(
        "/batch/parallel",
        "the C# request has no parallel-batch switch",
    );
    report(
        "/batch/seeds",
        "the C# request has one seed; per-image seeds are seed + i",
    );
    report("/metadata", "the C# request body has no metadata section");
    if d.pointer("/model_name").is_some()
        && d.pointer("/models/base").is_some()
        && d["model_name"] != d["models"]["base"]
    {
        report(
            "/model_name",
            "differs from models.base; C# carries one base model (models.base used)",
        );
    }

    let mut r = CsRequest::default();
    r.model.base = s(&d["models"]["base"]).or_else(|| s(&d["model_name"]));
    r.model.refiner = s(&d["models"]["refiner"]);
    r.model.vae = s(&d["models"]["vae"]);

    r.scheduler.kind = s(&d["scheduler"]);
    r.scheduler.steps = i(&d["hyperparameters"]["num_inference_steps"]);
    r.scheduler.use_karras_sigmas = b(&d["scheduler_options"]["use_karras_sigmas"]);
    r.scheduler.timestep_spacing = s(&d["scheduler_options"]["timestep_spacing"]);

    let h = &mut r.hyperparameters;
    h.guidance_scale = f(&d["hyperparameters"]["guidance_scale"]);
    h.seed = i(&d["hyperparameters"]["seed"]);
    h.batch_size = i(&d["batch"]["size"]);
    h.width = i(&d["dimensions"]["width"]);
    h.height = i(&d["dimensions"]["height"]);
    h.prompt_weighting = d["prompt_attention"].as_str().map(|name| match name {
        "compel" => PromptWeighting::Enabled(true),
        "none" => PromptWeighting::Enabled(false),
        other => PromptWeighting::Syntax(other.to_string()),
    });

    let c = &mut r.conditioning;
    c.prompt = s(&d["prompt"]);
    c.negative_prompt = s(&d["negative_prompt"]);
    c.loras = d["lora"]["models"].as_array().map(|models| {
        models
            .iter()
            .map(|m| csharp::Lora {
                name: s(&m["name"]),
                scale: f(&m["weight"]),
                adapter_name: s(&m["adapter_name"]),
                ..Default::default()
            })
            .collect()
    });
    let units = d["controlnets"]
        .as_array()
        .cloned()
        .or_else(|| d.get("controlnet").map(|u| vec![u.clone()]));
    c.control_nets = units.map(|units| {
        units
            .iter()
            .map(|u| csharp::ControlNet {
                kind: s(&u["type"]),
                model_path: s(&u["model_path"]),
                image: s(&u["control_image"]),
                weight: f(&u["conditioning_scale"]),
                guidance_start: f(&u["guidance_start"]),
                guidance_end: f(&u["guidance_end"]),
                ..Default::default()
            })
            .collect()
    });
    c.textual_inversions = d["textual_inversions"].as_array().map(|items| {
        items
            .iter()
            .map(|t| csharp::TextualInversion {
                token: s(&t["token"]),
                path: s(&t["path"]),
            })
            .collect()
    });
    c.init_image = s(&d["init_image"]);
    c.inpaint_mask = s(&d["mask_image"]);
    c.img2img_strength = f(&d["hyperparameters"]["strength"]);

    let precision = &d["precision"];
    let p = &mut r.performance;
    p.dtype = precision["dtype"].as_str().map(|dtype| {
        match dtype {
            "float16" => "fp16",
            "bfloat16" => "bf16",
            _ => "fp32",
        }
        .to_string()
    });
    p.xformers = b(&precision["xformers"]);
    p.attention_slicing = b(&precision["attention_slicing"]);
    p.cpu_offload = b(&precision["cpu_offload"]);
    p.sequential_cpu_offload = b(&precision["sequential_cpu_offload"]);
    if b(&precision["vae_slicing"]) == Some(true) {
        p.memory_optimizations = Some(vec!["vae_slicing".into()]);
    } else if b(&precision["vae_slicing"]) == Some(false) {
        reported.push(Reported {
            path: format!("{at}/precision/vae_slicing"),
            value: json!(false),
            reason: "C# can only list vae_slicing as enabled (memoryOptimizations); false is its absence",
        });
    }

    let output = &d["output"];
    let pp = &mut r.postprocessing;
    pp.output_format = s(&output["format"]);
    pp.quality = i(&output["quality"]);
    if let Some(upscale) = output.get("upscale") {
        pp.upscaler = match (b(&upscale["enabled"]), s(&upscale["method"])) {
            (Some(true), Some(method)) => Some(method),
            (Some(true), None) => {
                reported.push(Reported {
                    path: format!("{at}/output/upscale/enabled"),
                    value: json!(true),
                    reason: "upscaling enabled without a method: C# names the upscaler, so it becomes \"default\"",
                });
                Some("default".into())
            }
            _ => Some("none".into()),
        };
        pp.upscale_factor = f(&upscale["factor"]);
    }
    r.output.save_path = s(&output["save_path"]);
    r
}
