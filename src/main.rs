//! The `witty-bff` command: parses the command line and runs what it names.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use witty_bff::simulator::{self, SimConfig};

#[derive(Parser, Debug)]
#[command(name = "witty-bff", version, about = "GraphQL BFF for the Witty-Home cloud API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,witty_bff=info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Simulate { listen, api_key, command_delay_ms, seed }) => {
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let config = SimConfig {
                api_key,
                seed,
                command_delay: Duration::from_millis(command_delay_ms),
                ..SimConfig::default()
            };
            println!("Witty-Home simulator on http://{}", listener.local_addr()?);
            println!("  subscription key: {}", config.api_key);
            println!("  OpenAPI: http://{}/openapi.json", listener.local_addr()?);
            simulator::serve(listener, config, shutdown_signal()).await?;
        }
        None => anyhow::bail!("the GraphQL server is not built yet; try `witty-bff simulate`"),
    }
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
}
