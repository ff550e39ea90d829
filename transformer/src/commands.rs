//! The command table (PROTOCOL B.6): each C# action and the v2 `message_type` it becomes, as
//! data the CLI prints and both mapping directions use.

use serde::Serialize;

use crate::csharp::Action;

/// One row of the command table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Command {
    /// The C# stdin envelope's `action`.
    pub action: &'static str,
    #[serde(skip)]
    pub id: Action,
    /// The v2 Python envelope's `message_type`.
    pub message_type: &'static str,
    /// Whether the upstream Python `main.py` (v1) has a handler for this message type; the
    /// others were answered "No handler for message type" (PROTOCOL A.5).
    pub v1_handler: bool,
    /// When the reverse direction (Python → C#) picks this action for the message type.
    pub preferred_for_reverse: bool,
}

pub const COMMANDS: &[Command] = &[
    row(
        "initialize",
        Action::Initialize,
        "initialize_request",
        false,
        true,
    ),
    row(
        "load_model",
        Action::LoadModel,
        "model_load_request",
        true,
        true,
    ),
    row(
        "unload_model",
        Action::UnloadModel,
        "model_unload_request",
        false,
        true,
    ),
    row(
        "generate_image",
        Action::GenerateImage,
        "inference_request",
        true,
        false,
    ),
    row(
        "generate_sdxl_enhanced",
        Action::GenerateSdxlEnhanced,
        "inference_request",
        true,
        true,
    ),
    row(
        "get_capabilities",
        Action::GetCapabilities,
        "capabilities_request",
        false,
        true,
    ),
    row(
        "validate_request",
        Action::ValidateRequest,
        "validate_request",
        false,
        true,
    ),
    row(
        "get_status",
        Action::GetStatus,
        "status_request",
        true,
        true,
    ),
    row(
        "get_model_info",
        Action::GetModelInfo,
        "model_info_request",
        false,
        true,
    ),
    row(
        "cleanup_memory",
        Action::CleanupMemory,
        "cleanup_request",
        false,
        true,
    ),
    row("stop", Action::Stop, "shutdown_request", true, false),
    row("shutdown", Action::Shutdown, "shutdown_request", true, true),
];

const fn row(
    action: &'static str,
    id: Action,
    message_type: &'static str,
    v1_handler: bool,
    preferred_for_reverse: bool,
) -> Command {
    Command {
        action,
        id,
        message_type,
        v1_handler,
        preferred_for_reverse,
    }
}

/// The row of a C# action name (exact, as C# sends them in snake_case; ASCII case ignored).
pub fn by_action_name(name: &str) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.action.eq_ignore_ascii_case(name))
}

pub fn by_action(action: Action) -> &'static Command {
    COMMANDS
        .iter()
        .find(|c| c.id == action)
        .expect("every Action has a row in COMMANDS (checked by a test)")
}

/// The C# action the reverse direction uses for a v2 message type.
pub fn by_message_type(message_type: &str) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.preferred_for_reverse && c.message_type == message_type)
}

pub fn action_names() -> Vec<&'static str> {
    COMMANDS.iter().map(|c| c.action).collect()
}

pub fn message_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = COMMANDS.iter().map(|c| c.message_type).collect();
    types.dedup();
    types.sort_unstable();
    types.dedup();
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_type_has_exactly_one_reverse_action() {
        for message_type in message_types() {
            let preferred = COMMANDS
                .iter()
                .filter(|c| c.message_type == message_type && c.preferred_for_reverse)
                .count();
            assert_eq!(preferred, 1, "{message_type}");
        }
    }

    #[test]
    fn every_action_round_trips_through_the_table() {
        for command in COMMANDS {
            assert_eq!(by_action(command.id).action, command.action);
            assert_eq!(
                by_action_name(command.action).map(|c| c.id),
                Some(command.id)
            );
        }
    }
}
