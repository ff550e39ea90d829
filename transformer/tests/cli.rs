//! The `sdxl-transform` binary's contract: results on stdout with exit 0; bad input gives
//! nothing on stdout, one errors JSON object on stderr and exit 2; never a panic (exit 101).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sdxl-transform");

fn fixture(rel: &str) -> String {
    format!("{}/../fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary, feeding `stdin`; prints everything when an assertion below fails.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("binary finishes");
    writer.join().expect("writer");
    output
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "sdxl-transform {}\nstatus: {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(args: &[&str], stdin: &[u8]) -> Value {
    let out = run(args, stdin);
    assert_eq!(out.status.code(), Some(0), "{}", describe(args, &out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(args, &out)))
}

/// Exit 2, empty stdout, and stderr is exactly one JSON object with a non-empty `errors` list.
fn assert_input_error(args: &[&str], stdin: &[u8]) -> Vec<Value> {
    let out = run(args, stdin);
    assert_eq!(out.status.code(), Some(2), "{}", describe(args, &out));
    assert!(out.stdout.is_empty(), "{}", describe(args, &out));
    let stderr = String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{}",
        describe(args, &out)
    );
    let parsed: Value = serde_json::from_str(stderr.trim_end()).expect("stderr is one JSON object");
    let errors = parsed["errors"].as_array().cloned().unwrap_or_default();
    assert!(!errors.is_empty(), "{}", describe(args, &out));
    for e in &errors {
        assert!(
            e["path"].is_string() && e["rule"].is_string() && e["message"].is_string(),
            "{e}"
        );
    }
    errors
}

#[test]
fn request_maps_a_file_and_validates() {
    let file = fixture("requests/upstream/enhancedsdxl_http_request.test_api.e4789f8.json");
    let message = assert_ok(&["request", &file], b"");
    assert_eq!(message["message_type"], "inference_request");
    assert!(transformer::Schema::PythonRequest.is_valid(&message));
}

