//! Component configs: the fixture's configs read into the typed structs, and one test per error
//! kind, each checking that the message names the file and the key.

mod util;

use std::path::Path;

use reference_worker::config::{
    AutoencoderKLConfig, ClipTextConfig, ModelIndex, SchedulerConfig, UNet2DConditionConfig,
};
use reference_worker::Error;
use serde_json::{json, Value};

fn fixture(component: &str, file: &str) -> std::path::PathBuf {
    util::tiny_sdxl().join(component).join(file)
}

fn fixture_json(component: &str, file: &str) -> Value {
    let text = std::fs::read_to_string(fixture(component, file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Writes `value` as `<dir>/config.json` and returns the path.
fn write_config(dir: &Path, value: &Value) -> std::path::PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn unet_with(
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> (tempfile::TempDir, Result<UNet2DConditionConfig, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let mut value = fixture_json("unet", "config.json");
    edit(value.as_object_mut().unwrap());
    let path = write_config(dir.path(), &value);
    let result = UNet2DConditionConfig::read(&path);
    (dir, result)
}

#[test]
fn fixture_unet_config_reads_with_sdxl_test_sizes() {
    let unet = UNet2DConditionConfig::read(&fixture("unet", "config.json")).unwrap();
    assert_eq!(unet.block_out_channels, [32, 64]);
    assert_eq!(unet.layers_per_block, [2, 2]);
    assert_eq!(unet.attention_head_dim, [2, 4]);
    assert_eq!(unet.heads_per_block(), [2, 4]);
    assert_eq!(unet.transformer_layers_per_block, [1, 2]);
    assert_eq!(unet.cross_attention_dim, [64, 64]);
    assert_eq!(unet.addition_embed_type.as_deref(), Some("text_time"));
    assert_eq!(unet.addition_time_embed_dim, Some(8));
    assert_eq!(unet.projection_class_embeddings_input_dim, Some(80));
    assert_eq!(unet.norm_num_groups, 1);
    assert!(unet.use_linear_projection);
    assert_eq!(
        unet.down_block_types,
        ["DownBlock2D", "CrossAttnDownBlock2D"]
    );
    assert_eq!(
        unet.mid_block_type.as_deref(),
        Some("UNetMidBlock2DCrossAttn")
    );
}

#[test]
fn fixture_vae_text_encoder_scheduler_and_index_read() {
    let vae = AutoencoderKLConfig::read(&fixture("vae", "config.json")).unwrap();
    assert_eq!(vae.block_out_channels, [32, 32, 64, 64]);
    assert_eq!(vae.scale_factor(), 8);
    assert_eq!(vae.latent_channels, 4);
    assert_eq!(vae.norm_num_groups, 16);
    assert_eq!(vae.scaling_factor, 0.13025);

    let te1 = ClipTextConfig::read(&fixture("text_encoder", "config.json")).unwrap();
    let te2 = ClipTextConfig::read(&fixture("text_encoder_2", "config.json")).unwrap();
    assert!(!te1.has_projection());
    assert!(te2.has_projection());
    assert_eq!(
        (
            te1.hidden_size,
            te1.num_hidden_layers,
            te1.num_attention_heads
        ),
        (32, 5, 4)
    );
    assert_eq!(te2.projection_dim, Some(32));
    assert_eq!(te1.hidden_act, "quick_gelu");
    assert_eq!(te2.hidden_act, "gelu");
    assert_eq!(te1.max_position_embeddings, 77);
    assert_eq!(te1.eos_token_id, Some(te1.vocab_size - 1));

    let scheduler = SchedulerConfig::read(&fixture("scheduler", "scheduler_config.json")).unwrap();
    assert_eq!(scheduler.class_name, "EulerDiscreteScheduler");
    assert_eq!(scheduler.beta_schedule, "scaled_linear");
    assert_eq!(scheduler.timestep_spacing.as_deref(), Some("leading"));
    assert_eq!(scheduler.steps_offset, 1);
    assert_eq!(
        scheduler.file.opt_bool("set_alpha_to_one").unwrap(),
        Some(false)
    );

    let index = ModelIndex::read(&util::tiny_sdxl().join("model_index.json")).unwrap();
    assert_eq!(index.class_name, "StableDiffusionXLPipeline");
    assert!(index.force_zeros_for_empty_prompt);
    let names: Vec<&str> = index
        .components
        .iter()
        .map(|(name, _, _)| name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "scheduler",
            "text_encoder",
            "text_encoder_2",
            "tokenizer",
            "tokenizer_2",
            "unet",
            "vae"
        ]
    );
}

#[test]
fn missing_key_names_file_and_key() {
    let (_dir, result) = unet_with(|map| {
        map.remove("block_out_channels");
    });
    let error = result.unwrap_err();
    let message = error.to_string();
    assert!(matches!(&error, Error::MissingKey { key, .. } if key == "block_out_channels"));
    assert!(
        message.contains("config.json: missing key `block_out_channels`"),
        "{message}"
    );
}

#[test]
fn mistyped_key_names_file_key_expected_type_and_value() {
    let (_dir, result) = unet_with(|map| {
        map.insert("in_channels".into(), json!("four"));
    });
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("config.json: key `in_channels` should be a non-negative integer, found string \"four\""),
        "{message}"
    );

    let (_dir, result) = unet_with(|map| {
        map.insert("block_out_channels".into(), json!([32, "64"]));
    });
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("key `block_out_channels` should be a list of non-negative integers"),
        "{message}"
    );

    let (_dir, result) = unet_with(|map| {
        map.insert("use_linear_projection".into(), json!(1));
    });
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("key `use_linear_projection` should be a boolean, found number 1"),
        "{message}"
    );
}

