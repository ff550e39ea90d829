//! LoRA: the loader against what diffusers loaded of each fixture (`fixtures/loras/*.diffusers.json`,
//! written by `fixtures/oracle/make_loras.py`), every refusal, and switching LoRAs without drift.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reference_worker::lora::{Component, Layout, LoraAdapter, LoraSpec};
use reference_worker::pipeline::Pipeline;
use serde_json::Value;

fn tiny_sdxl() -> PathBuf {
    util::project_root().join("fixtures/models/tiny-sdxl")
}

fn lora_file(name: &str) -> PathBuf {
    util::project_root().join(format!("fixtures/loras/{name}.safetensors"))
}

const FIXTURES: [(&str, Layout); 4] = [
    ("kohya_sgm", Layout::Kohya),
    ("kohya_diffusers_names", Layout::Kohya),
    ("peft_plain", Layout::Peft),
    ("peft_metadata", Layout::Peft),
];

/// One float32 pipeline per test binary (loading takes a while on 2 cores).
fn pipeline() -> &'static std::sync::Mutex<Pipeline> {
    static PIPELINE: OnceLock<std::sync::Mutex<Pipeline>> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        std::sync::Mutex::new(Pipeline::load(&tiny_sdxl()).expect("the tiny pipeline loads"))
    })
}

fn with_pipeline<T>(f: impl FnOnce(&Pipeline) -> T) -> T {
    let guard = pipeline()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&guard)
}

fn load(pipeline: &Pipeline, path: &Path) -> reference_worker::Result<LoraAdapter> {
    LoraAdapter::load(path, &pipeline.adapter_targets(), pipeline.kind())
}

#[test]
fn every_fixture_loads_as_diffusers_loaded_it() {
    with_pipeline(|pipeline| {
        for (name, layout) in FIXTURES {
            let adapter =
                load(pipeline, &lora_file(name)).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(adapter.layout(), layout, "{name}");
            let table_path =
                util::project_root().join(format!("fixtures/loras/{name}.diffusers.json"));
            let table: Value =
                serde_json::from_slice(&std::fs::read(&table_path).expect("the table exists"))
                    .expect("the table is JSON");
            let mut expected: BTreeMap<(String, String), &Value> = BTreeMap::new();
            for (component, modules) in table["modules"].as_object().expect("modules") {
                for (module, entry) in modules.as_object().expect("a component's modules") {
                    expected.insert((component.clone(), module.clone()), entry);
                }
            }
            let mut seen = BTreeMap::new();
            for module in adapter.modules() {
                let key = (module.component.name().to_owned(), module.module.clone());
                let entry = expected
                    .get(&key)
                    .unwrap_or_else(|| panic!("{name}: diffusers has no adapter on {key:?}"));
                assert_eq!(
                    module.rank,
                    entry["r"].as_i64().unwrap(),
                    "{name} {key:?} r"
                );
                assert_eq!(
                    module.lora_alpha,
                    entry["lora_alpha"].as_f64().unwrap(),
                    "{name} {key:?} lora_alpha"
                );
                assert_eq!(
                    module.use_rslora,
                    entry["use_rslora"] == true,
                    "{name} {key:?}"
                );
                let bits = u64::from_str_radix(entry["scaling_f64_be"].as_str().unwrap(), 16)
                    .expect("hex bits");
                assert_eq!(
                    module.scaling(1.0).to_bits(),
                    bits,
                    "{name} {key:?}: scaling {} vs diffusers' {}",
                    module.scaling(1.0),
                    f64::from_bits(bits)
                );
                seen.insert(key, ());
            }
            let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
            assert!(missing.is_empty(), "{name}: not loaded: {missing:?}");
        }
    });
}

