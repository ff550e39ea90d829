//! `reference-worker render` end to end: one small render and its reply, and every kind of bad
//! input (corrupt model files, an invalid request, an unsupported feature) exiting 2 with a
//! message that names the file and the tensor, key or JSON path, never a panic.

mod util;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use util::{copy_tree, reference_worker, safetensors_bytes, tiny_sdxl, Run};

/// A 1-step 256×256 request for a batch of two (the smallest render that still runs CFG).
fn small_request() -> Value {
    json!({
        "message_type": "inference_request",
        "request_id": "render-cli-test",
        "data": {
            "worker_type": "enhanced_sdxl_worker",
            "prompt": "a red bicycle",
            "negative_prompt": "blurry",
            "hyperparameters": {"num_inference_steps": 1, "guidance_scale": 5.0, "seed": 7},
            "dimensions": {"width": 256, "height": 256},
            "scheduler": "EulerDiscreteScheduler",
            "batch": {"size": 2}
        }
    })
}

/// A temp dir holding a copy of the tiny model (`model/`), the request file (`request.json`) and
/// the output folder (`out/`).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(request: &Value) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_tree(&tiny_sdxl(), &dir.path().join("model"));
        std::fs::write(dir.path().join("request.json"), request.to_string()).expect("request");
        Scratch { dir }
    }

    fn model(&self) -> PathBuf {
        self.dir.path().join("model")
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn render(&self) -> Run {
        self.render_with(&[])
    }

    /// `render` with extra arguments (e.g. `--lora-dir`).
    fn render_with(&self, extra: &[&str]) -> Run {
        let (model, request, out) = (
            self.model(),
            self.dir.path().join("request.json"),
            self.out_dir(),
        );
        let mut args = vec![
            "render",
            "--model",
            model.to_str().unwrap(),
            "--request",
            request.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        reference_worker(&args)
    }
}

/// Renders with a model copy altered by `corrupt`: exit 2, no panic, no reply, no image, and
/// stderr holding every one of `expected`.
fn render_corrupted(corrupt: impl FnOnce(&Path), expected: &[&str]) {
    let scratch = Scratch::new(&small_request());
    corrupt(&scratch.model());
    let run = scratch.render();
    assert_refused(&run, expected);
    assert!(!scratch.out_dir().exists(), "images written\n{run}");
}

fn assert_refused(run: &Run, expected: &[&str]) {
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(run.stdout.is_empty(), "a reply on stdout\n{run}");
    for needle in expected {
        assert!(
            run.stderr.contains(needle),
            "stderr lacks {needle:?}\n{run}"
        );
    }
}

/// The `{"errors":[…]}` line on stderr, parsed.
fn errors_json(run: &Run) -> Vec<Value> {
    let line = run
        .stderr
        .lines()
        .find(|line| line.starts_with("{\"errors\""))
        .unwrap_or_else(|| panic!("no errors JSON on stderr\n{run}"));
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}\n{run}"));
    value["errors"].as_array().cloned().unwrap_or_default()
}

/// One tensor of a safetensors file as the header lists it, with its bytes.
struct StoredTensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Rewrites a safetensors file tensor by tensor (`edit` returns `None` to drop one).
fn rewrite_safetensors(path: &Path, edit: impl Fn(StoredTensor) -> Option<StoredTensor>) {
    let file = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let data = &file[8 + header_len..];
    let mut tensors: Vec<(usize, StoredTensor)> = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let offsets: Vec<usize> = serde_json::from_value(info["data_offsets"].clone()).unwrap();
            let tensor = StoredTensor {
                name: name.clone(),
                dtype: info["dtype"].as_str().unwrap().to_owned(),
                shape: serde_json::from_value(info["shape"].clone()).unwrap(),
                bytes: data[offsets[0]..offsets[1]].to_vec(),
            };
            (offsets[0], tensor)
        })
        .collect();
    tensors.sort_by_key(|(start, _)| *start);
    let kept: Vec<StoredTensor> = tensors
        .into_iter()
        .filter_map(|(_, tensor)| edit(tensor))
        .collect();
    let listed: Vec<(&str, &str, &[usize], Vec<u8>)> = kept
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.dtype.as_str(),
                t.shape.as_slice(),
                t.bytes.clone(),
            )
        })
        .collect();
    std::fs::write(path, safetensors_bytes(&listed)).unwrap();
}

