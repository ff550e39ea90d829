//! Runs `fixtures/oracle/dump_vae_scheduler.py` (diffusers on the tiny fixture) once per test
//! binary and reads what it wrote.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use tch::{Kind, Tensor};

/// The oracle's output folder for `part` (`vae`, `euler` or `image`), made on first use.
pub fn dump_dir(part: &'static str) -> &'static Path {
    static DIRS: OnceLock<std::sync::Mutex<BTreeMap<&'static str, &'static Path>>> =
        OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = dirs.get(part) {
        return dir;
    }
    let root = project_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` first",
        python.display()
    );
    let temp = tempfile::Builder::new()
        .prefix(&format!("oracle-{part}-"))
        .tempdir()
        .expect("a temp dir");
    let script = root.join("fixtures/oracle/dump_vae_scheduler.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(temp.path())
        .arg(part)
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        python.display(),
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Kept for the life of the test binary.
    let dir: &'static Path = Box::leak(temp.keep().into_boxed_path());
    dirs.insert(part, dir);
    dir
}

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives one level below the workspace root")
        .to_path_buf()
}

pub fn tiny_sdxl() -> PathBuf {
    project_root().join("fixtures/models/tiny-sdxl")
}

/// Every tensor of one safetensors file the oracle wrote, in its stored dtype.
pub struct Dump {
    pub path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl Dump {
    pub fn read(dir: &Path, name: &str) -> Self {
        let path = dir.join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let mut tensors = BTreeMap::new();
        for (tensor_name, view) in file.tensors() {
            let kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::F64 => Kind::Double,
                Dtype::U8 => Kind::Uint8,
                Dtype::I64 => Kind::Int64,
                other => panic!(
                    "{}: {tensor_name}: unexpected dtype {other:?}",
                    path.display()
                ),
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
                .unwrap_or_else(|e| panic!("{}: {tensor_name}: {e}", path.display()));
            tensors.insert(tensor_name, tensor);
        }
        Self { path, tensors }
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor `{name}`", self.path.display()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// The manifest the oracle wrote beside its files.
pub fn manifest(dir: &Path) -> serde_json::Value {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// max |a - b| over all elements (in f64); panics when shapes or dtypes differ.
pub fn max_abs_diff(actual: &Tensor, expected: &Tensor, what: &str) -> f64 {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    assert_eq!(actual.kind(), expected.kind(), "{what}: dtype");
    if actual.numel() == 0 {
        return 0.0;
    }
    let a = actual.to_kind(Kind::Double);
    let b = expected.to_kind(Kind::Double);
    // NaN anywhere must not compare as "no difference".
    let nan_mismatch = a.isnan().ne_tensor(&b.isnan()).any().int64_value(&[]) != 0;
    assert!(!nan_mismatch, "{what}: NaN positions differ");
    (a - b)
        .abs()
        .nan_to_num(0.0, None, None)
        .max()
        .double_value(&[])
}

/// Asserts bit-identical values (same bits, not just a zero difference), printing the measured
/// max |Δ| either way.
pub fn assert_identical(actual: &Tensor, expected: &Tensor, what: &str) -> f64 {
    let diff = max_abs_diff(actual, expected, what);
    eprintln!("{what}: max |Δ| = {diff:e}");
    assert!(
        actual.equal(expected),
        "{what}: differs from diffusers (max |Δ| = {diff:e})"
    );
    diff
}
