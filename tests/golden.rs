//! Golden IR text: the lowered tiny model must print exactly as `tests/golden/*.qir`, so a change
//! in lowering is always a visible, reviewed diff. Update on purpose with `QGC_BLESS=1 cargo test
//! --test golden`.

mod common;

use qgc_ir::{lower, print, LowerOptions, ModelSpec};

fn check(model: &str, golden: &str) {
    let spec = ModelSpec::from_json(&std::fs::read_to_string(common::root().join(model)).unwrap()).unwrap();
    let p = lower(&spec, &LowerOptions::default()).unwrap();
    let text = format!("{}\n{}", print(&p.prefill), print(&p.decode));
    common::assert_golden(&text, golden);
}

#[test]
fn tiny_model_ir_is_golden() {
    check("models/qwen3-next-tiny.json", "qwen3-next-tiny.qir");
}
