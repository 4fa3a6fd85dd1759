//! The `insider-messaging` binary: `serve` (the default), `demo`, `mock-provider`, `migrate`, `openapi`,
//! `config`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use insider_messaging::{
    api::docs::ApiDoc,
    config::{self, Settings, VARIABLES, Variable},
    demo,
    mock_provider::{MockProvider, MockProviderConfig},
    startup, telemetry,
};
use utoipa::OpenApi;

/// Every subcommand allocates through mimalloc, not the system's malloc (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Try it with nothing installed: the dispatcher on the embedded database, a stand-in provider and
    /// sample messages.
    Demo,
    /// Run only the stand-in provider, for tests, load runs and the compose demo.
    MockProvider(Box<MockProviderConfig>),
    /// Apply database migrations to DATABASE_URL and exit.
    Migrate,
    /// Print the OpenAPI document (the one served at /api-docs/openapi.json) and exit.
    Openapi,
    /// Describe the configuration and exit.
    Config(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Print, as JSON keyed by subcommand, every environment variable it reads: name, default,
    /// default_from, kind, doc, required, secret.
    #[arg(long, required = true)]
    list: bool,
}

fn main() -> ExitCode {
    let system = actix_rt::System::new();
    let code = system.block_on(run(Cli::parse()));
    // Left to the exit, not dropped: a statement still waiting when shutdown stopped waiting for it (a
    // lock held elsewhere) holds a pooled connection, which sqlx gives back by spawning on the runtime.
    // Dropped here, outside the runtime, each such connection panicked, and a second panic aborted the
    // process (exit 134). The exit closes its sockets; the server rolls their transactions back.
    std::mem::forget(system);
    code
}

async fn run(cli: Cli) -> ExitCode {
    // First, so that RUST_LOG in .env reaches the logger.
    let dotenv = config::load_dotenv();
    telemetry::init();
    if let Err(error) = dotenv {
        eprintln!("configuration error: {error}");
        return ExitCode::from(2);
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match Settings::from_env() {
            Ok(settings) => serve(settings).await,
            Err(error) => return configuration_error(&error),
        },
        Command::Demo => demo::run(startup::shutdown_signal()).await,
        Command::MockProvider(config) => match MockProvider::start(*config) {
            Ok(provider) => {
                provider.run_until(startup::shutdown_signal()).await;
                Ok(())
            }
            Err(error) => Err(error),
        },
        Command::Migrate => match config::database_url_from_env() {
            // Named: without DATABASE_URL it is the embedded default, not the database one meant.
            Ok(url) => startup::migrate(url.expose())
                .await
                .map(|database| log::info!("migrations applied to the {}", database.describe())),
            Err(error) => return configuration_error(&error),
        },
        Command::Openapi => ApiDoc::openapi()
            .to_pretty_json()
            .map_err(anyhow::Error::from)
            .and_then(|json| print_document(&json)),
        Command::Config(ConfigArgs { list: _ }) => {
            let listing = config::listing::by_subcommand(&Cli::command(), settings_read_by);
            serde_json::to_string_pretty(&listing)
                .map_err(anyhow::Error::from)
                .and_then(|json| print_document(&json))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The demo reads its settings as `serve` does, and exits as `serve` does on a bad one.
        Err(ref error) if let Some(bad) = error.downcast_ref::<config::ConfigError>() => configuration_error(bad),
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `document` to stdout. A reader that stops early (`| head`, `| diff -q`) is no failure: `println!`
/// would panic on the closed pipe.
fn print_document(document: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{document}").and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(error).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// The one line that names the bad variable, and exit code 2.
fn configuration_error(error: &config::ConfigError) -> ExitCode {
    eprintln!("configuration error: {error}");
    ExitCode::from(2)
}

/// The settings a subcommand reads (its flags' variables come from its clap definition).
fn settings_read_by(subcommand: &str) -> Vec<Variable> {
    match subcommand {
        "serve" => VARIABLES.to_vec(),
        "demo" => demo::variables(),
        "migrate" => config::variables_named(&["DATABASE_URL"]),
        _ => Vec::new(),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = startup::Application::build(settings).await?;
    app.run_until(startup::shutdown_signal()).await
}
