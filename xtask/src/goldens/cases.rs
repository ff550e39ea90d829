//! The golden matrix (issue 7): which requests have a golden image, generated from the protocol's
//! own tables so that a scheduler added to PROTOCOL B.4 gets its goldens without an edit here.
//!
//! Axes (issue 7): every scheduler class (`transformer::schedulers::class_names`, 12) × {no LoRA,
//! one LoRA, two LoRAs} × {no ControlNet, ControlNet}, plus single cases for the features that are
//! not an axis (a batch of two, a non-square size, textual inversion, clip skip, each
//! prompt-weighting syntax).

use serde_json::{json, Value};

/// The tiny model every golden renders with (a committed fixture).
pub const MODEL: &str = "fixtures/models/tiny-sdxl";

/// One golden case: its name (also its PNG's stem), the Python v2 request it renders and the
/// features it exercises (for the conformance table).
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub features: Vec<String>,
    pub request: Value,
}

impl Case {
    /// Images the request asks for (`batch.size`).
    pub fn image_count(&self) -> usize {
        self.request["data"]["batch"]["size"].as_u64().unwrap_or(1) as usize
    }

    /// The PNG file names of this case under `golden/`: `<name>.png`, or `<name>.<i>.png` for a
    /// batch.
    pub fn png_names(&self) -> Vec<String> {
        match self.image_count() {
            1 => vec![format!("{}.png", self.name)],
            n => (0..n).map(|i| format!("{}.{i}.png", self.name)).collect(),
        }
    }
}

/// The scheduler part of a case name: the class name without `Scheduler`, lower-cased.
fn short(class: &str) -> String {
    class.trim_end_matches("Scheduler").to_ascii_lowercase()
}

/// The request every case starts from: 256×256, five steps, CFG, a fixed seed.
fn base_request(name: &str, scheduler: &str) -> Value {
    json!({
        "message_type": "inference_request",
        "request_id": name,
        "data": {
            "worker_type": "enhanced_sdxl_worker",
            "prompt": "a lighthouse on a cliff at dusk, oil painting",
            "negative_prompt": "blurry, low quality",
            "model_name": MODEL,
            "models": {"base": MODEL},
            "hyperparameters": {"num_inference_steps": 5, "guidance_scale": 7.0, "seed": 20261128},
            "dimensions": {"width": 256, "height": 256},
            "scheduler": scheduler,
            "output": {"format": "png", "quality": 95},
            "batch": {"size": 1}
        }
    })
}

