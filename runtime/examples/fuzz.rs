//! The open-ended fuzz mode (`scripts/fuzz` drives it): round-robin over the families, each
//! round a fresh seed and a time slice, until the time is up. A panic, an empty error or a slow
//! input is saved under `tests/fuzz/regressions/<family>/` and the run goes on; before every
//! input its bytes are written to `tests/fuzz/.inflight/`, so when an input aborts the process
//! (or a watchdog finds it hung) `scripts/fuzz` saves it from there and restarts.
//!
//!     cargo run --profile fuzz -p qgc-runtime --example fuzz -- [--minutes M] [--slice S]
//!         [--seed N] [--log FILE] [FAMILY...]

use qgc_runtime::fuzz::{campaign, save_regression, Campaign, Context, Family, Stats};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An input still running after this long is a hang: the watchdog aborts the process.
const HANG: Duration = Duration::from_secs(120);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1)
}

fn usage(msg: &str) -> ! {
    eprintln!("error: {msg}\nusage: fuzz [--minutes M] [--slice SECONDS] [--seed N] [--log FILE] [FAMILY...]");
    eprintln!("families: {}", Family::ALL.map(|f| f.name()).join(", "));
    std::process::exit(2);
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mut minutes, mut slice, mut seed, mut log, mut families) = (10.0f64, 30u64, now_ms(), None, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match a.as_str() {
            "--minutes" => minutes = value("--minutes").parse().unwrap_or_else(|_| usage("--minutes: a number")),
            "--slice" => slice = value("--slice").parse().unwrap_or_else(|_| usage("--slice: seconds")),
            "--seed" => seed = value("--seed").parse().unwrap_or_else(|_| usage("--seed: a number")),
            "--log" => log = Some(PathBuf::from(value("--log"))),
            f => families.push(Family::from_name(f).unwrap_or_else(|| usage(&format!("no family {f:?}")))),
        }
    }
    if families.is_empty() {
        families = Family::ALL.to_vec();
    }
    // The same limits as the in-test pass: an allocation bomb aborts this process, not the machine.
    let cap = libc::rlimit { rlim_cur: 16 << 30, rlim_max: 16 << 30 };
    // SAFETY: setrlimit reads the struct we pass and changes only this process's limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) } != 0 {
        eprintln!("warning: could not cap the address space");
    }
    qgc_runtime::budget::set_limit(Some(2 << 30));

    let inflight = root.join("tests/fuzz/.inflight");
    std::fs::create_dir_all(&inflight).expect("tests/fuzz/.inflight");
    static STARTED: AtomicU64 = AtomicU64::new(0);
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_secs(5));
        let t = STARTED.load(Ordering::Relaxed);
        if t != 0 && now_ms().saturating_sub(t) > HANG.as_millis() as u64 {
            eprintln!("fuzz: an input has run for more than {} s: a hang; aborting", HANG.as_secs());
            std::process::abort();
        }
    });

    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let contexts: BTreeMap<Family, Context> =
        families.iter().map(|&f| (f, Context::new(&root).expect("scratch folder"))).collect();
    let mut totals: BTreeMap<Family, (Stats, u64)> = BTreeMap::new();
    let mut round = 0u64;
    while Instant::now() < end {
        for &family in &families {
            let until = (Instant::now() + Duration::from_secs(slice)).min(end);
            let cfg = Campaign {
                seed: seed.wrapping_add(round),
                iterations: u64::MAX,
                until: Some(until),
                deep_every: 10,
                slow: HANG,
            };
            let current = inflight.join("input.bin");
            std::fs::write(inflight.join("family"), family.name()).expect("inflight");
            let result = campaign(&contexts[&family], family, &cfg, |input| {
                let _ = std::fs::write(&current, input);
                STARTED.store(now_ms(), Ordering::Relaxed);
            });
            STARTED.store(0, Ordering::Relaxed);
            let entry = totals.entry(family).or_default();
            match result {
                Ok(s) => add(&mut entry.0, &s),
                Err(f) => {
                    entry.1 += 1;
                    let saved = save_regression(&root, family, &f.input);
                    eprintln!("fuzz: FAILURE {f}\n  saved as {saved:?}");
                }
            }
            if Instant::now() >= end {
                break;
            }
        }
        round += 1;
    }
    let _ = std::fs::remove_dir_all(&inflight);
    report(&totals, seed, log.as_deref());
}

fn add(total: &mut Stats, s: &Stats) {
    total.inputs += s.inputs;
    total.accepted += s.accepted;
    total.refused += s.refused;
    total.deep += s.deep;
    for (m, n) in &s.messages {
        *total.messages.entry(m.clone()).or_default() += n;
    }
}

fn report(totals: &BTreeMap<Family, (Stats, u64)>, seed: u64, log: Option<&Path>) {
    println!(
        "{:<18} {:>9} {:>7} {:>9} {:>9} {:>6} {:>9}",
        "family", "inputs", "deep", "taken", "refused", "kinds", "failures"
    );
    for (f, (s, failures)) in totals {
        println!(
            "{:<18} {:>9} {:>7} {:>9} {:>9} {:>6} {:>9}",
            f.name(),
            s.inputs,
            s.deep,
            s.accepted,
            s.refused,
            s.messages.len(),
            failures
        );
        if let Some(path) = log {
            let line = serde_json::json!({
                "family": f.name(), "seed": seed, "inputs": s.inputs, "deep": s.deep, "taken": s.accepted,
                "refused": s.refused, "kinds": s.messages.len(), "failures": failures,
            });
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
            if let Ok(mut file) = file {
                let _ = writeln!(file, "{line}");
            }
        }
    }
}
