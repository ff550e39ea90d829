//! The text side against diffusers: `fixtures/oracle/dump_text.py` runs
//! `StableDiffusionXLPipeline.encode_prompt` (and transformers' `CLIPTokenizer`) on the tiny model
//! for the cases below; the token ids must be equal and the embeddings equal (max |Δ| reported,
//! expected exactly 0). Also: load errors name the file and the tensor or key at fault.

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reference_worker::text::{ClipTextModel, ClipTokenizer, EncodedPrompt, TextEncoders};
use safetensors::tensor::{Dtype, SafeTensors};
use tch::{Kind, Tensor};
use util::{project_root, tiny_sdxl};

const PROMPT: &str = "a photo of an astronaut riding a horse on mars, highly detailed";
/// Well over 77 tokens with either tokenizer, with digits and punctuation near the cut.
const LONG: &str = "a very long prompt about a castle on a hill at sunset, with towers, flags, \
    a moat, a drawbridge, knights in shining armour, horses, a dragon circling above the clouds, \
    villagers at the market selling bread, apples, cheese and wine, children playing near the \
    fountain, 42 birds on the roof, a wizard in a blue robe reading a scroll, mountains far away \
    covered in snow, a river winding through the valley, boats, fishermen, mills, wheat fields, \
    oil painting, trending, 8k, ultra detailed, volumetric light, golden hour, end of the prompt";
const NON_ASCII: &str = "Ünïcödé café — 日本語のプロンプト! 🎉 naïve Straße, ÆØÅ «quoted» ½ ∞";

/// Which model folder a case runs on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Model {
    /// The committed fixture (`force_zeros_for_empty_prompt: true`).
    Tiny,
    /// The same weights with `force_zeros_for_empty_prompt: false`.
    NoForceZeros,
}

struct Case {
    name: &'static str,
    model: Model,
    prompt: &'static str,
    negative_prompt: Option<&'static str>,
    guidance_scale: f64,
}

const fn case(
    name: &'static str,
    prompt: &'static str,
    negative_prompt: Option<&'static str>,
    guidance_scale: f64,
) -> Case {
    Case {
        name,
        model: Model::Tiny,
        prompt,
        negative_prompt,
        guidance_scale,
    }
}

const CASES: &[Case] = &[
    case("prompt_negative_absent", PROMPT, None, 7.5),
    case("prompt_guidance_1", PROMPT, None, 1.0),
    case(
        "prompt_negative_set",
        PROMPT,
        Some("blurry, low quality, watermark"),
        7.5,
    ),
    case("prompt_negative_empty", PROMPT, Some(""), 7.5),
    case("negative_set_guidance_1", PROMPT, Some("blurry"), 1.0),
    case("long_prompt", LONG, Some("bad anatomy"), 7.5),
    case("long_prompt_guidance_1", LONG, None, 1.0),
    case("long_negative", PROMPT, Some(LONG), 7.5),
    case("empty_prompt", "", None, 7.5),
    case("empty_prompt_negative_empty", "", Some(""), 5.0),
    case(
        "non_ascii",
        NON_ASCII,
        Some("醜い, ぼやけた, ÜBERBELICHTET"),
        7.5,
    ),
    case(
        "special_tokens_and_whitespace",
        "  <|startoftext|>hello <|endoftext|> world!!  \t multiple   spaces\nnew line ",
        Some("!!!"),
        7.5,
    ),
    Case {
        name: "no_force_zeros_negative_absent",
        model: Model::NoForceZeros,
        prompt: PROMPT,
        negative_prompt: None,
        guidance_scale: 7.5,
    },
];

