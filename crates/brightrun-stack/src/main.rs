//! `brightrun-stack up`: start the local Supabase-compatible stack in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use brightrun_stack::jwt::JwtSecret;
use brightrun_stack::{Stack, StackConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "brightrun-stack", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start PostgreSQL and the HTTP server; stop both on Ctrl-C or SIGTERM.
    Up {
        /// Keeps the cluster, the JWT secret and stored objects between runs.
        #[arg(long, env = "BRIGHTRUN_STACK_DATA")]
        data_dir: PathBuf,
        #[arg(
            long,
            env = "BRIGHTRUN_STACK_LISTEN",
            default_value = "127.0.0.1:54321"
        )]
        listen: SocketAddr,
        /// Overrides the secret kept in the data directory.
        #[arg(long, env = "BRIGHTRUN_STACK_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        /// Access-token lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        jwt_expiry: u64,
        /// Creates this user if missing, as EMAIL:PASSWORD.
        #[arg(long)]
        demo_user: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "brightrun_stack=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Up {
        data_dir,
        listen,
        jwt_secret,
        jwt_expiry,
        demo_user,
    } = Cli::parse().command;
    let config = StackConfig {
        data_dir: Some(data_dir.clone()),
        listen,
        jwt_secret: jwt_secret.map(JwtSecret::new),
        jwt_expiry: Duration::from_secs(jwt_expiry),
        ..StackConfig::default()
    };
    let stack = Stack::start(config).await?;
    let demo = match demo_user {
        Some(spec) => {
            let (email, password) = spec
                .split_once(':')
                .context("--demo-user wants EMAIL:PASSWORD")?;
            brightrun_stack::auth::ensure_user(stack.state(), email, password).await?;
            // Stored as GoTrue stores it: lowercased.
            Some(email.to_lowercase())
        }
        None => None,
    };
    // Local clients (the CLI, the app) find this stack and its public anon key here.
    let info = serde_json::json!({"url": stack.url(), "anon_key": stack.anon_key()});
    std::fs::write(
        data_dir.join("stack.json"),
        serde_json::to_vec_pretty(&info)?,
    )
    .context("writing stack.json")?;
    // stdout carries only what tools read; logs go to stderr.
    println!("API URL: {}", stack.url());
    println!("anon key: {}", stack.anon_key());
    println!("service_role key: {}", stack.service_role_key());
    println!("DB URL: {}", stack.database_url());
    if let Some(email) = demo {
        println!("demo user: {email}");
    }
    println!("ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping brightrun-stack");
    stack.shutdown().await
}
