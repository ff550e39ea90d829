//! `reference-worker render`: one Python v2 inference request in, PNGs and the reply envelope out;
//! `reference-worker serve`: the same for every request line of stdin, one reply line each.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use reference_worker::image::save_png;
use reference_worker::pipeline::{Pipeline, RenderRequest};
use reference_worker::Error;
use serde_json::{json, Value};
use transformer::error::parse_json;
use transformer::{Errors, FieldError, Schema};

pub fn run(
    model: &Path,
    request: &Path,
    out_dir: &Path,
    controlnet_dir: Option<PathBuf>,
    lora_dir: Option<&Path>,
) -> ExitCode {
    let (request_id, data) = match read_request(request) {
        Ok(parsed) => parsed,
        Err(errors) => {
            eprintln!("{}", errors.to_json_line());
            return ExitCode::from(2);
        }
    };
    let mut pipelines = Pipelines::new(model, controlnet_dir, lora_dir);
    match render_one(&mut pipelines, &request_id, &data, out_dir) {
        Ok(reply) => {
            println!("{reply}");
            ExitCode::SUCCESS
        }
        Err(failure) => failure.exit(),
    }
}

/// `reference-worker serve`: one request envelope per stdin line, one reply line per request on
/// stdout (PROTOCOL B.10), carrying its `request_id`; the images of request `id` go to
/// `out_dir/<id>/image_<i>.png`. The pipeline is loaded once per dtype and kept. A request that
/// fails gets the error reply (`success: false`, the errors JSON or the message in `error`) and
/// the worker goes on with the next line. Blank lines are skipped. Exits 0 at end of input.
pub fn serve(
    model: &Path,
    out_dir: &Path,
    controlnet_dir: Option<PathBuf>,
    lora_dir: Option<&Path>,
) -> ExitCode {
    let mut pipelines = Pipelines::new(model, controlnet_dir, lora_dir);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                eprintln!("reference-worker: error: cannot read stdin: {error}");
                return ExitCode::from(2);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_envelope(line.as_bytes(), || format!("line-{}", index + 1));
        let request_id = parsed
            .as_ref()
            .map(|(id, _)| Value::String(id.clone()))
            .unwrap_or_else(|_| request_id_of(line.as_bytes()));
        let result = parsed.map_err(Failure::Invalid).and_then(|(id, data)| {
            let dir = out_dir.join(directory_for(&id).map_err(Failure::Invalid)?);
            render_one(&mut pipelines, &id, &data, &dir)
        });
        let reply = match result {
            Ok(reply) => reply,
            Err(failure) => json!({
                "request_id": request_id,
                "success": false,
                "error": failure.message(),
                "timestamp": unix_seconds(),
            }),
        };
        if writeln!(stdout, "{reply}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away: nothing left to answer.
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// A loaded pipeline per dtype a request asked for. LoRAs are applied per request on top of the
/// loaded base weights (never reloaded for a LoRA change).
struct Pipelines<'a> {
    model: &'a Path,
    controlnet_dir: Option<PathBuf>,
    lora_dir: Option<&'a Path>,
    loaded: Vec<Pipeline>,
}

impl<'a> Pipelines<'a> {
    fn new(model: &'a Path, controlnet_dir: Option<PathBuf>, lora_dir: Option<&'a Path>) -> Self {
        Self {
            model,
            controlnet_dir,
            lora_dir,
            loaded: Vec::new(),
        }
    }

    fn get(&mut self, kind: tch::Kind) -> Result<&Pipeline, Error> {
        let index = match self.loaded.iter().position(|p| p.kind() == kind) {
            Some(index) => index,
            None => {
                let mut pipeline = Pipeline::load_with_kind(self.model, kind)?;
                pipeline.set_controlnet_dir(self.controlnet_dir.clone());
                pipeline.set_lora_dir(self.lora_dir.map(Path::to_path_buf));
                self.loaded.push(pipeline);
                self.loaded.len() - 1
            }
        };
        Ok(&self.loaded[index])
    }
}

/// Why a request was not rendered.
enum Failure {
    /// The request itself (exit 2, the errors JSON).
    Invalid(Errors),
    Worker(Error),
}

impl Failure {
    /// The errors JSON for invalid input and unsupported features, else the message.
    fn message(&self) -> String {
        match self {
            Self::Invalid(errors) => errors.to_json_line(),
            Self::Worker(Error::Unsupported { path, reason }) => {
                Errors::one(FieldError::new(path.clone(), "unsupported", reason.clone()))
                    .to_json_line()
            }
            Self::Worker(Error::InvalidRequest {
                path,
                rule,
                message,
            }) => Errors::one(FieldError::new(path.clone(), rule, message.clone())).to_json_line(),
            Self::Worker(error) => error.to_string(),
        }
    }

    fn exit(&self) -> ExitCode {
        match self {
            Self::Invalid(errors) => {
                eprintln!("{}", errors.to_json_line());
                ExitCode::from(2)
            }
            Self::Worker(error) => fail(error),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Worker(error)
    }
}

/// Renders one validated request into `out_dir` and returns the reply envelope (PROTOCOL A.6).
fn render_one(
    pipelines: &mut Pipelines,
    request_id: &str,
    data: &Value,
    out_dir: &Path,
) -> Result<Value, Failure> {
    let render_request = RenderRequest::from_v2_data(data, random_seed)?;
    let model = pipelines.model.display().to_string();
    let rendered = pipelines
        .get(render_request.kind)?
        .render(&render_request)?;
    for warning in &rendered.warnings {
        eprintln!("reference-worker: warning: {warning}");
    }
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Failure::Invalid(Errors::one(FieldError::new(
            "",
            "io",
            format!("cannot create {}: {e}", out_dir.display()),
        )))
    })?;
    let mut paths = Vec::new();
    for (i, image) in rendered.images.iter().enumerate() {
        let path = out_dir.join(format!("image_{i}.png"));
        save_png(image, &path)?;
        paths.push(path.display().to_string());
    }
    let mut reply = json!({
        "request_id": request_id,
        "success": true,
        "timestamp": unix_seconds(),
        "data": {
            "images": paths,
            "model_used": data.get("model_name").and_then(Value::as_str).map_or(model, str::to_owned),
            "processing_time": rendered.seconds,
            "inference_steps": render_request.num_inference_steps,
            "guidance_scale": render_request.guidance_scale,
            "seed": rendered.seeds.first(),
            "seeds": rendered.seeds,
            "scheduler": rendered.scheduler,
            "dimensions": {"width": render_request.width, "height": render_request.height},
        }
    });
    if !rendered.loras.is_empty() {
        // What was applied, with each name resolved to its file (the schema allows extra
        // fields; without LoRAs the reply is as before).
        reply["data"]["loras"] = rendered
            .loras
            .iter()
            .map(|lora| {
                json!({
                    "adapter_name": lora.adapter_name,
                    "path": lora.path.display().to_string(),
                    "weight": lora.weight,
                    "modules": lora.modules,
                })
            })
            .collect();
    }
    Ok(reply)
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The folder a request's images go to in `serve`: its request id, which must be a plain name.
fn directory_for(request_id: &str) -> Result<&str, Errors> {
    let plain = !request_id.is_empty()
        && request_id != "."
        && request_id != ".."
        && request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        Ok(request_id)
    } else {
        Err(FieldError::new(
            "/request_id",
            "pattern",
            "`serve` writes images to <out-dir>/<request_id>/: the id must be letters, digits, \
             `.`, `_` or `-`",
        )
        .with_value(&Value::String(request_id.to_owned()))
        .into())
    }
}