/// A model folder whose components link to the fixture's, with its own `model_index.json`.
fn model_copy(root: &Path, edit_index: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let tiny = tiny_sdxl();
    std::fs::create_dir_all(root).unwrap();
    for entry in std::fs::read_dir(&tiny).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            std::os::unix::fs::symlink(entry.path(), root.join(entry.file_name())).unwrap();
        }
    }
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny.join("model_index.json")).unwrap()).unwrap();
    edit_index(&mut index);
    std::fs::write(
        root.join("model_index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    root.to_owned()
}

struct Oracle {
    _dir: tempfile::TempDir,
    out: PathBuf,
    models: HashMap<Model, PathBuf>,
}

/// Runs the oracle once for all cases (one pipeline load per model folder).
fn oracle() -> &'static Oracle {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let no_force_zeros = model_copy(&dir.path().join("no-force-zeros"), |index| {
            index["force_zeros_for_empty_prompt"] = false.into();
        });
        let models = HashMap::from([
            (Model::Tiny, tiny_sdxl()),
            (Model::NoForceZeros, no_force_zeros),
        ]);
        let cases: Vec<serde_json::Value> = CASES
            .iter()
            .map(|case| {
                serde_json::json!({
                    "name": case.name,
                    "model": models[&case.model],
                    "prompt": case.prompt,
                    "negative_prompt": case.negative_prompt,
                    "guidance_scale": case.guidance_scale,
                })
            })
            .collect();
        let cases_path = dir.path().join("cases.json");
        std::fs::write(&cases_path, serde_json::to_vec_pretty(&cases).unwrap()).unwrap();
        let out = dir.path().join("out");

        let root = project_root();
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `cargo xtask setup` first",
            python.display()
        );
        let script = root.join("fixtures/oracle/dump_text.py");
        let output = Command::new(&python)
            .arg(&script)
            .arg(&cases_path)
            .arg(&out)
            .current_dir(&root)
            .output()
            .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
        assert!(
            output.status.success(),
            "$ {} {} {} {}\nstatus: {}\n--- stderr\n{}",
            python.display(),
            script.display(),
            cases_path.display(),
            out.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Oracle {
            _dir: dir,
            out,
            models,
        }
    })
}

/// The text encoders of a model folder (tch tensors are not `Sync`: each test loads its own; the
/// tiny model loads in milliseconds).
fn encoders(model: Model) -> TextEncoders {
    let path = &oracle().models[&model];
    TextEncoders::load(path).unwrap_or_else(|error| panic!("loading {model:?}: {error}"))
}

/// One case's oracle file.
struct Expected {
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl Expected {
    fn read(case: &Case) -> Self {
        let path = oracle().out.join(format!("{}.safetensors", case.name));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
        let metadata = metadata.metadata().clone().unwrap_or_default();
        Self { bytes, metadata }
    }

    fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes)
            .unwrap()
            .names()
            .iter()
            .any(|n| *n == name)
    }

    fn ids(&self, name: &str) -> Vec<i64> {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::I64, "{name}");
        view.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn tensor(&self, name: &str) -> Tensor {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        Tensor::from_data_size(view.data(), &shape, Kind::Float)
    }

    fn removed_text(&self) -> Vec<Option<String>> {
        serde_json::from_str(&self.metadata["removed_text"]).unwrap()
    }
}

fn max_abs_diff(actual: &Tensor, expected: &Tensor, what: &str) -> f64 {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    assert_eq!(actual.kind(), Kind::Float, "{what}: kind");
    (actual - expected).abs().max().double_value(&[])
}

#[test]
fn token_ids_equal_transformers_clip_tokenizer() {
    let tiny = encoders(Model::Tiny);
    let no_force_zeros = encoders(Model::NoForceZeros);
    for case in CASES {
        let expected = Expected::read(case);
        let encoders = match case.model {
            Model::Tiny => &tiny,
            Model::NoForceZeros => &no_force_zeros,
        };
        let tokenizers: Vec<&ClipTokenizer> = encoders.tokenizers().collect();
        assert_eq!(tokenizers.len(), 2);
        let mut removed = Vec::new();
        for (tokenizer, suffix) in tokenizers.iter().zip(["", "_2"]) {
            let tokenized = tokenizer.tokenize(case.prompt).unwrap();
            assert_eq!(
                tokenized.input_ids,
                expected.ids(&format!("input_ids{suffix}")),
                "{}: input_ids{suffix} of {:?}",
                case.name,
                case.prompt
            );
            removed.push(tokenized.removed_text);
            let negative = format!("negative_input_ids{suffix}");
            if expected.has(&negative) {
                let negative_prompt = case.negative_prompt.unwrap_or("");
                assert_eq!(
                    tokenizer.input_ids(negative_prompt).unwrap(),
                    expected.ids(&negative),
                    "{}: {negative} of {negative_prompt:?}",
                    case.name
                );
            }
        }
        assert_eq!(
            removed,
            expected.removed_text(),
            "{}: removed text",
            case.name
        );
    }
}

