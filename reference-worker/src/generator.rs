//! Per-image CPU random generators, equal to `torch.Generator("cpu").manual_seed(seed)`.
//!
//! diffusers draws the initial latents (and the noise of ancestral schedulers) of image *i* from
//! the *i*-th generator of a list (PROTOCOL B.8); tch only reaches libtorch's global generator, so
//! `csrc/generator.cpp` creates real `at::Generator`s and draws `at::randn` from them.

use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

extern "C" {
    fn rw_generator_new(seed: u64, error: *mut *mut c_char) -> *mut c_void;
    fn rw_generator_free(generator: *mut c_void);
    fn rw_generator_randn(
        generator: *mut c_void,
        sizes: *const i64,
        ndim: usize,
        scalar_type: i8,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn rw_free_error(error: *mut c_char);
}

/// A CPU generator with its own state, seeded like `torch.Generator("cpu").manual_seed(seed)`.
pub struct Generator {
    raw: NonNull<c_void>,
    seed: u64,
}

// SAFETY: the generator is owned exclusively by this value (never shared), and libtorch's CPU
// generator keeps no thread-local state, so moving it to another thread is sound.
unsafe impl Send for Generator {}

impl Generator {
    /// A fresh generator seeded with `seed`.
    pub fn new(seed: u64) -> Result<Self> {
        let mut error = std::ptr::null_mut();
        // SAFETY: `error` is a valid out-pointer; the shim never unwinds.
        let raw = unsafe { rw_generator_new(seed, &mut error) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Self { raw, seed }),
            None => Err(Error::Torch(take_error(error))),
        }
    }

    /// The seed it was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `torch.randn(shape, generator=self)`: standard normal f32 values on the CPU.
    ///
    /// Panics if a dimension is negative (shapes come from the pipeline, never from requests).
    pub fn randn(&mut self, shape: &[i64]) -> Tensor {
        match self.f_randn(shape, Kind::Float) {
            Ok(tensor) => tensor,
            Err(error) => panic!("randn({shape:?}): {error}"),
        }
    }

    /// `torch.randn(shape, generator=self, dtype=kind)`, for the floating kinds diffusers samples
    /// latents in (sampling in bf16 is not sampling in f32 and casting).
    pub fn f_randn(&mut self, shape: &[i64], kind: Kind) -> Result<Tensor> {
        let scalar_type = scalar_type(kind)?;
        if let Some(dim) = shape.iter().find(|dim| **dim < 0) {
            return Err(Error::Torch(format!(
                "randn: negative dimension {dim} in shape {shape:?}"
            )));
        }
        let mut error = std::ptr::null_mut();
        // SAFETY: `self.raw` is a live generator we own; `shape` outlives the call; `error` is
        // a valid out-pointer; the shim never unwinds.
        let tensor = unsafe {
            rw_generator_randn(
                self.raw.as_ptr(),
                shape.as_ptr(),
                shape.len(),
                scalar_type,
                &mut error,
            )
        };
        if tensor.is_null() {
            return Err(Error::Torch(take_error(error)));
        }
        // SAFETY: the shim returns a heap `at::Tensor*`, which is exactly what tch's `C_tensor`
        // pointers are; ownership passes to the `Tensor`, which frees it on drop.
        Ok(unsafe { Tensor::from_ptr(tensor.cast::<torch_sys::C_tensor>()) })
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        // SAFETY: created by `rw_generator_new`, freed exactly once.
        unsafe { rw_generator_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("seed", &self.seed)
            .finish()
    }
}

/// c10::ScalarType numbers of the kinds latents are sampled in.
fn scalar_type(kind: Kind) -> Result<i8> {
    match kind {
        Kind::Half => Ok(5),
        Kind::Float => Ok(6),
        Kind::Double => Ok(7),
        Kind::BFloat16 => Ok(15),
        other => Err(Error::Torch(format!(
            "randn: {other:?} is not a floating kind (expected Half, Float, Double or BFloat16)"
        ))),
    }
}

fn take_error(error: *mut c_char) -> String {
    if error.is_null() {
        return "libtorch failed without a message".to_owned();
    }
    // SAFETY: a non-null error is a NUL-terminated string malloc'd by the shim, freed once here.
    unsafe {
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        rw_free_error(error);
        message
    }
}