/// The worker's LoRA targets are exactly diffusers' / transformers' `nn.Linear` and `nn.Conv2d`
/// modules, by name and size (`fixtures/loras/modules.json`).
#[test]
fn lora_targets_are_the_pipelines_linear_and_conv_modules() {
    use reference_worker::lora::LayerShape;
    let table: Value = serde_json::from_slice(
        &std::fs::read(util::project_root().join("fixtures/loras/modules.json")).unwrap(),
    )
    .unwrap();
    with_pipeline(|pipeline| {
        for component in Component::ALL {
            let targets = pipeline
                .lora_targets(component)
                .expect("SDXL has all three");
            let expected = table[component.name()].as_object().expect("a component");
            let ours: Vec<&str> = targets.iter().map(|(name, _)| name).collect();
            let theirs: Vec<&str> = expected.keys().map(String::as_str).collect();
            let mut theirs_sorted = theirs.clone();
            theirs_sorted.sort_unstable();
            assert_eq!(ours, theirs_sorted, "{}", component.name());
            for (name, target) in targets.iter() {
                let layer = &expected[name];
                let n = |key: &str| layer[key].as_i64().unwrap();
                let pair = |key: &str| -> Vec<i64> {
                    layer[key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap())
                        .collect()
                };
                let shape = match layer["kind"].as_str().unwrap() {
                    "Linear" => LayerShape::Linear {
                        in_features: n("in"),
                        out_features: n("out"),
                    },
                    _ => {
                        let (kernel, stride, padding) =
                            (pair("kernel"), pair("stride"), pair("padding"));
                        assert!(
                            kernel[0] == kernel[1]
                                && stride[0] == stride[1]
                                && padding[0] == padding[1]
                        );
                        LayerShape::Conv2d {
                            in_channels: n("in"),
                            out_channels: n("out"),
                            kernel_size: kernel[0],
                            stride: stride[0],
                            padding: padding[0],
                        }
                    }
                };
                assert_eq!(target.shape, shape, "{}.{name}", component.name());
            }
        }
    });
}

#[test]
fn lora_names_resolve_in_the_lora_folder() {
    let dir = util::project_root().join("fixtures/loras");
    let resolve = |name: &str| reference_worker::lora::resolve_path(name, Some(&dir));
    assert_eq!(
        resolve("peft_plain.safetensors").unwrap(),
        dir.join("peft_plain.safetensors")
    );
    assert_eq!(
        resolve("peft_plain").unwrap(),
        dir.join("peft_plain.safetensors")
    );
    let absolute = lora_file("kohya_sgm");
    assert_eq!(
        resolve(absolute.to_str().unwrap()).unwrap(),
        absolute,
        "absolute names ignore the folder"
    );
    let tried = resolve("no_such_lora").unwrap_err();
    assert_eq!(
        tried,
        [
            dir.join("no_such_lora"),
            dir.join("no_such_lora.safetensors")
        ]
    );
    // without a folder: the working directory (cargo runs the tests in the crate's folder)
    let relative = "../fixtures/loras/peft_plain";
    assert_eq!(
        reference_worker::lora::resolve_path(relative, None).unwrap(),
        PathBuf::from("../fixtures/loras/peft_plain.safetensors")
    );
    assert!(reference_worker::lora::resolve_path("peft_plain", None).is_err());
    let spec = LoraSpec {
        name: "x".into(),
        weight: 1.0,
        adapter_name: None,
    };
    assert_eq!(spec.adapter_name(3), "default_3");
}

// ---- refusals --------------------------------------------------------------------------------

/// The tensors of a safetensors file as (name, dtype, shape, bytes), to write altered copies.
type Entry = (String, String, Vec<usize>, Vec<u8>);

fn entries(path: &Path) -> Vec<Entry> {
    let bytes = std::fs::read(path).expect("a fixture");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors fixture");
    let mut entries: Vec<Entry> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                format!("{:?}", view.dtype()),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    entries.sort();
    entries
}

fn write(dir: &Path, file_name: &str, entries: &[Entry]) -> PathBuf {
    let borrowed: Vec<(&str, &str, &[usize], Vec<u8>)> = entries
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.as_slice(), b.clone()))
        .collect();
    let path = dir.join(file_name);
    std::fs::write(&path, util::safetensors_bytes(&borrowed)).expect("write the LoRA");
    path
}

fn f32_entry(name: &str, shape: &[usize], value: f32) -> Entry {
    let count: usize = shape.iter().product();
    (
        name.to_owned(),
        "F32".to_owned(),
        shape.to_vec(),
        util::f32_bytes(&vec![value; count]),
    )
}

