//! safetensors files, read by tensor name into tch tensors.
//!
//! The whole file is validated when it is opened (header, offsets, file length), so a truncated
//! or corrupt file is reported before any model code runs; each error names the file and, where
//! one is at fault, the tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};
use safetensors::{SafeTensorError, SafeTensors};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// What the header says about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<i64>,
}

impl TensorInfo {
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// One validated safetensors file held in memory.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Start of the data section (8 + header length).
    data_start: usize,
    /// name → (info, byte range within the data section)
    tensors: BTreeMap<String, (TensorInfo, std::ops::Range<usize>)>,
    /// The header's `__metadata__` (string to string), e.g. diffusers' `lora_adapter_metadata`.
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// Validates `bytes` as the contents of `path` (used in errors only).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let (header_len, metadata) = match SafeTensors::read_metadata(&bytes) {
            Ok(parsed) => parsed,
            Err(SafeTensorError::MetadataIncompleteBuffer) => {
                return Err(truncation_error(path, &bytes))
            }
            Err(error) => {
                return Err(Error::CorruptSafetensors {
                    path: path.to_owned(),
                    message: describe_safetensors_error(&error),
                })
            }
        };
        let data_start = 8 + header_len;
        let tensors = index(path, &metadata)?;
        let header_metadata = metadata
            .metadata()
            .iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            bytes,
            data_start,
            tensors,
            metadata: header_metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|(info, _)| info)
    }

    /// The header's `__metadata__` entries (empty when it has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Total number of elements over all tensors.
    pub fn parameter_count(&self) -> i64 {
        self.tensors.values().map(|(info, _)| info.numel()).sum()
    }

    /// The tensor `name` converted to `kind`, whatever its shape.
    pub fn tensor(&self, name: &str, kind: Kind) -> Result<Tensor> {
        let Some((info, range)) = self.tensors.get(name) else {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_owned(),
            });
        };
        let stored = stored_kind(info.dtype).ok_or_else(|| Error::UnsupportedDtype {
            path: self.path.clone(),
            tensor: name.to_owned(),
            dtype: format!("{:?}", info.dtype),
        })?;
        let start = self.data_start + range.start;
        let end = self.data_start + range.end;
        let data = &self.bytes[start..end];
        let tensor = Tensor::f_from_data_size(data, &info.shape, stored)
            .and_then(|tensor| tensor.f_to_kind(kind))
            .map_err(|error| {
                Error::Torch(format!("{}: tensor `{name}`: {error}", self.path.display()))
            })?;
        Ok(tensor)
    }

    /// The tensor `name` converted to `kind`, at the address Python's
    /// `safetensors.torch.load_file` gives it when no conversion is needed.
    ///
    /// `load_file` maps the whole file (a page-aligned buffer) and hands out each tensor as a
    /// view into it, so the tensor's data starts at its file offset (8 + header length + its
    /// `data_offsets` start) modulo the page size; a module that keeps the tensor itself
    /// (diffusers' `load_lora_weights` does: peft loads the adapter with `assign=True`) computes
    /// with data at that alignment. The CPU BLAS kernels round differently depending on it (a
    /// `[1, k] @ [k, r]` product, e.g. a LoRA branch of the time embedding at batch 1, changes
    /// in the last bit when its weight moves from a 16-byte boundary to 12 bytes past one), so
    /// this places the tensor at the same address modulo 64 (the CPU allocator's alignment) in
    /// a buffer of its own. A converted tensor is a fresh allocation in Python too, as
    /// [`Self::tensor`] returns it. A tensor whose offset is not a multiple of its element size
    /// (Python would compute with it unaligned) is not reproduced: it gets a fresh allocation.
    pub fn tensor_as_mapped(&self, name: &str, kind: Kind) -> Result<Tensor> {
        /// c10's CPU allocator alignment: every fresh tensor starts at a multiple of it.
        const ALLOCATION_ALIGNMENT: usize = 64;
        let tensor = self.tensor(name, kind)?;
        let Some((info, range)) = self.tensors.get(name) else {
            return Ok(tensor);
        };
        let element = kind.elt_size_in_bytes();
        let misalignment = (self.data_start + range.start) % ALLOCATION_ALIGNMENT;
        if stored_kind(info.dtype) != Some(kind) || misalignment == 0 || misalignment % element != 0
        {
            return Ok(tensor);
        }
        let lead = i64::try_from(misalignment / element).expect("under 64 elements");
        let placed = Tensor::f_empty([lead + info.numel()], (kind, Device::Cpu))
            .and_then(|buffer| buffer.f_narrow(0, lead, info.numel()))
            .and_then(|flat| flat.f_view(info.shape.as_slice()))
            .and_then(|mut placed| {
                placed.f_copy_(&tensor)?;
                // Not an autograd view of the buffer: a view reports its base's `requires_grad`,
                // and the caller's flag must be the tensor's own (ATen's matmul reads it).
                placed.f_detach()
            })
            .map_err(|error| {
                Error::Torch(format!("{}: tensor `{name}`: {error}", self.path.display()))
            })?;
        Ok(placed)
    }

    /// The tensor `name` converted to `kind`, which must have shape `expected` (computed from
    /// config.json by the model code).
    pub fn tensor_shaped(&self, name: &str, expected: &[i64], kind: Kind) -> Result<Tensor> {
        if let Some(info) = self.info(name) {
            if info.shape != expected {
                return Err(Error::ShapeMismatch {
                    path: self.path.clone(),
                    tensor: name.to_owned(),
                    expected: expected.to_vec(),
                    actual: info.shape.clone(),
                });
            }
        }
        self.tensor(name, kind)
    }
}

