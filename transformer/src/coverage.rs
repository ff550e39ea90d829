//! The field-coverage table, computed by running the real mapping on probe messages that set
//! every field the C# side can send, and reading the mapping reports. Nothing here is a
//! hand-written list of results: a field shows up as mapped only if the mapping code mapped it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::csharp::{self, Casing, CsRequest};
use crate::request_map::{map_request, MapOptions};

/// One row: a C# field and what the mapping does with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldCoverage {
    /// The message the field belongs to (`request` for the request body, else the action).
    pub message: &'static str,
    /// JSON Pointer of the field, `*` standing for any array index.
    pub csharp: String,
    /// Where it goes in the Python v2 message (several targets joined by `, `).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    pub fields: Vec<FieldCoverage>,
    pub seed_fields_mapped: usize,
    pub seed_fields_total: usize,
    /// The seed document's 17 fields (PROTOCOL A.3) and whether each is mapped.
    pub seed_fields: Vec<SeedField>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedField {
    pub name: &'static str,
    pub csharp: Vec<&'static str>,
    pub mapped: bool,
}

/// The seed's 17 fields and the C# pointers that carry each (all must be mapped).
pub const SEED_FIELDS: &[(&str, &[&str])] = &[
    ("Model.Base", &["/model/base"]),
    ("Model.Refiner", &["/model/refiner"]),
    ("Model.Vae", &["/model/vae"]),
    ("Scheduler.Type", &["/scheduler/type"]),
    ("Scheduler.Steps", &["/scheduler/steps"]),
    (
        "Hyperparameters.GuidanceScale",
        &["/hyperparameters/guidanceScale"],
    ),
    ("Hyperparameters.Width", &["/hyperparameters/width"]),
    ("Hyperparameters.Height", &["/hyperparameters/height"]),
    ("Hyperparameters.Seed", &["/hyperparameters/seed"]),
    ("Conditioning.Prompt", &["/conditioning/prompt"]),
    (
        "Conditioning.NegativePrompt",
        &["/conditioning/negativePrompt"],
    ),
    (
        "Conditioning.LoRAs",
        &[
            "/conditioning/loras/*/modelPath",
            "/conditioning/loras/*/weight",
        ],
    ),
    (
        "Conditioning.ControlNets",
        &[
            "/conditioning/controlNets/*/modelPath",
            "/conditioning/controlNets/*/conditioningImage",
            "/conditioning/controlNets/*/weight",
        ],
    ),
    ("Output.Format", &["/output/format"]),
    ("Output.Quality", &["/output/quality"]),
    ("Output.SavePath", &["/output/savePath"]),
    (
        "PostProcessing",
        &[
            "/postprocessing/*/type",
            "/postprocessing/*/factor",
            "/postprocessing/*/model",
        ],
    ),
];

