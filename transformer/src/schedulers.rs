//! Scheduler names (PROTOCOL B.4): any accepted alias, case-insensitively, to the diffusers
//! class name. Nothing falls back silently: an unknown name is an error listing the accepted
//! names.

use serde::Serialize;

/// One diffusers scheduler class and the names C# may use for it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SchedulerAliases {
    pub class_name: &'static str,
    pub aliases: &'static [&'static str],
}

pub const SCHEDULERS: &[SchedulerAliases] = &[
    s(
        "DPMSolverMultistepScheduler",
        &["DPMSolverMultistep", "DPM++", "DPM++ 2M", "dpmpp_2m"],
    ),
    s("DDIMScheduler", &["DDIM"]),
    s(
        "EulerDiscreteScheduler",
        &["EulerDiscrete", "Euler", "EulerC"],
    ),
    s(
        "EulerAncestralDiscreteScheduler",
        &[
            "EulerAncestral",
            "EulerAncestralDiscrete",
            "EulerA",
            "euler_a",
        ],
    ),
    s("DPMSolverSinglestepScheduler", &["DPMSolverSinglestep"]),
    s("KDPM2DiscreteScheduler", &["KDPM2Discrete", "KDPM2"]),
    s(
        "KDPM2AncestralDiscreteScheduler",
        &["KDPM2Ancestral", "KDPM2AncestralDiscrete"],
    ),
    s("HeunDiscreteScheduler", &["HeunDiscrete", "Heun"]),
    s("LMSDiscreteScheduler", &["LMSDiscrete", "LMS"]),
    s("UniPCMultistepScheduler", &["UniPCMultistep", "UniPC"]),
    s("PNDMScheduler", &["PNDM"]),
    s("DDPMScheduler", &["DDPM"]),
];

const fn s(class_name: &'static str, aliases: &'static [&'static str]) -> SchedulerAliases {
    SchedulerAliases {
        class_name,
        aliases,
    }
}

/// The diffusers class for an alias or class name (case-insensitive, surrounding whitespace
/// is not trimmed: `" Euler"` is not a name C# sends).
pub fn class_for(name: &str) -> Option<&'static str> {
    SCHEDULERS
        .iter()
        .find(|entry| {
            entry.class_name.eq_ignore_ascii_case(name)
                || entry.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .map(|entry| entry.class_name)
}

/// Every accepted name, for error messages.
pub fn accepted_names() -> Vec<&'static str> {
    SCHEDULERS
        .iter()
        .flat_map(|entry| std::iter::once(entry.class_name).chain(entry.aliases.iter().copied()))
        .collect()
}

pub fn class_names() -> impl Iterator<Item = &'static str> {
    SCHEDULERS.iter().map(|entry| entry.class_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_table_is_exact() {
        assert_eq!(class_for("dpm++ 2m"), Some("DPMSolverMultistepScheduler"));
        assert_eq!(class_for("EULERC"), Some("EulerDiscreteScheduler"));
        assert_eq!(
            class_for("euler_a"),
            Some("EulerAncestralDiscreteScheduler")
        );
        assert_eq!(class_for("pndmscheduler"), Some("PNDMScheduler"));
        assert_eq!(class_for("DPM++ 2M Karras"), None);
        assert_eq!(class_for("Euler "), None);
        assert_eq!(SCHEDULERS.len(), 12);
        let names = accepted_names();
        let mut lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        lower.sort();
        lower.dedup();
        assert_eq!(lower.len(), names.len(), "an alias is listed twice");
    }
}