/// The `request_id` of a line that did not validate, if it has one, so the error reply can
/// still carry it.
fn request_id_of(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("request_id").filter(|id| id.is_string()).cloned())
        .unwrap_or(Value::Null)
}

/// Reads and validates the request file (see [`parse_envelope`]); a bare `data` object takes the
/// file's stem as its request id.
fn read_request(path: &Path) -> Result<(String, Value), Errors> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| FieldError::new("", "io", format!("cannot read {}: {e}", path.display())))?;
    parse_envelope(&bytes, || {
        path.file_stem()
            .map_or("request".into(), |s| s.to_string_lossy().to_string())
    })
}

/// Parses and validates a request: a v2 envelope (must be an `inference_request`) or its `data`
/// object (wrapped, its request id from `default_id`).
fn parse_envelope(
    bytes: &[u8],
    default_id: impl FnOnce() -> String,
) -> Result<(String, Value), Errors> {
    let value = parse_json(bytes)?;
    let envelope = if value.get("message_type").is_some() {
        value
    } else {
        json!({"message_type": "inference_request", "request_id": default_id(), "data": value})
    };
    Schema::PythonRequest.validate(&envelope)?;
    if envelope["message_type"] != "inference_request" {
        return Err(FieldError::new(
            "/message_type",
            "enum",
            "the reference worker renders inference_request messages only",
        )
        .with_value(&envelope["message_type"])
        .into());
    }
    let request_id = envelope["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((request_id, envelope["data"].clone()))
}

/// An unsupported feature is invalid input for this worker (exit 2, errors JSON); model files
/// that cannot be used too; libtorch failing on valid input is an internal error (exit 1).
fn fail(error: &Error) -> ExitCode {
    match error {
        Error::Unsupported { path, reason } => {
            let errors = Errors::one(FieldError::new(path.clone(), "unsupported", reason.clone()));
            eprintln!("{}", errors.to_json_line());
            ExitCode::from(2)
        }
        Error::InvalidRequest {
            path,
            rule,
            message,
        } => {
            let errors = Errors::one(FieldError::new(path.clone(), rule, message.clone()));
            eprintln!("{}", errors.to_json_line());
            ExitCode::from(2)
        }
        Error::Torch(_) => {
            eprintln!("reference-worker: error: {error}");
            ExitCode::from(1)
        }
        _ => {
            eprintln!("reference-worker: error: {error}");
            ExitCode::from(2)
        }
    }
}

/// A seed for a request that asked for a random one (−1): 0..2³¹−1 minus the batch, so that
/// `seed + i` stays in range.
fn random_seed(batch: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or_default();
    let mixed = (nanos ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 33) % (2_147_483_647 - batch as u64)
}
