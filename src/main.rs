//! The flightdeck binary: parse flags, set up logging, bind, run. Everything else is the library.

use std::process::ExitCode;

use clap::Parser;
use flightdeck::config::{Cli, Command, Config, ServeArgs};

/// The allocator: jemalloc. redb's page cache holds its pages as 4 KiB blocks, allocated and freed
/// on every commit once the cache is full. glibc's malloc slows down as that heap fragments: at a
/// million artifacts its free-list walks were the largest part of what a durable write costs more
/// than on an empty database (BENCHMARKS.md). jemalloc serves those blocks from per-size slabs and
/// returns freed pages to the system after a decay time; mimalloc, also measured, was as fast but
/// held 60 % more memory per idle WebSocket connection. A cached page takes a 5 KiB block here
/// (4 KiB and its reference counts), which `store` allows for in the page cache's size.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (jemalloc's weak `malloc_conf`, overridden here).
///
/// `oversize_threshold`: allocations of 128 KiB and more (request bodies, artifact contents, their
/// encodings and cached responses) come from jemalloc's dedicated arena for large extents, which
/// returns them to the system when they are freed. By default only allocations over 8 MiB do;
/// smaller large extents stay resident in the arena that freed them until its decay time passes and
/// that arena allocates again, so with one arena per pair of threads, reading back 1,200 artifacts
/// of 0.9 MB left 100–190 MiB resident beyond the page and response caches (`clients.rs`'s memory
/// budget test; BENCHMARKS.md). Small allocations, the bulk of the work, are unchanged.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 26] = b"oversize_threshold:131072\0";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One clear line, not a page of usage.
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("flightdeck: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Some(Command::Check(args)) => check(&args.data_dir),
        Some(Command::Backup(args)) => one_line(
            flightdeck::store::backup_database(&args.data_dir, &args.to)
                .map(|n| format!("wrote {} ({n} entries)", args.to.display())),
        ),
        Some(Command::Restore(args)) => one_line(
            flightdeck::store::restore_database(&args.from, &args.data_dir, args.force).map(|r| {
                format!(
                    "restored {} into {}: {} records, {} index entries, {} events, consistent",
                    args.from.display(),
                    args.data_dir.display(),
                    r.records,
                    r.index_entries,
                    r.events
                )
            }),
        ),
        Some(Command::Compact(args)) => one_line(
            flightdeck::store::compact_database(&args.data_dir)
                .map(|(before, after)| format!("compacted: {before} bytes -> {after} bytes")),
        ),
        Some(Command::Bench(args)) => bench(&args.args),
        Some(Command::Serve(args)) => serve(&args),
        None => serve(&cli.serve),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flightdeck: {e}");
            return ExitCode::from(2);
        }
    };
    flightdeck::logging::init(config.log_format);
    if let Some(limit) = flightdeck::server::raise_open_files_limit() {
        tracing::debug!(limit, "open-files limit");
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listener = match flightdeck::server::listen(config.listen, config.listen_backlog) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("flightdeck: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(%addr, data_dir = %config.store.data_dir.display(), "flightdeck starting");
        // Tests and scripts read the bound address from this one stdout line.
        println!("listening on {addr}");
        match flightdeck::server::run(listener, config, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flightdeck: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The multi-thread runtime, or the exit code after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("flightdeck: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `flightdeck bench …` hands over to the `flightdeck-bench` executable beside this one (the
/// benchmark is not part of the server).
fn bench(args: &[String]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("flightdeck-bench"),
        Err(e) => {
            eprintln!("flightdeck: bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    use std::os::unix::process::CommandExt;
    let error = std::process::Command::new(&exe).args(args).exec();
    eprintln!(
        "flightdeck: bench: cannot run {}: {error} (build it: cargo build --release --bin flightdeck-bench)",
        exe.display()
    );
    ExitCode::FAILURE
}

fn check(data_dir: &std::path::Path) -> ExitCode {
    match flightdeck::store::check_database(data_dir) {
        Ok(report) => {
            println!(
                "checked {} records, {} index entries, {} events",
                report.records, report.index_entries, report.events
            );
            if report.log_pending > 0 {
                println!(
                    "the write-ahead log holds {} records the database does not yet: the next \
                     start replays them",
                    report.log_pending
                );
            }
            if report.is_consistent() {
                println!("consistent");
                ExitCode::SUCCESS
            } else {
                for problem in &report.problems {
                    println!("problem: {problem}");
                }
                println!("{} problems found", report.problems.len());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("flightdeck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the outcome of an offline command in one line; non-zero exit on failure.
fn one_line(outcome: Result<String, flightdeck::store::StoreError>) -> ExitCode {
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flightdeck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
