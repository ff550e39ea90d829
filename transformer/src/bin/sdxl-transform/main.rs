//! `sdxl-transform`: the protocol's mapping and checks on the command line.
//!
//! Convention for every subcommand: the result on stdout and exit 0; on bad input nothing on
//! stdout, one JSON object `{"errors":[{"path","rule","message","value"}]}` on stderr and exit 2.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use transformer::error::parse_json;
use transformer::request_map::{transform_request, MapOptions};
use transformer::{commands, coverage, reverse, Errors, FieldError, Schema};

mod schema_diff;

const EXAMPLES: &str = "\
Examples:
  # C# request (HTTP body, stdin envelope or generate_image) to the Python v2 envelope
  sdxl-transform request fixtures/requests/upstream/enhancedsdxl_http_request.test_api.e4789f8.json
  cat request.json | sdxl-transform request - --report report.json --pretty

  # Python worker reply to the C# response
  sdxl-transform response fixtures/replies/envelope_single.json

  # Python v2 request back to the C# HTTP body (or action envelope)
  sdxl-transform reverse python-request.json

  # Check a document against one of the protocol's schemas
  sdxl-transform validate --schema python-request python-request.json

  # The command table and the field coverage table
  sdxl-transform commands
  sdxl-transform coverage --json

Exit codes: 0 ok, 1 breaking change (schema-diff), 2 invalid input (errors JSON on stderr).";

#[derive(Parser)]
#[command(name = "sdxl-transform", version, about = "Maps and checks messages between the C# Enhanced Services and Python SDXL workers", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reads any accepted C# message and prints the Python v2 envelope.
    Request {
        /// Input file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Writes the mapping report (mapped / defaults / reported / warnings) to FILE or `-` (stderr).
        #[arg(long, value_name = "FILE|-")]
        report: Option<PathBuf>,
        /// The request_id to use when the message has no session_id (default: derived from content).
        #[arg(long)]
        request_id: Option<String>,
        /// Pretty-prints the output (default: one line, as the worker protocol frames messages).
        #[arg(long)]
        pretty: bool,
    },
    /// Reads a Python worker reply and prints the C# (camelCase) response.
    Response {
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Writes the reply report (fields without a C# place) to FILE or `-` (stderr).
        #[arg(long, value_name = "FILE|-")]
        report: Option<PathBuf>,
        #[arg(long)]
        pretty: bool,
    },
    /// Reads a Python v2 request and prints the C# message it corresponds to.
    Reverse {
        #[arg(default_value = "-")]
        file: PathBuf,
        #[arg(long, value_name = "FILE|-")]
        report: Option<PathBuf>,
        #[arg(long)]
        pretty: bool,
    },
    /// Validates a document against one of the protocol's schemas.
    Validate {
        /// csharp-request, csharp-response, python-request, python-request-v1 or python-reply.
        #[arg(long, value_parser = schema_name)]
        schema: String,
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Prints one of the embedded schemas.
    Schema {
        #[arg(value_parser = schema_name)]
        name: String,
    },
    /// Prints the command table (C# action → Python message_type).
    Commands {
        #[arg(long)]
        json: bool,
    },
    /// Prints the field-coverage table, computed by running the mapping on probe messages.
    Coverage {
        #[arg(long)]
        json: bool,
    },
    /// Compares two versions of a schema and proves each break with a counterexample (exit 1).
    #[command(name = "schema-diff")]
    SchemaDiff(schema_diff::SchemaDiffArgs),
}

fn schema_name(name: &str) -> Result<String, String> {
    match Schema::from_cli_name(name) {
        Some(_) => Ok(name.to_string()),
        None => Err(format!(
            "unknown schema `{name}`; known: {}",
            Schema::ALL.map(Schema::cli_name).join(", ")
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // schema-diff has its own exit codes (1: breaking change).
    if let Command::SchemaDiff(args) = &cli.command {
        return schema_diff::run(args);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            eprintln!("{}", errors.to_json_line());
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), Errors> {
    match command {
        Command::Request {
            file,
            report,
            request_id,
            pretty,
        } => {
            let bytes = read_input(&file)?;
            let mapping = transform_request(&bytes, &MapOptions { request_id })?;
            if let Some(target) = report {
                write_output(&target, &to_json(&mapping.report, true))?;
            }
            // Written from the typed message: the same text as its `Value`, without building it.
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an input error; stop quietly.
            let _ = mapping
                .write_json(&mut stdout, pretty)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(stdout));
            Ok(())
        }
        Command::Response {
            file,
            report,
            pretty,
        } => {
            let bytes = read_input(&file)?;
            let value = parse_json(&bytes)?;
            let mapping = transformer::reply_map::map_reply(&value)?;
            if let Some(target) = report {
                write_output(&target, &to_json(&mapping.report, true))?;
            }
            print(&to_value(&mapping.response), pretty)
        }
        Command::Reverse {
            file,
            report,
            pretty,
        } => {
            let bytes = read_input(&file)?;
            let value = parse_json(&bytes)?;
            let reversed = reverse::python_to_csharp(&value)?;
            if let Some(target) = report {
                write_output(&target, &to_json(&reversed.reported, true))?;
            }
            print(&reversed.message, pretty)
        }
        Command::Validate { schema, file } => {
            let schema = Schema::from_cli_name(&schema).expect("checked by clap");
            let bytes = read_input(&file)?;
            let value = parse_json(&bytes)?;
            schema.validate(&value)?;
            println!("valid: {} ({})", file.display(), schema.cli_name());
            Ok(())
        }
        Command::Schema { name } => {
            let schema = Schema::from_cli_name(&name).expect("checked by clap");
            print!("{}", schema.source());
            Ok(())
        }
        Command::Commands { json } => {
            if json {
                print(&to_value(&commands::COMMANDS), true)
            } else {
                println!(
                    "{:<24} {:<22} v1 main.py handler",
                    "C# action", "Python message_type"
                );
                for c in commands::COMMANDS {
                    println!(
                        "{:<24} {:<22} {}",
                        c.action,
                        c.message_type,
                        if c.v1_handler {
                            "yes"
                        } else {
                            "no (\"No handler for message type\")"
                        }
                    );
                }
                Ok(())
            }
        }
        Command::SchemaDiff(_) => Ok(()), // answered in `main`
        Command::Coverage { json } => {
            let table = coverage::compute();
            if json {
                print(&to_value(&table), true)
            } else {
                print!("{}", table.to_text());
                Ok(())
            }
        }
    }
}

fn read_input(file: &PathBuf) -> Result<Vec<u8>, Errors> {
    let mut bytes = Vec::new();
    let result = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    result.map_err(|e| {
        Errors::one(FieldError::new(
            "",
            "io",
            format!("cannot read {}: {e}", display_name(file)),
        ))
    })?;
    Ok(bytes)
}

fn display_name(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        file.display().to_string()
    }
}

fn write_output(target: &PathBuf, text: &str) -> Result<(), Errors> {
    let result = if target.as_os_str() == "-" {
        writeln!(std::io::stderr(), "{text}")
    } else {
        std::fs::write(target, format!("{text}\n"))
    };
    result.map_err(|e| {
        Errors::one(FieldError::new(
            "",
            "io",
            format!("cannot write {}: {e}", target.display()),
        ))
    })
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn to_json<T: serde::Serialize>(value: &T, pretty: bool) -> String {
    let result = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    result.unwrap_or_default()
}

fn print(value: &Value, pretty: bool) -> Result<(), Errors> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an input error; stop quietly.
    let _ = writeln!(stdout, "{}", to_json(value, pretty));
    Ok(())
}