fn stored_kind(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F32 => Some(Kind::Float),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

fn index(
    path: &Path,
    metadata: &Metadata,
) -> Result<BTreeMap<String, (TensorInfo, std::ops::Range<usize>)>> {
    let mut tensors = BTreeMap::new();
    for (name, info) in metadata.tensors() {
        let shape = info
            .shape
            .iter()
            .map(|&dim| i64::try_from(dim))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::CorruptSafetensors {
                path: path.to_owned(),
                message: format!("tensor `{name}` has a dimension beyond i64"),
            })?;
        let (start, end) = info.data_offsets;
        tensors.insert(
            name,
            (
                TensorInfo {
                    dtype: info.dtype,
                    shape,
                },
                start..end,
            ),
        );
    }
    Ok(tensors)
}

/// The file is shorter (or longer) than its header says: find the first tensor whose bytes are
/// not all there, so the message can name it.
fn truncation_error(path: &Path, bytes: &[u8]) -> Error {
    let corrupt = |message: String| Error::CorruptSafetensors {
        path: path.to_owned(),
        message,
    };
    // read_metadata has already checked that the header itself is complete and valid JSON.
    let Some(header_len) = bytes
        .get(..8)
        .and_then(|len| <[u8; 8]>::try_from(len).ok())
        .map(u64::from_le_bytes)
        .and_then(|len| usize::try_from(len).ok())
    else {
        return corrupt("header length unreadable".to_owned());
    };
    let available = bytes.len().saturating_sub(8 + header_len);
    let header: Value = match bytes
        .get(8..8 + header_len)
        .map(serde_json::from_slice::<Value>)
    {
        Some(Ok(header)) => header,
        _ => return corrupt("header unreadable".to_owned()),
    };
    let mut ends: Vec<(usize, &str)> = header
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(name, info)| {
            let end = info.get("data_offsets")?.get(1)?.as_u64()?;
            Some((usize::try_from(end).ok()?, name.as_str()))
        })
        .collect();
    ends.sort_unstable();
    match ends.iter().find(|(end, _)| *end > available) {
        Some(&(needed, tensor)) => Error::TruncatedSafetensors {
            path: path.to_owned(),
            tensor: tensor.to_owned(),
            needed,
            available,
        },
        None => corrupt(format!(
            "{} bytes follow the last tensor's data (the header accounts for {})",
            available - ends.last().map_or(0, |(end, _)| *end),
            ends.last().map_or(0, |(end, _)| *end)
        )),
    }
}

