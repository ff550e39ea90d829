//! Issue 6 on the text side, against the oracle (`fixtures/oracle/dump_prompts.py`, which runs
//! `fixtures/oracle/prompts.py` as `render.py` does): textual inversions, clip skip, compel and
//! a1111 weighting give exactly diffusers' four `encode_prompt` tensors (max |Δ| must be 0); the
//! compel parser splits prompts as compel's own parser does, the a1111 parser and chunker as the
//! Python reference does; bad embedding files fail naming the file, tensor and shape.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reference_worker::text::{
    a1111, compel_syntax, EncodedPrompt, PromptAttention, PromptOptions, TextEncoders,
    TextualInversion,
};
use reference_worker::Error;
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::{json, Value};
use tch::{Kind, Tensor};
use util::project_root;

fn tiny() -> PathBuf {
    project_root().join("fixtures/models/tiny-sdxl")
}

fn ti(name: &str) -> PathBuf {
    project_root().join(format!("fixtures/textual_inversions/{name}.safetensors"))
}

struct Case {
    name: &'static str,
    prompt: &'static str,
    negative_prompt: Option<&'static str>,
    guidance_scale: f64,
    clip_skip: Option<usize>,
    attention: &'static str,
    /// `(file stem, token)`.
    textual_inversions: &'static [(&'static str, Option<&'static str>)],
}

const fn case(
    name: &'static str,
    prompt: &'static str,
    negative_prompt: Option<&'static str>,
    clip_skip: Option<usize>,
    attention: &'static str,
    textual_inversions: &'static [(&'static str, Option<&'static str>)],
) -> Case {
    Case {
        name,
        prompt,
        negative_prompt,
        guidance_scale: 7.5,
        clip_skip,
        attention,
        textual_inversions,
    }
}

const SINGLE: (&str, Option<&str>) = ("tiny-single", None);
const MULTI: (&str, Option<&str>) = ("tiny-multi", Some("<multi>"));
/// Over 150 tokens: three a1111 chunks, with commas near the 75-token boundaries.
const LONG: &str = "a very long prompt about a lighthouse on a rocky coast at dawn with crashing \
    waves, seagulls, fishing boats, mist, (warm light:1.2), cold shadows, wet stones, moss, a \
    winding path, a small cottage, smoke from the chimney, a red door, blue shutters, [flowers] in \
    the window boxes, a dog sleeping on the porch, and far away a storm over the sea, oil \
    painting, trending, 8k, ultra detailed, volumetric light, golden hour, a castle on a hill at \
    sunset with towers and flags and a moat and a drawbridge and knights in shining armour, \
    horses, a dragon circling above the clouds, villagers at the market selling bread, apples";

const CASES: &[Case] = &[
    case(
        "none_clip_skip_1",
        "a fox in the snow",
        Some("blurry"),
        Some(1),
        "none",
        &[],
    ),
    case(
        "none_clip_skip_3",
        "a fox in the snow",
        None,
        Some(3),
        "none",
        &[],
    ),
    case(
        "none_clip_skip_0",
        "a fox in the snow",
        Some(""),
        Some(0),
        "none",
        &[],
    ),
    case(
        "ti_single",
        "a photo of tiny-single on a table",
        None,
        None,
        "none",
        &[SINGLE],
    ),
    case(
        "ti_multi_in_negative",
        "a <multi> cat, <multi>",
        Some("ugly <multi>"),
        None,
        "none",
        &[MULTI],
    ),
    case(
        "ti_two_clip_skip",
        "tiny-single and <multi>",
        None,
        Some(1),
        "none",
        &[MULTI, SINGLE],
    ),
    case(
        "compel_up_and_down",
        "a red+ car, (sunset sky)1.3, city-- at night, dog.attend(0.5)",
        Some("blurry, (low quality)1.2, text-"),
        None,
        "compel",
        &[],
    ),
    case(
        "compel_plain",
        "a photo of a cat",
        Some(""),
        None,
        "compel",
        &[],
    ),
    case(
        "compel_nested_clip_skip",
        "(a (lighthouse)1.2 on a rocky coast)0.8, \"soft light\"-",
        None,
        Some(2),
        "compel",
        &[],
    ),
    case(
        "compel_ti",
        "a photo of (<multi>)1.2 on a table+, tiny-single-",
        Some("<multi>-"),
        None,
        "compel",
        &[MULTI, SINGLE],
    ),
    case(
        "compel_long_truncated",
        LONG,
        Some("(worst quality)0.5"),
        None,
        "compel",
        &[],
    ),
    case(
        "a1111_weights",
        "a (red car:1.3) in [fog], ((sunset)), \\(literal\\)",
        Some("(blurry:1.2), [text]"),
        None,
        "a1111",
        &[],
    ),
    case(
        "a1111_long",
        LONG,
        Some("(worst quality:1.4)"),
        None,
        "a1111",
        &[],
    ),
    case(
        "a1111_break_clip_skip",
        "a castle BREAK (a dragon:0.7) BREAK",
        None,
        Some(2),
        "a1111",
        &[],
    ),
    case(
        "a1111_ti",
        "a photo of (<multi>:1.2) and [tiny-single]",
        Some("<multi>"),
        None,
        "a1111",
        &[MULTI, SINGLE],
    ),
];

