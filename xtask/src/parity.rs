//! `cargo xtask parity [--json] [--filter TEXT] [--goldens]`: renders every case of
//! `fixtures/parity/cases/` with the reference worker and with diffusers
//! (`fixtures/oracle/render.py`, one process for all cases) on the same tiny model, and compares
//! the PNGs pixel by pixel: one line per case with the maximum absolute 8-bit difference and the
//! PSNR. Fails when any image is below 40 dB (or has another size, or is missing).
//!
//! `--random N [--seed S]` renders N random requests instead (any scheduler, seed, 1–50 steps,
//! sizes, batch of 1 or 2, guidance, spacing, karras, and the features of issue 6 drawn with their
//! parameters: LoRAs from `fixtures/loras/` with weights in −2..2, ControlNets from
//! `fixtures/controlnets/` with random scale, window, control image and canny, textual
//! inversions, clip skip and prompt weighting; reproducible from S), for the cases nobody wrote.
//!
//! `--goldens` compares the committed goldens (`golden/`, issue 7) with diffusers instead: every
//! case of `golden/manifest.json` rendered by diffusers from the manifest's request, against the
//! golden PNG.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{project_root, run_checked, setup};

/// PSNR floor of issue 3; identical images are the goal.
pub const MIN_PSNR_DB: f64 = 40.0;
const MODEL: &str = "fixtures/models/tiny-sdxl";

/// The comparison of two 8-bit RGB images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub max_abs_diff: u8,
    /// `f64::INFINITY` for identical images.
    pub psnr_db: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut json_output = false;
    let mut goldens = false;
    let mut random: Option<usize> = None;
    let mut random_seed: u64 = 1;
    let mut filter: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => json_output = true,
            "--goldens" => goldens = true,
            "--filter" => filter = Some(it.next().context("--filter needs a value")?.clone()),
            "--random" => {
                let value = it.next().context("--random needs a count")?;
                random = Some(value.parse().with_context(|| format!("--random {value}"))?);
            }
            "--seed" => {
                let value = it.next().context("--seed needs a number")?;
                random_seed = value.parse().with_context(|| format!("--seed {value}"))?;
            }
            other => bail!(
                "unknown argument `{other}` (expected --json, --filter TEXT, --goldens, \
                 --random N [--seed S])"
            ),
        }
    }
    let venv = setup::ensure()?;
    if goldens {
        let rows = golden_rows(&venv, filter.as_deref())?;
        return report(
            rows,
            json_output,
            &project_root().join("target/parity-goldens"),
        );
    }
    if let Some(count) = random {
        let rows = random_rows(&venv, count, random_seed)?;
        return report(
            rows,
            json_output,
            &project_root().join("target/parity-random"),
        );
    }
    let rows = case_rows(&venv, filter.as_deref())?;
    report(rows, json_output, &project_root().join("target/parity"))
}

/// Every parity case (`fixtures/parity/cases/`, those whose name contains `filter`) rendered by the
/// reference worker and by diffusers; one row per image.
pub fn case_rows(venv: &Path, filter: Option<&str>) -> Result<Vec<Value>> {
    run_checked(Command::new("cargo").args(["build", "--release", "-p", "reference-worker"]))?;
    let root = project_root();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures/parity/cases"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            filter.is_none_or(|f| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().contains(f))
            })
        })
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!("no parity case matches");
    }
    let out = root.join("target/parity");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    render_and_compare(venv, &cases, &out)
}