/// A request body with every field of the HTTP shape and of the seed's shape set, to values
/// the mapping accepts (two shapes of one field carry equal values, so both are mapped).
pub fn probe_request() -> CsRequest {
    let s = |v: &str| Some(v.to_string());
    let model = csharp::Model {
        base: s("models/base.safetensors"),
        refiner: s("models/refiner.safetensors"),
        vae: s("models/vae.safetensors"),
        tokenizer: s("models/tokenizer"),
        text_encoder: s("models/text_encoder"),
        text_encoder2: s("models/text_encoder_2"),
    };
    let scheduler = csharp::Scheduler {
        kind: s("Euler"),
        steps: Some(20),
        snr_weighting: Some(false),
        use_karras_sigmas: Some(true),
        timestep_spacing: s("trailing"),
        guidance_scale: Some(6.0),
    };
    let hyperparameters = csharp::Hyperparameters {
        guidance_scale: Some(6.0),
        seed: Some(7),
        batch_size: Some(2),
        width: Some(768),
        height: Some(512),
        negative_prompt: s("blurry"),
        prompt: s("a lighthouse"),
        prompt_weighting: Some(csharp::PromptWeighting::Enabled(true)),
    };
    let conditioning = csharp::Conditioning {
        prompt: s("a lighthouse"),
        negative_prompt: s("blurry"),
        loras: Some(vec![csharp::Lora {
            name: s("loras/a.safetensors"),
            model_path: s("loras/a.safetensors"),
            scale: Some(0.5),
            weight: Some(0.5),
            adapter_name: s("a"),
        }]),
        control_nets: Some(vec![csharp::ControlNet {
            kind: s("canny"),
            model_path: s("controlnets/canny"),
            image: s("control.png"),
            conditioning_image: s("control.png"),
            weight: Some(0.8),
            guidance_start: Some(0.0),
            guidance_end: Some(0.9),
        }]),
        textual_inversions: Some(vec![csharp::TextualInversion {
            token: s("<tok>"),
            path: s("embeddings/tok.safetensors"),
        }]),
        init_image: s("init.png"),
        inpaint_mask: s("mask.png"),
        mask_blur: Some(4),
        img2img_strength: Some(0.6),
        reference_images: Some(vec!["ref.png".into()]),
    };
    let performance = csharp::Performance {
        dtype: s("fp16"),
        xformers: Some(false),
        attention_slicing: Some(true),
        cpu_offload: Some(false),
        sequential_cpu_offload: Some(false),
        device: s("gpu_0"),
        device_ids: Some(vec![0]),
        compilation: s("none"),
        device_id: s("gpu_0"),
        enable_xformers: Some(false),
        memory_optimizations: Some(vec!["vae_slicing".into()]),
    };
    let postprocessing = csharp::Postprocessing {
        upscaler: s("RealESRGAN"),
        upscale_factor: Some(2.0),
        output_format: s("PNG"),
        quality: Some(90),
        safety_checker: Some(false),
        auto_contrast: Some(false),
        watermark: Some(false),
    };
    let output = csharp::Output {
        format: s("png"),
        quality: Some(90),
        save_path: s("outputs/"),
    };
    CsRequest {
        model,
        scheduler,
        hyperparameters,
        conditioning,
        performance,
        postprocessing,
        post_processing_steps: None,
        output,
    }
}

/// The probe messages: the full body (object `postprocessing`), the seed's list form, and one
/// envelope per action with its fields.
pub fn probe_messages() -> Vec<(&'static str, Value)> {
    let full = probe_request();
    let mut seed_shape = full.clone();
    seed_shape.post_processing_steps = Some(vec![csharp::PostProcessingStep {
        kind: Some("Upscale".into()),
        factor: Some(2.0),
        model: Some("ESRGAN".into()),
    }]);
    let body = csharp::to_json(&full, Casing::Camel);
    let mut messages = vec![
        ("request", body.clone()),
        ("request", csharp::to_json(&seed_shape, Casing::Camel)),
        (
            "generate_sdxl_enhanced",
            json!({"action": "generate_sdxl_enhanced", "session_id": "0123456789abcdef", "request": body.clone()}),
        ),
        (
            "generate_sdxl_enhanced",
            json!({"action": "generate_sdxl_enhanced", "request_data": body.clone()}),
        ),
        (
            "validate_request",
            json!({"action": "validate_request", "request": body}),
        ),
        (
            "generate_image",
            json!({"action": "generate_image", "parameters": {"prompt": "a lighthouse", "negative_prompt": "blurry",
                "width": 512, "height": 512, "steps": 20, "guidance_scale": 6.0, "seed": 7}}),
        ),
        (
            "initialize",
            json!({"action": "initialize", "device_index": 0, "device_id": "gpu_0"}),
        ),
        (
            "load_model",
            json!({"action": "load_model", "model_path": "models/base", "model_type": "sdxl", "model_id": "base"}),
        ),
        (
            "unload_model",
            json!({"action": "unload_model", "model_id": "base"}),
        ),
    ];
    for command in crate::commands::COMMANDS {
        if !messages.iter().any(|(m, _)| *m == command.action) {
            messages.push((command.action, json!({"action": command.action})));
        }
    }
    messages
}

