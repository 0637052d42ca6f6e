//! The libFuzzer entry: one input of a family through [`qgc_runtime::fuzz::run`], whose
//! contract is `Ok` or a named error; a panic (libFuzzer reports it as a crash), an empty error
//! (turned into a panic here), an abort or a timeout is a finding.

use qgc_runtime::fuzz::{run, Context, Family};
use std::path::PathBuf;

thread_local! {
    static CTX: Context = {
        // libfuzzer-sys aborts on every panic from its hook, even one qgc catches at a
        // dependency's boundary (the tokenizers crate panics on some hostile files, and qgc
        // turns that into a named error). Keep the default hook: a panic that escapes the
        // target still aborts, from libfuzzer-sys's own catch_unwind around it.
        let _ = std::panic::take_hook();
        qgc_runtime::budget::set_limit(Some(2 << 30));
        Context::new(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")).expect("scratch folder")
    };
}

/// Runs `data` as an input of the family named `family`; panics on a finding.
pub fn one(family: &str, data: &[u8]) {
    let family = Family::from_name(family).expect("a family name");
    CTX.with(|ctx| {
        if let Err(m) = run(ctx, family, data, false) {
            assert!(!m.trim().is_empty(), "refused with an empty error");
        }
    });
}