fn remove_config_key(path: &Path, key: &str) {
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        config.as_object_mut().unwrap().remove(key).is_some(),
        "{} has no `{key}` to remove",
        path.display()
    );
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn renders_a_small_request_and_prints_the_reply() {
    let scratch = Scratch::new(&small_request());
    let run = scratch.render();
    assert_eq!(run.code(), Some(0), "{run}");
    let reply: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON reply: {e}\n{run}"));
    assert_eq!(reply["request_id"], "render-cli-test", "{run}");
    assert_eq!(reply["success"], true, "{run}");
    let data = &reply["data"];
    assert_eq!(data["seeds"], json!([7, 8]), "{run}");
    assert_eq!(data["seed"], 7, "{run}");
    assert_eq!(data["inference_steps"], 1, "{run}");
    assert_eq!(data["guidance_scale"], 5.0, "{run}");
    assert_eq!(data["scheduler"], "EulerDiscreteScheduler", "{run}");
    assert_eq!(
        data["dimensions"],
        json!({"width": 256, "height": 256}),
        "{run}"
    );
    let images: Vec<PathBuf> = data["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images array\n{run}"))
        .iter()
        .map(|path| PathBuf::from(path.as_str().unwrap()))
        .collect();
    assert_eq!(
        images,
        [
            scratch.out_dir().join("image_0.png"),
            scratch.out_dir().join("image_1.png")
        ],
        "{run}"
    );
    let mut pixels = Vec::new();
    for image in &images {
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(image).unwrap_or_else(|e| panic!("{}: {e}", image.display())),
        ));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!((info.width, info.height), (256, 256), "{}", image.display());
        assert_eq!(info.color_type, png::ColorType::Rgb, "{}", image.display());
        pixels.push(buffer);
    }
    // Seeds 7 and 8 draw different latents.
    assert_ne!(pixels[0], pixels[1], "both images are the same");
}

#[test]
fn truncated_safetensors_names_the_file_and_the_tensor() {
    render_corrupted(
        |model| {
            let path = model.join("unet/diffusion_pytorch_model.safetensors");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
        },
        &[
            "unet/diffusion_pytorch_model.safetensors: truncated: tensor `",
            "but the file holds",
        ],
    );
}

#[test]
fn missing_tensor_names_the_file_and_the_tensor() {
    render_corrupted(
        |model| {
            rewrite_safetensors(
                &model.join("vae/diffusion_pytorch_model.safetensors"),
                |tensor| (tensor.name != "decoder.conv_out.weight").then_some(tensor),
            )
        },
        &["vae/diffusion_pytorch_model.safetensors: no tensor named `decoder.conv_out.weight`"],
    );
}

#[test]
fn wrong_shaped_tensor_names_the_file_the_tensor_and_both_shapes() {
    render_corrupted(
        |model| {
            rewrite_safetensors(
                &model.join("unet/diffusion_pytorch_model.safetensors"),
                |mut tensor| {
                    if tensor.name == "conv_in.weight" {
                        // Same bytes, flattened kernel: only the shape is wrong.
                        let [out, inp, kh, kw] = tensor.shape[..] else {
                            panic!("conv_in.weight is not 4-d: {:?}", tensor.shape);
                        };
                        tensor.shape = vec![out, inp, kh * kw];
                    }
                    Some(tensor)
                },
            )
        },
        &[
            "unet/diffusion_pytorch_model.safetensors: tensor `conv_in.weight` has shape [32, 4, 9], \
             expected [32, 4, 3, 3]",
        ],
    );
}

#[test]
fn config_without_a_key_names_the_file_and_the_key() {
    render_corrupted(
        |model| remove_config_key(&model.join("unet/config.json"), "block_out_channels"),
        &["unet/config.json: missing key `block_out_channels`"],
    );
    render_corrupted(
        |model| {
            remove_config_key(
                &model.join("scheduler/scheduler_config.json"),
                "beta_schedule",
            )
        },
        &["scheduler/scheduler_config.json: missing key `beta_schedule`"],
    );
    render_corrupted(
        |model| {
            remove_config_key(
                &model.join("text_encoder_2/config.json"),
                "max_position_embeddings",
            )
        },
        &["text_encoder_2/config.json: missing key `max_position_embeddings`"],
    );
}

#[test]
fn config_that_is_not_json_names_the_file() {
    render_corrupted(
        |model| std::fs::write(model.join("vae/config.json"), "{\"latent_channels\": 4,").unwrap(),
        &["vae/config.json: not a JSON object"],
    );
}