fn describe_safetensors_error(error: &SafeTensorError) -> String {
    match error {
        SafeTensorError::HeaderTooSmall => "shorter than the 8-byte header length".to_owned(),
        SafeTensorError::HeaderTooLarge => "header length is implausibly large".to_owned(),
        SafeTensorError::InvalidHeaderLength => {
            "the file ends inside the JSON header (truncated)".to_owned()
        }
        SafeTensorError::InvalidHeader => "the JSON header is not UTF-8".to_owned(),
        SafeTensorError::InvalidHeaderStart => "the header does not start with `{`".to_owned(),
        SafeTensorError::InvalidHeaderDeserialization => {
            "the header is not a valid safetensors JSON header".to_owned()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor `{name}` has data offsets that overlap or leave gaps")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte length does not match its dtype and shape".to_owned()
        }
        SafeTensorError::ValidationOverflow => "a tensor's size overflows".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The weights of one model component (`unet/`, `vae/`, `text_encoder/`, ...).
#[derive(Debug)]
pub struct ComponentWeights {
    files: Vec<SafetensorsFile>,
    /// tensor name → index in `files`
    owner: BTreeMap<String, usize>,
    /// What errors about a tensor that no file has should name.
    listing: PathBuf,
}

impl ComponentWeights {
    /// diffusers' file names, in the order `from_pretrained` prefers them.
    pub const FILE_NAMES: [&'static str; 2] =
        ["diffusion_pytorch_model.safetensors", "model.safetensors"];

    /// Opens the weights of the component folder `dir`: a single safetensors file, or the shards
    /// a `*.safetensors.index.json` lists.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        for name in Self::FILE_NAMES {
            let single = dir.join(name);
            if single.is_file() {
                return Self::from_files(vec![SafetensorsFile::open(&single)?], single);
            }
            let index = dir.join(format!("{name}.index.json"));
            if index.is_file() {
                return Self::open_sharded(dir, &index);
            }
        }
        Err(Error::MissingFile {
            path: dir.to_owned(),
            what: format!(
                "weights ({} or {}, or a sharded .index.json)",
                Self::FILE_NAMES[0],
                Self::FILE_NAMES[1]
            ),
        })
    }

    fn open_sharded(dir: &Path, index: &Path) -> Result<Self> {
        let config = crate::config::ConfigFile::read(index)?;
        let Some(Value::Object(weight_map)) = config.raw("weight_map") else {
            return Err(Error::MissingKey {
                path: index.to_owned(),
                key: "weight_map".to_owned(),
            });
        };
        let mut shards: Vec<&str> = Vec::new();
        for (tensor, file) in weight_map {
            let Some(file) = file.as_str() else {
                return Err(
                    config.invalid("weight_map", format!("entry `{tensor}` is not a file name"))
                );
            };
            if !shards.contains(&file) {
                shards.push(file);
            }
        }
        let files = shards
            .iter()
            .map(|shard| SafetensorsFile::open(&dir.join(shard)))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(files, index.to_owned())
    }

    fn from_files(files: Vec<SafetensorsFile>, listing: PathBuf) -> Result<Self> {
        let mut owner = BTreeMap::new();
        for (position, file) in files.iter().enumerate() {
            for name in file.names() {
                if let Some(previous) = owner.insert(name.to_owned(), position) {
                    return Err(Error::CorruptSafetensors {
                        path: file.path().to_owned(),
                        message: format!(
                            "tensor `{name}` is also in {}",
                            files[previous].path().display()
                        ),
                    });
                }
            }
        }
        Ok(Self {
            files,
            owner,
            listing,
        })
    }

    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.owner.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    pub fn parameter_count(&self) -> i64 {
        self.files
            .iter()
            .map(SafetensorsFile::parameter_count)
            .sum()
    }

    fn file_of(&self, name: &str) -> Result<&SafetensorsFile> {
        self.owner
            .get(name)
            .map(|&position| &self.files[position])
            .ok_or_else(|| Error::MissingTensor {
                path: self.listing.clone(),
                tensor: name.to_owned(),
            })
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.file_of(name).ok()?.info(name)
    }

    pub fn tensor(&self, name: &str, kind: Kind) -> Result<Tensor> {
        self.file_of(name)?.tensor(name, kind)
    }

    pub fn tensor_shaped(&self, name: &str, expected: &[i64], kind: Kind) -> Result<Tensor> {
        self.file_of(name)?.tensor_shaped(name, expected, kind)
    }
}
