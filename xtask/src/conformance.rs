//! `cargo xtask conformance [--json]`: the main job. Runs every committed C# message and Python
//! reply fixture through the transformer and checks each against what its folder promises, runs
//! the seed example end to end (C# → transformer → reference worker → C#), checks every golden
//! image (`regenerate-goldens --check`), compares the reference worker with diffusers on the
//! parity cases, on the goldens' requests and on a few random requests (`parity --random`, seeded
//! from the commit or `SDXL_PARITY_SEED`), prints the field-coverage table and one pass/fail line
//! per feature, and fails when any check fails.
//!
//! Folder promises: `fixtures/requests/{dialects,seed,commands}/` map to a v2-valid message;
//! `fixtures/requests/invalid/` and `fixtures/replies/invalid/` are rejected with errors that
//! each name a path, a rule and a message; `fixtures/replies/*.json` map to a C# response valid
//! under the C# response schema; `upstream/` samples are reported as they come out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use transformer::request_map::{transform_request, MapOptions};
use transformer::{coverage, reply_map, Errors, Schema};

use crate::{goldens, parity, project_root, run_checked, setup};

/// The seed's own example at 256×256 on the tiny model: the main job's end-to-end request.
const END_TO_END_REQUEST: &str = "fixtures/requests/seed/seed_example_256.json";
const MODEL: &str = "fixtures/models/tiny-sdxl";

struct EndToEnd {
    python_request: PathBuf,
    images: Vec<String>,
    csharp_response: Value,
    summary: String,
    pass: bool,
}