#[test]
fn per_block_lists_must_match_the_block_count() {
    let (_dir, result) = unet_with(|map| {
        map.insert("attention_head_dim".into(), json!([2, 4, 8]));
    });
    let error = result.unwrap_err();
    assert!(matches!(error, Error::InvalidValue { .. }));
    assert!(
        error
            .to_string()
            .contains("key `attention_head_dim`: has 3 entries but there are 2 blocks"),
        "{error}"
    );
}

#[test]
fn an_integer_per_block_key_applies_to_every_block() {
    let (_dir, result) = unet_with(|map| {
        map.insert("transformer_layers_per_block".into(), json!(3));
        map.remove("num_attention_heads");
    });
    let unet = result.unwrap();
    assert_eq!(unet.transformer_layers_per_block, [3, 3]);
}

#[test]
fn text_time_embedding_requires_its_sizes() {
    let (_dir, result) = unet_with(|map| {
        map.remove("addition_time_embed_dim");
    });
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("missing key `addition_time_embed_dim`"),
        "{message}"
    );
}

#[test]
fn invalid_json_and_non_objects_are_syntax_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "{\"in_channels\": 4,").unwrap();
    let error = UNet2DConditionConfig::read(&path).unwrap_err();
    assert!(matches!(error, Error::ConfigSyntax { .. }));
    assert!(
        error.to_string().contains("config.json: not a JSON object"),
        "{error}"
    );

    std::fs::write(&path, "[1, 2]").unwrap();
    let message = AutoencoderKLConfig::read(&path).unwrap_err().to_string();
    assert!(message.contains("the top level is list [1,2]"), "{message}");
}

#[test]
fn other_components_report_their_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut vae = fixture_json("vae", "config.json");
    vae.as_object_mut().unwrap().remove("scaling_factor");
    let message = AutoencoderKLConfig::read(&write_config(dir.path(), &vae))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("missing key `scaling_factor`"),
        "{message}"
    );

    let mut clip = fixture_json("text_encoder_2", "config.json");
    clip.as_object_mut().unwrap().remove("projection_dim");
    let message = ClipTextConfig::read(&write_config(dir.path(), &clip))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("missing key `projection_dim`"),
        "{message}"
    );

    let mut clip = fixture_json("text_encoder", "config.json");
    clip.as_object_mut()
        .unwrap()
        .insert("num_attention_heads".into(), json!(5));
    let message = ClipTextConfig::read(&write_config(dir.path(), &clip))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("5 heads do not divide hidden_size 32"),
        "{message}"
    );

    let mut scheduler = fixture_json("scheduler", "scheduler_config.json");
    scheduler.as_object_mut().unwrap().remove("_class_name");
    let path = dir.path().join("scheduler_config.json");
    std::fs::write(&path, scheduler.to_string()).unwrap();
    let message = SchedulerConfig::read(&path).unwrap_err().to_string();
    assert!(
        message.contains("scheduler_config.json: missing key `_class_name`"),
        "{message}"
    );
}

#[test]
fn absent_file_is_an_io_error_naming_it() {
    let error =
        UNet2DConditionConfig::read(Path::new("/nonexistent/unet/config.json")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }));
    assert!(error.to_string().contains("/nonexistent/unet/config.json"));
}