const COMPEL_PROMPTS: &[&str] = &[
    "a cat+ on a mat",
    "a red+ car, (sunset sky)1.3, city-- at night, dog.attend(0.5)",
    "(a (lighthouse)1.2 on a rocky coast)0.8, \"soft light\"-",
    "cat-like dog+++ (x)2 (y)-1 (z).5 (w)1.25.7",
    "\\(escaped\\) \\+plus a\\,b \"quoted, with comma\"1.1 \"a \\\"b\\\" c\"",
    "trailing sign+ -leading +also ++ -- (unclosed",
    "a,b,c,, d . e.f (g, h.)0.9",
    "tab\tseparated\n newline (grouped\twords)1.1",
    "\"\"1.5 ()+",
    "(a)0.5(b)1.5 \"x\"\"y\" (nested (deeper (deepest)+)-)1.2",
    "   ",
    "",
    "a photo of (<multi>)1.2 on a table+, tiny-single-",
    "(x).blend(1)",
];

const A1111_PROMPTS: &[&str] = &[
    "normal text",
    "an (important) word",
    "(unbalanced",
    "\\(literal\\]",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "a cat BREAK a dog BREAKFAST xBREAK BREAK_ BREAK",
    "(a BREAK b) [c BREAK d]",
    "weights (a:+1.5) (b:-0.5) (c:.5) (d:2) :1.2) (e:1.2.3)",
    "a lone \\ backslash \\\\ and \\[ ]] ))",
    "",
    LONG,
    "word, word, word, word, word, word, word, word, word, word, word, word, word, word, word, \
     word, word, word, word, word, word, word, word, word, word, word, word, word, word, word, \
     word, word, word, word, word, word, word, word, word, word, word, word, word, word, word",
];

struct Oracle {
    _dir: tempfile::TempDir,
    out: PathBuf,
}

