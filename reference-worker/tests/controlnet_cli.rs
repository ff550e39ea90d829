//! `reference-worker render` / `serve` with ControlNet units: every kind of bad ControlNet input
//! (a folder that is not a ControlNet, a wrong-shaped tensor, an image that cannot be decoded,
//! guidance bounds out of order, a unit with no way to find its model) exits 2 naming the file and
//! tensor or the JSON path, never a panic; `type` finds the model under `--controlnet-dir`; `serve`
//! keeps a loaded ControlNet between requests and renders what `render` renders.

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use util::{copy_tree, project_root, reference_worker, tiny_sdxl, Run};

const CONTROLNET: &str = "fixtures/controlnets/tiny-controlnet";
const CONTROL_IMAGE: &str = "fixtures/controlnets/control.png";

/// A 1-step 256×256 request with one ControlNet unit (paths relative to the project root, the
/// worker's working directory in these tests).
fn request(unit: Value) -> Value {
    json!({
        "message_type": "inference_request",
        "request_id": "controlnet-cli-test",
        "data": {
            "worker_type": "enhanced_sdxl_worker",
            "prompt": "a red bicycle",
            "hyperparameters": {"num_inference_steps": 1, "guidance_scale": 5.0, "seed": 7},
            "dimensions": {"width": 256, "height": 256},
            "scheduler": "EulerDiscreteScheduler",
            "batch": {"size": 1},
            "controlnets": [unit]
        }
    })
}

fn unit(model_path: &str, control_image: &str) -> Value {
    json!({"enabled": true, "model_path": model_path, "control_image": control_image})
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path.display().to_string()
    }

    fn render(&self, request: &Value, extra: &[&str]) -> Run {
        let request_path = self.write("request.json", request.to_string().as_bytes());
        let out = self.path("out");
        let model = tiny_sdxl();
        let mut args = vec![
            "render",
            "--model",
            model.to_str().unwrap(),
            "--request",
            &request_path,
            "--out-dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        reference_worker(&args)
    }
}

/// Exit 2, no panic, and every `needles` in stderr.
fn assert_refused(run: &Run, needles: &[&str]) {
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    for needle in needles {
        assert!(run.stderr.contains(needle), "missing `{needle}`:\n{run}");
    }
}

