//! `cargo bench`: the whole blockcache-bench suite in short form (hot,
//! random, mixed, scan, devices, flush, big, the idle check), printing each table and
//! the goals. Arguments that do not start with `-` select entries by name:
//!
//! ```text
//! cargo bench --bench suite -- hot random
//! ```

fn main() -> std::process::ExitCode {
    // cargo passes `--bench`; anything else not starting with `-` is a filter.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    match blockcache_bench::suite::run(&filter) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("suite: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