/// Replaces array indices with `*`: `/conditioning/loras/0/name` → `/conditioning/loras/*/name`.
pub fn generalise(pointer: &str) -> String {
    pointer
        .split('/')
        .map(|t| {
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// (message, generalised C# pointer).
type RowKey = (&'static str, String);
/// (Python targets, reason when reported).
type RowValue = (Vec<String>, Option<String>);

/// Runs the mapping on every probe and tabulates the reports.
pub fn compute() -> Coverage {
    // (message, generalised C# pointer) → (python targets, reported reason)
    let mut rows: BTreeMap<RowKey, RowValue> = BTreeMap::new();
    for (message, probe) in probe_messages() {
        let (message, strip) = match message {
            // Envelopes that carry the request body: list their own fields, and the body's under
            // the `request` message.
            "generate_sdxl_enhanced" | "validate_request" => (message, true),
            other => (other, false),
        };
        let options = MapOptions::default();
        let mapping = match map_request(&probe, &options) {
            Ok(mapping) => mapping,
            Err(errors) => {
                rows.insert(
                    (message, String::new()),
                    (
                        Vec::new(),
                        Some(format!("probe rejected: {}", errors.to_json_line())),
                    ),
                );
                continue;
            }
        };
        let body_target = if message == "validate_request" {
            "/data/request"
        } else {
            "/data"
        };
        let mut record = |from: &str, to: Option<&str>, reason: Option<&str>| {
            let mut from = generalise(from);
            let mut msg = message;
            if strip
                && message == "validate_request"
                && (from.starts_with("/request/") || from.starts_with("/request_data/"))
            {
                // The body's own fields are listed once, under `request`.
                return;
            }
            if strip {
                for prefix in ["/request_data", "/request"] {
                    if let Some(rest) = from.strip_prefix(prefix) {
                        if rest.starts_with('/') {
                            from = rest.to_string();
                            msg = "request";
                        }
                        break;
                    }
                }
            }
            let entry = rows.entry((msg, from)).or_default();
            if let Some(to) = to {
                let to = generalise(to);
                if !entry.0.contains(&to) {
                    entry.0.push(to);
                }
            }
            if let Some(reason) = reason {
                entry.1.get_or_insert_with(|| reason.to_string());
            }
        };
        for m in &mapping.report.mapped {
            record(&m.from, Some(&m.to), None);
        }
        for r in &mapping.report.reported {
            record(&r.path, None, Some(r.reason));
        }
        if probe.get("action").is_some() {
            record("/action", Some("/message_type"), None);
        }
        for envelope_key in ["request", "request_data"] {
            if probe.get(envelope_key).is_some() {
                let entry = rows
                    .entry((message, format!("/{envelope_key}")))
                    .or_default();
                entry.0.push(body_target.to_string());
            }
        }
    }
    let fields: Vec<FieldCoverage> = rows
        .into_iter()
        .map(|((message, csharp), (targets, reason))| {
            let status = if !targets.is_empty() {
                "mapped"
            } else {
                "reported"
            };
            FieldCoverage {
                message,
                csharp,
                python: (!targets.is_empty()).then(|| targets.join(", ")),
                status,
                reason: if targets.is_empty() { reason } else { None },
            }
        })
        .collect();
    let seed_fields: Vec<SeedField> = SEED_FIELDS
        .iter()
        .map(|(name, pointers)| SeedField {
            name,
            csharp: pointers.to_vec(),
            mapped: pointers.iter().all(|p| {
                fields
                    .iter()
                    .any(|f| f.message == "request" && f.csharp == *p && f.status == "mapped")
            }),
        })
        .collect();
    Coverage {
        seed_fields_mapped: seed_fields.iter().filter(|f| f.mapped).count(),
        seed_fields_total: SEED_FIELDS.len(),
        seed_fields,
        fields,
    }
}

impl Coverage {
    /// The table for people: one line per field.
    pub fn to_text(&self) -> String {
        let width = self
            .fields
            .iter()
            .map(|f| f.message.len() + f.csharp.len() + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for f in &self.fields {
            let left = format!("{} {}", f.message, f.csharp);
            let right = match (&f.python, &f.reason) {
                (Some(py), _) => format!("→ {py}"),
                (None, Some(reason)) => format!("reported: {reason}"),
                (None, None) => "reported".to_string(),
            };
            out.push_str(&format!("{left:<width$}  {right}\n"));
        }
        out.push_str(&format!(
            "\nseed fields mapped: {} of {}\n",
            self.seed_fields_mapped, self.seed_fields_total
        ));
        for f in &self.seed_fields {
            out.push_str(&format!(
                "  {:<32} {}\n",
                f.name,
                if f.mapped { "mapped" } else { "NOT mapped" }
            ));
        }
        out
    }
}