/// Loading `path` fails (no panic) with a message naming the file and every one of `needles`.
fn assert_refused(path: &Path, needles: &[&str]) -> reference_worker::Error {
    let result = with_pipeline(|pipeline| load(pipeline, path));
    let error = match result {
        Ok(adapter) => panic!(
            "{} loaded ({} modules)",
            path.display(),
            adapter.modules().len()
        ),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the message does not name the file: {message}"
    );
    for needle in needles {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
    error
}

#[test]
fn a_model_weights_file_is_not_a_lora() {
    let unet = tiny_sdxl().join("unet/diffusion_pytorch_model.safetensors");
    let error = assert_refused(&unet, &["not a LoRA file", "add_embedding.linear_1.bias"]);
    assert!(
        matches!(error, reference_worker::Error::NotALora { .. }),
        "{error:?}"
    );
}

#[test]
fn a_file_that_is_not_safetensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("style.safetensors");
    std::fs::write(&text, b"this is not a LoRA").unwrap();
    assert_refused(&text, &["not a valid safetensors file"]);
    let mut bytes = std::fs::read(lora_file("peft_plain")).unwrap();
    bytes.truncate(bytes.len() - 100);
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, bytes).unwrap();
    assert_refused(&truncated, &["truncated"]);
}

#[test]
fn unknown_keys_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    // kohya-ss: a suffix no LoRA has (LoHa)
    let mut kohya = entries(&lora_file("kohya_diffusers_names"));
    kohya.push(f32_entry("lora_unet_conv_in.hada_w1_a", &[2, 2], 0.5));
    let path = write(dir.path(), "loha.safetensors", &kohya);
    assert_refused(
        &path,
        &["lora_unet_conv_in.hada_w1_a", "not a kohya-ss LoRA tensor"],
    );
    // kohya-ss: a module the UNet does not have
    let mut kohya = entries(&lora_file("kohya_diffusers_names"));
    kohya.push(f32_entry(
        "lora_unet_down_blocks_7_resnets_0_conv1.lora_down.weight",
        &[2, 32, 3, 3],
        0.1,
    ));
    kohya.push(f32_entry(
        "lora_unet_down_blocks_7_resnets_0_conv1.lora_up.weight",
        &[32, 2, 1, 1],
        0.1,
    ));
    let path = write(dir.path(), "no_module.safetensors", &kohya);
    assert_refused(
        &path,
        &[
            "lora_unet_down_blocks_7_resnets_0_conv1.lora_down.weight",
            "down_blocks.7.resnets.0.conv1",
        ],
    );
    // PEFT: no component prefix
    let mut peft = entries(&lora_file("peft_plain"));
    peft.push(f32_entry(
        "down_blocks.0.resnets.0.conv1.lora_A.weight",
        &[4, 32, 3, 3],
        0.1,
    ));
    let path = write(dir.path(), "no_component.safetensors", &peft);
    assert_refused(
        &path,
        &[
            "down_blocks.0.resnets.0.conv1.lora_A.weight",
            "belongs to no component",
        ],
    );
    // PEFT: a module the text encoder does not have
    let mut peft = entries(&lora_file("peft_plain"));
    peft.push(f32_entry(
        "text_encoder_2.text_model.encoder.layers.9.mlp.fc1.lora_A.weight",
        &[4, 32],
        0.1,
    ));
    peft.push(f32_entry(
        "text_encoder_2.text_model.encoder.layers.9.mlp.fc1.lora_B.weight",
        &[37, 4],
        0.1,
    ));
    let path = write(dir.path(), "no_layer.safetensors", &peft);
    assert_refused(
        &path,
        &["text_encoder_2", "text_model.encoder.layers.9.mlp.fc1"],
    );
    // a key without `lora` among LoRA keys
    let mut peft = entries(&lora_file("peft_plain"));
    peft.push(f32_entry("unet.conv_in.weight", &[32, 4, 3, 3], 0.1));
    let path = write(dir.path(), "base_key.safetensors", &peft);
    assert_refused(&path, &["unet.conv_in.weight", "not a LoRA tensor"]);
    // one kohya-ss key in a PEFT file
    let mut peft = entries(&lora_file("peft_plain"));
    peft.push(f32_entry("lora_unet_conv_in.alpha", &[], 1.0));
    let path = write(dir.path(), "mixed.safetensors", &peft);
    assert_refused(&path, &["lora_unet_conv_in.alpha", "one layout per file"]);
}

