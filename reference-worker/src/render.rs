//! `reference-worker render`: one Python v2 inference request in, PNGs and the reply envelope out.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use reference_worker::image::save_png;
use reference_worker::pipeline::{Pipeline, RenderRequest};
use reference_worker::Error;
use serde_json::{json, Value};
use transformer::error::parse_json;
use transformer::{Errors, FieldError, Schema};

pub fn run(model: &Path, request: &Path, out_dir: &Path) -> ExitCode {
    let (request_id, data) = match read_request(request) {
        Ok(parsed) => parsed,
        Err(errors) => {
            eprintln!("{}", errors.to_json_line());
            return ExitCode::from(2);
        }
    };
    let render_request = match RenderRequest::from_v2_data(&data, random_seed) {
        Ok(r) => r,
        Err(error) => return fail(&error),
    };
    let pipeline = match Pipeline::load_with_kind(model, render_request.kind) {
        Ok(p) => p,
        Err(error) => return fail(&error),
    };
    let rendered = match pipeline.render(&render_request) {
        Ok(r) => r,
        Err(error) => return fail(&error),
    };
    for warning in &rendered.warnings {
        eprintln!("reference-worker: warning: {warning}");
    }
    if let Err(e) = std::fs::create_dir_all(out_dir) {
        eprintln!(
            "reference-worker: error: cannot create {}: {e}",
            out_dir.display()
        );
        return ExitCode::from(2);
    }
    let mut paths = Vec::new();
    for (i, image) in rendered.images.iter().enumerate() {
        let path = out_dir.join(format!("image_{i}.png"));
        if let Err(error) = save_png(image, &path) {
            return fail(&error);
        }
        paths.push(path.display().to_string());
    }
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let reply = json!({
        "request_id": request_id,
        "success": true,
        "timestamp": timestamp,
        "data": {
            "images": paths,
            "model_used": data.get("model_name").and_then(Value::as_str).map_or_else(|| model.display().to_string(), str::to_owned),
            "processing_time": rendered.seconds,
            "inference_steps": render_request.num_inference_steps,
            "guidance_scale": render_request.guidance_scale,
            "seed": rendered.seeds.first(),
            "seeds": rendered.seeds,
            "scheduler": rendered.scheduler,
            "dimensions": {"width": render_request.width, "height": render_request.height},
        }
    });
    println!("{reply}");
    ExitCode::SUCCESS
}

/// Reads and validates the request: a v2 envelope (must be an `inference_request`) or its `data`
/// object (wrapped, its request id the file's stem).
fn read_request(path: &Path) -> Result<(String, Value), Errors> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| FieldError::new("", "io", format!("cannot read {}: {e}", path.display())))?;
    let value = parse_json(&bytes)?;
    let envelope = if value.get("message_type").is_some() {
        value
    } else {
        let stem = path
            .file_stem()
            .map_or("request".into(), |s| s.to_string_lossy().to_string());
        json!({"message_type": "inference_request", "request_id": stem, "data": value})
    };
    Schema::PythonRequest.validate(&envelope)?;
    if envelope["message_type"] != "inference_request" {
        return Err(FieldError::new(
            "/message_type",
            "enum",
            "`render` renders inference_request messages only",
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