fn oracle() -> &'static Oracle {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut cases: Vec<Value> = CASES
            .iter()
            .map(|case| {
                json!({
                    "name": case.name,
                    "model": tiny(),
                    "prompt": case.prompt,
                    "negative_prompt": case.negative_prompt,
                    "guidance_scale": case.guidance_scale,
                    "clip_skip": case.clip_skip,
                    "prompt_attention": case.attention,
                    "textual_inversions": case.textual_inversions.iter().map(|(stem, token)| {
                        let mut entry = json!({"path": ti(stem)});
                        if let Some(token) = token {
                            entry["token"] = json!(token);
                        }
                        entry
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        for (i, prompt) in COMPEL_PROMPTS.iter().enumerate() {
            cases.push(
                json!({"name": format!("compel_parse_{i}"), "parse": "compel",
                              "prompt": prompt, "model": tiny()}),
            );
        }
        for (i, prompt) in A1111_PROMPTS.iter().enumerate() {
            cases.push(json!({"name": format!("a1111_parse_{i}"), "parse": "a1111",
                              "prompt": prompt, "model": tiny()}));
        }
        let cases_path = dir.path().join("cases.json");
        std::fs::write(&cases_path, serde_json::to_vec_pretty(&cases).unwrap()).unwrap();
        let out = dir.path().join("out");
        let root = project_root();
        let python = root.join(".venv/bin/python");
        let script = root.join("fixtures/oracle/dump_prompts.py");
        let output = Command::new(&python)
            .arg(&script)
            .arg(&cases_path)
            .arg(&out)
            .current_dir(&root)
            .output()
            .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
        assert!(
            output.status.success(),
            "$ {} {} {}\nstatus: {}\n--- stderr\n{}",
            python.display(),
            script.display(),
            cases_path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Oracle { _dir: dir, out }
    })
}

fn expected_tensor(bytes: &[u8], name: &str) -> Option<Tensor> {
    let tensors = SafeTensors::deserialize(bytes).unwrap();
    let view = tensors.tensor(name).ok()?;
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Some(Tensor::from_data_size(view.data(), &shape, Kind::Float))
}

fn max_abs_diff(actual: &Tensor, expected: &Tensor, what: &str) -> f64 {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    (actual - expected).abs().max().double_value(&[])
}

fn encode(encoders: &TextEncoders, case: &Case) -> EncodedPrompt {
    let textual_inversions: Vec<TextualInversion> = case
        .textual_inversions
        .iter()
        .map(|(stem, token)| TextualInversion::load(&ti(stem), *token).unwrap())
        .collect();
    let options = PromptOptions {
        clip_skip: case.clip_skip,
        prompt_attention: PromptAttention::from_name(case.attention).unwrap(),
        textual_inversions: &textual_inversions,
    };
    encoders
        .encode_prompt_with(case.prompt, case.negative_prompt, true, &options)
        .unwrap_or_else(|error| panic!("{}: {error}", case.name))
}

#[test]
fn encodings_equal_diffusers_with_textual_inversions_clip_skip_and_weighting() {
    let encoders = TextEncoders::load(&tiny()).unwrap();
    let mut failures = Vec::new();
    for case in CASES {
        let path = oracle().out.join(format!("{}.safetensors", case.name));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let encoded = encode(&encoders, case);
        let negative = encoded.negative.as_ref().expect("guidance 7.5");
        for (name, actual) in [
            ("prompt_embeds", &encoded.positive.prompt_embeds),
            (
                "pooled_prompt_embeds",
                &encoded.positive.pooled_prompt_embeds,
            ),
            ("negative_prompt_embeds", &negative.prompt_embeds),
            (
                "negative_pooled_prompt_embeds",
                &negative.pooled_prompt_embeds,
            ),
        ] {
            let expected = expected_tensor(&bytes, name)
                .unwrap_or_else(|| panic!("{}: the oracle wrote no {name}", case.name));
            let diff = max_abs_diff(actual, &expected, &format!("{} {name}", case.name));
            if diff != 0.0 {
                failures.push(format!("{} {name}: max |Δ| {diff:e}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
}

#[test]
fn clip_skip_changes_only_the_positive_side() {
    let encoders = TextEncoders::load(&tiny()).unwrap();
    let skip = |clip_skip| {
        let options = PromptOptions {
            clip_skip,
            ..PromptOptions::default()
        };
        encoders
            .encode_prompt_with("a fox", Some("blurry"), true, &options)
            .unwrap()
    };
    let (none, zero, one) = (skip(None), skip(Some(0)), skip(Some(1)));
    let same = |a: &Tensor, b: &Tensor| a.equal(b);
    assert!(same(
        &none.positive.prompt_embeds,
        &zero.positive.prompt_embeds
    ));
    assert!(!same(
        &none.positive.prompt_embeds,
        &one.positive.prompt_embeds
    ));
    assert!(same(
        &none.positive.pooled_prompt_embeds,
        &one.positive.pooled_prompt_embeds
    ));
    let (a, b) = (none.negative.unwrap(), one.negative.unwrap());
    assert!(same(&a.prompt_embeds, &b.prompt_embeds));
    // The tiny encoders have 5 layers: hidden_states has 6 entries, so clip_skip 5 is too far.
    let options = PromptOptions {
        clip_skip: Some(5),
        ..PromptOptions::default()
    };
    let error = encoders
        .encode_prompt_with("a fox", None, true, &options)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("hidden_states[-7]") && error.contains("clip_skip 5"),
        "{error}"
    );
}

fn oracle_json(name: &str) -> Value {
    let path = oracle().out.join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn compel_parser_splits_prompts_as_compel_does() {
    let mut failures = Vec::new();
    for (i, prompt) in COMPEL_PROMPTS.iter().enumerate() {
        let expected = oracle_json(&format!("compel_parse_{i}"));
        let actual = compel_syntax::parse(prompt);
        match (&actual, expected.get("fragments")) {
            (Ok(fragments), Some(Value::Array(expected))) => {
                let expected: Vec<(String, f64)> = expected
                    .iter()
                    .map(|f| (f[0].as_str().unwrap().to_owned(), f[1].as_f64().unwrap()))
                    .collect();
                let actual: Vec<(String, f64)> = fragments
                    .iter()
                    .map(|f| (f.text.clone(), f.weight))
                    .collect();
                if actual != expected {
                    failures.push(format!("{prompt:?}: {actual:?} != compel {expected:?}"));
                }
            }
            (Err(_), None) => {} // both refuse
            (Err(error), Some(_)) if prompt.contains(".blend(") => {
                // compel parses blends; this worker refuses them (documented).
                assert!(error.to_string().contains(".blend"), "{error}");
            }
            (actual, _) => failures.push(format!("{prompt:?}: {actual:?} vs compel {expected}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a1111_parser_and_chunks_match_the_reference() {
    let encoders = TextEncoders::load(&tiny()).unwrap();
    let tokenizers: Vec<_> = encoders.tokenizers().collect();
    let mut failures = Vec::new();
    for (i, prompt) in A1111_PROMPTS.iter().enumerate() {
        let expected = oracle_json(&format!("a1111_parse_{i}"));
        let pieces = match (a1111::parse(prompt), expected.get("pieces")) {
            (Ok(pieces), Some(Value::Array(expected))) => {
                let expected: Vec<(String, f64)> = expected
                    .iter()
                    .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_f64().unwrap()))
                    .collect();
                let actual: Vec<(String, f64)> =
                    pieces.iter().map(|p| (p.text.clone(), p.weight)).collect();
                if actual != expected {
                    failures.push(format!("{prompt:?}: {actual:?} != {expected:?}"));
                    continue;
                }
                pieces
            }
            (Err(_), None) => continue,
            (actual, _) => {
                failures.push(format!("{prompt:?}: {actual:?} vs {expected}"));
                continue;
            }
        };
        for (tokenizer, expected) in tokenizers
            .iter()
            .zip(expected["chunks"].as_array().unwrap())
        {
            let chunks = a1111::chunks(&pieces, tokenizer).unwrap();
            let actual: Vec<Value> = chunks.iter().map(|c| json!([c.ids, c.weights])).collect();
            if &Value::Array(actual) != expected {
                failures.push(format!("{prompt:?}: chunks differ with {:?}", tokenizer));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- textual-inversion files ----------------------------------------------------------------

fn write_embedding(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    Tensor::write_safetensors(tensors, &path).unwrap();
    path
}

fn load_error(path: &Path, token: Option<&str>) -> String {
    let error = TextualInversion::load(path, token).unwrap_err();
    assert!(
        matches!(error, Error::InvalidTextualInversion { .. }),
        "{error:?}"
    );
    error.to_string()
}

fn apply_error(path: &Path, token: Option<&str>) -> String {
    let encoders = TextEncoders::load(&tiny()).unwrap();
    let textual_inversions = [TextualInversion::load(path, token).unwrap()];
    let options = PromptOptions {
        textual_inversions: &textual_inversions,
        ..PromptOptions::default()
    };
    let error = encoders
        .encode_prompt_with("a prompt", None, true, &options)
        .unwrap_err();
    assert!(
        matches!(error, Error::InvalidTextualInversion { .. }),
        "{error:?}"
    );
    error.to_string()
}

#[test]
fn bad_embedding_files_fail_naming_file_tensor_and_shape() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = |rows: i64, dim: i64| Tensor::ones([rows, dim], (Kind::Float, tch::Device::Cpu));

    let only_l = write_embedding(dir.path(), "only-l", &[("clip_l", vectors(1, 32))]);
    let message = load_error(&only_l, None);
    assert!(
        message.contains("only-l.safetensors") && message.contains("`clip_g`"),
        "{message}"
    );
    assert!(
        message.contains("`clip_l`"),
        "lists what the file has: {message}"
    );

    let only_g = write_embedding(dir.path(), "only-g", &[("clip_g", vectors(1, 32))]);
    assert!(load_error(&only_g, None).contains("`clip_l`"));

    let cube = write_embedding(
        dir.path(),
        "cube",
        &[
            (
                "clip_l",
                Tensor::ones([1, 2, 32], (Kind::Float, tch::Device::Cpu)),
            ),
            ("clip_g", vectors(1, 32)),
        ],
    );
    let message = load_error(&cube, None);
    assert!(
        message.contains("cube.safetensors")
            && message.contains("`clip_l`")
            && message.contains("[1, 2, 32]"),
        "{message}"
    );

    let wide = write_embedding(
        dir.path(),
        "wide",
        &[("clip_l", vectors(2, 32)), ("clip_g", vectors(2, 48))],
    );
    let message = apply_error(&wide, None);
    assert!(
        message.contains("wide.safetensors")
            && message.contains("`clip_g`")
            && message.contains("[2, 48]")
            && message.contains("hidden_size 32"),
        "{message}"
    );

    let fine = write_embedding(
        dir.path(),
        "fine",
        &[("clip_l", vectors(2, 32)), ("clip_g", vectors(2, 32))],
    );
    // "cat</w>" is a vocabulary entry; "<|endoftext|>" a special token; both are refused.
    for token in ["<|endoftext|>", "a</w>"] {
        let message = apply_error(&fine, Some(token));
        assert!(
            message.contains("fine.safetensors")
                && message.contains(&format!("`{token}` is already in the vocabulary")),
            "{message}"
        );
    }
    let message = load_error(&fine, Some("  "));
    assert!(message.contains("blank"), "{message}");

    // Two embeddings with one token.
    let encoders = TextEncoders::load(&tiny()).unwrap();
    let textual_inversions = [
        TextualInversion::load(&fine, Some("<t>")).unwrap(),
        TextualInversion::load(&ti("tiny-single"), Some("<t>")).unwrap(),
    ];
    let options = PromptOptions {
        textual_inversions: &textual_inversions,
        ..PromptOptions::default()
    };
    let message = encoders
        .encode_prompt_with("a <t>", None, true, &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("tiny-single.safetensors") && message.contains("fine.safetensors"),
        "{message}"
    );

    let missing = dir.path().join("missing.safetensors");
    let message = TextualInversion::load(&missing, None)
        .unwrap_err()
        .to_string();
    assert!(message.contains("missing.safetensors"), "{message}");
}

#[test]
fn textual_inversion_tokens_default_to_the_file_stem_and_expand() {
    let single = TextualInversion::load(&ti("tiny-single"), None).unwrap();
    assert_eq!(single.token(), "tiny-single");
    assert_eq!(single.vector_count("text_encoder"), 1);
    let multi = TextualInversion::load(&ti("tiny-multi"), Some("<m>")).unwrap();
    assert_eq!(multi.token(), "<m>");
    assert_eq!(multi.vector_count("text_encoder_2"), 3);
    // The loaded pipeline is not changed by a request's embeddings.
    let encoders = TextEncoders::load(&tiny()).unwrap();
    let before = encoders.encode_prompt("a <m>", None, false).unwrap();
    let textual_inversions = [multi];
    let options = PromptOptions {
        textual_inversions: &textual_inversions,
        ..PromptOptions::default()
    };
    let with = encoders
        .encode_prompt_with("a <m>", None, false, &options)
        .unwrap();
    let after = encoders.encode_prompt("a <m>", None, false).unwrap();
    assert!(!with
        .positive
        .prompt_embeds
        .equal(&before.positive.prompt_embeds));
    assert!(after
        .positive
        .prompt_embeds
        .equal(&before.positive.prompt_embeds));
}