#[test]
fn a_half_without_its_partner_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let up = "lora_unet_conv_in.lora_up.weight";
    let kohya: Vec<Entry> = entries(&lora_file("kohya_diffusers_names"))
        .into_iter()
        .filter(|(name, ..)| name != up)
        .collect();
    let path = write(dir.path(), "no_up.safetensors", &kohya);
    assert_refused(&path, &["lora_unet_conv_in.lora_down.weight", up]);
    let down = "lora_unet_conv_in.lora_down.weight";
    let kohya: Vec<Entry> = entries(&lora_file("kohya_diffusers_names"))
        .into_iter()
        .filter(|(name, ..)| name != down)
        .collect();
    let path = write(dir.path(), "no_down.safetensors", &kohya);
    assert_refused(&path, &[up, "without its lora_down"]);
    let b = "unet.conv_out.lora_B.weight";
    let peft: Vec<Entry> = entries(&lora_file("peft_plain"))
        .into_iter()
        .filter(|(name, ..)| name != b)
        .collect();
    let path = write(dir.path(), "no_b.safetensors", &peft);
    assert_refused(
        &path,
        &["unet.conv_out.lora_A.weight", "without its lora_B"],
    );
}

#[test]
fn a_rank_mismatch_between_the_halves_is_refused_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let a = "unet.down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q.lora_A.weight";
    let mut peft = entries(&lora_file("peft_plain"));
    let entry = peft
        .iter_mut()
        .find(|(name, ..)| name == a)
        .expect("the fixture has it");
    *entry = f32_entry(a, &[3, 64], 0.1);
    let path = write(dir.path(), "rank.safetensors", &peft);
    let error = assert_refused(&path, &[a, "[3, 64]", "[64, 4]", "rank mismatch"]);
    assert!(
        matches!(error, reference_worker::Error::LoraRank { .. }),
        "{error:?}"
    );
}

#[test]
fn a_shape_that_does_not_fit_the_layer_is_refused_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    // a Linear's down half with the wrong input width
    let a = "unet.down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q.lora_A.weight";
    let mut peft = entries(&lora_file("peft_plain"));
    let entry = peft
        .iter_mut()
        .find(|(name, ..)| name == a)
        .expect("the fixture has it");
    *entry = f32_entry(a, &[4, 63], 0.1);
    let path = write(dir.path(), "width.safetensors", &peft);
    let error = assert_refused(&path, &[a, "[4, 63]", "[4, 64]", "attn1.to_q"]);
    assert!(
        matches!(error, reference_worker::Error::LoraShape { .. }),
        "{error:?}"
    );
    // a 1×1 down half for a 3×3 conv (kohya-ss's conv modules need the base kernel)
    let down = "lora_unet_conv_in.lora_down.weight";
    let mut kohya = entries(&lora_file("kohya_diffusers_names"));
    let entry = kohya
        .iter_mut()
        .find(|(name, ..)| name == down)
        .expect("the fixture has it");
    let rank = entry.2[0];
    *entry = f32_entry(down, &[rank, 4, 1, 1], 0.1);
    let path = write(dir.path(), "kernel.safetensors", &kohya);
    assert_refused(
        &path,
        &[
            down,
            &format!("[{rank}, 4, 1, 1]"),
            &format!("[{rank}, 4, 3, 3]"),
            "conv_in",
        ],
    );
    // an alpha that is not one number
    let alpha = "lora_unet_conv_in.alpha";
    let mut kohya = entries(&lora_file("kohya_diffusers_names"));
    let entry = kohya
        .iter_mut()
        .find(|(name, ..)| name == alpha)
        .expect("the fixture has it");
    *entry = f32_entry(alpha, &[2], 1.0);
    let path = write(dir.path(), "alpha.safetensors", &kohya);
    assert_refused(&path, &[alpha, "one number"]);
}

#[test]
fn what_is_not_rendered_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // DoRA magnitudes: diffusers would drop them and render something else
    let mut kohya = entries(&lora_file("kohya_diffusers_names"));
    kohya.push(f32_entry(
        "lora_unet_conv_in.dora_scale",
        &[1, 4, 1, 1],
        1.0,
    ));
    let path = write(dir.path(), "dora.safetensors", &kohya);
    assert_refused(&path, &["lora_unet_conv_in.dora_scale", "DoRA"]);
    // SGM and diffusers block names in one file: diffusers drops the SGM ones
    let mut kohya = entries(&lora_file("kohya_sgm"));
    kohya.extend(
        entries(&lora_file("kohya_diffusers_names"))
            .into_iter()
            .filter(|(name, ..)| name.starts_with("lora_unet_up_blocks_1_resnets_2_conv1")),
    );
    let path = write(dir.path(), "sgm_mixed.safetensors", &kohya);
    assert_refused(
        &path,
        &[
            "mixes SGM block names",
            "lora_unet_up_blocks_1_resnets_2_conv1",
        ],
    );
}