#[test]
fn invalid_request_prints_the_errors_json_and_exits_2() {
    let mut request = small_request();
    request["data"]["hyperparameters"]["num_inference_steps"] = json!(0);
    request["data"]["dimensions"]["width"] = json!("wide");
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_refused(&run, &[]);
    let paths: Vec<String> = errors_json(&run)
        .iter()
        .map(|error| error["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    for path in [
        "/data/hyperparameters/num_inference_steps",
        "/data/dimensions/width",
    ] {
        assert!(paths.iter().any(|p| p == path), "no error at {path}\n{run}");
    }
    assert!(!scratch.out_dir().exists(), "images written\n{run}");
}

#[test]
fn request_that_is_not_json_exits_2_with_the_errors_json() {
    let scratch = Scratch::new(&json!(null));
    std::fs::write(
        scratch.dir.path().join("request.json"),
        "{\"prompt\": \"unterminated",
    )
    .unwrap();
    let run = scratch.render();
    assert_refused(&run, &[]);
    assert!(!errors_json(&run).is_empty(), "{run}");
}

#[test]
fn unsupported_feature_is_refused_with_its_path() {
    let mut request = small_request();
    request["data"]["init_image"] = json!("input.png");
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_refused(&run, &[]);
    let errors = errors_json(&run);
    assert_eq!(errors.len(), 1, "{run}");
    assert_eq!(errors[0]["path"], "/data/init_image", "{run}");
    assert_eq!(errors[0]["rule"], "unsupported", "{run}");
    assert!(!scratch.out_dir().exists(), "images written\n{run}");
}

#[test]
fn a_lora_that_is_not_found_is_refused_with_its_path() {
    let mut request = small_request();
    request["data"]["lora"] =
        json!({"enabled": true, "models": [{"name": "ink-style", "weight": 0.8}]});
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_refused(&run, &["ink-style.safetensors"]);
    let errors = errors_json(&run);
    assert_eq!(errors.len(), 1, "{run}");
    assert_eq!(errors[0]["path"], "/data/lora/models/0/name", "{run}");
    assert_eq!(errors[0]["rule"], "lora_file", "{run}");
    assert!(!scratch.out_dir().exists(), "images written\n{run}");
}

#[test]
fn a_bad_lora_file_exits_2_naming_file_and_key() {
    let mut request = small_request();
    request["data"]["lora"] = json!({"models": [{"name": "unet/diffusion_pytorch_model"}]});
    let scratch = Scratch::new(&request);
    let lora_dir = scratch.model();
    let run = scratch.render_with(&["--lora-dir", lora_dir.to_str().unwrap()]);
    assert_refused(
        &run,
        &[
            "diffusion_pytorch_model.safetensors",
            "not a LoRA file",
            "add_embedding",
        ],
    );
}

#[test]
fn switched_off_feature_is_not_refused() {
    // `lora.enabled: false` with no models asks for nothing: the render goes ahead.
    let mut request = small_request();
    request["data"]["lora"] = json!({"enabled": false, "models": []});
    request["data"]["batch"] = json!({"size": 1});
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(scratch.out_dir().join("image_0.png").is_file(), "{run}");
}

#[test]
fn missing_model_folder_exits_2_naming_it() {
    let scratch = Scratch::new(&small_request());
    std::fs::remove_dir_all(scratch.model()).unwrap();
    let run = scratch.render();
    assert_refused(&run, &["model_index.json"]);
}

/// `serve`: one reply line per request line, in order, each with its request id; a bad line gets
/// the error reply and the worker goes on; images land in `<out-dir>/<request_id>/` and equal
/// what `render` writes for the same request.
#[test]
fn serve_answers_each_line_and_goes_on_after_a_bad_one() {
    let request = small_request();
    let scratch = Scratch::new(&request);
    let rendered = scratch.render();
    assert_eq!(rendered.code(), Some(0), "{rendered}");

    let mut second = request.clone();
    second["request_id"] = json!("second-request");
    let mut bad = request.clone();
    bad["request_id"] = json!("bad-request");
    bad["data"]["hyperparameters"]["num_inference_steps"] = json!(0);
    let input = format!("{request}\n\n{bad}\nnot json\n{second}\n");
    let serve_out = scratch.dir.path().join("serve-out");
    let binary = env!("CARGO_BIN_EXE_reference-worker");
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--model"])
        .arg(scratch.model())
        .arg("--out-dir")
        .arg(&serve_out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("reference-worker serve");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write requests");
    let output = child.wait_with_output().expect("serve output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "serve failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON reply line"))
        .collect();
    assert_eq!(replies.len(), 4, "one reply per non-blank line: {stdout}");
    assert_eq!(replies[0]["request_id"], "render-cli-test");
    assert_eq!(replies[0]["success"], true);
    assert_eq!(replies[1]["request_id"], "bad-request");
    assert_eq!(replies[1]["success"], false);
    assert!(
        replies[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("/data/hyperparameters/num_inference_steps")),
        "{}",
        replies[1]
    );
    assert_eq!(replies[2]["success"], false);
    assert_eq!(replies[2]["request_id"], Value::Null);
    assert_eq!(replies[3]["request_id"], "second-request");
    assert_eq!(replies[3]["success"], true);
    for reply in [&replies[0], &replies[3]] {
        transformer::Schema::PythonReply
            .validate(reply)
            .unwrap_or_else(|e| panic!("{reply}: {}", e.to_json_line()));
    }
    for (id, i) in [
        ("render-cli-test", 0),
        ("render-cli-test", 1),
        ("second-request", 1),
    ] {
        let served = std::fs::read(serve_out.join(id).join(format!("image_{i}.png")))
            .expect("a served image");
        let single = std::fs::read(scratch.out_dir().join(format!("image_{i}.png")))
            .expect("the rendered image");
        assert!(served == single, "{id} image {i} differs from `render`'s");
    }
}

#[test]
fn renders_textual_inversion_clip_skip_and_weighting_fields() {
    // A relative embedding path is read from the worker's working directory (the project root
    // here, see util::reference_worker), as Python's open() would read it.
    let mut request = small_request();
    request["data"]["textual_inversions"] =
        json!([{"path": "fixtures/textual_inversions/tiny-multi.safetensors", "token": "<m>"}]);
    request["data"]["clip_skip"] = json!(1);
    request["data"]["prompt_attention"] = json!("a1111");
    request["data"]["prompt"] = json!("a (<m>:1.2) bicycle");
    request["data"]["batch"] = json!({"size": 1});
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(scratch.out_dir().join("image_0.png").is_file(), "{run}");
}

#[test]
fn missing_textual_inversion_file_is_refused_with_its_path() {
    // Relative to the working directory (the project root), not to the model or request.
    let mut request = small_request();
    request["data"]["textual_inversions"] =
        json!([{"path": "../fixtures/textual_inversions/tiny-single.safetensors"}]);
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_refused(&run, &["tiny-single.safetensors"]);
    let errors = errors_json(&run);
    assert_eq!(errors[0]["path"], "/data/textual_inversions/0", "{run}");
    assert!(!scratch.out_dir().exists(), "images written\n{run}");
}

#[test]
fn unparsable_a1111_weight_is_refused_with_the_prompt_path() {
    let mut request = small_request();
    request["data"]["prompt_attention"] = json!("a1111");
    request["data"]["prompt"] = json!("a (bicycle:1.2.3)");
    let scratch = Scratch::new(&request);
    let run = scratch.render();
    assert_refused(&run, &["1.2.3"]);
    assert_eq!(errors_json(&run)[0]["path"], "/data/prompt", "{run}");
}

/// `serve` switches LoRAs between requests on the one loaded pipeline: base, LoRA (a bare name
/// found in `--lora-dir`), base again; the two base renders are the same image, the LoRA one is
/// not, and its reply lists the LoRA resolved to its file.
#[test]
fn serve_switches_loras_between_requests_without_drift() {
    let mut base = small_request();
    base["data"]["batch"] = json!({"size": 1});
    let mut lora = base.clone();
    lora["request_id"] = json!("with-lora");
    lora["data"]["lora"] = json!({"enabled": true, "models": [
        {"name": "peft_plain", "weight": 1.25, "adapter_name": "plain"},
        {"name": "kohya_sgm.safetensors", "weight": -0.5}
    ]});
    let mut base_again = base.clone();
    base_again["request_id"] = json!("base-again");
    let scratch = Scratch::new(&base);
    let lora_dir = util::project_root().join("fixtures/loras");
    let serve_out = scratch.dir.path().join("serve-out");
    let binary = env!("CARGO_BIN_EXE_reference-worker");
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--model"])
        .arg(scratch.model())
        .arg("--out-dir")
        .arg(&serve_out)
        .arg("--lora-dir")
        .arg(&lora_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("reference-worker serve");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{base}\n{lora}\n{base_again}\n").as_bytes())
        .expect("write requests");
    let output = child.wait_with_output().expect("serve output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "serve failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON reply line"))
        .collect();
    assert_eq!(replies.len(), 3, "{stdout}");
    assert!(replies.iter().all(|r| r["success"] == true), "{stdout}");
    assert_eq!(replies[0]["data"].get("loras"), None, "{stdout}");
    let applied = &replies[1]["data"]["loras"];
    assert_eq!(applied[0]["adapter_name"], "plain", "{stdout}");
    assert_eq!(
        applied[0]["path"],
        lora_dir
            .join("peft_plain.safetensors")
            .display()
            .to_string(),
        "{stdout}"
    );
    assert_eq!(applied[1]["adapter_name"], "default_1", "{stdout}");
    assert_eq!(applied[1]["weight"], -0.5, "{stdout}");
    let image =
        |id: &str| std::fs::read(serve_out.join(id).join("image_0.png")).expect("a served image");
    assert!(
        image("render-cli-test") == image("base-again"),
        "the base image changed after a LoRA request"
    );
    assert!(
        image("render-cli-test") != image("with-lora"),
        "the LoRAs changed nothing"
    );
}
