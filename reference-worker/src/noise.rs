//! diffusers' `randn_tensor` with CPU generators (PROTOCOL B.8).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::generator::Generator;

/// `randn_tensor(shape, generator=generators, dtype=kind)`: with one generator, one draw of the
/// whole shape; with one generator per batch entry, entry *i* drawn (shape `[1, ...]`) from
/// `generators[i]` in order, then concatenated.
pub fn randn_tensor(shape: &[i64], generators: &mut [Generator], kind: Kind) -> Result<Tensor> {
    let batch = shape.first().copied().unwrap_or(1);
    match generators {
        [] => Err(Error::Torch(
            "randn_tensor: no generator given (the worker always seeds its draws)".to_owned(),
        )),
        [generator] => generator.f_randn(shape, kind),
        many if many.len() as i64 == batch => {
            let mut one = shape.to_vec();
            one[0] = 1;
            let draws = many
                .iter_mut()
                .map(|generator| generator.f_randn(&one, kind))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::f_cat(&draws, 0)?)
        }
        many => Err(Error::Torch(format!(
            "randn_tensor: {} generators for a batch of {batch}",
            many.len()
        ))),
    }
}
