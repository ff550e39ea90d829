//! safetensors loading: values, dtype conversion, and one test per error kind, each checking that
//! the message names the file and (where one is at fault) the tensor.

mod util;

use std::path::Path;

use reference_worker::weights::{ComponentWeights, SafetensorsFile};
use reference_worker::Error;
use tch::Kind;
use util::{f32_bytes, safetensors_bytes};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

fn two_tensors() -> Vec<u8> {
    safetensors_bytes(&[
        (
            "a.weight",
            "F32",
            &[2, 3],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
        ),
        ("b.bias", "F32", &[4], f32_bytes(&[0.5, 0.25, -1.0, 8.0])),
    ])
}

fn values(tensor: &tch::Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&tensor.flatten(0, -1)).expect("f32 values")
}

#[test]
fn loads_tensors_by_name_with_their_shapes_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "w.safetensors", &two_tensors());
    let file = SafetensorsFile::open(&path).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["a.weight", "b.bias"]);
    assert_eq!(file.parameter_count(), 10);
    let a = file
        .tensor_shaped("a.weight", &[2, 3], Kind::Float)
        .unwrap();
    assert_eq!(a.size(), [2, 3]);
    assert_eq!(values(&a), [1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
    let b = file.tensor("b.bias", Kind::Float).unwrap();
    assert_eq!(values(&b), [0.5, 0.25, -1.0, 8.0]);
}

#[test]
fn half_precision_tensors_convert_to_the_requested_kind() {
    // 1.0, -2.0, 0.5 in IEEE half and bfloat16
    let f16: Vec<u8> = [0x3c00u16, 0xc000, 0x3800]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [0x3f80u16, 0xc000, 0x3f00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "half.safetensors",
        &safetensors_bytes(&[("h", "F16", &[3], f16), ("b", "BF16", &[3], bf16)]),
    );
    let file = SafetensorsFile::open(&path).unwrap();
    for name in ["h", "b"] {
        let tensor = file.tensor(name, Kind::Float).unwrap();
        assert_eq!(tensor.kind(), Kind::Float);
        assert_eq!(values(&tensor), [1.0, -2.0, 0.5], "{name}");
    }
    assert_eq!(
        file.tensor("h", Kind::BFloat16).unwrap().kind(),
        Kind::BFloat16
    );
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "w.safetensors", &two_tensors());
    let error = SafetensorsFile::open(&path)
        .unwrap()
        .tensor("c.weight", Kind::Float)
        .unwrap_err();
    assert!(matches!(&error, Error::MissingTensor { tensor, .. } if tensor == "c.weight"));
    let message = error.to_string();
    assert!(
        message.contains("w.safetensors") && message.contains("`c.weight`"),
        "{message}"
    );
}

#[test]
fn shape_mismatch_names_expected_and_actual() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "w.safetensors", &two_tensors());
    let error = SafetensorsFile::open(&path)
        .unwrap()
        .tensor_shaped("a.weight", &[3, 2], Kind::Float)
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::ShapeMismatch { .. }));
    assert!(
        message.contains("w.safetensors")
            && message.contains("`a.weight`")
            && message.contains("shape [2, 3], expected [3, 2]"),
        "{message}"
    );
}

#[test]
fn non_float_dtype_names_file_tensor_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u8> = [1i64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = write(
        dir.path(),
        "ids.safetensors",
        &safetensors_bytes(&[("position_ids", "I64", &[3], ids)]),
    );
    let error = SafetensorsFile::open(&path)
        .unwrap()
        .tensor("position_ids", Kind::Float)
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::UnsupportedDtype { .. }));
    assert!(
        message.contains("ids.safetensors")
            && message.contains("`position_ids`")
            && message.contains("I64"),
        "{message}"
    );
}

#[test]
fn truncated_data_names_the_first_incomplete_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = two_tensors();
    bytes.truncate(bytes.len() - 3); // cuts into b.bias
    let path = write(dir.path(), "cut.safetensors", &bytes);
    let error = SafetensorsFile::open(&path).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, Error::TruncatedSafetensors { tensor, needed: 40, available: 37, .. } if tensor == "b.bias"),
        "{error:?}"
    );
    assert!(
        message.contains("cut.safetensors") && message.contains("truncated"),
        "{message}"
    );
}