#[test]
fn tokenizer_edge_cases_behave_like_clip_tokenizer() {
    let tiny = encoders(Model::Tiny);
    let tokenizers: Vec<&ClipTokenizer> = tiny.tokenizers().collect();
    let (first, second) = (tokenizers[0], tokenizers[1]);
    // The two tiny tokenizers differ only in their pad token, as SDXL's do.
    assert_eq!(first.pad_token_id(), 845);
    assert_eq!(second.pad_token_id(), 0);
    let empty = second.tokenize("").unwrap();
    assert_eq!(empty.input_ids.len(), 77);
    assert_eq!(&empty.input_ids[..3], &[844, 845, 0]);
    assert_eq!(empty.removed_text, None);
    let long = first.tokenize(LONG).unwrap();
    assert_eq!(long.input_ids.len(), 77);
    assert_eq!(long.input_ids[0], 844);
    assert_eq!(
        long.input_ids[76], 845,
        "a truncated prompt still ends with EOS"
    );
    assert!(long.removed_text.is_some());
}

fn compare(case: &Case, expected: &Expected, encoded: &EncodedPrompt) -> Vec<(String, f64)> {
    let mut diffs = vec![
        (
            "prompt_embeds".to_owned(),
            max_abs_diff(
                &encoded.positive.prompt_embeds,
                &expected.tensor("prompt_embeds"),
                case.name,
            ),
        ),
        (
            "pooled_prompt_embeds".to_owned(),
            max_abs_diff(
                &encoded.positive.pooled_prompt_embeds,
                &expected.tensor("pooled_prompt_embeds"),
                case.name,
            ),
        ),
    ];
    assert_eq!(
        encoded.negative.is_some(),
        expected.has("negative_prompt_embeds"),
        "{}: negative embeddings present",
        case.name
    );
    if let Some(negative) = &encoded.negative {
        diffs.push((
            "negative_prompt_embeds".to_owned(),
            max_abs_diff(
                &negative.prompt_embeds,
                &expected.tensor("negative_prompt_embeds"),
                case.name,
            ),
        ));
        diffs.push((
            "negative_pooled_prompt_embeds".to_owned(),
            max_abs_diff(
                &negative.pooled_prompt_embeds,
                &expected.tensor("negative_pooled_prompt_embeds"),
                case.name,
            ),
        ));
    }
    diffs
}

#[test]
fn encode_prompt_equals_diffusers() {
    let mut failures = Vec::new();
    let mut exact = 0;
    let mut total = 0;
    let tiny = encoders(Model::Tiny);
    let no_force_zeros = encoders(Model::NoForceZeros);
    for case in CASES {
        let expected = Expected::read(case);
        let do_classifier_free_guidance = case.guidance_scale > 1.0;
        assert_eq!(
            expected.metadata["do_classifier_free_guidance"],
            do_classifier_free_guidance.to_string(),
            "{}",
            case.name
        );
        let encoders = match case.model {
            Model::Tiny => &tiny,
            Model::NoForceZeros => &no_force_zeros,
        };
        let encoded = encoders
            .encode_prompt(
                case.prompt,
                case.negative_prompt,
                do_classifier_free_guidance,
            )
            .unwrap();
        let warned = encoded.truncation_warnings.len();
        let removed = expected.removed_text().iter().flatten().count();
        assert_eq!(warned, removed, "{}: truncation warnings", case.name);
        for (tensor, diff) in compare(case, &expected, &encoded) {
            println!("{:<32} {tensor:<30} max|Δ| = {diff:e}", case.name);
            total += 1;
            if diff == 0.0 {
                exact += 1;
            } else {
                failures.push(format!("{}: {tensor}: max|Δ| = {diff:e}", case.name));
            }
        }
    }
    println!("{exact}/{total} tensors bit-identical to diffusers");
    assert!(
        failures.is_empty(),
        "differences from diffusers:\n{}",
        failures.join("\n")
    );
}

