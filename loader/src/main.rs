//! `cowrie-loader` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    startup::init_or_exit();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = cowrie_loader::cli::Cli::parse();
    std::process::exit(cowrie_loader::cli::run(cli).await);
}
