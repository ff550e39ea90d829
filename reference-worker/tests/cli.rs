//! The `reference-worker` binary: `inspect` on the fixture, and invalid inputs exiting with 2 and
//! a message naming what is wrong (never a panic).

mod util;

use std::path::Path;

use util::{copy_tree, reference_worker, tiny_sdxl};

/// Tensor and parameter counts per weighted component, as Python's safetensors reads them.
const PYTHON_COUNTS: &str = r#"
import math, sys
from safetensors import safe_open
for component, file in [("text_encoder", "model"), ("text_encoder_2", "model"),
                        ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")]:
    with safe_open(f"{sys.argv[1]}/{component}/{file}.safetensors", "pt") as f:
        names = list(f.keys())
        params = sum(math.prod(f.get_slice(n).get_shape()) for n in names)
    print(component, len(names), params)
"#;

#[test]
fn inspect_prints_every_component_with_counts_matching_python() {
    let model = tiny_sdxl();
    let run = reference_worker(&["inspect", "--model", model.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "{run}");
    let expected = util::python(PYTHON_COUNTS, &[model.to_str().unwrap()]);
    for line in expected.lines() {
        let [component, tensors, parameters] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("unexpected python line {line:?}");
        };
        let row = run
            .stdout
            .lines()
            .find(|row| row.split_whitespace().next() == Some(component))
            .unwrap_or_else(|| panic!("no row for {component}\n{run}"));
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&fields[2..4], [tensors, parameters], "{component}: {row}");
    }
    for component in ["scheduler", "tokenizer", "tokenizer_2"] {
        assert!(
            run.stdout.lines().any(|row| row.starts_with(component)),
            "no row for {component}\n{run}"
        );
    }
    assert!(run.stdout.contains("x8 downsampling"), "{run}");
}

/// Runs `inspect` on a copy of the fixture altered by `corrupt`, expecting exit 2 and stderr
/// containing every one of `expected`.
fn inspect_corrupted(corrupt: impl FnOnce(&Path), expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-sdxl");
    copy_tree(&tiny_sdxl(), &model);
    corrupt(&model);
    let run = reference_worker(&["inspect", "--model", model.to_str().unwrap()]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    for needle in expected {
        assert!(
            run.stderr.contains(needle),
            "stderr lacks {needle:?}\n{run}"
        );
    }
}

#[test]
fn truncated_weights_exit_2_naming_file_and_tensor() {
    inspect_corrupted(
        |model| {
            let path = model.join("unet/diffusion_pytorch_model.safetensors");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
        },
        &[
            "unet/diffusion_pytorch_model.safetensors",
            "truncated: tensor `",
        ],
    );
}

#[test]
fn config_without_a_key_exits_2_naming_file_and_key() {
    inspect_corrupted(
        |model| {
            let path = model.join("vae/config.json");
            let mut value: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            value.as_object_mut().unwrap().remove("latent_channels");
            std::fs::write(&path, value.to_string()).unwrap();
        },
        &["vae/config.json: missing key `latent_channels`"],
    );
}

#[test]
fn missing_component_folder_and_tokenizer_exit_2() {
    inspect_corrupted(
        |model| std::fs::remove_dir_all(model.join("text_encoder_2")).unwrap(),
        &["text_encoder_2/config.json"],
    );
    inspect_corrupted(
        |model| std::fs::remove_file(model.join("tokenizer/tokenizer.json")).unwrap(),
        &["tokenizer: missing tokenizer.json"],
    );
}

#[test]
fn garbage_weights_exit_2() {
    inspect_corrupted(
        |model| {
            std::fs::write(
                model.join("text_encoder/model.safetensors"),
                b"\x10\0\0\0\0\0\0\0{\"a\": 1}",
            )
            .unwrap()
        },
        &["text_encoder/model.safetensors: not a valid safetensors file"],
    );
}

#[test]
fn not_a_model_folder_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = reference_worker(&["inspect", "--model", dir.path().to_str().unwrap()]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("missing model_index.json"), "{run}");

    let run = reference_worker(&["inspect"]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("--model"), "{run}");

    let run = reference_worker(&["no-such-command"]);
    assert_eq!(run.code(), Some(2), "{run}");
}

#[test]
fn binary_runs_without_any_environment() {
    // The rpath to the torch wheel's libraries is what makes this work (no LD_LIBRARY_PATH).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reference-worker"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("inspect"));
}
