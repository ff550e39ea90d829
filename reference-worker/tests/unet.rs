//! The UNet against diffusers: `fixtures/oracle/dump_unet.py` runs diffusers'
//! `UNet2DConditionModel` on the tiny SDXL UNet for a set of inputs, and the Rust UNet must give
//! the same floats for the same inputs. Plus the load errors: a missing, wrong-shaped or unused
//! tensor, an unsupported block type, and inputs that do not fit.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use reference_worker::unet::{get_timestep_embedding, UNet2DConditionModel};
use reference_worker::Error;
use tch::{Kind, Tensor};
use util::{copy_tree, project_root, python, tiny_sdxl};

fn tiny_unet() -> PathBuf {
    tiny_sdxl().join("unet")
}

/// Runs the oracle into `out_dir` with `threads` intra-op threads; returns its case names.
fn run_oracle(out_dir: &Path, threads: i32) -> Vec<String> {
    let root = project_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` first",
        python.display()
    );
    let script = root.join("fixtures/oracle/dump_unet.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(tiny_unet())
        .arg("--out-dir")
        .arg(out_dir)
        .arg("--threads")
        .arg(threads.to_string())
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let cases =
        std::fs::read_to_string(out_dir.join("cases.json")).expect("the oracle writes cases.json");
    serde_json::from_str(&cases).expect("cases.json is a list of names")
}

fn read_case(path: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .into_iter()
        .collect()
}

#[test]
fn matches_diffusers_exactly() {
    // Both sides run with the same number of intra-op threads, so that libtorch splits the work
    // (and any reductions) the same way.
    let threads = tch::get_num_threads();
    tch::set_num_threads(threads);
    let dir = tempfile::tempdir().unwrap();
    let cases = run_oracle(dir.path(), threads);
    assert!(cases.len() >= 6, "the oracle wrote only {cases:?}");

    let unet = UNet2DConditionModel::load(&tiny_unet()).unwrap();
    let mut report = Vec::new();
    let mut failed = false;
    for case in &cases {
        let tensors = read_case(&dir.path().join(format!("{case}.safetensors")));
        let input = |name: &str| {
            tensors
                .get(name)
                .unwrap_or_else(|| panic!("{case}: the oracle wrote no `{name}`"))
        };
        let expected = input("out");
        let actual = unet
            .forward(
                input("sample"),
                input("timestep"),
                input("encoder_hidden_states"),
                input("text_embeds"),
                input("time_ids"),
            )
            .unwrap_or_else(|error| panic!("{case}: {error}"));
        assert_eq!(actual.size(), expected.size(), "{case}: output shape");
        assert_eq!(actual.kind(), Kind::Float, "{case}: output dtype");
        let diff = (&actual - expected).abs();
        let max_abs_diff = diff.max().double_value(&[]);
        let equal = actual.eq_tensor(expected).sum(Kind::Int64).int64_value(&[]);
        let total = expected.numel();
        let timestep = input("timestep");
        report.push(format!(
            "{case}: sample {:?}, timestep {:?} {:?}: max |diff| {max_abs_diff:e}, {equal}/{total} \
             floats equal, max |out| {:e}",
            input("sample").size(),
            timestep.kind(),
            timestep.size(),
            expected.abs().max().double_value(&[]),
        ));
        // The same ATen ops in the same order on the same libtorch give the same floats.
        failed |= max_abs_diff != 0.0 || equal != total as i64;
    }
    let report = report.join("\n");
    println!("UNet vs diffusers ({threads} threads):\n{report}");
    assert!(!failed, "the UNet differs from diffusers:\n{report}");
}

/// A copy of the tiny UNet whose weights are `edit`ed.
fn unet_with_weights(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&tiny_unet(), dir.path());
    let path = dir.path().join("diffusion_pytorch_model.safetensors");
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &path).unwrap();
    dir
}

/// A copy of the tiny UNet whose config.json has `key` set to `value`.
fn unet_with_config(key: &str, value: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&tiny_unet(), dir.path());
    let path = dir.path().join("config.json");
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.insert(key.to_owned(), value);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    dir
}

const PROBE: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";

#[test]
fn a_missing_tensor_is_an_error_naming_the_file_and_tensor() {
    let dir = unet_with_weights(|tensors| tensors.retain(|(name, _)| name != PROBE));
    let error = UNet2DConditionModel::load(dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, Error::MissingTensor { tensor, .. } if tensor == PROBE),
        "{message}"
    );
    assert!(
        message.contains("diffusion_pytorch_model.safetensors"),
        "{message}"
    );
    assert!(message.contains(PROBE), "{message}");
}

#[test]
fn a_wrong_shaped_tensor_is_an_error_naming_both_shapes() {
    let dir = unet_with_weights(|tensors| {
        let (_, tensor) = tensors.iter_mut().find(|(name, _)| name == PROBE).unwrap();
        *tensor = tensor.narrow(1, 0, 32).contiguous();
    });
    let error = UNet2DConditionModel::load(dir.path()).unwrap_err();
    let message = error.to_string();
    match &error {
        Error::ShapeMismatch {
            path,
            tensor,
            expected,
            actual,
        } => {
            assert!(
                path.ends_with("diffusion_pytorch_model.safetensors"),
                "{message}"
            );
            assert_eq!(tensor, PROBE);
            assert_eq!(expected, &[64, 64]);
            assert_eq!(actual, &[64, 32]);
        }
        other => panic!("expected a shape mismatch, got: {other}"),
    }
    assert!(
        message.contains("[64, 32]") && message.contains("[64, 64]"),
        "{message}"
    );
}

#[test]
fn tensors_the_model_does_not_use_are_an_error() {
    let dir = unet_with_weights(|tensors| {
        tensors.push((
            "down_blocks.0.attentions.0.norm.weight".to_owned(),
            Tensor::ones([32], (Kind::Half, tch::Device::Cpu)),
        ));
    });
    let error = UNet2DConditionModel::load(dir.path()).unwrap_err();
    let message = error.to_string();
    match &error {
        Error::UnusedTensors { path, tensors } => {
            assert!(
                path.ends_with("diffusion_pytorch_model.safetensors"),
                "{message}"
            );
            assert_eq!(tensors, &["down_blocks.0.attentions.0.norm.weight"]);
        }
        other => panic!("expected unused tensors, got: {other}"),
    }
}

#[test]
fn a_config_that_does_not_match_the_weights_is_an_error() {
    // One transformer layer in the second block where the weights have two: the second layer's
    // tensors are left over.
    let dir = unet_with_config("transformer_layers_per_block", serde_json::json!([1, 1]));
    let error = UNet2DConditionModel::load(dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::UnusedTensors { .. }), "{message}");
    assert!(message.contains("transformer_blocks.1."), "{message}");
}

#[test]
fn unimplemented_block_types_are_refused_naming_the_key() {
    for (key, value, named) in [
        (
            "down_block_types",
            serde_json::json!(["DownBlock2D", "SimpleCrossAttnDownBlock2D"]),
            "SimpleCrossAttnDownBlock2D",
        ),
        (
            "up_block_types",
            serde_json::json!(["AttnUpBlock2D", "UpBlock2D"]),
            "AttnUpBlock2D",
        ),
        (
            "mid_block_type",
            serde_json::json!("UNetMidBlock2DSimpleCrossAttn"),
            "UNetMidBlock2DSimpleCrossAttn",
        ),
        ("addition_embed_type", serde_json::json!("text"), "`text`"),
        (
            "num_attention_heads",
            serde_json::json!([2, 4]),
            "diffusers",
        ),
    ] {
        let dir = unet_with_config(key, value);
        let error = UNet2DConditionModel::load(dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(&error, Error::InvalidValue { key: k, .. } if k == key),
            "{key}: {message}"
        );
        assert!(message.contains("config.json"), "{message}");
        assert!(message.contains(named), "{message}");
    }
}

#[test]
fn inputs_that_do_not_fit_are_errors_naming_the_input() {
    let unet = UNet2DConditionModel::load(&tiny_unet()).unwrap();
    let f32s = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu));
    let sample = f32s(&[2, 4, 8, 8]);
    let timestep = Tensor::from(10.0f32);
    let hidden = f32s(&[2, 7, 64]);
    let text = f32s(&[2, 32]);
    let ids = f32s(&[2, 6]);
    // The well-formed call works, so the failures below are the inputs' fault.
    let out = unet
        .forward(&sample, &timestep, &hidden, &text, &ids)
        .unwrap();
    assert_eq!(out.size(), [2, 4, 8, 8]);

    let cases: [(&str, [&Tensor; 5]); 7] = [
        (
            "sample",
            [&f32s(&[2, 3, 8, 8]), &timestep, &hidden, &text, &ids],
        ),
        (
            "timestep",
            [
                &sample,
                &Tensor::from_slice(&[1.0f32, 2.0, 3.0]),
                &hidden,
                &text,
                &ids,
            ],
        ),
        (
            "encoder_hidden_states",
            [&sample, &timestep, &f32s(&[2, 7, 32]), &text, &ids],
        ),
        (
            "encoder_hidden_states",
            [&sample, &timestep, &f32s(&[1, 7, 64]), &text, &ids],
        ),
        (
            "text_embeds",
            [&sample, &timestep, &hidden, &f32s(&[1, 32]), &ids],
        ),
        // 31 + 6 × 8 is not the 80 inputs of add_embedding
        (
            "time_ids",
            [&sample, &timestep, &hidden, &f32s(&[2, 31]), &ids],
        ),
        (
            "time_ids",
            [&sample, &timestep, &hidden, &text, &f32s(&[2, 5])],
        ),
    ];
    for (input, [sample, timestep, hidden, text, ids]) in cases {
        let error = unet
            .forward(sample, timestep, hidden, text, ids)
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(&error, Error::BadInput { input: i, .. } if *i == input),
            "{input}: {message}"
        );
        assert!(message.contains("UNet2DConditionModel"), "{message}");
    }
}

/// The sinusoidal embedding on its own, over the arguments the UNet does not exercise (odd sizes,
/// which get a zero column, no flip, a frequency shift, a scale), compared bit for bit.
#[test]
fn timestep_embedding_matches_diffusers_bit_for_bit() {
    let cases = serde_json::json!([
        {"t": [0.0, 1.5, 999.0], "dim": 7, "flip": false, "shift": 1.0, "scale": 1.0, "max_period": 10000},
        {"t": [999.0, 500.0, 1.0, 757.25], "dim": 32, "flip": true, "shift": 0.0, "scale": 1.0, "max_period": 10000},
        {"t": [3.0, 1024.0], "dim": 9, "flip": true, "shift": 0.5, "scale": 2.0, "max_period": 100},
    ]);
    let code = r#"
import json, sys, torch
from diffusers.models.embeddings import get_timestep_embedding
out = []
for c in json.loads(sys.argv[1]):
    t = torch.tensor(c["t"], dtype=torch.float32)
    e = get_timestep_embedding(t, c["dim"], c["flip"], c["shift"], c["scale"], c["max_period"])
    out.append({"shape": list(e.shape), "bits": e.contiguous().view(torch.int32).flatten().tolist()})
print(json.dumps(out))
"#;
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&python(code, &[&cases.to_string()])).expect("the script prints JSON");
    let cases = cases.as_array().unwrap();
    assert_eq!(expected.len(), cases.len());
    for (case, expected) in cases.iter().zip(&expected) {
        let timesteps: Vec<f32> = case["t"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap() as f32)
            .collect();
        let emb = get_timestep_embedding(
            &Tensor::from_slice(&timesteps),
            case["dim"].as_i64().unwrap(),
            case["flip"].as_bool().unwrap(),
            case["shift"].as_f64().unwrap(),
            case["scale"].as_f64().unwrap(),
            case["max_period"].as_f64().unwrap(),
        )
        .unwrap();
        let shape: Vec<i64> = serde_json::from_value(expected["shape"].clone()).unwrap();
        assert_eq!(emb.size(), shape, "{case}");
        let bits: Vec<i32> = serde_json::from_value(expected["bits"].clone()).unwrap();
        let actual: Vec<i32> = Vec::<f32>::try_from(&emb.flatten(0, -1))
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as i32)
            .collect();
        assert_eq!(actual, bits, "{case}");
    }
}