#[test]
fn file_cut_inside_the_header_is_reported_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = two_tensors();
    let path = write(dir.path(), "head.safetensors", &bytes[..20]);
    let message = SafetensorsFile::open(&path).unwrap_err().to_string();
    assert!(
        message.contains("head.safetensors") && message.contains("ends inside the JSON header"),
        "{message}"
    );
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "empty.safetensors",
            Vec::new(),
            "shorter than the 8-byte header length",
        ),
        (
            "text.safetensors",
            b"not a safetensors file at all".to_vec(),
            "implausibly large",
        ),
        (
            "json.safetensors",
            {
                let mut bytes = 4u64.to_le_bytes().to_vec();
                bytes.extend_from_slice(b"[1] ");
                bytes
            },
            "does not start with `{`",
        ),
        (
            "lengths.safetensors",
            // 3 f32 values declared, 2 stored: sizes inconsistent with the shape
            safetensors_bytes(&[("x", "F32", &[3], f32_bytes(&[1.0, 2.0]))]),
            "does not match its dtype and shape",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = write(dir.path(), name, &bytes);
        let error = SafetensorsFile::open(&path).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, Error::CorruptSafetensors { .. }),
            "{name}: {message}"
        );
        assert!(
            message.contains(name) && message.contains(expected),
            "{name}: {message}"
        );
    }
}

#[test]
fn unreadable_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let error = SafetensorsFile::open(&dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }));
    assert!(error.to_string().contains("absent.safetensors"));
}

#[test]
fn component_folder_without_weights_is_a_missing_file_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = ComponentWeights::open_dir(dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::MissingFile { .. }));
    assert!(
        message.contains("diffusion_pytorch_model.safetensors"),
        "{message}"
    );
}

#[test]
fn sharded_components_load_across_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model-00001-of-00002.safetensors",
        &safetensors_bytes(&[("first", "F32", &[1], f32_bytes(&[1.0]))]),
    );
    write(
        dir.path(),
        "model-00002-of-00002.safetensors",
        &safetensors_bytes(&[("second", "F32", &[2], f32_bytes(&[2.0, 3.0]))]),
    );
    write(
        dir.path(),
        "model.safetensors.index.json",
        br#"{"metadata": {}, "weight_map": {"first": "model-00001-of-00002.safetensors", "second": "model-00002-of-00002.safetensors"}}"#,
    );
    let weights = ComponentWeights::open_dir(dir.path()).unwrap();
    assert_eq!(weights.len(), 2);
    assert_eq!(weights.parameter_count(), 3);
    assert_eq!(
        values(&weights.tensor("second", Kind::Float).unwrap()),
        [2.0, 3.0]
    );
    let message = weights
        .tensor("third", Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("model.safetensors.index.json") && message.contains("`third`"),
        "{message}"
    );
}

#[test]
fn fixture_unet_loads_as_float32() {
    let weights = ComponentWeights::open_dir(&util::tiny_sdxl().join("unet")).unwrap();
    let conv_in = weights
        .tensor_shaped("conv_in.weight", &[32, 4, 3, 3], Kind::Float)
        .unwrap();
    assert_eq!(conv_in.kind(), Kind::Float);
    assert!(conv_in.abs().max().double_value(&[]) > 0.0);
}

/// diffusers' LoRAs compute with the tensors `safetensors.torch.load_file` returns, views into
/// the page-aligned mapped file, and CPU BLAS rounds by the data's alignment:
/// `tensor_as_mapped` puts an unconverted tensor at its file offset modulo 64, with the same
/// values, as a tensor of its own (not an autograd view of its buffer, whose `requires_grad`
/// would be the buffer's); a converted tensor is a fresh allocation, as Python's `.to(dtype)`.
#[test]
fn unconverted_tensors_sit_at_their_file_offset_modulo_64() {
    let path = util::project_root().join("fixtures/loras/kohya_sgm.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header_len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let file = SafetensorsFile::open(&path).unwrap();
    let _guard = tch::no_grad_guard();
    let mut off_boundary = 0;
    for name in file.names() {
        let begin = header[name]["data_offsets"][0].as_u64().unwrap();
        let expected = (8 + header_len + usize::try_from(begin).unwrap()) % 64;
        off_boundary += usize::from(expected != 0);
        let mapped = file.tensor_as_mapped(name, Kind::Float).unwrap();
        assert!(
            mapped.equal(&file.tensor(name, Kind::Float).unwrap()),
            "{name}"
        );
        assert_eq!(mapped.data_ptr() as usize % 64, expected, "{name}");
        let mapped = mapped.set_requires_grad(true);
        assert!(
            mapped.view([-1]).requires_grad(),
            "{name}: a view's flag is its base's"
        );
        let converted = file.tensor_as_mapped(name, Kind::BFloat16).unwrap();
        assert_eq!(converted.data_ptr() as usize % 64, 0, "{name}");
    }
    assert!(
        off_boundary > 0,
        "the fixture has tensors off a 64-byte boundary"
    );
}
