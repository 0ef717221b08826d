//! The `baton` binary: parse arguments, start tracing, hand over to the library.

/// jemalloc, not glibc's malloc: under the controller's load (many threads,
/// Jobs decoded and dropped all the time) glibc's arenas kept much of what was
/// freed. `make bench`, 3,000 finished + 300 running Jobs (36.5 MiB peak heap
/// by heaptrack): peak RSS 79.8 → 70.6 MiB, CPU 46 → 37 s
/// (bench/results/2026-12-03-memory.md).
///
/// Its settings are built in (`.cargo/config.toml`): one arena, not four per
/// core (a few threads spread over many arenas each kept its own partly used
/// pages), and freed pages handed back after 1 s rather than 10, by jemalloc's
/// own thread. Same binary, 3,000 finished + 300 running Jobs: peak RSS 68.6 →
/// 60.4 MiB, after 61.0 → 49.1 MiB, CPU 59.1 → 62.6 s
/// (bench/results/2026-12-03-retained.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = baton::cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,warp::filters::trace=warn".into());
    // One line per event; BATON_LOG_FORMAT=json for machines.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("BATON_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let code = baton::cli::run(cli).await?;
    std::process::exit(code);
}