/// `count` random requests (from `seed`) rendered by both sides: schedulers, seeds, step counts
/// 1–50, sizes, batch sizes, guidance, spacing and karras drawn at random, so that parity is also
/// shown on cases nobody wrote. The requests are kept in `target/parity-random/requests/`.
pub fn random_rows(venv: &Path, count: usize, seed: u64) -> Result<Vec<Value>> {
    run_checked(Command::new("cargo").args(["build", "--release", "-p", "reference-worker"]))?;
    let root = project_root();
    let out = root.join("target/parity-random");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("requests"))?;
    let mut rng = SplitMix64(seed);
    let classes: Vec<&str> = transformer::schedulers::class_names().collect();
    let mut cases = Vec::new();
    for i in 0..count {
        let class = classes[rng.below(classes.len())];
        let name = format!("random_{seed}_{i:03}");
        const PROMPTS: [&str; 4] = [
            "a red fox in the snow",
            "a city street at night, neon",
            "portrait of an old sailor",
            "a bowl of fruit, still life",
        ];
        const SIZES: [u32; 3] = [256, 320, 384];
        const GUIDANCE: [f64; 4] = [1.0, 4.5, 7.5, 12.0];
        const SPACINGS: [&str; 3] = ["leading", "trailing", "linspace"];
        let prompt = PROMPTS[rng.below(PROMPTS.len())];
        let steps = 1 + rng.below(50);
        let guidance = GUIDANCE[rng.below(GUIDANCE.len())];
        let image_seed = rng.below(2_147_483_000);
        let (width, height) = (SIZES[rng.below(3)], SIZES[rng.below(3)]);
        let spacing = SPACINGS[rng.below(3)];
        let karras = rng.below(2) == 1;
        let batch = 1 + rng.below(2);
        let mut data = json!({
            "worker_type": "enhanced_sdxl_worker",
            "prompt": prompt,
            "hyperparameters": {
                "num_inference_steps": steps,
                "guidance_scale": guidance,
                "seed": image_seed,
            },
            "dimensions": {"width": width, "height": height},
            "scheduler": class,
            "scheduler_options": {"timestep_spacing": spacing, "use_karras_sigmas": karras},
            "batch": {"size": batch},
        });
        if rng.below(2) == 1 {
            data["negative_prompt"] =
                json!(["blurry", "", "low quality, jpeg artifacts"][rng.below(3)]);
        }
        let features = draw_features(&mut rng, &mut data);
        eprintln!(
            "parity: {name}: {class}, {steps} step(s), {width}x{height}, batch {batch}{}",
            features
                .iter()
                .map(|f| format!(", {f}"))
                .collect::<String>()
        );
        let request =
            json!({"message_type": "inference_request", "request_id": name, "data": data});
        let path = out.join("requests").join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&request)?)?;
        cases.push(path);
    }
    eprintln!(
        "parity: {count} random case(s) from seed {seed} in {}",
        out.join("requests").display()
    );
    render_and_compare(venv, &cases, &out)
}

/// The LoRA files of `fixtures/loras/` (both layouts, all dtypes `make_loras.py` writes).
const RANDOM_LORAS: [&str; 4] = [
    "fixtures/loras/kohya_sgm.safetensors",
    "fixtures/loras/kohya_diffusers_names.safetensors",
    "fixtures/loras/peft_plain.safetensors",
    "fixtures/loras/peft_metadata.safetensors",
];
const RANDOM_CONTROLNETS: [&str; 2] = [
    "fixtures/controlnets/tiny-controlnet",
    "fixtures/controlnets/tiny-controlnet-b",
];
const RANDOM_CONTROL_IMAGES: [&str; 5] = [
    "fixtures/controlnets/control.png",
    "fixtures/controlnets/control.jpg",
    "fixtures/controlnets/control.webp",
    "fixtures/controlnets/control_gray.png",
    "fixtures/controlnets/control_rgba.png",
];

