//! The `witty-bff` command: parses the command line, initialises logging, builds the app and runs
//! it until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use witty_bff::app::App;
use witty_bff::config::Config;
use witty_bff::simulator::{self, SimConfig};

#[derive(Parser, Debug)]
#[command(name = "witty-bff", version, about = "GraphQL backend-for-frontend for the Witty-Home cloud API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve GraphQL (the default).
    Serve,
    /// Run the embedded Witty-Home simulator alone.
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// The Ocp-Apim-Subscription-Key the simulator accepts.
        #[arg(long, default_value = simulator::DEV_API_KEY)]
        api_key: String,
        /// Milliseconds a station takes to apply a command after answering 202.
        #[arg(long, default_value_t = 1000)]
        command_delay_ms: u64,
        /// Seed of the generated history.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Print a token for a user (signed with the configured HS secret, or the dev secret).
    Token {
        /// The user (`sub`); the simulator's seeded users are alice, bob, dieter (owners), ivan and
        /// erin (installers).
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600, value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Ask the server on the configured listen address for `/healthz`: exit 0 when it answers 200
    /// (for a container's HEALTHCHECK), 1 otherwise.
    Healthcheck {
        /// Another path to ask (the simulator alone answers `/openapi.json`).
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = witty_bff::telemetry::init(cli.config.log_format)?;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Simulate { listen, api_key, command_delay_ms, seed } => {
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            let config = SimConfig {
                api_key,
                seed,
                command_delay: Duration::from_millis(command_delay_ms),
                ..SimConfig::default()
            };
            println!("Witty-Home simulator on http://{addr}");
            println!("  subscription key (Ocp-Apim-Subscription-Key): {}", config.api_key);
            println!("  OpenAPI description: http://{addr}/openapi.json");
            println!("  seeded users: http://{addr}/_sim/users");
            simulator::serve(listener, config, shutdown_signal()).await?;
            Ok(())
        }
        Command::Token { sub, ttl } => {
            let secret = cli
                .config
                .effective_jwt_secret()
                .context("no HS secret configured: set WITTY_BFF_JWT_SECRET to mint tokens")?;
            let token = witty_bff::mint_dev_token(
                &secret,
                &sub,
                ttl,
                cli.config.jwt_issuer.as_deref(),
                cli.config.jwt_audience.as_deref(),
            );
            println!("{token}");
            Ok(())
        }
        Command::Schema => {
            print!("{}", witty_bff::sdl());
            Ok(())
        }
        Command::Healthcheck { path } => healthcheck(cli.config.listen, &path).await,
    };
    // The last spans are sent before the process exits; the flush blocks on the runtime's tasks.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

/// `GET {path}` on `listen` (on loopback when it is every interface), within 2 seconds.
async fn healthcheck(listen: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let url = format!("http://{addr}/{}", path.trim_start_matches('/'));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let status = client.get(&url).send().await.with_context(|| format!("no answer from {url}"))?.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let addr = app.addr();
    println!("witty-bff serving GraphQL on http://{addr}/graphql");
    println!("  GraphiQL: http://{addr}/graphiql");
    println!("  dashboard: http://{addr}/");
    if let Some(url) = app.simulator_url() {
        println!("  upstream: the embedded Witty-Home simulator at {url}");
        if let Some(token) = app.token_for("alice", 12 * 3600) {
            println!("\nA dev token for the seeded owner 'alice' (valid 12 h), already filled in GraphiQL:\n");
            println!("  Authorization: Bearer {token}\n");
        }
        println!("Try the dashboard query GraphiQL opens with, or:\n");
        println!(
            "  curl -s http://{addr}/graphql -H 'content-type: application/json' -H \"Authorization: Bearer $TOKEN\" \\\n    -d '{{\"query\":\"{{ installations {{ id name chargingStations {{ friendlyName chargeMode availability }} }} }}\"}}'\n"
        );
    }
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