/// C# request → transformer → `reference-worker render` (release build) → Python reply →
/// transformer → C# response, which must validate against the C# response schema.
fn end_to_end(root: &Path) -> Result<EndToEnd> {
    setup::ensure()?;
    run_checked(std::process::Command::new("cargo").args([
        "build",
        "--release",
        "-p",
        "reference-worker",
    ]))?;
    let out = root.join("target/conformance");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let bytes = std::fs::read(root.join(END_TO_END_REQUEST))?;
    let mapping = transform_request(&bytes, &MapOptions::default())
        .map_err(|e| anyhow::anyhow!("{END_TO_END_REQUEST}: {}", e.to_json_line()))?;
    let python_request = out.join("seed_example_256.python.json");
    std::fs::write(
        &python_request,
        serde_json::to_vec_pretty(&mapping.message_json())?,
    )?;
    let output = std::process::Command::new(root.join("target/release/reference-worker"))
        .args(["render", "--model"])
        .arg(root.join(MODEL))
        .arg("--request")
        .arg(&python_request)
        .arg("--out-dir")
        .arg(out.join("images"))
        .output()
        .context("could not start reference-worker")?;
    if !output.status.success() {
        return Ok(EndToEnd {
            python_request,
            images: Vec::new(),
            csharp_response: Value::Null,
            summary: format!(
                "reference-worker render failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            pass: false,
        });
    }
    let reply = transformer::error::parse_json(&output.stdout)
        .map_err(|e| anyhow::anyhow!("reference-worker reply: {}", e.to_json_line()))?;
    let response = match reply_map::map_reply(&reply) {
        Ok(mapping) => serde_json::to_value(&mapping.response)?,
        Err(errors) => {
            return Ok(EndToEnd {
                python_request,
                images: Vec::new(),
                csharp_response: reply,
                summary: summarise_errors(&errors),
                pass: false,
            })
        }
    };
    let images: Vec<String> = response["images"]
        .as_array()
        .map(|images| {
            images
                .iter()
                .filter_map(|i| i["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let files_exist = !images.is_empty() && images.iter().all(|p| Path::new(p).is_file());
    let valid = Schema::CsharpResponse.is_valid(&response);
    let pass = files_exist && valid && response["success"] == true;
    Ok(EndToEnd {
        python_request,
        summary: format!(
            "{} image(s) written, C# response {}",
            images.len(),
            if valid { "valid" } else { "INVALID" }
        ),
        images,
        csharp_response: response,
        pass,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Maps,
    Rejected,
    Either,
}

struct Outcome {
    feature: String,
    file: String,
    result: String,
    pass: bool,
}

/// Random requests (`parity --random`) the main job renders on both sides.
const RANDOM_PARITY_CASES: usize = 6;

/// The seed of the main job's random parity requests: `SDXL_PARITY_SEED` when set, else the
/// first 16 hex digits of the checked-out commit (a new draw per commit, the same on a rerun),
/// else 1.
fn random_parity_seed(root: &Path) -> u64 {
    if let Some(seed) = std::env::var("SDXL_PARITY_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return seed;
    }
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            u64::from_str_radix(text.trim().get(..16)?, 16).ok()
        })
        .unwrap_or(1)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut json_output = false;
    for arg in args {
        match arg.as_str() {
            "--json" => json_output = true,
            other => bail!("unknown argument `{other}` (expected --json)"),
        }
    }
    let root = project_root();
    let mut outcomes = Vec::new();
    for file in fixture_files(&root.join("fixtures/requests"))? {
        outcomes.push(check_request(&root, &file)?);
    }
    for file in fixture_files(&root.join("fixtures/replies"))? {
        outcomes.push(check_reply(&root, &file)?);
    }
    let coverage = coverage::compute();
    let coverage_ok = coverage.seed_fields_mapped == coverage.seed_fields_total;
    let end_to_end = end_to_end(&root)?;
    outcomes.push(Outcome {
        feature: "end to end: C# → worker → C#".into(),
        file: relative(&root, &root.join(END_TO_END_REQUEST)),
        result: end_to_end.summary.clone(),
        pass: end_to_end.pass,
    });

    // Goldens: every case rendered again and compared with golden/.
    let golden_check = goldens::verify(goldens::default_jobs())?;
    for (case, pass, result) in &golden_check.cases {
        for feature in &case.features {
            outcomes.push(Outcome {
                feature: feature.clone(),
                file: format!("{}/{}", goldens::GOLDEN_DIR, case.png_names().join(", ")),
                result: format!("golden: {result}"),
                pass: *pass,
            });
        }
    }
    // Parity: the reference worker against diffusers, on the parity cases and on the goldens.
    let venv = setup::ensure()?;
    let parity_rows = parity::case_rows(&venv, None)?;
    let golden_parity_rows = parity::golden_rows(&venv, None)?;
    // And a few requests nobody wrote, different on every commit (reproducible from the seed).
    let random_seed = random_parity_seed(&root);
    let random_rows = parity::random_rows(&venv, RANDOM_PARITY_CASES, random_seed)?;
    let random_kind = format!("random parity (seed {random_seed})");
    for (kind, rows) in [
        ("parity", &parity_rows),
        ("golden vs diffusers", &golden_parity_rows),
        (random_kind.as_str(), &random_rows),
    ] {
        for row in rows {
            outcomes.push(Outcome {
                feature: format!(
                    "scheduler {}",
                    row["scheduler"].as_str().unwrap_or("(model default)")
                ),
                file: row["case"].as_str().unwrap_or_default().to_owned(),
                result: format!("{kind}: {}", parity_result(row)),
                pass: row["pass"] == true,
            });
        }
    }

    let mut features: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let entry = features.entry(o.feature.clone()).or_default();
        if o.pass {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.pass).collect();
    if json_output {
        let report = json!({
            "fixtures": outcomes.iter().map(|o| json!({"feature": o.feature, "file": o.file, "result": o.result, "pass": o.pass})).collect::<Vec<_>>(),
            "features": features.iter().map(|(f, (p, x))| json!({"feature": f, "passed": p, "failed": x})).collect::<Vec<_>>(),
            "coverage": coverage,
            "goldens": {"images": golden_check.images, "bit_identical": golden_check.identical,
                        "render_seconds": golden_check.render_seconds,
                        "report": golden_check.report},
            "parity": {"images": parity_rows.len(), "passed": parity::summary(&parity_rows).0,
                       "bit_identical": parity::summary(&parity_rows).1},
            "random_parity": {"seed": random_seed, "cases": RANDOM_PARITY_CASES,
                              "images": random_rows.len(),
                              "passed": parity::summary(&random_rows).0,
                              "bit_identical": parity::summary(&random_rows).1},
            "goldens_vs_diffusers": {"images": golden_parity_rows.len(),
                                     "passed": parity::summary(&golden_parity_rows).0,
                                     "bit_identical": parity::summary(&golden_parity_rows).1},
            "end_to_end": {"python_request": end_to_end.python_request, "images": end_to_end.images,
                           "csharp_response": end_to_end.csharp_response, "pass": end_to_end.pass},
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("== fixtures ({} files)", outcomes.len());
        for o in &outcomes {
            println!(
                "{:<4} {:<60} {}",
                if o.pass { "ok" } else { "FAIL" },
                o.file,
                o.result
            );
        }
        println!(
            "\n== end to end: {END_TO_END_REQUEST} → transformer → reference-worker → C# response"
        );
        println!("python request: {}", end_to_end.python_request.display());
        for image in &end_to_end.images {
            println!("image: {image}");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&end_to_end.csharp_response)?
        );
        println!(
            "\n== goldens: {} image(s) of {} case(s) rendered in {:.1} s, {} bit-identical to golden/{}",
            golden_check.images,
            golden_check.cases.len(),
            golden_check.render_seconds,
            golden_check.identical,
            golden_check
                .report
                .as_ref()
                .map(|r| format!("; FAILURES, report: {}", r.display()))
                .unwrap_or_default()
        );
        for (label, rows) in [
            (
                "parity with diffusers (fixtures/parity/cases)",
                &parity_rows,
            ),
            ("goldens against diffusers", &golden_parity_rows),
            (
                &format!(
                    "parity on {RANDOM_PARITY_CASES} random requests \
                     (`cargo xtask parity --random {RANDOM_PARITY_CASES} --seed {random_seed}`)"
                ),
                &random_rows,
            ),
        ] {
            let (passed, identical) = parity::summary(rows);
            let worst = rows
                .iter()
                .filter_map(|r| r["psnr_db"].as_f64())
                .fold(f64::INFINITY, f64::min);
            println!(
                "== {label}: {passed} of {} image(s) ≥ {} dB, {identical} bit-identical, lowest PSNR {}",
                rows.len(),
                parity::MIN_PSNR_DB,
                if worst.is_finite() { format!("{worst:.2} dB") } else { "inf".into() }
            );
        }
        println!("\n== field coverage (computed by mapping probe messages)");
        print!("{}", coverage.to_text());
        println!("\n== conformance by feature");
        println!("{:<48} {:>6} {:>6}  result", "feature", "pass", "fail");
        for (feature, (pass, fail)) in &features {
            println!(
                "{feature:<48} {pass:>6} {fail:>6}  {}",
                if *fail == 0 { "PASS" } else { "FAIL" }
            );
        }
        println!(
            "{:<48} {:>6} {:>6}  {}",
            "seed fields mapped (of 17)",
            coverage.seed_fields_mapped,
            coverage.seed_fields_total - coverage.seed_fields_mapped,
            if coverage_ok { "PASS" } else { "FAIL" }
        );
    }
    if !failed.is_empty() || !coverage_ok {
        bail!(
            "{} fixture check(s) failed{}",
            failed.len(),
            if coverage_ok {
                ""
            } else {
                "; not every seed field is mapped"
            }
        );
    }
    Ok(())
}

/// A parity row in words: PSNR and whether bit-identical, or its error.
fn parity_result(row: &Value) -> String {
    if let Some(error) = row["error"].as_str() {
        return error.to_owned();
    }
    let psnr = match row["psnr_db"].as_f64() {
        Some(p) => format!("{p:.2} dB"),
        None => "identical".to_owned(),
    };
    format!("max |Δ| {}, {psnr}", row["max_abs_diff"])
}

/// Every `*.json` below `dir`, sorted.
fn fixture_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The folder right below `fixtures/requests` or `fixtures/replies`.
fn folder(root: &Path, base: &str, file: &Path) -> String {
    file.strip_prefix(root.join(base))
        .ok()
        .and_then(|p| p.components().next())
        .filter(|_| file.parent() != Some(&root.join(base)))
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .unwrap_or_default()
}

fn errors_are_well_formed(errors: &Errors) -> bool {
    !errors.errors.is_empty()
        && errors.errors.iter().all(|e| {
            !e.rule.is_empty()
                && !e.message.is_empty()
                && (e.path.is_empty() || e.path.starts_with('/'))
        })
}

fn summarise_errors(errors: &Errors) -> String {
    let first = errors
        .errors
        .first()
        .map(|e| {
            format!(
                "{} {}",
                if e.path.is_empty() {
                    "(document)"
                } else {
                    &e.path
                },
                e.rule
            )
        })
        .unwrap_or_default();
    format!("rejected: {} error(s), first {first}", errors.errors.len())
}

fn check_request(root: &Path, file: &Path) -> Result<Outcome> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let folder = folder(root, "fixtures/requests", file);
    let expect = match folder.as_str() {
        "invalid" => Expect::Rejected,
        "upstream" => Expect::Either,
        _ => Expect::Maps,
    };
    let (result, pass) = match transform_request(&bytes, &MapOptions::default()) {
        Ok(mapping) => {
            let valid = Schema::PythonRequest.is_valid(&mapping.message_json());
            let r = &mapping.report;
            (
                format!(
                    "{} → {} ({} mapped, {} defaults, {} reported, {} warnings){}",
                    r.dialect,
                    mapping.message().message_type,
                    r.mapped.len(),
                    r.defaults.len(),
                    r.reported.len(),
                    r.warnings.len(),
                    if valid { "" } else { " INVALID v2 OUTPUT" }
                ),
                valid && expect != Expect::Rejected,
            )
        }
        Err(errors) => (
            summarise_errors(&errors),
            errors_are_well_formed(&errors) && expect != Expect::Maps,
        ),
    };
    Ok(Outcome {
        feature: format!(
            "C# requests: {}",
            if folder.is_empty() { "other" } else { &folder }
        ),
        file: relative(root, file),
        result,
        pass,
    })
}

fn check_reply(root: &Path, file: &Path) -> Result<Outcome> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let folder = folder(root, "fixtures/replies", file);
    let expect = match folder.as_str() {
        "invalid" => Expect::Rejected,
        "upstream" => Expect::Either,
        _ => Expect::Maps,
    };
    let mapped =
        transformer::error::parse_json(&bytes).and_then(|value| reply_map::map_reply(&value));
    let (result, pass) = match mapped {
        Ok(mapping) => {
            let response: Value = serde_json::to_value(&mapping.response)?;
            let valid = Schema::CsharpResponse.is_valid(&response);
            (
                format!(
                    "→ C# response, {} image(s), success={}{}",
                    response["images"].as_array().map_or(0, Vec::len),
                    response["success"],
                    if valid { "" } else { " INVALID C# OUTPUT" }
                ),
                valid && expect != Expect::Rejected,
            )
        }
        Err(errors) => (
            summarise_errors(&errors),
            errors_are_well_formed(&errors) && expect != Expect::Maps,
        ),
    };
    Ok(Outcome {
        feature: format!(
            "Python replies: {}",
            if folder.is_empty() { "shapes" } else { &folder }
        ),
        file: relative(root, file),
        result,
        pass,
    })
}
