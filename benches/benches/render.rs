//! The reference worker on the tiny SDXL model: pipeline load, one UNet step, a 20-step 256×256
//! Euler render, and the same render with each scheduler class (`schedulers/<Class>`). `cargo xtask bench` runs diffusers on the same cases in the same run and
//! prints the ratios.
//!
//! The thread count is libtorch's default unless `SDXL_BENCH_THREADS` is set (xtask sets it, and
//! gives diffusers the same number).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use benches::{
    bench_threads, project_root, RENDER_REQUEST, REPORT_DIR_ENV, SCHEDULER_BENCH_STEPS, TINY_SDXL,
};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reference_worker::config::{ClipTextConfig, UNet2DConditionConfig};
use reference_worker::pipeline::{Pipeline, RenderRequest};
use reference_worker::unet::UNet2DConditionModel;
use tch::{Kind, Tensor};

/// Benches run from a checkout: a broken fixture ends the bench with its message.
fn or_die<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

fn model_root() -> PathBuf {
    project_root().join(TINY_SDXL)
}

fn set_threads() {
    if let Some(threads) = or_die(bench_threads(), "bench threads") {
        tch::set_num_threads(threads);
    }
}

fn render_request() -> RenderRequest {
    let path = project_root().join(RENDER_REQUEST);
    let envelope: serde_json::Value = or_die(
        serde_json::from_slice(&or_die(std::fs::read(&path), &path.display().to_string())),
        &path.display().to_string(),
    );
    or_die(
        RenderRequest::from_v2_data(&envelope["data"], |_| 0),
        &path.display().to_string(),
    )
}

/// `Pipeline::load`: both text encoders and tokenizers, the UNet and the VAE from safetensors.
fn load(c: &mut Criterion) {
    set_threads();
    let root = model_root();
    let mut group = c.benchmark_group("reference_worker");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("load", |b| {
        b.iter(|| or_die(Pipeline::load(black_box(&root)), "Pipeline::load"))
    });
    group.finish();
}

/// One UNet forward pass as the denoising loop makes it at 256×256 with classifier-free
/// guidance: latents `[2, in_channels, 32, 32]`, prompt embeddings `[2, tokens,
/// cross_attention_dim]`, pooled text embeddings and the six time ids, all sized from config.
fn unet_step(c: &mut Criterion) {
    set_threads();
    let root = model_root();
    let unet_dir = root.join("unet");
    let config = or_die(
        UNet2DConditionConfig::read(&unet_dir.join("config.json")),
        "unet config",
    );
    let unet = or_die(UNet2DConditionModel::load(&unet_dir), "UNet load");
    let inputs = UNetInputs::new(&root, &config);
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group("reference_worker");
    // Flat: 20 samples fill the measurement time (linear sampling of 100 would need 5050 steps).
    group.sample_size(20).sampling_mode(SamplingMode::Flat);
    group.bench_function("unet_step", |b| {
        b.iter(|| {
            or_die(
                unet.forward(
                    black_box(&inputs.sample),
                    &inputs.timestep,
                    &inputs.encoder_hidden_states,
                    &inputs.text_embeds,
                    &inputs.time_ids,
                ),
                "UNet forward",
            )
        })
    });
    group.finish();
}

struct UNetInputs {
    sample: Tensor,
    timestep: Tensor,
    encoder_hidden_states: Tensor,
    text_embeds: Tensor,
    time_ids: Tensor,
}

impl UNetInputs {
    const BATCH: i64 = 2;
    const LATENT_SIZE: i64 = 256 / 8;
    /// SDXL's micro-conditioning: original size, crop top-left, target size.
    const TIME_IDS: i64 = 6;

    fn new(root: &Path, config: &UNet2DConditionConfig) -> Self {
        let text_encoder_2 = or_die(
            ClipTextConfig::read(&root.join("text_encoder_2/config.json")),
            "text_encoder_2 config",
        );
        let tokens = text_encoder_2.max_position_embeddings as i64;
        let cross_attention_dim = config.cross_attention_dim[0] as i64;
        let time_embed_dim = or_die(
            config.addition_time_embed_dim.ok_or("absent"),
            "unet addition_time_embed_dim",
        ) as i64;
        let text_embeds_dim = or_die(
            config.projection_class_embeddings_input_dim.ok_or("absent"),
            "unet projection_class_embeddings_input_dim",
        ) as i64
            - Self::TIME_IDS * time_embed_dim;
        let options = (Kind::Float, tch::Device::Cpu);
        tch::manual_seed(0);
        let time_ids = Tensor::from_slice(&[256f32, 256.0, 0.0, 0.0, 256.0, 256.0])
            .view([1, Self::TIME_IDS])
            .repeat([Self::BATCH, 1]);
        UNetInputs {
            sample: Tensor::randn(
                [
                    Self::BATCH,
                    config.in_channels as i64,
                    Self::LATENT_SIZE,
                    Self::LATENT_SIZE,
                ],
                options,
            ),
            // A mid-schedule timestep (diffusers passes the scheduler's float timestep).
            timestep: Tensor::from(500f32),
            encoder_hidden_states: Tensor::randn(
                [Self::BATCH, tokens, cross_attention_dim],
                options,
            ),
            text_embeds: Tensor::randn([Self::BATCH, text_embeds_dim], options),
            time_ids,
        }
    }
}

/// `Pipeline::render` of the bench request: encode, 20 Euler steps with CFG, VAE decode,
/// post-process (no PNG encoding: that is the CLI's, measured by the cold start).
fn render(c: &mut Criterion) {
    set_threads();
    let pipeline = or_die(Pipeline::load(&model_root()), "Pipeline::load");
    let request = render_request();
    let mut group = c.benchmark_group("reference_worker");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1));
    group.bench_function("render_euler_20_256", |b| {
        b.iter(|| or_die(pipeline.render(black_box(&request)), "render"))
    });
    group.finish();
}

/// `Pipeline::render` of the bench request with each scheduler of PROTOCOL B.4 and
/// [`SCHEDULER_BENCH_STEPS`] steps; the UNet evaluations each makes are printed beside it.
fn render_per_scheduler(c: &mut Criterion) {
    set_threads();
    let pipeline = or_die(Pipeline::load(&model_root()), "Pipeline::load");
    let base = render_request();
    let mut group = c.benchmark_group("schedulers");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1));
    let mut evaluations_by_class = serde_json::Map::new();
    for class in transformer::schedulers::class_names() {
        let mut request = base.clone();
        request.scheduler = Some(class.to_owned());
        request.num_inference_steps = SCHEDULER_BENCH_STEPS;
        let evaluations = or_die(pipeline.render(&request), class).unet_evaluations;
        eprintln!("{class}: {evaluations} UNet evaluations for {SCHEDULER_BENCH_STEPS} steps");
        evaluations_by_class.insert(class.to_owned(), evaluations.into());
        group.bench_function(class, |b| {
            b.iter(|| or_die(pipeline.render(black_box(&request)), class))
        });
    }
    group.finish();
    if let Some(dir) = std::env::var_os(REPORT_DIR_ENV) {
        let path = Path::new(&dir).join("unet_evaluations.json");
        let text = serde_json::Value::Object(evaluations_by_class).to_string();
        or_die(std::fs::write(&path, text), &path.display().to_string());
    }
}

criterion_group!(benches, load, unet_step, render, render_per_scheduler);
criterion_main!(benches);