/// Draws the features of issue 6 into a random request's `data`, each independently: 1–3 LoRAs
/// (any file, repeats allowed, weight uniform in −2..2), 1–2 ControlNets (any net and control
/// image, scale uniform in 0..2, a guidance window inside 0..1, canny preprocessing or not),
/// textual inversions (their tokens put in the prompt), clip skip 1–4 (the tiny encoders have
/// five layers) and `a1111` or `compel` weighting with a prompt in that syntax. Returns a short
/// description of each feature drawn, for the log.
fn draw_features(rng: &mut SplitMix64, data: &mut Value) -> Vec<String> {
    let mut drawn = Vec::new();
    if rng.below(2) == 1 {
        let count = 1 + rng.below(3);
        let models: Vec<Value> = (0..count)
            .map(|i| {
                let name = RANDOM_LORAS[rng.below(RANDOM_LORAS.len())];
                let weight = rng.uniform(-2.0, 2.0);
                drawn.push(format!(
                    "LoRA {} × {weight:.4}",
                    name.rsplit('/').next().unwrap_or(name)
                ));
                json!({"name": name, "weight": weight, "adapter_name": format!("random_{i}")})
            })
            .collect();
        data["lora"] = json!({"enabled": true, "models": models});
    }
    if rng.below(2) == 1 {
        let count = 1 + rng.below(2);
        let units: Vec<Value> = (0..count)
            .map(|_| {
                let model = RANDOM_CONTROLNETS[rng.below(RANDOM_CONTROLNETS.len())];
                let image = RANDOM_CONTROL_IMAGES[rng.below(RANDOM_CONTROL_IMAGES.len())];
                let scale = rng.uniform(0.0, 2.0);
                let (a, b) = (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0));
                let (start, end) = if rng.below(2) == 1 {
                    (a.min(b), a.max(b))
                } else {
                    (0.0, 1.0)
                };
                let canny = rng.below(3) == 0;
                drawn.push(format!(
                    "ControlNet {} on {} × {scale:.3} [{start:.3}, {end:.3}]{}",
                    model.rsplit('/').next().unwrap_or(model),
                    image.rsplit('/').next().unwrap_or(image),
                    if canny { " canny" } else { "" }
                ));
                let mut unit = json!({
                    "enabled": true,
                    "model_path": model,
                    "control_image": image,
                    "conditioning_scale": scale,
                    "guidance_start": start,
                    "guidance_end": end,
                });
                if canny {
                    unit["type"] = json!("canny");
                    unit["preprocessor"] = json!({"enabled": true});
                }
                unit
            })
            .collect();
        data["controlnet"] = units[0].clone();
        data["controlnets"] = Value::Array(units);
    }
    let mut tokens = Vec::new();
    if rng.below(3) == 0 {
        let mut inversions = Vec::new();
        if rng.below(2) == 1 {
            inversions.push(json!({"path": "fixtures/textual_inversions/tiny-single.safetensors"}));
            tokens.push("tiny-single");
        }
        if tokens.is_empty() || rng.below(2) == 1 {
            inversions.push(json!({
                "path": "fixtures/textual_inversions/tiny-multi.safetensors",
                "token": "<multi>",
            }));
            tokens.push("<multi>");
        }
        drawn.push(format!("textual inversion {}", tokens.join(" + ")));
        data["textual_inversions"] = Value::Array(inversions);
    }
    if rng.below(3) == 0 {
        let skip = 1 + rng.below(4);
        drawn.push(format!("clip skip {skip}"));
        data["clip_skip"] = json!(skip);
    }
    let subject = if tokens.is_empty() {
        "a lighthouse".to_string()
    } else {
        tokens.join(" and ")
    };
    let weighting = match rng.below(3) {
        0 => Some("a1111"),
        1 => Some("compel"),
        _ => None,
    };
    if let Some(syntax) = weighting {
        let w = rng.uniform(0.5, 1.5);
        let prompt = if syntax == "a1111" {
            format!("({subject}:{w:.2}) on a [rocky] coast, ((stormy sky)), \\(calm\\)")
        } else {
            format!("({subject}){w:.2} on a rocky+ coast, (stormy sky)-- at dawn")
        };
        data["prompt"] = json!(prompt);
        data["prompt_attention"] = json!(syntax);
        drawn.push(format!("{syntax} ({w:.2})"));
    } else if !tokens.is_empty() {
        data["prompt"] = json!(format!("{subject} on a rocky coast"));
    }
    drawn
}

/// SplitMix64: a tiny, seedable generator (the random cases must be reproducible from the seed).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[low, high)`, any double the 53 random bits give (not rounded: the weights
    /// and scales the two sides parse must be arbitrary).
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }
}

