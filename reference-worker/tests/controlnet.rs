//! ControlNet against diffusers, Pillow and OpenCV: `fixtures/oracle/dump_controlnet.py` computes
//! the fixture ControlNets' residuals and the UNet's output with them, `load_image` +
//! `VaeImageProcessor.preprocess` on images of every kind the worker reads, and `cv2.Canny` edge
//! maps; the Rust side must give the same values. Plus the model's load errors.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use reference_worker::control_image::{canny, decode_rgb, preprocess};
use reference_worker::controlnet::{
    units_from_v2_data, ControlNetCache, ControlNetLocator, ControlNetModel, ControlNetOutput,
    ControlNetStack, RenderShape,
};
use reference_worker::unet::UNet2DConditionModel;
use reference_worker::Error;
use tch::{Kind, Tensor};
use util::{copy_tree, project_root, tiny_sdxl};

fn controlnets() -> PathBuf {
    project_root().join("fixtures/controlnets")
}

/// Runs the oracle's `part` into a fresh temp dir (kept until the returned guard drops).
fn run_oracle(part: &str) -> tempfile::TempDir {
    let root = project_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` first",
        python.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let script = root.join("fixtures/oracle/dump_controlnet.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .arg(part)
        .arg("--threads")
        .arg(tch::get_num_threads().to_string())
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "{} {part} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn read_tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .into_iter()
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn residuals_and_the_unet_with_them_match_diffusers_exactly() {
    let dir = run_oracle("model");
    let cases: Vec<String> =
        serde_json::from_value(read_json(&dir.path().join("cases.json"))).expect("case names");
    assert_eq!(cases.len(), 4, "{cases:?}");
    let unet = UNet2DConditionModel::load(&tiny_sdxl().join("unet")).unwrap();
    let load = |name: &str| ControlNetModel::load(&controlnets().join(name), Kind::Float).unwrap();
    let (rgb, bgr) = (load("tiny-controlnet"), load("tiny-controlnet-b"));
    let mut mismatches = Vec::new();
    for case in &cases {
        let path = dir.path().join(format!("{case}.safetensors"));
        let t = read_tensors(&path);
        let get = |name: &str| {
            t.get(name)
                .unwrap_or_else(|| panic!("{case}: no `{name}`"))
                .shallow_clone()
        };
        let nets: Vec<&ControlNetModel> = match case.as_str() {
            "bgr_scale_0_7" => vec![&bgr],
            "two_nets" => vec![&rgb, &bgr],
            _ => vec![&rgb],
        };
        let mut merged: Option<ControlNetOutput> = None;
        for (j, net) in nets.iter().enumerate() {
            let scale = get(&format!("scale_{j}")).double_value(&[]);
            let output = net
                .forward(
                    &get("sample"),
                    &get("timestep"),
                    &get("encoder_hidden_states"),
                    &get(&format!("cond_{j}")),
                    scale,
                    &get("text_embeds"),
                    &get("time_ids"),
                )
                .unwrap();
            for (k, residual) in output.down_block_res_samples.iter().enumerate() {
                let expected = get(&format!("net_{j}_down_{k}"));
                if !residual.equal(&expected) {
                    mismatches.push(format!(
                        "{case}: net {j} down {k}: max |Δ| {:e}",
                        max_abs_diff(residual, &expected)
                    ));
                }
            }
            let expected = get(&format!("net_{j}_mid"));
            if !output.mid_block_res_sample.equal(&expected) {
                mismatches.push(format!(
                    "{case}: net {j} mid: max |Δ| {:e}",
                    max_abs_diff(&output.mid_block_res_sample, &expected)
                ));
            }
            merged = Some(match merged {
                None => output,
                Some(previous) => previous.merge(output).unwrap(),
            });
        }
        let merged = merged.expect("at least one net");
        if case == "keep_0" {
            // conditioning_scale 0 (a step outside guidance_start/end): zero residuals
            assert!(merged
                .down_block_res_samples
                .iter()
                .all(|r| r.abs().max().double_value(&[]) == 0.0));
        }
        let out = unet
            .forward_with_control(
                &get("sample"),
                &get("timestep"),
                &get("encoder_hidden_states"),
                &get("text_embeds"),
                &get("time_ids"),
                Some(&merged),
            )
            .unwrap();
        let expected = get("out");
        let verdict = if out.equal(&expected) {
            "identical".to_owned()
        } else {
            let message = format!("max |Δ| {:e}", max_abs_diff(&out, &expected));
            mismatches.push(format!("{case}: UNet output: {message}"));
            message
        };
        eprintln!("{case}: UNet with residuals: {verdict}");
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn control_images_decode_and_resize_like_pillow() {
    let dir = run_oracle("images");
    let manifest = read_json(&dir.path().join("manifest.json"));
    let entries = manifest.as_array().expect("a list");
    assert!(entries.len() >= 20, "{} images", entries.len());
    let mut failures = Vec::new();
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        let file = entry["file"].as_str().unwrap();
        let t = read_tensors(&dir.path().join(format!("{name}.safetensors")));
        let bytes = std::fs::read(file).unwrap();
        let image = match decode_rgb(&bytes) {
            Ok(image) => image,
            Err(message) => {
                failures.push(format!("{name}: {message}"));
                continue;
            }
        };
        let rgb = &t["rgb"];
        let (h, w) = (rgb.size()[0], rgb.size()[1]);
        let ours = Tensor::from_slice(&image.pixels).view([
            i64::from(image.height),
            i64::from(image.width),
            3,
        ]);
        if (i64::from(image.height), i64::from(image.width)) != (h, w) || !ours.equal(rgb) {
            failures.push(format!(
                "{name}: decoded {}x{} differs from load_image's {w}x{h}",
                image.width, image.height
            ));
            continue;
        }
        for size in entry["sizes"].as_array().unwrap() {
            let (width, height) = (size[0].as_u64().unwrap(), size[1].as_u64().unwrap());
            let expected = &t[&format!("pre_{width}x{height}")];
            let actual = preprocess(&image, width as u32, height as u32, 8).unwrap();
            if actual.size() != expected.size() {
                failures.push(format!(
                    "{name} → {width}x{height}: shape {:?}, Pillow's {:?}",
                    actual.size(),
                    expected.size()
                ));
            } else if !actual.equal(expected) {
                failures.push(format!(
                    "{name} → {width}x{height}: max |Δ| {:e} (×255: {})",
                    max_abs_diff(&actual, expected),
                    max_abs_diff(&actual, expected) * 255.0
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn canny_matches_opencv() {
    let dir = run_oracle("canny");
    let names: Vec<String> =
        serde_json::from_value(read_json(&dir.path().join("manifest.json"))).expect("names");
    assert!(names.len() >= 9, "{names:?}");
    let (mut same, mut total) = (0_usize, 0_usize);
    let mut report = Vec::new();
    for name in &names {
        let image =
            decode_rgb(&std::fs::read(dir.path().join(format!("{name}.png"))).unwrap()).unwrap();
        let expected = read_tensors(&dir.path().join(format!("{name}.safetensors")))
            .remove("edges")
            .expect("edges");
        let expected = Vec::<u8>::try_from(expected.flatten(0, -1)).unwrap();
        let ours = canny::canny_edges(&image, canny::LOW_THRESHOLD, canny::HIGH_THRESHOLD);
        assert_eq!(ours.len(), expected.len(), "{name}: size");
        let equal = ours.iter().zip(&expected).filter(|(a, b)| a == b).count();
        let edges = expected.iter().filter(|&&v| v == 255).count();
        report.push(format!(
            "{name}: {equal}/{} pixels identical ({:.4} %), {edges} edge pixels",
            ours.len(),
            100.0 * equal as f64 / ours.len() as f64
        ));
        same += equal;
        total += ours.len();
    }
    let agreement = 100.0 * same as f64 / total as f64;
    eprintln!(
        "{}\ncanny vs cv2.Canny: {same}/{total} pixels identical ({agreement:.4} %)",
        report.join("\n")
    );
    assert_eq!(same, total, "{}", report.join("\n"));
}

/// A scratch copy of a fixture ControlNet whose config or weights a test may break.
fn scratch_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(name);
    copy_tree(&controlnets().join(name), &copy);
    (dir, copy)
}

fn load_error(dir: &Path) -> Error {
    match ControlNetModel::load(dir, Kind::Float) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(error) => error,
    }
}

#[test]
fn a_folder_that_is_not_a_controlnet_is_refused_by_name() {
    // a UNet folder
    let error = load_error(&tiny_sdxl().join("unet"));
    let message = error.to_string();
    assert!(
        matches!(&error, Error::InvalidValue { key, .. } if key == "_class_name"),
        "{message}"
    );
    assert!(
        message.contains("config.json") && message.contains("UNet2DConditionModel"),
        "{message}"
    );

    // a single safetensors file (a LoRA, a single-file checkpoint)
    let file = controlnets().join("tiny-controlnet/diffusion_pytorch_model.safetensors");
    let error = load_error(&file);
    assert!(matches!(error, Error::NotAModelFolder { .. }), "{error}");
    assert!(error.to_string().contains("a file"), "{error}");

    // nothing there
    let error = load_error(&controlnets().join("no-such-controlnet"));
    assert!(error.to_string().contains("no such folder"), "{error}");

    // a PEFT LoRA folder, a pipeline folder
    let lora = tempfile::tempdir().unwrap();
    std::fs::write(lora.path().join("adapter_config.json"), "{}").unwrap();
    let error = load_error(lora.path());
    assert!(error.to_string().contains("PEFT LoRA"), "{error}");
    let error = load_error(&tiny_sdxl());
    assert!(error.to_string().contains("model_index.json"), "{error}");
}

#[test]
fn broken_weights_and_configs_name_the_file_and_the_tensor_or_key() {
    // a tensor of the wrong shape
    let (_guard, dir) = scratch_copy("tiny-controlnet-b");
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights).unwrap();
    for (name, tensor) in &mut tensors {
        if name == "controlnet_mid_block.weight" {
            *tensor = Tensor::zeros([64, 32, 1, 1], (Kind::Half, tch::Device::Cpu));
        }
    }
    Tensor::write_safetensors(&tensors, &weights).unwrap();
    let error = load_error(&dir);
    let message = error.to_string();
    assert!(
        matches!(&error, Error::ShapeMismatch { tensor, expected, actual, .. }
            if tensor == "controlnet_mid_block.weight" && expected == &[64, 64, 1, 1] && actual == &[64, 32, 1, 1]),
        "{message}"
    );
    assert!(
        message.contains("diffusion_pytorch_model.safetensors"),
        "{message}"
    );

    // a missing tensor, and an extra one
    let (_guard, dir) = scratch_copy("tiny-controlnet-b");
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights).unwrap();
    tensors.retain(|(name, _)| name != "controlnet_cond_embedding.conv_out.bias");
    Tensor::write_safetensors(&tensors, &weights).unwrap();
    let error = load_error(&dir);
    assert!(
        error
            .to_string()
            .contains("controlnet_cond_embedding.conv_out.bias"),
        "{error}"
    );
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights).unwrap();
    tensors.push((
        "controlnet_cond_embedding.conv_out.bias".to_owned(),
        Tensor::zeros([32], (Kind::Float, tch::Device::Cpu)),
    ));
    tensors.push((
        "lora_unet_down.alpha".to_owned(),
        Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)),
    ));
    Tensor::write_safetensors(&tensors, &weights).unwrap();
    let error = load_error(&dir);
    assert!(
        matches!(&error, Error::UnusedTensors { tensors, .. } if tensors == &["lora_unet_down.alpha"]),
        "{error}"
    );

    // config values this implementation refuses
    for (key, value, expected) in [
        (
            "controlnet_conditioning_channel_order",
            "\"rgba\"",
            "neither",
        ),
        ("mid_block_type", "\"UNetMidBlock2D\"", "not implemented"),
        ("global_pool_conditions", "true", "not implemented"),
        ("cross_attention_dim", "[64, 64]", "integer"),
    ] {
        let (_guard, dir) = scratch_copy("tiny-controlnet-b");
        let config_path = dir.join("config.json");
        let mut config: serde_json::Value = read_json(&config_path);
        config[key] = serde_json::from_str(value).unwrap();
        std::fs::write(&config_path, config.to_string()).unwrap();
        let error = load_error(&dir);
        let message = error.to_string();
        assert!(
            message.contains("config.json") && message.contains(key) && message.contains(expected),
            "{key}: {message}"
        );
    }
}

#[test]
fn inputs_that_do_not_fit_are_errors_not_panics() {
    let net = ControlNetModel::load(&controlnets().join("tiny-controlnet"), Kind::Float).unwrap();
    let f = (Kind::Float, tch::Device::Cpu);
    let sample = Tensor::zeros([1, 4, 32, 32], f);
    let ehs = Tensor::zeros([1, 77, 64], f);
    let text = Tensor::zeros([1, 32], f);
    let ids = Tensor::zeros([1, 6], f);
    let t = Tensor::from(999.0_f32);
    // a conditioning image at the latents' size instead of ×8
    let error = net
        .forward(
            &sample,
            &t,
            &ehs,
            &Tensor::zeros([1, 3, 32, 32], f),
            1.0,
            &text,
            &ids,
        )
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::BadInput {
                input: "controlnet_cond",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("[1, 3, 256, 256]"), "{error}");

    // residuals that do not match the UNet's skip connections
    let unet = UNet2DConditionModel::load(&tiny_sdxl().join("unet")).unwrap();
    let output = net
        .forward(
            &sample,
            &t,
            &ehs,
            &Tensor::zeros([1, 3, 256, 256], f),
            1.0,
            &text,
            &ids,
        )
        .unwrap();
    let mut short = ControlNetOutput {
        down_block_res_samples: output.down_block_res_samples[1..]
            .iter()
            .map(Tensor::shallow_clone)
            .collect(),
        mid_block_res_sample: output.mid_block_res_sample.shallow_clone(),
    };
    let error = unet
        .forward_with_control(&sample, &t, &ehs, &text, &ids, Some(&short))
        .unwrap_err();
    assert!(
        error.to_string().contains("5 ControlNet residuals for 6"),
        "{error}"
    );
    short.down_block_res_samples = output
        .down_block_res_samples
        .iter()
        .map(Tensor::shallow_clone)
        .collect();
    short.mid_block_res_sample = Tensor::zeros([1, 64, 8, 8], f);
    let error = unet
        .forward_with_control(&sample, &t, &ehs, &text, &ids, Some(&short))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::BadInput {
                input: "mid_block_additional_residual",
                ..
            }
        ),
        "{error}"
    );
}

/// The per-process model cache: with four models loaded, a request that needs a fifth evicts
/// one it does not use, and the models it does use still answer (an index that moved with the
/// eviction would hand a unit another net).
#[test]
fn the_model_cache_evicts_only_models_not_in_use() {
    let scratch = tempfile::tempdir().unwrap();
    // a, c: tiny-controlnet; b, d, e: tiny-controlnet-b (five folders, two kinds of net)
    for (name, source) in [
        ("a", "tiny-controlnet"),
        ("b", "tiny-controlnet-b"),
        ("c", "tiny-controlnet"),
        ("d", "tiny-controlnet-b"),
        ("e", "tiny-controlnet-b"),
    ] {
        copy_tree(&controlnets().join(source), &scratch.path().join(name));
    }
    let image = controlnets().join("control.png");
    let units = |names: &[&str]| {
        let list: Vec<serde_json::Value> = names
            .iter()
            .map(|name| {
                serde_json::json!({"model_path": scratch.path().join(name),
                                   "control_image": image})
            })
            .collect();
        units_from_v2_data(&serde_json::json!({ "controlnets": list })).unwrap()
    };
    let shape = RenderShape {
        width: 256,
        height: 256,
        vae_scale_factor: 8,
        batch: 1,
        kind: Kind::Float,
        do_cfg: false,
        timesteps: 1,
    };
    let locator = ControlNetLocator::default();
    let f = (Kind::Float, tch::Device::Cpu);
    tch::manual_seed(3);
    let inputs = [
        Tensor::randn([1, 4, 32, 32], f),
        Tensor::from(500.0_f32),
        Tensor::randn([1, 77, 64], f),
        Tensor::randn([1, 32], f),
        Tensor::from_slice(&[256.0_f32, 256.0, 0.0, 0.0, 256.0, 256.0]).view([1, 6]),
    ];
    let residuals = |stack: &ControlNetStack| {
        stack
            .residuals(
                0, &inputs[0], &inputs[1], &inputs[2], &inputs[3], &inputs[4],
            )
            .unwrap()
            .expect("residuals")
    };

    let mut cache = ControlNetCache::default();
    ControlNetStack::prepare(&mut cache, &locator, &units(&["a", "b", "c", "d"]), shape).unwrap();
    assert_eq!(cache.len(), 4);
    let cached = residuals(
        &ControlNetStack::prepare(&mut cache, &locator, &units(&["c", "e"]), shape).unwrap(),
    );
    assert_eq!(cache.len(), 4, "one model evicted for the new one");

    let mut fresh_cache = ControlNetCache::default();
    let fresh = residuals(
        &ControlNetStack::prepare(&mut fresh_cache, &locator, &units(&["c", "e"]), shape).unwrap(),
    );
    for (a, b) in cached
        .down_block_res_samples
        .iter()
        .zip(&fresh.down_block_res_samples)
    {
        assert!(a.equal(b), "a cached unit ran another net");
    }
    assert!(cached
        .mid_block_res_sample
        .equal(&fresh.mid_block_res_sample));
}