#[test]
fn metadata_that_is_not_rendered_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = lora_file("peft_metadata");
    let bytes = std::fs::read(&source).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let raw = metadata.metadata().as_ref().unwrap()["lora_adapter_metadata"].clone();
    for (field, value, needle) in [
        ("unet.use_dora", serde_json::json!(true), "unet.use_dora"),
        (
            "text_encoder.lora_dropout",
            serde_json::json!(0.1),
            "text_encoder.lora_dropout",
        ),
        ("unet.r", serde_json::json!(2), "r = 2"),
    ] {
        let mut config: Value = serde_json::from_str(&raw).unwrap();
        config[field] = value;
        let tensors = entries(&source);
        let borrowed: Vec<(&str, &str, &[usize], Vec<u8>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.as_slice(), b.clone()))
            .collect();
        // util::safetensors_bytes writes no __metadata__: add it to the header by hand
        let plain = util::safetensors_bytes(&borrowed);
        let header_len = u64::from_le_bytes(plain[..8].try_into().unwrap()) as usize;
        let mut header: Value = serde_json::from_slice(&plain[8..8 + header_len]).unwrap();
        header["__metadata__"] =
            serde_json::json!({"format": "pt", "lora_adapter_metadata": config.to_string()});
        let mut header = serde_json::to_vec(&header).unwrap();
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend_from_slice(&plain[8 + header_len..]);
        let path = dir
            .path()
            .join(format!("{}.safetensors", field.replace('.', "_")));
        std::fs::write(&path, file).unwrap();
        assert_refused(&path, &[needle]);
    }
}

// ---- requests, activation, drift ------------------------------------------------------------

fn spec(name: &str, weight: f64, adapter_name: Option<&str>) -> LoraSpec {
    LoraSpec {
        name: lora_file(name).display().to_string(),
        weight,
        adapter_name: adapter_name.map(str::to_owned),
    }
}

#[test]
fn request_level_lora_errors_name_the_request_path() {
    with_pipeline(|pipeline| {
        let duplicate = [
            spec("kohya_sgm", 1.0, Some("style")),
            spec("peft_plain", 0.5, Some("style")),
        ];
        match pipeline.activate_loras(&duplicate) {
            Err(reference_worker::Error::InvalidRequest {
                path,
                rule,
                message,
            }) => {
                assert_eq!(path, "/data/lora/models/1/adapter_name");
                assert_eq!(rule, "unique");
                assert!(message.contains("/data/lora/models/0"), "{message}");
            }
            other => panic!("a duplicate adapter name was accepted: {other:?}"),
        }
        // default names are default_<i>: an explicit `default_1` then a nameless second clash
        let clash = [
            spec("kohya_sgm", 1.0, Some("default_1")),
            spec("peft_plain", 1.0, None),
        ];
        assert!(pipeline.activate_loras(&clash).is_err());

        let missing = [LoraSpec {
            name: "loras/cyberpunk_style".into(),
            weight: 0.8,
            adapter_name: None,
        }];
        match pipeline.activate_loras(&missing) {
            Err(reference_worker::Error::InvalidRequest {
                path,
                rule,
                message,
            }) => {
                assert_eq!(path, "/data/lora/models/0/name");
                assert_eq!(rule, "lora_file");
                assert!(
                    message.contains("loras/cyberpunk_style.safetensors"),
                    "{message}"
                );
            }
            other => panic!("a missing LoRA was accepted: {other:?}"),
        }
        let folder = [LoraSpec {
            name: util::project_root()
                .join("fixtures/loras")
                .display()
                .to_string(),
            weight: 1.0,
            adapter_name: None,
        }];
        let error = pipeline.activate_loras(&folder).unwrap_err().to_string();
        assert!(error.contains("is a folder"), "{error}");

        // a good LoRA then a bad one: nothing stays active
        let half_good = [
            spec("kohya_sgm", 1.0, None),
            spec("no_such_file", 1.0, None),
        ];
        assert!(pipeline.activate_loras(&half_good).is_err());
        assert_eq!(active_branches(pipeline), 0);
    });
}

fn active_branches(pipeline: &Pipeline) -> usize {
    Component::ALL
        .iter()
        .filter_map(|c| pipeline.lora_targets(*c))
        .flat_map(|targets| targets.iter().map(|(_, t)| t.active_branches()))
        .sum()
}

