//! The `baton` binary: parse arguments, start tracing, hand over to the library.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = baton::cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,warp::filters::trace=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = baton::cli::run(cli).await?;
    std::process::exit(code);
}