#[test]
fn negative_prompt_semantics() {
    let tiny = encoders(Model::Tiny);
    assert!(tiny.force_zeros_for_empty_prompt());
    // No guidance: no negative side, whatever the negative prompt.
    let encoded = tiny.encode_prompt(PROMPT, Some("blurry"), false).unwrap();
    assert!(encoded.negative.is_none());
    // Absent with force_zeros_for_empty_prompt: zeros shaped like the positive side.
    let encoded = tiny.encode_prompt(PROMPT, None, true).unwrap();
    let negative = encoded.negative.as_ref().unwrap();
    assert_eq!(
        negative.prompt_embeds.size(),
        encoded.positive.prompt_embeds.size()
    );
    assert_eq!(negative.prompt_embeds.size(), [1, 77, 64]);
    assert_eq!(negative.pooled_prompt_embeds.size(), [1, 32]);
    assert_eq!(negative.prompt_embeds.abs().max().double_value(&[]), 0.0);
    assert_eq!(
        negative.pooled_prompt_embeds.abs().max().double_value(&[]),
        0.0
    );
    // An empty string is encoded (not zeros), and equals an absent one without force_zeros.
    let empty = tiny.encode_prompt(PROMPT, Some(""), true).unwrap();
    let empty = empty.negative.unwrap();
    assert!(empty.prompt_embeds.abs().max().double_value(&[]) > 0.0);
    let absent = encoders(Model::NoForceZeros)
        .encode_prompt(PROMPT, None, true)
        .unwrap()
        .negative
        .unwrap();
    assert!(absent.prompt_embeds.equal(&empty.prompt_embeds));
    assert!(absent
        .pooled_prompt_embeds
        .equal(&empty.pooled_prompt_embeds));
}

/// A copy of the fixture's `text_encoder_2/` with its config.json edited.
fn text_encoder_2_copy(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let source = tiny_sdxl().join("text_encoder_2");
    let target = dir.join("text_encoder_2");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(
        source.join("model.safetensors"),
        target.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(source.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(
        target.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    target
}

#[test]
fn wrong_shaped_tensor_names_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = text_encoder_2_copy(dir.path(), |config| config["projection_dim"] = 16.into());
    let error = ClipTextModel::load(&encoder, true, Kind::Float)
        .unwrap_err()
        .to_string();
    let file = encoder.join("model.safetensors");
    assert!(error.contains(&file.display().to_string()), "{error}");
    assert!(error.contains("`text_projection.weight`"), "{error}");
    assert!(
        error.contains("[32, 32]") && error.contains("[16, 32]"),
        "{error}"
    );
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = text_encoder_2_copy(dir.path(), |config| config["num_hidden_layers"] = 6.into());
    let error = ClipTextModel::load(&encoder, true, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&encoder.join("model.safetensors").display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("`text_model.encoder.layers.5.layer_norm1.weight`"),
        "{error}"
    );
}

#[test]
fn unsupported_activation_names_config_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = text_encoder_2_copy(dir.path(), |config| config["hidden_act"] = "swish".into());
    let error = ClipTextModel::load(&encoder, true, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&encoder.join("config.json").display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("`hidden_act`") && error.contains("swish"),
        "{error}"
    );
}

#[test]
fn tokenizer_config_errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let source = tiny_sdxl().join("tokenizer_2");
    std::fs::copy(
        source.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let config_path = dir.path().join("tokenizer_config.json");

    let missing = ClipTokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(missing.contains("tokenizer_config.json"), "{missing}");

    std::fs::write(&config_path, r#"{"pad_token": "!"}"#).unwrap();
    let error = ClipTokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains(&config_path.display().to_string()),
        "{error}"
    );
    assert!(error.contains("`model_max_length`"), "{error}");

    std::fs::write(
        &config_path,
        r#"{"model_max_length": 77, "pad_token": "<|not a token|>"}"#,
    )
    .unwrap();
    let error = ClipTokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("`pad_token`") && error.contains("<|not a token|>"),
        "{error}"
    );

    // transformers 4 writes special tokens as AddedToken objects.
    std::fs::write(
        &config_path,
        r#"{"model_max_length": 77, "pad_token": {"content": "!", "special": true}}"#,
    )
    .unwrap();
    assert_eq!(ClipTokenizer::load(dir.path()).unwrap().pad_token_id(), 0);

    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let error = ClipTokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains(&dir.path().join("tokenizer.json").display().to_string()),
        "{error}"
    );
}

#[test]
fn model_index_without_text_encoder_2_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = model_copy(&dir.path().join("model"), |index| {
        index["text_encoder_2"] = serde_json::json!([null, null]);
    });
    let error = TextEncoders::load(&root).unwrap_err().to_string();
    assert!(
        error.contains("model_index.json") && error.contains("text_encoder_2"),
        "{error}"
    );
}