/// Renders each request file with diffusers (one process) and the reference worker, into `out`,
/// and compares; one row per image.
fn render_and_compare(venv: &Path, cases: &[PathBuf], out: &Path) -> Result<Vec<Value>> {
    let root = project_root();

    let mut oracle = Command::new(venv.join("bin/python"));
    oracle
        .arg(root.join("fixtures/oracle/render.py"))
        .arg("--model")
        .arg(root.join(MODEL))
        .arg("--out-dir")
        .arg(out.join("diffusers"))
        .args(cases);
    run_quiet(&mut oracle, "the diffusers oracle")?;

    let worker = root.join("target/release/reference-worker");
    let mut rows = Vec::new();
    for case in cases {
        let name = case
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let request: Value = serde_json::from_slice(&std::fs::read(case)?)
            .with_context(|| format!("{} is not JSON", case.display()))?;
        let scheduler = request["data"]["scheduler"]
            .as_str()
            .unwrap_or("(model default)")
            .to_string();
        let batch = request["data"]["batch"]["size"].as_u64().unwrap_or(1);
        let ours_dir = out.join("reference-worker").join(&name);
        let mut render = Command::new(&worker);
        render
            .args(["render", "--model"])
            .arg(root.join(MODEL))
            .arg("--request")
            .arg(case)
            .arg("--out-dir")
            .arg(&ours_dir);
        run_quiet(&mut render, &format!("reference-worker render {name}"))?;
        for i in 0..batch {
            let ours = ours_dir.join(format!("image_{i}.png"));
            let theirs = out
                .join("diffusers")
                .join(&name)
                .join(format!("image_{i}.png"));
            let label = if batch > 1 {
                format!("{name}[{i}]")
            } else {
                name.clone()
            };
            rows.push(row(&label, &scheduler, &ours, &theirs));
        }
    }
    Ok(rows)
}

/// The goldens against diffusers: each manifest request rendered by the oracle, compared with the
/// golden PNGs.
pub fn golden_rows(venv: &Path, filter: Option<&str>) -> Result<Vec<Value>> {
    let root = project_root();
    let manifest_path = root.join(crate::goldens::MANIFEST);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", manifest_path.display()))?;
    let out = root.join("target/parity-goldens");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("requests"))?;
    let mut requests = Vec::new();
    let mut entries = Vec::new();
    for entry in manifest["cases"]
        .as_array()
        .context("manifest without cases")?
    {
        let name = entry["name"].as_str().context("a case without a name")?;
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let path = out.join("requests").join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&entry["request"])?)?;
        requests.push(path);
        entries.push(entry.clone());
    }
    if entries.is_empty() {
        bail!("no golden matches");
    }
    let mut oracle = Command::new(venv.join("bin/python"));
    oracle
        .arg(root.join("fixtures/oracle/render.py"))
        .arg("--model")
        .arg(root.join(MODEL))
        .arg("--out-dir")
        .arg(out.join("diffusers"))
        .args(&requests)
        // The goldens are rendered with one intra-op thread (goldens/mod.rs); so is diffusers here.
        .env("SDXL_ORACLE_THREADS", "1");
    run_quiet(&mut oracle, "the diffusers oracle")?;
    let mut rows = Vec::new();
    for entry in &entries {
        let name = entry["name"].as_str().unwrap_or_default();
        let scheduler = entry["request"]["data"]["scheduler"]
            .as_str()
            .unwrap_or("(model default)");
        let images = entry["images"]
            .as_array()
            .context("a case without images")?;
        for (i, image) in images.iter().enumerate() {
            let png = image["png"].as_str().context("an image without a png")?;
            let ours = root.join(crate::goldens::GOLDEN_DIR).join(png);
            let theirs = out
                .join("diffusers")
                .join(name)
                .join(format!("image_{i}.png"));
            rows.push(row(png, scheduler, &ours, &theirs));
        }
    }
    Ok(rows)
}

/// One compared image: PSNR, max difference, pass (≥ [`MIN_PSNR_DB`]).
fn row(label: &str, scheduler: &str, ours: &Path, theirs: &Path) -> Value {
    match compare_files(ours, theirs) {
        Ok(c) => {
            json!({"case": label, "scheduler": scheduler, "max_abs_diff": c.max_abs_diff,
                   "psnr_db": if c.psnr_db.is_finite() { json!(c.psnr_db) } else { json!("inf") },
                   "bit_identical": c.max_abs_diff == 0, "pass": c.psnr_db >= MIN_PSNR_DB})
        }
        Err(e) => {
            json!({"case": label, "scheduler": scheduler, "error": format!("{e:#}"), "pass": false})
        }
    }
}

