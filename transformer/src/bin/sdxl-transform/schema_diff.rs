//! `sdxl-transform schema-diff OLD NEW [--direction request|reply] [--json]`: the protocol change
//! gate on the command line. Exit 0: nothing breaks; 1: a breaking (or possibly breaking,
//! `unknown`) change; 2: bad input, with the errors JSON on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use transformer::schema_diff::{self, Direction};
use transformer::{Errors, FieldError};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DirectionArg {
    /// The schema of what a consumer accepts: NEW rejecting an OLD-valid message breaks.
    Request,
    /// The schema of what a producer sends: NEW allowing an OLD-invalid message breaks.
    Reply,
}

#[derive(clap::Args)]
pub struct SchemaDiffArgs {
    /// The schema as it was.
    pub old: PathBuf,
    /// The schema as it is now.
    pub new: PathBuf,
    /// Which way a change breaks (default: the schemas' `x-direction` annotation).
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// Prints the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SchemaDiffArgs) -> ExitCode {
    match compare(args) {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                report.to_text()
            };
            // A closed pipe (`| head`) is not an input error.
            let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
            if report.passes() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(errors) => {
            eprintln!("{}", errors.to_json_line());
            ExitCode::from(2)
        }
    }
}

fn compare(args: &SchemaDiffArgs) -> Result<schema_diff::Report, Errors> {
    let old = schema_diff::load(&args.old)?;
    let new = schema_diff::load(&args.new)?;
    let direction = match args.direction {
        Some(DirectionArg::Request) => Direction::Request,
        Some(DirectionArg::Reply) => Direction::Reply,
        None => declared_direction(&old, &new)?,
    };
    schema_diff::diff(&old, &new, direction)
}

fn declared_direction(
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> Result<Direction, Errors> {
    match (Direction::declared(old), Direction::declared(new)) {
        (Some(a), Some(b)) if a != b => Err(FieldError::new(
            "/x-direction",
            "direction",
            format!(
                "OLD declares x-direction {} but NEW declares {}; pass --direction",
                a.as_str(),
                b.as_str()
            ),
        )
        .into()),
        (Some(d), _) | (_, Some(d)) => Ok(d),
        (None, None) => Err(FieldError::new(
            "/x-direction",
            "direction",
            "neither schema declares x-direction (request or reply); pass --direction",
        )
        .into()),
    }
}