#[test]
fn request_reads_stdin_and_writes_the_report() {
    let dir = std::env::temp_dir().join(format!("sdxl-transform-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let body = br#"{"model":{"base":"m"},"conditioning":{"prompt":"p"},"extra":1}"#;
    let message = assert_ok(
        &["request", "-", "--report", report.to_str().unwrap()],
        body,
    );
    assert_eq!(message["data"]["prompt"], "p");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["warnings"][0]["path"], "/extra");
    assert!(report["defaults"].as_array().unwrap().len() >= 8);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn request_id_option_is_used_without_a_session_id() {
    let body = br#"{"model":{"base":"m"},"conditioning":{"prompt":"p"}}"#;
    let message = assert_ok(&["request", "--request-id", "abc", "-"], body);
    assert_eq!(message["request_id"], "abc");
}

#[test]
fn invalid_requests_get_the_errors_json() {
    let file = fixture("requests/invalid/many_errors_at_once.json");
    let errors = assert_input_error(&["request", &file], b"");
    assert!(errors.len() >= 15, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e["path"] == "/scheduler/steps" && e["rule"] == "range" && e["value"] == 0));
}

#[test]
fn hostile_inputs_are_errors_not_crashes() {
    let deep_arrays = "[".repeat(20_000) + &"]".repeat(20_000);
    let deep_objects = "{\"model\":".repeat(20_000) + "1" + &"}".repeat(20_000);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not json", b"model: base".to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("array", b"[{\"model\":{}}]".to_vec()),
        ("huge exponent", br#"{"model":{"base":"m"},"scheduler":{"steps":1e999}}"#.to_vec()),
        ("huge integer", br#"{"model":{"base":"m"},"conditioning":{"prompt":"p"},"hyperparameters":{"width":123456789012345678901234567890}}"#.to_vec()),
        ("negative zero steps", br#"{"model":{"base":"m"},"conditioning":{"prompt":"p"},"scheduler":{"steps":-0}}"#.to_vec()),
        ("deep arrays", deep_arrays.into_bytes()),
        ("deep objects", deep_objects.into_bytes()),
        ("binary", garbage),
        ("nul bytes", vec![0u8; 64]),
        ("bom", b"\xef\xbb\xbf{}".to_vec()),
    ];
    for (name, bytes) in cases {
        for sub in ["request", "response", "reverse"] {
            let out = run(&[sub, "-"], &bytes);
            assert_ne!(
                out.status.code(),
                Some(101),
                "{name}: {}",
                describe(&[sub], &out)
            );
            assert_input_error(&[sub, "-"], &bytes);
        }
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let errors = assert_input_error(&["request", "/nonexistent/request.json"], b"");
    assert_eq!(errors[0]["rule"], "io");
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/request.json"));
}

#[test]
fn response_maps_a_python_reply() {
    let reply = br#"{"request_id":"r1","success":true,"timestamp":"2026-01-01T00:00:00Z","data":{"images":["/out/a.png"],"processing_time":1.5,"inference_steps":20,"seed":7,"dimensions":{"width":512,"height":512}}}"#;
    let response = assert_ok(&["response", "-"], reply);
    assert_eq!(response["images"][0]["filename"], "a.png");
    assert_eq!(response["metrics"]["generationTimeSeconds"], 1.5);
    assert!(transformer::Schema::CsharpResponse.is_valid(&response));
}

#[test]
fn reverse_turns_python_back_into_csharp() {
    let file = fixture("requests/upstream/enhancedsdxl_http_request.test_api.e4789f8.json");
    let python = assert_ok(&["request", &file], b"");
    let csharp = assert_ok(&["reverse", "-"], python.to_string().as_bytes());
    assert_eq!(csharp["scheduler"]["type"], "DPMSolverMultistepScheduler");
    assert_eq!(csharp["conditioning"]["prompt"], python["data"]["prompt"]);
}

#[test]
fn validate_says_valid_or_lists_errors() {
    let ok = br#"{"message_type":"status_request","request_id":"r","data":{}}"#;
    let out = run(&["validate", "--schema", "python-request", "-"], ok);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        describe(&["validate"], &out)
    );
    let bad = br#"{"message_type":"inference_request","request_id":"r","data":{"prompt":"","hyperparameters":{"num_inference_steps":0}}}"#;
    let errors = assert_input_error(&["validate", "--schema", "python-request", "-"], bad);
    assert!(
        errors.iter().any(|e| e["path"] == "/data/prompt"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == "/data/hyperparameters/num_inference_steps"),
        "{errors:?}"
    );
}

#[test]
fn unknown_schema_name_is_a_usage_error() {
    let out = run(&["validate", "--schema", "nope", "-"], b"{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("python-request"));
}

#[test]
fn commands_prints_the_table() {
    let out = run(&["commands"], b"");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for c in transformer::commands::COMMANDS {
        assert!(
            text.contains(c.action) && text.contains(c.message_type),
            "{}",
            c.action
        );
    }
    let json = assert_ok(&["commands", "--json"], b"");
    assert_eq!(
        json.as_array().unwrap().len(),
        transformer::commands::COMMANDS.len()
    );
}

#[test]
fn coverage_json_reports_all_seed_fields_mapped() {
    let coverage = assert_ok(&["coverage", "--json"], b"");
    assert_eq!(coverage["seed_fields_mapped"], 17);
    assert_eq!(coverage["seed_fields_total"], 17);
    for field in coverage["fields"].as_array().unwrap() {
        let status = field["status"].as_str().unwrap();
        assert!(status == "mapped" || status == "reported", "{field}");
        if status == "reported" {
            assert!(field["reason"].is_string(), "{field}");
        }
    }
}

#[test]
fn help_shows_examples() {
    let out = run(&["--help"], b"");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Examples:") && text.contains("sdxl-transform request"));
}
