//! The `insider-messaging` binary: `serve` (the default) or `migrate`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use insider_messaging::{config::Settings, startup, telemetry};

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
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match startup::Application::build(settings).await {
            Ok(app) => app.run_until(startup::shutdown_signal()).await,
            Err(error) => Err(error),
        },
        Command::Migrate => startup::migrated_store(&settings)
            .await
            .map(|_| log::info!("migrations applied")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