/// Every golden case, sorted by name.
pub fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    // The matrix: every scheduler × {no LoRA, one LoRA, two LoRAs} × {no ControlNet, ControlNet}.
    let controlnet = json!({
        "enabled": true,
        "model_path": "fixtures/controlnets/tiny-controlnet",
        "control_image": "fixtures/controlnets/control.png",
        "conditioning_scale": 0.8
    });
    let lora_variants = [
        ("nolora", None, None),
        (
            "lora1",
            Some(json!({"enabled": true, "models": [
                {"name": "fixtures/loras/kohya_sgm.safetensors", "weight": 0.8}
            ]})),
            Some("one LoRA"),
        ),
        (
            "lora2",
            Some(json!({"enabled": true, "models": [
                {"name": "fixtures/loras/kohya_sgm.safetensors", "weight": 0.7, "adapter_name": "style"},
                {"name": "fixtures/loras/peft_metadata.safetensors", "weight": -0.5, "adapter_name": "detail"}
            ]})),
            Some("two LoRAs"),
        ),
    ];
    for class in transformer::schedulers::class_names() {
        for (lora_name, lora, lora_feature) in &lora_variants {
            for with_controlnet in [false, true] {
                let name = format!(
                    "{}-{lora_name}-{}",
                    short(class),
                    if with_controlnet { "cn" } else { "nocn" }
                );
                let mut request = base_request(&name, class);
                let mut features = vec![format!("scheduler {class}")];
                if let Some(lora) = lora {
                    request["data"]["lora"] = lora.clone();
                    features.extend(lora_feature.map(str::to_owned));
                }
                if with_controlnet {
                    request["data"]["controlnet"] = controlnet.clone();
                    request["data"]["controlnets"] = json!([controlnet.clone()]);
                    features.push("ControlNet".into());
                }
                cases.push(Case {
                    name,
                    features,
                    request,
                });
            }
        }
    }

    // A batch of two with a stochastic scheduler: image i from its own generator (B.8).
    let name = "batch2-eulerancestraldiscrete".to_owned();
    let mut request = base_request(&name, "EulerAncestralDiscreteScheduler");
    request["data"]["batch"]["size"] = json!(2);
    cases.push(Case {
        name,
        features: vec!["batch of 2".into()],
        request,
    });

    // A non-square size, with karras sigmas and trailing spacing on the default solver.
    let name = "nonsquare-256x320-dpmsolvermultistep-karras-trailing".to_owned();
    let mut request = base_request(&name, "DPMSolverMultistepScheduler");
    request["data"]["dimensions"] = json!({"width": 256, "height": 320});
    request["data"]["scheduler_options"] =
        json!({"use_karras_sigmas": true, "timestep_spacing": "trailing"});
    cases.push(Case {
        name,
        features: vec!["non-square size".into(), "scheduler options".into()],
        request,
    });

    // Textual inversions: a single-vector and a multi-vector embedding in one prompt.
    let name = "textual-inversion-eulerdiscrete".to_owned();
    let mut request = base_request(&name, "EulerDiscreteScheduler");
    request["data"]["prompt"] = json!("a lighthouse made of <multi> beside tiny-single, dusk");
    request["data"]["textual_inversions"] = json!([
        {"path": "fixtures/textual_inversions/tiny-multi.safetensors", "token": "<multi>"},
        {"path": "fixtures/textual_inversions/tiny-single.safetensors"}
    ]);
    cases.push(Case {
        name,
        features: vec!["textual inversion".into()],
        request,
    });

    // clip_skip (diffusers' SDXL semantics: positive prompt only).
    let name = "clip-skip-2-heundiscrete".to_owned();
    let mut request = base_request(&name, "HeunDiscreteScheduler");
    request["data"]["clip_skip"] = json!(2);
    cases.push(Case {
        name,
        features: vec!["clip skip".into()],
        request,
    });

    // Each prompt-weighting syntax.
    for (attention, scheduler, prompt) in [
        (
            "a1111",
            "DPMSolverMultistepScheduler",
            "a (lighthouse:1.3) on a [cliff] at (dusk), \\(oil\\) painting",
        ),
        (
            "compel",
            "UniPCMultistepScheduler",
            "a (lighthouse)1.3 on a cliff-- at dusk++, oil painting",
        ),
    ] {
        let name = format!("prompt-weighting-{attention}-{}", short(scheduler));
        let mut request = base_request(&name, scheduler);
        request["data"]["prompt"] = json!(prompt);
        request["data"]["prompt_attention"] = json!(attention);
        cases.push(Case {
            name,
            features: vec![format!("prompt weighting {attention}")],
            request,
        });
    }

    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_is_a_valid_v2_request_with_a_unique_name() {
        let cases = matrix();
        assert!(cases.len() >= 72 + 6);
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
        for case in &cases {
            assert_eq!(case.request["request_id"], case.name.as_str());
            if let Err(errors) = transformer::Schema::PythonRequest.validate(&case.request) {
                panic!("{}: {}", case.name, errors.to_json_line());
            }
            assert!(case
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
        }
    }

    #[test]
    fn every_protocol_scheduler_has_a_case() {
        let cases = matrix();
        for class in transformer::schedulers::class_names() {
            assert!(
                cases
                    .iter()
                    .any(|c| c.request["data"]["scheduler"] == class),
                "{class} has no golden"
            );
        }
    }

    #[test]
    fn batch_cases_name_one_png_per_image() {
        let case = matrix()
            .into_iter()
            .find(|c| c.image_count() == 2)
            .expect("a batch case");
        assert_eq!(
            case.png_names(),
            vec![
                format!("{}.0.png", case.name),
                format!("{}.1.png", case.name)
            ]
        );
    }
}
