//! Golden IR text: the lowered tiny model must print exactly as `tests/golden/*.qir`, so a change
//! in lowering is always a visible, reviewed diff. Update on purpose with `QGC_BLESS=1 cargo test
//! --test golden`.

mod common;

use qgc_ir::{lower, print, LowerOptions, ModelSpec};

fn check(model: &str, golden: &str) {
    let spec = ModelSpec::from_json(&std::fs::read_to_string(common::root().join(model)).unwrap()).unwrap();
    let p = lower(&spec, &LowerOptions::default()).unwrap();
    let text = format!("{}\n{}", print(&p.prefill), print(&p.decode));
    let path = common::root().join("tests/golden").join(golden);
    if std::env::var_os("QGC_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if text != want {
        let line = text.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{model}: IR differs from {golden} at line {}:\n  now:    {}\n  golden: {}\n(QGC_BLESS=1 to accept)",
            line + 1,
            text.lines().nth(line).unwrap_or("<end>"),
            want.lines().nth(line).unwrap_or("<end>")
        );
    }
}

#[test]
fn tiny_model_ir_is_golden() {
    check("models/qwen3-next-tiny.json", "qwen3-next-tiny.qir");
}