/// How many rows passed, and how many of them are bit-identical.
pub fn summary(rows: &[Value]) -> (usize, usize) {
    let passed = rows.iter().filter(|r| r["pass"] == true).count();
    let identical = rows.iter().filter(|r| r["bit_identical"] == true).count();
    (passed, identical)
}

/// Prints the rows (a table, or JSON) and fails when any image failed.
fn report(rows: Vec<Value>, json_output: bool, out: &Path) -> Result<()> {
    let failures = rows.iter().filter(|r| r["pass"] != true).count();
    let identical = rows.iter().filter(|r| r["bit_identical"] == true).count();
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"cases": rows, "bit_identical": identical, "min_psnr_db": MIN_PSNR_DB})
            )?
        );
    } else {
        println!(
            "{:<40} {:<34} {:>8} {:>10}  result",
            "case", "scheduler", "max|Δ|", "PSNR dB"
        );
        for r in &rows {
            match r.get("error") {
                Some(e) => println!(
                    "{:<40} {:<34} {e}",
                    r["case"].as_str().unwrap_or(""),
                    r["scheduler"].as_str().unwrap_or("")
                ),
                None => println!(
                    "{:<40} {:<34} {:>8} {:>10}  {}",
                    r["case"].as_str().unwrap_or(""),
                    r["scheduler"].as_str().unwrap_or(""),
                    r["max_abs_diff"],
                    match r["psnr_db"].as_f64() {
                        Some(p) => format!("{p:.2}"),
                        None => "inf".into(),
                    },
                    if r["pass"] == true {
                        if r["bit_identical"] == true {
                            "identical"
                        } else {
                            "pass"
                        }
                    } else {
                        "FAIL"
                    }
                ),
            }
        }
        println!(
            "{} image(s), {identical} bit-identical, {failures} below {MIN_PSNR_DB} dB or failed",
            rows.len()
        );
        println!("images: {}", out.display());
    }
    if failures > 0 {
        bail!("{failures} parity image(s) failed");
    }
    Ok(())
}

fn run_quiet(command: &mut Command, what: &str) -> Result<()> {
    eprintln!("$ {command:?}");
    let output = command
        .current_dir(project_root())
        .output()
        .with_context(|| format!("could not start {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Decodes a PNG into 8-bit RGB(A) samples with its size.
pub fn read_png(path: &Path) -> Result<(u32, u32, png::ColorType, Vec<u8>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a PNG", path.display()))?;
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("{}: corrupt PNG data", path.display()))?;
    if info.bit_depth != png::BitDepth::Eight {
        bail!(
            "{}: {:?}-bit PNG, expected 8-bit",
            path.display(),
            info.bit_depth
        );
    }
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, info.color_type, buf))
}

pub fn compare_files(ours: &Path, theirs: &Path) -> Result<Comparison> {
    let (w1, h1, c1, a) = read_png(ours)?;
    let (w2, h2, c2, b) = read_png(theirs)?;
    if (w1, h1, c1) != (w2, h2, c2) {
        bail!(
            "{} is {w1}×{h1} {c1:?}, {} is {w2}×{h2} {c2:?}",
            ours.display(),
            theirs.display()
        );
    }
    Ok(compare(&a, &b))
}

/// Max absolute difference and PSNR (peak 255) of two equally sized sample buffers.
pub fn compare(a: &[u8], b: &[u8]) -> Comparison {
    let mut max = 0u8;
    let mut sum_sq = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum_sq += f64::from(d) * f64::from(d);
    }
    let mse = sum_sq / a.len().max(1) as f64;
    let psnr_db = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    };
    Comparison {
        max_abs_diff: max,
        psnr_db,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_buffers_have_infinite_psnr() {
        let c = compare(&[1, 2, 3], &[1, 2, 3]);
        assert_eq!(c.max_abs_diff, 0);
        assert!(c.psnr_db.is_infinite());
    }

    #[test]
    fn psnr_of_a_known_difference() {
        // One sample of four off by 255: MSE = 255²/4, PSNR = 10·log10(4) ≈ 6.02 dB.
        let c = compare(&[0, 0, 0, 0], &[255, 0, 0, 0]);
        assert_eq!(c.max_abs_diff, 255);
        assert!((c.psnr_db - 6.0206).abs() < 1e-3, "{}", c.psnr_db);
    }
}
