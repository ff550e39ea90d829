//! Shared helpers of the integration tests.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives one level below the workspace root")
        .to_path_buf()
}

/// Runs `.venv/bin/python -c <code> <args>` and returns its stdout; fails the test with the
/// script's stderr when it does not succeed.
#[allow(dead_code)]
pub fn python(code: &str, args: &[&str]) -> String {
    let python = project_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` first",
        python.display()
    );
    let output = Command::new(&python)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "python failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("python printed UTF-8")
}

/// A command for the crate's binary, with its stdout, stderr and status on failure.
#[allow(dead_code)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub description: String,
}

#[allow(dead_code)]
impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.description, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the `reference-worker` binary with `args` from the project root.
#[allow(dead_code)]
pub fn reference_worker(args: &[&str]) -> Run {
    let binary = env!("CARGO_BIN_EXE_reference-worker");
    let root = project_root();
    let output = Command::new(binary)
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|error| panic!("could not run {binary}: {error}"));
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        description: format!("$ (cd {}; {binary} {})", root.display(), args.join(" ")),
    }
}

/// The committed tiny SDXL fixture.
#[allow(dead_code)]
pub fn tiny_sdxl() -> PathBuf {
    project_root().join("fixtures/models/tiny-sdxl")
}

/// Writes a safetensors file by hand (so tests can also write broken ones): each tensor is
/// (name, dtype as in the header, shape, raw little-endian bytes), laid out in order.
#[allow(dead_code)]
pub fn safetensors_bytes(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).expect("a JSON map serializes");
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    file
}

#[allow(dead_code)]
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// Copies a folder tree (to corrupt a copy of a fixture).
#[allow(dead_code)]
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create destination");
    for entry in std::fs::read_dir(from).expect("list source") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
