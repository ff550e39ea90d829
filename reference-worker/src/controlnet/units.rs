//! The ControlNet units of a Python v2 request (`data.controlnets[]`, and `data.controlnet`, which
//! repeats the first unit for v1 workers or is the only one in a v1 request), and what
//! `StableDiffusionXLControlNetPipeline.__call__` does with them around the denoising loop:
//! `control_guidance_start` / `_end` become per-step keep factors (`controlnet_keep`), each net's
//! residuals are scaled by `conditioning_scale * keep` and several nets' residuals are summed
//! (`MultiControlNetModel`).

use serde_json::Value;

use crate::control_image::canny;
use crate::error::{Error, Result};

/// One ControlNet of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlNetUnit {
    /// The unit's JSON Pointer (`/data/controlnets/1`), which errors about it name.
    pub pointer: String,
    /// `model_path`: a diffusers ControlNet folder (relative: to the working directory).
    pub model_path: Option<String>,
    /// `type` (e.g. `canny`): the preprocessor's kind, and the model's folder name under the
    /// worker's ControlNet directory when `model_path` is absent.
    pub kind: Option<String>,
    /// `control_image`: a file path or base64 image data.
    pub control_image: String,
    /// `controlnet_conditioning_scale` (default 1.0).
    pub conditioning_scale: f64,
    /// `control_guidance_start` (default 0.0).
    pub guidance_start: f64,
    /// `control_guidance_end` (default 1.0).
    pub guidance_end: f64,
    pub preprocessor: Option<Preprocessor>,
}

/// What turns the control image into the conditioning image before the pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preprocessor {
    /// `cv2.Canny(np.array(image), low_threshold, high_threshold)`, repeated into RGB.
    Canny {
        low_threshold: f64,
        high_threshold: f64,
    },
}

/// The request's enabled ControlNet units, in order. `controlnets` holds all of them; a
/// `controlnet` beside a non-empty `controlnets` must be the same as its first unit; a
/// `controlnet` alone (a v1 request) is the one unit. A unit with `enabled: false` asks for
/// nothing; one without `enabled` is enabled.
pub fn units_from_v2_data(data: &Value) -> Result<Vec<ControlNetUnit>> {
    let list = data
        .get("controlnets")
        .and_then(Value::as_array)
        .filter(|units| !units.is_empty());
    let single = data.get("controlnet").filter(|unit| !unit.is_null());
    let mut units = Vec::new();
    match (list, single) {
        (Some(list), single) => {
            if let Some(single) = single {
                if is_enabled(single) && single != &list[0] {
                    return Err(Error::InvalidRequest {
                        path: "/data/controlnet".to_owned(),
                        rule: "conflict",
                        message: "differs from /data/controlnets/0, the first unit it repeats \
                                  for v1 workers (PROTOCOL B.5)"
                            .to_owned(),
                    });
                }
            }
            for (i, unit) in list.iter().enumerate() {
                if is_enabled(unit) {
                    units.push(unit_from(unit, format!("/data/controlnets/{i}"))?);
                }
            }
        }
        (None, Some(single)) => {
            if is_enabled(single) {
                units.push(unit_from(single, "/data/controlnet".to_owned())?);
            }
        }
        (None, None) => {}
    }
    Ok(units)
}

fn is_enabled(unit: &Value) -> bool {
    unit.get("enabled").and_then(Value::as_bool) != Some(false)
}

fn unit_from(unit: &Value, pointer: String) -> Result<ControlNetUnit> {
    let invalid = |field: &str, rule: &'static str, message: String| Error::InvalidRequest {
        path: format!("{pointer}/{field}"),
        rule,
        message,
    };
    let text = |field: &str| unit.get(field).and_then(Value::as_str).map(str::to_owned);
    let number =
        |field: &str, default: f64| unit.get(field).and_then(Value::as_f64).unwrap_or(default);
    let control_image = text("control_image").ok_or_else(|| {
        invalid(
            "control_image",
            "required",
            "a ControlNet unit needs a conditioning image (a file path or base64 image data)"
                .to_owned(),
        )
    })?;
    let guidance_start = number("guidance_start", 0.0);
    let guidance_end = number("guidance_end", 1.0);
    if guidance_start >= guidance_end {
        return Err(invalid(
            "guidance_end",
            "order",
            format!(
                "guidance_start ({guidance_start}) must be less than guidance_end \
                 ({guidance_end}), as diffusers requires"
            ),
        ));
    }
    let kind = text("type");
    let preprocessor = match unit.get("preprocessor") {
        Some(pre) if pre.get("enabled").and_then(Value::as_bool) == Some(true) => {
            if pre.get("resolution").is_some_and(|r| !r.is_null()) {
                return Err(Error::Unsupported {
                    path: format!("{pointer}/preprocessor/resolution"),
                    reason: "resizing before the preprocessor is not implemented: the \
                             preprocessor runs on the image at its own size, then the pipeline \
                             resizes its output to the render size"
                        .to_owned(),
                });
            }
            match kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("canny") => Some(Preprocessor::Canny {
                    low_threshold: canny::LOW_THRESHOLD,
                    high_threshold: canny::HIGH_THRESHOLD,
                }),
                other => {
                    return Err(Error::Unsupported {
                        path: format!("{pointer}/type"),
                        reason: format!(
                            "no preprocessor for type {} (implemented: canny)",
                            other.map_or("(absent)".to_owned(), |t| format!("`{t}`"))
                        ),
                    })
                }
            }
        }
        _ => None,
    };
    Ok(ControlNetUnit {
        model_path: text("model_path"),
        kind,
        control_image,
        conditioning_scale: number("conditioning_scale", 1.0),
        guidance_start,
        guidance_end,
        preprocessor,
        pointer,
    })
}