/// The `{"errors":[…]}` line of a refused request: (path, rule) of its one error.
fn error_path_and_rule(run: &Run) -> (String, String) {
    let line = run.stderr.lines().last().unwrap_or_default();
    let errors: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not an errors line ({e}):\n{run}"));
    let error = &errors["errors"][0];
    (
        error["path"].as_str().unwrap_or_default().to_owned(),
        error["rule"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn a_unet_folder_or_a_lora_file_as_the_controlnet_is_refused_by_name() {
    let scratch = Scratch::new();
    let run = scratch.render(
        &request(unit("fixtures/models/tiny-sdxl/unet", CONTROL_IMAGE)),
        &[],
    );
    assert_refused(
        &run,
        &[
            "unet/config.json",
            "_class_name",
            "UNet2DConditionModel",
            "ControlNetModel",
        ],
    );

    let lora = scratch.write(
        "lora.safetensors",
        &util::safetensors_bytes(&[(
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
            "F32",
            &[2, 2],
            util::f32_bytes(&[0.0; 4]),
        )]),
    );
    let run = scratch.render(&request(unit(&lora, CONTROL_IMAGE)), &[]);
    assert_refused(
        &run,
        &[
            "lora.safetensors",
            "not a diffusers ControlNetModel folder",
            "a file",
        ],
    );
}

#[test]
fn a_wrong_shaped_controlnet_tensor_names_the_file_the_tensor_and_both_shapes() {
    let scratch = Scratch::new();
    let model = scratch.path("controlnet");
    copy_tree(&project_root().join(CONTROLNET), &model);
    let weights = model.join("diffusion_pytorch_model.safetensors");
    let mut tensors = tch::Tensor::read_safetensors(&weights).unwrap();
    for (name, tensor) in &mut tensors {
        if name == "controlnet_down_blocks.3.weight" {
            *tensor = tch::Tensor::zeros([32, 32, 3, 3], (tch::Kind::Half, tch::Device::Cpu));
        }
    }
    tch::Tensor::write_safetensors(&tensors, &weights).unwrap();
    let run = scratch.render(&request(unit(model.to_str().unwrap(), CONTROL_IMAGE)), &[]);
    assert_refused(
        &run,
        &[
            "diffusion_pytorch_model.safetensors",
            "controlnet_down_blocks.3.weight",
            "[32, 32, 3, 3]",
            "[32, 32, 1, 1]",
        ],
    );
}

#[test]
fn images_that_cannot_be_read_name_the_json_path() {
    let scratch = Scratch::new();
    let png = std::fs::read(project_root().join(CONTROL_IMAGE)).unwrap();
    let jpeg = std::fs::read(project_root().join("fixtures/controlnets/control.jpg")).unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        // a file that is no image
        (
            scratch.write("notes.txt", b"not an image"),
            "image",
            "not a PNG, JPEG or WebP",
        ),
        // truncated files: Pillow fails on them too
        (
            scratch.write("half.png", &png[..png.len() / 2]),
            "image",
            "PNG",
        ),
        (
            scratch.write("half.jpg", &jpeg[..jpeg.len() / 2]),
            "image",
            "truncated JPEG",
        ),
        (scratch.write("header.jpg", &jpeg[..200]), "image", "JPEG"),
        (scratch.write("empty.png", b""), "image", "empty"),
        // neither a file nor base64
        (
            "fixtures/controlnets/missing.png".to_owned(),
            "not_found",
            "working directory",
        ),
        // base64 of something that is not an image
        (
            "aGVsbG8gd29ybGQ=".to_owned(),
            "image",
            "base64 data is not a PNG, JPEG or WebP",
        ),
        ("data:image/png,abc".to_owned(), "format", "data:"),
    ];
    for (image, rule, needle) in cases {
        let run = scratch.render(&request(unit(CONTROLNET, &image)), &[]);
        assert_refused(&run, &[needle]);
        assert_eq!(
            error_path_and_rule(&run),
            (
                "/data/controlnets/0/control_image".to_owned(),
                rule.to_owned()
            ),
            "{image}: {run}"
        );
    }
}

#[test]
fn guidance_bounds_out_of_order_and_units_without_a_model_are_refused() {
    let scratch = Scratch::new();
    let mut bounds = unit(CONTROLNET, CONTROL_IMAGE);
    bounds["guidance_start"] = json!(0.6);
    bounds["guidance_end"] = json!(0.4);
    let run = scratch.render(&request(bounds), &[]);
    assert_refused(
        &run,
        &["guidance_start (0.6) must be less than guidance_end (0.4)"],
    );
    assert_eq!(
        error_path_and_rule(&run),
        (
            "/data/controlnets/0/guidance_end".to_owned(),
            "order".to_owned()
        )
    );

    let by_type =
        json!({"enabled": true, "type": "tiny-controlnet", "control_image": CONTROL_IMAGE});
    let run = scratch.render(&request(by_type.clone()), &[]);
    assert_refused(&run, &["--controlnet-dir", "tiny-controlnet"]);
    assert_eq!(
        error_path_and_rule(&run),
        (
            "/data/controlnets/0/model_path".to_owned(),
            "required".to_owned()
        )
    );

    let mut escaping = by_type;
    escaping["type"] = json!("../models");
    let run = scratch.render(
        &request(escaping),
        &["--controlnet-dir", "fixtures/controlnets"],
    );
    assert_refused(&run, &["cannot name a folder"]);
    assert_eq!(
        error_path_and_rule(&run),
        ("/data/controlnets/0/type".to_owned(), "pattern".to_owned())
    );
}

fn image_bytes(dir: &Path, i: usize) -> Vec<u8> {
    std::fs::read(dir.join(format!("image_{i}.png"))).expect("a rendered image")
}

#[test]
fn type_finds_the_model_under_controlnet_dir_and_serve_matches_render() {
    // by model_path
    let scratch = Scratch::new();
    let by_path = request(unit(CONTROLNET, CONTROL_IMAGE));
    let run = scratch.render(&by_path, &[]);
    assert_eq!(run.code(), Some(0), "{run}");
    let rendered = image_bytes(&scratch.path("out"), 0);

    // by type under --controlnet-dir: the same model, the same image
    let by_type = request(json!({"enabled": true, "type": "tiny-controlnet",
                                 "control_image": CONTROL_IMAGE}));
    let scratch_type = Scratch::new();
    let run = scratch_type.render(&by_type, &["--controlnet-dir", "fixtures/controlnets"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        rendered == image_bytes(&scratch_type.path("out"), 0),
        "by type differs"
    );

    // the unit changes the image
    let mut plain = by_path.clone();
    plain["data"].as_object_mut().unwrap().remove("controlnets");
    let scratch_plain = Scratch::new();
    let run = scratch_plain.render(&plain, &[]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        rendered != image_bytes(&scratch_plain.path("out"), 0),
        "no effect"
    );

    // serve: the same request twice (the second finds the model loaded), one bad one between
    let mut second = by_path.clone();
    second["request_id"] = json!("second");
    let mut bad = by_path.clone();
    bad["request_id"] = json!("bad");
    bad["data"]["controlnets"][0]["control_image"] = json!("fixtures/controlnets/missing.png");
    let input = format!("{by_path}\n{bad}\n{second}\n");
    let serve_out = scratch.path("serve-out");
    let binary = env!("CARGO_BIN_EXE_reference-worker");
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--model"])
        .arg(tiny_sdxl())
        .arg("--out-dir")
        .arg(&serve_out)
        .current_dir(project_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("reference-worker serve");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write requests");
    let output = child.wait_with_output().expect("serve output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "serve failed: {stdout}");
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON reply line"))
        .collect();
    assert_eq!(replies.len(), 3, "{stdout}");
    assert_eq!(replies[0]["success"], true, "{stdout}");
    assert_eq!(replies[1]["success"], false, "{stdout}");
    assert!(
        replies[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("/data/controlnets/0/control_image")),
        "{stdout}"
    );
    assert_eq!(replies[2]["success"], true, "{stdout}");
    for id in ["controlnet-cli-test", "second"] {
        assert!(
            rendered == image_bytes(&serve_out.join(id), 0),
            "serve's {id} differs from render's"
        );
    }
}
