//! `reference-worker`: the tch reference worker's command line.
//!
//! Exit codes: 0 success, 2 invalid input (a model folder, config or weights file that cannot be
//! used; bad arguments), 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reference_worker::model_dir::{ComponentConfig, ModelDir};
use reference_worker::Error;

mod render;

#[derive(Parser)]
#[command(
    name = "reference-worker",
    version,
    about = "The tch reference worker for SDXL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load every component's config and weights of a diffusers SDXL folder and print a summary
    /// (component, class, tensor count, parameter count).
    Inspect {
        /// A diffusers pipeline folder (with model_index.json).
        #[arg(long)]
        model: PathBuf,
    },
    /// Render one Python v2 inference request (the envelope or its `data` object) as diffusers
    /// would: one PNG per image in --out-dir, the reply envelope (PROTOCOL A.6) on stdout.
    /// An invalid request exits 2 with `{"errors":[…]}` on stderr.
    Render {
        /// A diffusers pipeline folder (with model_index.json).
        #[arg(long)]
        model: PathBuf,
        /// The request file (`-` for standard input).
        #[arg(long)]
        request: PathBuf,
        /// Where `image_<i>.png` are written (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// Where a ControlNet unit without `model_path` finds its model: `<DIR>/<type>` (a
        /// diffusers ControlNet folder). Relative paths in requests are relative to the working
        /// directory.
        #[arg(long)]
        controlnet_dir: Option<PathBuf>,
        /// The folder relative `lora.models[].name` paths are resolved in (default: the working
        /// directory); `<name>.safetensors` is tried when `name` has no such ending.
        #[arg(long)]
        lora_dir: Option<PathBuf>,
    },
    /// Speak the worker protocol's framing (PROTOCOL B.10): read one inference request envelope
    /// per stdin line, render it into --out-dir/<request_id>/image_<i>.png, print one reply line
    /// (PROTOCOL A.6, or the error reply) per request on stdout. The pipeline is loaded once.
    Serve {
        /// A diffusers pipeline folder (with model_index.json).
        #[arg(long)]
        model: PathBuf,
        /// Where each request's images folder is created.
        #[arg(long)]
        out_dir: PathBuf,
        /// Where a ControlNet unit without `model_path` finds its model: `<DIR>/<type>`.
        #[arg(long)]
        controlnet_dir: Option<PathBuf>,
        /// The folder relative `lora.models[].name` paths are resolved in (default: the working
        /// directory); LoRAs are applied per request without reloading the model.
        #[arg(long)]
        lora_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { model } => inspect(&model),
        Command::Render {
            model,
            request,
            out_dir,
            controlnet_dir,
            lora_dir,
        } => {
            return render::run(
                &model,
                &request,
                &out_dir,
                controlnet_dir,
                lora_dir.as_deref(),
            )
        }
        Command::Serve {
            model,
            out_dir,
            controlnet_dir,
            lora_dir,
        } => return render::serve(&model, &out_dir, controlnet_dir, lora_dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reference-worker: error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

/// Every error about the files we were pointed at is invalid input (2); libtorch failing on valid
/// input is an internal error (1).
fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Torch(_) => 1,
        _ => 2,
    }
}

fn inspect(model: &std::path::Path) -> Result<(), Error> {
    let dir = ModelDir::open(model)?;
    println!("{} ({})", dir.root.display(), dir.index.class_name);
    println!(
        "{:<16} {:<30} {:>8} {:>12}  config",
        "component", "class", "tensors", "parameters"
    );
    for component in dir.components() {
        let summary = match component.config()? {
            ComponentConfig::UNet(c) => format!(
                "block_out_channels {:?}, cross_attention_dim {:?}, addition_embed_type {}",
                c.block_out_channels,
                c.cross_attention_dim[0],
                c.addition_embed_type.as_deref().unwrap_or("none")
            ),
            ComponentConfig::Vae(c) => format!(
                "block_out_channels {:?}, latent_channels {}, scaling_factor {}, x{} downsampling",
                c.block_out_channels,
                c.latent_channels,
                c.scaling_factor,
                c.scale_factor()
            ),
            ComponentConfig::TextEncoder(c) => format!(
                "hidden_size {}, layers {}, heads {}, projection_dim {}",
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                match c.projection_dim {
                    Some(dim) if c.has_projection() => dim.to_string(),
                    _ => "none".to_owned(),
                }
            ),
            ComponentConfig::Scheduler(c) => format!(
                "{}, {} train timesteps, {} betas, {}",
                c.class_name, c.num_train_timesteps, c.beta_schedule, c.prediction_type
            ),
            ComponentConfig::Tokenizer(path) => format!("{}", path.display()),
        };
        let (tensors, parameters) = if component.has_weights() {
            let weights = component.weights()?;
            // Materialize every tensor once, so a file whose bytes cannot become tensors fails here.
            for name in weights.names() {
                let _tensor = weights.tensor(name, tch::Kind::Float)?;
            }
            (
                weights.len().to_string(),
                weights.parameter_count().to_string(),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!(
            "{:<16} {:<30} {:>8} {:>12}  {summary}",
            component.name, component.class, tensors, parameters
        );
    }
    Ok(())
}
