//! The crate's one error type. Every variant names the file (and key or tensor) it is about, so a
//! message read alone in a CI log says what to fix.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- files and folders --------------------------------------------------------------------
    /// A file could not be read at all.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model folder lacks a file its layout requires.
    #[error("{}: missing {what}", path.display())]
    MissingFile { path: PathBuf, what: String },

    /// A path that should be a model folder of some class is not one (a file, or nothing).
    #[error("{}: not {expected}: {found}", path.display())]
    NotAModelFolder {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },

    // ---- config.json and friends --------------------------------------------------------------
    /// The file is not JSON, or its top level is not an object.
    #[error("{}: not a JSON object: {message}", path.display())]
    ConfigSyntax { path: PathBuf, message: String },

    /// A key the model needs (no diffusers default is assumed for it) is absent.
    #[error("{}: missing key `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },

    /// A key holds the wrong JSON type.
    #[error("{}: key `{key}` should be {expected}, found {found}", path.display())]
    MistypedKey {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A key has the right type but a value that cannot describe a model.
    #[error("{}: key `{key}`: {message}", path.display())]
    InvalidValue {
        path: PathBuf,
        key: String,
        message: String,
    },

    // ---- safetensors --------------------------------------------------------------------------
    /// The header cannot be parsed (too short, not JSON, inconsistent offsets).
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    CorruptSafetensors { path: PathBuf, message: String },

    /// The file ends before the data of a tensor its header lists.
    #[error(
        "{}: truncated: tensor `{tensor}` needs bytes up to {needed} of the data section, \
         but the file holds {available}",
        path.display()
    )]
    TruncatedSafetensors {
        path: PathBuf,
        tensor: String,
        needed: usize,
        available: usize,
    },

    /// The model asks for a tensor the file does not have.
    #[error("{}: no tensor named `{tensor}`", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    /// A tensor's shape differs from what config.json implies.
    #[error("{}: tensor `{tensor}` has shape {actual:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<i64>,
        actual: Vec<i64>,
    },

    /// A tensor is stored in a dtype that is not a floating-point weight.
    #[error(
        "{}: tensor `{tensor}` is stored as {dtype}; weights must be F32, F16, BF16 or F64",
        path.display()
    )]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    /// The weights hold tensors the model built from config.json does not use: the two disagree.
    #[error(
        "{}: {} tensor(s) that the model described by config.json does not use: {}",
        path.display(),
        tensors.len(),
        list_names(tensors)
    )]
    UnusedTensors { path: PathBuf, tensors: Vec<String> },

    // ---- LoRA files ---------------------------------------------------------------------------
    /// A file given as a LoRA holds no LoRA tensors (e.g. a model's own weights).
    #[error("{}: not a LoRA file: {message}", path.display())]
    NotALora { path: PathBuf, message: String },

    /// A key of a LoRA file that cannot be applied: a name neither layout has, a module the
    /// model does not have, a down/up half without its partner, a feature not rendered (DoRA).
    #[error("{}: `{key}`: {message}", path.display())]
    LoraKey {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// A LoRA tensor whose shape does not fit the layer it adapts (`reason` names the module).
    #[error(
        "{}: tensor `{tensor}` has shape {actual:?}, expected {expected:?} ({reason})",
        path.display()
    )]
    LoraShape {
        path: PathBuf,
        tensor: String,
        actual: Vec<i64>,
        expected: Vec<i64>,
        /// Boxed to keep the error type small.
        reason: Box<str>,
    },

    /// The two halves of one LoRA module disagree on the rank (`down_shape[0]` vs
    /// `up_shape[1]`).
    #[error(
        "{}: rank mismatch: `{down}` {down_shape:?} has rank {}, `{up}` {up_shape:?} has rank {}",
        path.display(),
        down_shape.first().copied().unwrap_or_default(),
        up_shape.get(1).copied().unwrap_or_default()
    )]
    LoraRank {
        path: PathBuf,
        /// The tensor names (boxed to keep the error type small).
        down: Box<str>,
        down_shape: Vec<i64>,
        up: Box<str>,
        up_shape: Vec<i64>,
    },

    /// diffusers' `lora_adapter_metadata` (the LoraConfig per component) holds something this
    /// worker cannot reproduce.
    #[error("{}: lora_adapter_metadata `{key}`: {message}", path.display())]
    LoraMetadata {
        path: PathBuf,
        key: String,
        message: String,
    },

    // ---- model inputs -------------------------------------------------------------------------
    /// A tensor handed to a model's forward pass does not fit the model.
    #[error("{model}: input `{input}` has shape {actual:?} ({kind}): {message}")]
    BadInput {
        model: String,
        input: &'static str,
        actual: Vec<i64>,
        kind: String,
        message: String,
    },

    // ---- requests -----------------------------------------------------------------------------
    /// A request field (JSON Pointer into the request) asks for something this worker does not
    /// render (yet); refused rather than ignored.
    #[error("{path}: {reason}")]
    Unsupported { path: String, reason: String },

    /// A request field (JSON Pointer into the request) whose value cannot be used: an image that
    /// cannot be read or decoded, guidance bounds out of order, a LoRA that is not found, an
    /// adapter name used twice. `rule` names the check, as in the
    /// transformer's `{"errors":[…]}` output.
    #[error("{path}: {message}")]
    InvalidRequest {
        path: String,
        rule: &'static str,
        message: String,
    },

    // ---- schedulers ---------------------------------------------------------------------------
    /// A scheduler class name the worker does not implement.
    #[error("unknown scheduler `{name}`; known: {}", known.join(", "))]
    UnknownScheduler {
        name: String,
        known: Vec<&'static str>,
    },

    /// A scheduler was used out of order (e.g. `step` before `set_timesteps`) or with a timestep
    /// its schedule does not hold.
    #[error("{scheduler}: {message}")]
    SchedulerUsage {
        scheduler: &'static str,
        message: String,
    },

    // ---- images -------------------------------------------------------------------------------
    /// An image could not be encoded (the file itself was writable).
    #[error("{}: cannot encode PNG: {message}", path.display())]
    ImageEncode { path: PathBuf, message: String },

    // ---- tokenizers ---------------------------------------------------------------------------
    /// A `tokenizer.json` the `tokenizers` crate cannot load, or a prompt it cannot encode.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    // ---- textual inversions -------------------------------------------------------------------
    /// An embedding file that cannot be loaded as diffusers loads an SDXL textual inversion (a
    /// missing `clip_l`/`clip_g`, a wrong shape, a token already in the vocabulary).
    #[error(
        "{}{}: {message}",
        path.display(),
        tensor.as_ref().map(|t| format!(": tensor `{t}`")).unwrap_or_default()
    )]
    InvalidTextualInversion {
        path: PathBuf,
        tensor: Option<String>,
        message: String,
    },

    // ---- libtorch -----------------------------------------------------------------------------
    /// libtorch reported an error (a C++ exception turned into a value).
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for Error {
    fn from(error: tch::TchError) -> Self {
        Error::Torch(error.to_string())
    }
}

/// The first few names of a list, for messages about many tensors.
fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<String> = names
        .iter()
        .take(SHOWN)
        .map(|name| format!("`{name}`"))
        .collect();
    match names.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}