/// `controlnet_keep[i]` for each net: `1.0 - float(i / len(timesteps) < start or (i + 1) /
/// len(timesteps) > end)`, over the scheduler's timesteps (twice the steps, less one, for the
/// second-order schedulers).
pub fn controlnet_keep(step: usize, timesteps: usize, start: f64, end: f64) -> f64 {
    let (i, n) = (step as f64, timesteps as f64);
    let off = i / n < start || (i + 1.0) / n > end;
    1.0 - if off { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unit(image: &str) -> Value {
        json!({"enabled": true, "model_path": "m", "control_image": image})
    }

    #[test]
    fn controlnets_take_precedence_and_the_single_unit_must_repeat_the_first() {
        let data = json!({"controlnets": [unit("a"), unit("b")], "controlnet": unit("a")});
        let units = units_from_v2_data(&data).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[1].pointer, "/data/controlnets/1");
        assert_eq!(units[1].control_image, "b");

        let data = json!({"controlnets": [unit("a")], "controlnet": unit("z")});
        match units_from_v2_data(&data) {
            Err(Error::InvalidRequest { path, rule, .. }) => {
                assert_eq!((path.as_str(), rule), ("/data/controlnet", "conflict"));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        let data = json!({"controlnet": unit("v1")});
        let units = units_from_v2_data(&data).unwrap();
        assert_eq!(units[0].pointer, "/data/controlnet");
    }

    #[test]
    fn disabled_units_ask_for_nothing_and_defaults_are_diffusers() {
        let data = json!({"controlnets": [{"enabled": false}, unit("a")],
                          "controlnet": {"enabled": false}});
        let units = units_from_v2_data(&data).unwrap();
        assert_eq!(units.len(), 1);
        let u = &units[0];
        assert_eq!(u.pointer, "/data/controlnets/1");
        assert_eq!(
            (u.conditioning_scale, u.guidance_start, u.guidance_end),
            (1.0, 0.0, 1.0)
        );
        assert_eq!(u.preprocessor, None);
    }

    #[test]
    fn bad_units_name_the_field() {
        let cases = [
            (
                json!({"model_path": "m"}),
                "/data/controlnets/0/control_image",
            ),
            (
                json!({"model_path": "m", "control_image": "x", "guidance_start": 0.5, "guidance_end": 0.5}),
                "/data/controlnets/0/guidance_end",
            ),
            (
                json!({"type": "depth", "control_image": "x", "preprocessor": {"enabled": true}}),
                "/data/controlnets/0/type",
            ),
            (
                json!({"type": "canny", "control_image": "x", "preprocessor": {"enabled": true, "resolution": 512}}),
                "/data/controlnets/0/preprocessor/resolution",
            ),
        ];
        for (bad, expected) in cases {
            let error = units_from_v2_data(&json!({"controlnets": [bad]})).unwrap_err();
            let path = match error {
                Error::InvalidRequest { path, .. } | Error::Unsupported { path, .. } => path,
                other => panic!("{other:?}"),
            };
            assert_eq!(path, expected);
        }
    }

    #[test]
    fn canny_preprocessor_uses_the_documented_thresholds() {
        let data = json!({"controlnets": [{"type": "Canny", "control_image": "x",
                                           "preprocessor": {"enabled": true}}]});
        let units = units_from_v2_data(&data).unwrap();
        assert_eq!(
            units[0].preprocessor,
            Some(Preprocessor::Canny {
                low_threshold: 100.0,
                high_threshold: 200.0
            })
        );
    }

    #[test]
    fn keep_follows_diffusers_for_start_and_end() {
        // 4 timesteps, start 0.25, end 0.75: steps 0 (0/4 < 0.25) and 3 (4/4 > 0.75) are off.
        let keep: Vec<f64> = (0..4).map(|i| controlnet_keep(i, 4, 0.25, 0.75)).collect();
        assert_eq!(keep, [0.0, 1.0, 1.0, 0.0]);
        // the defaults keep every step
        assert!((0..7).all(|i| controlnet_keep(i, 7, 0.0, 1.0) == 1.0));
        // 7 Heun timesteps, end 0.5: (i + 1) / 7 > 0.5 from i = 3 on
        let keep: Vec<f64> = (0..7).map(|i| controlnet_keep(i, 7, 0.0, 0.5)).collect();
        assert_eq!(keep, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