/// Deep copies of every base weight and bias a LoRA could reach, by component and module.
fn snapshot(pipeline: &Pipeline) -> Vec<(String, tch::Tensor)> {
    let mut copies = Vec::new();
    for component in Component::ALL {
        let Some(targets) = pipeline.lora_targets(component) else {
            continue;
        };
        for (name, target) in targets.iter() {
            copies.push((
                format!("{}.{name}.weight", component.name()),
                target.weight().copy(),
            ));
            if let Some(bias) = target.bias() {
                copies.push((format!("{}.{name}.bias", component.name()), bias.copy()));
            }
        }
    }
    copies
}

fn render_request(loras: Vec<LoraSpec>) -> reference_worker::pipeline::RenderRequest {
    let data = serde_json::json!({
        "prompt": "a red car in the city",
        "hyperparameters": {"num_inference_steps": 2, "guidance_scale": 5.0, "seed": 3},
        "dimensions": {"width": 256, "height": 256},
        "scheduler": "EulerAncestralDiscreteScheduler",
    });
    let mut request =
        reference_worker::pipeline::RenderRequest::from_v2_data(&data, |_| 0).expect("valid");
    request.loras = loras;
    request
}

fn pixels(rendered: &reference_worker::pipeline::Rendered) -> Vec<Vec<u8>> {
    rendered
        .images
        .iter()
        .map(|image| image.pixels.clone())
        .collect()
}

/// base → +LoRA → −LoRA: every base weight stays bit-identical and the base render is the same
/// image again; the LoRA render differs from the base one and does not change when repeated
/// (branches are replaced, never accumulated).
#[test]
fn switching_loras_leaves_no_drift() {
    with_pipeline(|pipeline| {
        let before = snapshot(pipeline);
        assert!(before.len() > 200, "{} base tensors", before.len());
        let base = pixels(
            &pipeline
                .render(&render_request(Vec::new()))
                .expect("base render"),
        );
        let loras = vec![
            spec("kohya_sgm", 0.8, Some("style")),
            spec("peft_metadata", -0.6, Some("detail")),
            spec("kohya_diffusers_names", 1.5, None),
        ];
        let with = pipeline
            .render(&render_request(loras.clone()))
            .expect("LoRA render");
        assert_eq!(with.loras.len(), 3);
        assert_eq!(with.loras[1].adapter_name, "detail");
        assert_eq!(with.loras[2].adapter_name, "default_2");
        assert_ne!(pixels(&with), base, "the LoRAs change nothing");
        assert_eq!(active_branches(pipeline), 0, "render leaves LoRAs active");
        let again = pipeline
            .render(&render_request(loras))
            .expect("LoRA render again");
        assert_eq!(
            pixels(&again),
            pixels(&with),
            "a second LoRA render differs from the first"
        );

        let applied = pipeline
            .activate_loras(&[spec("peft_plain", 1.0, None)])
            .expect("activate");
        assert_eq!(active_branches(pipeline), applied[0].modules);
        pipeline.clear_loras();
        assert_eq!(active_branches(pipeline), 0);

        let after_base = pixels(
            &pipeline
                .render(&render_request(Vec::new()))
                .expect("base again"),
        );
        assert_eq!(after_base, base, "the base render changed after LoRAs");
        let after = snapshot(pipeline);
        assert_eq!(before.len(), after.len());
        for ((name, old), (_, new)) in before.iter().zip(&after) {
            assert!(old.equal(new), "{name} changed");
        }
    });
}

#[test]
fn lora_fields_of_a_request() {
    let read = |lora: Value| {
        let data = serde_json::json!({"prompt": "x", "hyperparameters": {"seed": 1}, "lora": lora});
        reference_worker::pipeline::RenderRequest::from_v2_data(&data, |_| 0)
            .expect("valid")
            .loras
    };
    let loras = read(serde_json::json!({"enabled": true, "models": [
        {"name": "a.safetensors", "weight": -0.5, "adapter_name": "a"},
        {"name": "b"}
    ]}));
    assert_eq!(
        loras,
        [
            LoraSpec {
                name: "a.safetensors".into(),
                weight: -0.5,
                adapter_name: Some("a".into())
            },
            LoraSpec {
                name: "b".into(),
                weight: 1.0,
                adapter_name: None
            },
        ]
    );
    assert!(read(serde_json::json!({"enabled": false, "models": [{"name": "a"}]})).is_empty());
    assert_eq!(
        read(serde_json::json!({"models": [{"name": "a"}]})).len(),
        1
    );
}
