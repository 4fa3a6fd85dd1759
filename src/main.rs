//! The `insider-messaging` binary: `serve` (the default), `migrate` or `openapi`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use insider_messaging::{api::docs::ApiDoc, config::Settings, startup, telemetry};
use utoipa::OpenApi;

#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dispatcher and its HTTP API (the default). Configured by environment variables.
    Serve,
    /// Apply database migrations to DATABASE_URL and exit.
    Migrate,
    /// Print the OpenAPI document (the one served at /api-docs/openapi.json) and exit.
    Openapi,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match settings() {
            Ok(settings) => serve(settings).await,
            Err(code) => return code,
        },
        Command::Migrate => match settings() {
            Ok(settings) => startup::migrated_store(&settings)
                .await
                .map(|_| log::info!("migrations applied")),
            Err(code) => return code,
        },
        Command::Openapi => ApiDoc::openapi()
            .to_pretty_json()
            .map(|json| println!("{json}"))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings, or the exit code after printing the one line that names the bad variable.
fn settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|error| {
        eprintln!("configuration error: {error}");
        ExitCode::from(2)
    })
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = startup::Application::build(settings).await?;
    app.run_until(startup::shutdown_signal()).await
}
