//! Batch invariance of decode on the compiled CPU backend: a sequence's decode logits are the
//! same bits whether it decodes alone (B = 1) or as one row of any batch, with any left padding,
//! beside any other rows, on any rayon pool size.
//!
//! - `decode_rows_equal_each_sequence_alone`: a random-weight hybrid model (gated DeltaNet and
//!   gated attention layers, two MoE shapes: 8 experts top-2, and 4 experts top-4 so every
//!   expert gets every token; hidden 600, head dim 76 with vector tails),
//!   f32 and bf16 weights. Each of 16 prompts (1..=64 tokens) is prefilled and decoded alone;
//!   its state after the prefill is then stacked with others' (KV left-padded with zeros to the
//!   longest row, the rest concatenated along the batch axis: written here from the state
//!   declarations, independently of the runtime's own regrouping) and restored into sessions of
//!   B in {2, 3, 5, 8, 16} rows, which decode the same tokens on the default pool and on one
//!   thread. Every row's logits must equal its alone logits bit for bit at every step.
//! - The kernel tests below check the same property per kernel for every M in 1..=64 (linear
//!   with each epilogue, f32 and bf16; the routed experts; attention over left-padded caches),
//!   each row against the kernel run on that row alone.
//!
//! The reference is the same program run on one sequence: what the batch must reproduce is
//! exactly the single-stream result, so no tolerance applies.

mod cpu_common;
use cpu_common::tokens;
use qgc_ir::interp::{MapWeights, Rng};
use qgc_ir::{lower, LowerOptions, ModelSpec, Program, SpecFile, StateDecl};
use qgc_runtime::compiled::{CpuModel, CpuOptions};
use qgc_runtime::cpu::{detected_level, set_level, Level, WeightRef};
use qgc_runtime::session::{grow_axis, SavedState};
use qgc_runtime::weights::{Bf16Weights, RawWeights};
use qgc_runtime::{Backend, Session, Tensor};
use std::collections::BTreeMap;

/// A small hybrid model: gated DeltaNet and gated attention layers over two MoE shapes.
const SPEC: &str = include_str!("cpu_common/hybrid_moe.json");

/// Prompt lengths: 1 token (prefill is all decode), short ones below the conv kernel, lengths
/// around the 32-key attention block and the 8-token GDN chunk threshold, and 64.
const LENS: [usize; 16] = [1, 2, 3, 5, 7, 9, 12, 17, 23, 31, 32, 33, 38, 40, 45, 64];
/// The order rows are taken in for a batch of B: the first B entries (longest and shortest
/// first, so every batch has the most padding).
const ROWS: [usize; 16] = [15, 0, 7, 3, 12, 1, 9, 5, 14, 2, 11, 6, 13, 4, 10, 8];
const BATCHES: [usize; 5] = [2, 3, 5, 8, 16];
const DECODES: usize = 4;

fn spec() -> ModelSpec {
    let file: SpecFile = serde_json::from_str(SPEC).expect("spec JSON");
    file.resolve().expect("valid spec")
}

/// One sequence run alone: its state after the prompt and its logits at every decode step.
struct Alone {
    position: usize,
    state: BTreeMap<String, Tensor>,
    decode_tokens: Vec<i32>,
    logits: Vec<Vec<f32>>,
}

fn session<'w>(program: &Program, model: &'w CpuModel<'w>, vocab: usize, batch: usize) -> Session<'w> {
    Session::with_backend(program.clone(), Backend::Cpu(model), vocab, usize::MAX, batch)
}

fn alone(program: &Program, model: &CpuModel, vocab: usize, seq: usize) -> Alone {
    let prompt = tokens(100 + seq as u64, LENS[seq], vocab);
    let decode_tokens = tokens(900 + seq as u64, DECODES, vocab);
    let mut s = session(program, model, vocab, 1);
    s.prefill_last(&[prompt]).expect("prefill");
    let (position, state) = (s.position(), s.state().expect("state"));
    assert_eq!(position, LENS[seq]);
    let logits =
        decode_tokens.iter().map(|&t| s.decode(&[t]).expect("decode").as_f32().expect("f32 logits").to_vec()).collect();
    Alone { position, state, decode_tokens, logits }
}

/// The batch axis of a state declaration (the dimension with a `B` term).
fn batch_axis(d: &StateDecl) -> usize {
    d.ty.shape.iter().position(|x| x.coeffs[0] != 0).unwrap_or_else(|| panic!("{} has no batch axis", d.name))
}

/// The state of `rows` as one batch at `p` cache slots: tensors that grow (KV caches) are
/// left-padded with zeros along their length axis from the row's own length to `p`, then every
/// tensor is concatenated along its batch axis.
fn stack(decls: &[StateDecl], rows: &[&Alone], p: usize) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for d in decls {
        assert_eq!(batch_axis(d), 0, "{}: the stacking below assumes the batch axis first", d.name);
        let mut data = Vec::new();
        let mut shape = Vec::new();
        for r in rows {
            let t = &r.state[&d.name];
            let v = t.as_f32().unwrap_or_else(|| panic!("{} is not f32", d.name));
            assert_eq!(t.shape[0], 1, "{}: a single sequence's state", d.name);
            shape = t.shape.clone();
            match grow_axis(&d.ty) {
                None => data.extend_from_slice(v),
                Some(g) => {
                    assert_eq!(t.shape[g], r.position, "{}: length axis", d.name);
                    let outer: usize = t.shape[1..g].iter().product();
                    let inner: usize = t.shape[g + 1..].iter().product();
                    for o in 0..outer {
                        data.extend(std::iter::repeat_n(0.0, (p - r.position) * inner));
                        data.extend_from_slice(&v[o * r.position * inner..][..r.position * inner]);
                    }
                    shape[g] = p;
                }
            }
        }
        shape[0] = rows.len();
        out.insert(d.name.clone(), Tensor::f32(shape, data));
    }
    out
}

/// Decodes `rows` together from their stacked states; returns the first mismatch with their
/// alone logits, if any.
fn batch_mismatch(program: &Program, model: &CpuModel, vocab: usize, rows: &[&Alone]) -> Option<String> {
    let p = rows.iter().map(|r| r.position).max().expect("rows");
    let saved = SavedState {
        position: p,
        padding: rows.iter().map(|r| p - r.position).collect(),
        state: stack(&program.state, rows, p),
        mtp_position: 0,
        mtp_state: BTreeMap::new(),
    };
    let mut s = session(program, model, vocab, rows.len());
    s.restore(saved).expect("restore the stacked state");
    for step in 0..DECODES {
        let toks: Vec<i32> = rows.iter().map(|r| r.decode_tokens[step]).collect();
        let l = s.decode(&toks).expect("batch decode");
        for (b, (got, r)) in l.as_f32().expect("f32 logits").chunks(vocab).zip(rows).enumerate() {
            let want = &r.logits[step];
            let differ = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            if differ > 0 {
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                return Some(format!(
                    "row {b} (length {}, padding {}) at decode step {step}: {differ} of {vocab} logits differ, \
                     largest by {worst:e}",
                    r.position,
                    p - r.position
                ));
            }
        }
    }
    None
}

/// Every batch of [`BATCHES`] on the current pool, against `alone`; the mismatches found.
fn batches_mismatch(what: &str, program: &Program, w: &dyn RawWeights, vocab: usize, alone: &[Alone]) -> Vec<String> {
    // Compiled here, so the model (not `Sync`) lives on the pool's side.
    let model = CpuModel::compile(program, w, CpuOptions::default()).expect("compile");
    let threads = rayon::current_num_threads();
    let mut failures = Vec::new();
    for b in BATCHES {
        let rows: Vec<&Alone> = ROWS[..b].iter().map(|&i| &alone[i]).collect();
        if let Some(m) = batch_mismatch(program, &model, vocab, &rows) {
            failures.push(format!("{what}, B={b}, {threads} thread(s): {m}"));
        }
    }
    failures
}

/// Every batch against every sequence alone, at every SIMD level, on the default pool and on
/// one thread.
fn model_mismatch<W: RawWeights + Sync>(what: &str, program: &Program, w: &W, vocab: usize) -> Vec<String> {
    let model = CpuModel::compile(program, w, CpuOptions::default()).expect("compile");
    let mut failures = Vec::new();
    each_level(|lv| {
        let what = format!("{what}, {lv:?}");
        let alone: Vec<Alone> = (0..LENS.len()).map(|i| alone(program, &model, vocab, i)).collect();
        failures.extend(batches_mismatch(&what, program, w, vocab, &alone));
        if rayon::current_num_threads() != 1 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
            failures.extend(pool.install(|| batches_mismatch(&what, program, w, vocab, &alone)));
        }
    });
    failures
}

#[test]
fn decode_rows_equal_each_sequence_alone() {
    let _g = lock();
    let spec = spec();
    let program = lower(&spec, &LowerOptions::default()).expect("lower");
    let v = spec.vocab_size;
    let mut failures = model_mismatch("f32 weights", &program, &MapWeights::random(&spec, 7), v);
    failures.extend(model_mismatch("bf16 weights", &program, &Bf16Weights::random(&spec, 8), v));
    assert!(failures.is_empty(), "batch decode differs from decoding alone:\n{}", failures.join("\n"));
}

#[test]
fn the_stacked_state_restores_what_each_row_holds() {
    // The stacking helper itself: rows of different lengths come back from a restored session
    // with their own values after their padding (KV), zeros before it, the rest as they were.
    let _g = lock();
    let spec = spec();
    let program = lower(&spec, &LowerOptions::default()).expect("lower");
    let w = MapWeights::random(&spec, 3);
    let model = CpuModel::compile(&program, &w, CpuOptions::default()).expect("compile");
    let v = spec.vocab_size;
    let rows = [alone(&program, &model, v, 2), alone(&program, &model, v, 6)];
    let refs: Vec<&Alone> = rows.iter().collect();
    let p = LENS[6];
    let mut s = session(&program, &model, v, 2);
    let state = stack(&program.state, &refs, p);
    s.restore(SavedState { position: p, padding: vec![p - LENS[2], 0], state, ..SavedState::default() }).unwrap();
    assert_eq!(s.positions(), vec![LENS[2], LENS[6]]);
    let back = s.state().unwrap();
    for d in &program.state {
        let t = &back[&d.name];
        let per_row = t.numel() / 2;
        let data = t.as_f32().unwrap();
        for (b, r) in refs.iter().enumerate() {
            let row = &data[b * per_row..][..per_row];
            let own = r.state[&d.name].as_f32().unwrap();
            match grow_axis(&d.ty) {
                None => assert_eq!(row, own, "{} row {b}", d.name),
                Some(g) => {
                    // Per (head, ...) before the length axis: zeros, then the row's own entries.
                    let (len, inner): (usize, usize) = (r.position, t.shape[g + 1..].iter().product());
                    for (o, run) in row.chunks(p * inner).enumerate() {
                        let (pad, mine) = run.split_at((p - len) * inner);
                        assert!(pad.iter().all(|&x| x == 0.0), "{} row {b}: padding", d.name);
                        assert_eq!(mine, &own[o * len * inner..][..len * inner], "{} row {b}", d.name);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per kernel: every M in 1..=64 against each row alone, every SIMD level, 1 and 3 threads
// ---------------------------------------------------------------------------------------------

/// The SIMD level is process-wide: tests of this file run one at a time.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` at every SIMD level this CPU has, then restores the detected one.
fn each_level(mut f: impl FnMut(Level)) {
    for lv in [Level::Avx512, Level::Avx2, Level::Scalar] {
        if set_level(lv) == lv {
            f(lv);
        }
    }
    set_level(detected_level());
}

/// Runs `f` in rayon pools of 1 and 3 threads.
fn in_pools(f: impl Fn(usize) + Sync) {
    for threads in [1usize, 3] {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(|| f(threads));
    }
}

/// Panics unless `got` and `want` hold the same bits.
fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    let differ = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert!(got.len() == want.len() && differ == 0, "{what}: {differ} of {} values differ", want.len());
}

fn bf16s(v: &[f32]) -> Vec<half::bf16> {
    v.iter().map(|&x| half::bf16::from_f32(x)).collect()
}

#[test]
fn linear_rows_do_not_depend_on_the_row_count() {
    use qgc_runtime::cpu::linear::{linear_invariant, Epilogue, GEMM_MIN_ROWS};
    let _g = lock();
    // From GEMM_MIN_ROWS rows `linear` switches to the panel GEMM, whose order differs from the
    // GEMV's: the invariant path must never take that switch.
    const { assert!(GEMM_MIN_ROWS < 64) };
    let mut rng = Rng::new(11);
    let n = 37;
    // Below one vector; a vector tail; above one 1024-column block, with a tail.
    for k in [5usize, 67, 1100] {
        let (x, wf) = (rng.vec(64 * k, -1.0, 1.0), rng.vec(2 * n * k, -0.5, 0.5));
        let wb = bf16s(&wf);
        let (gate, row_gate, res, y0) = (
            rng.vec(64 * n, -3.0, 3.0),
            rng.vec(64, -3.0, 3.0),
            rng.vec(64 * n, -1.0, 1.0),
            rng.vec(64 * n, -1.0, 1.0),
        );
        let epi = |e: usize, rows: std::ops::Range<usize>| match e {
            0 => Epilogue::Plain,
            1 => Epilogue::SwiGlu,
            2 => Epilogue::SigmoidGate(&gate[rows.start * n..rows.end * n]),
            3 => Epilogue::SigmoidGate(&row_gate[rows]),
            4 => Epilogue::Residual(&res[rows.start * n..rows.end * n]),
            _ => Epilogue::Accumulate(0.75),
        };
        let ms: Vec<usize> =
            if k > 1000 { vec![1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 32, 33, 63, 64] } else { (1..=64).collect() };
        each_level(|lv| {
            for (dt, w) in [("f32", WeightRef::F32(&wf)), ("bf16", WeightRef::Bf16(&wb))] {
                for e in 0..6 {
                    let w = if e == 1 { w } else { w.slice(0, n * k) };
                    let mut alone = y0.clone();
                    for i in 0..64 {
                        linear_invariant(&x[i * k..][..k], w, 1, k, n, epi(e, i..i + 1), &mut alone[i * n..][..n]);
                    }
                    in_pools(|threads| {
                        for &m in &ms {
                            let mut y = y0[..m * n].to_vec();
                            linear_invariant(&x[..m * k], w, m, k, n, epi(e, 0..m), &mut y);
                            same_bits(
                                &format!("{lv:?} {dt} epilogue {e} K={k} M={m}, {threads} threads"),
                                &y,
                                &alone[..m * n],
                            );
                        }
                    });
                }
            }
        });
    }
}

#[test]
fn expert_rows_do_not_depend_on_the_batch() {
    use qgc_runtime::cpu::moe::{moe_experts_ordered, ExpertDims, MoeScratch, Routing, PANEL_MIN_ROWS};
    use qgc_runtime::cpu::RowOrder;
    let _g = lock();
    // With 4 experts top-4 every expert gets all T tokens, so from PANEL_MIN_ROWS tokens
    // `moe_experts` switches to the panel path: the invariant path must never take that switch.
    const { assert!(PANEL_MIN_ROWS < 64) };
    let mut rng = Rng::new(12);
    let (h, i) = (70usize, 24usize);
    // Few tokens per expert, and every expert getting every token (4 of 4).
    for (ne, top_k) in [(8usize, 2usize), (4, 4)] {
        let dims = ExpertDims { experts: ne, hidden: h, inter: i, top_k };
        let (x, gu, dn) =
            (rng.vec(64 * h, -1.0, 1.0), rng.vec(ne * 2 * i * h, -0.3, 0.3), rng.vec(ne * h * i, -0.3, 0.3));
        let (gub, dnb) = (bf16s(&gu), bf16s(&dn));
        let mut experts = Vec::new();
        for _ in 0..64 {
            let mut e: Vec<i32> = (0..ne as i32).collect();
            for j in 0..top_k {
                let pick = j + rng.below(ne - j);
                e.swap(j, pick);
            }
            experts.extend_from_slice(&e[..top_k]);
        }
        let weights = rng.vec(64 * top_k, 0.05, 1.0);
        each_level(|lv| {
            for (dt, gu, dn) in [
                ("f32", WeightRef::F32(&gu), WeightRef::F32(&dn)),
                ("bf16", WeightRef::Bf16(&gub), WeightRef::Bf16(&dnb)),
            ] {
                let mut scratch = MoeScratch::new();
                let mut alone = vec![0.0f32; 64 * h];
                for t in 0..64 {
                    let (w, e) = (&weights[t * top_k..][..top_k], &experts[t * top_k..][..top_k]);
                    let routing = Routing { weights: w, experts: e };
                    let out = &mut alone[t * h..][..h];
                    moe_experts_ordered(
                        RowOrder::Invariant,
                        &x[t * h..][..h],
                        1,
                        routing,
                        (gu, dn),
                        dims,
                        &mut scratch,
                        out,
                    )
                    .unwrap();
                }
                in_pools(|threads| {
                    let mut scratch = MoeScratch::new();
                    for t in 1..=64 {
                        let mut out = vec![0.0f32; t * h];
                        let routing = Routing { weights: &weights, experts: &experts };
                        let x = &x[..t * h];
                        moe_experts_ordered(RowOrder::Invariant, x, t, routing, (gu, dn), dims, &mut scratch, &mut out)
                            .unwrap();
                        same_bits(
                            &format!("{lv:?} {dt} {ne} experts top-{top_k}, T={t}, {threads} threads"),
                            &out,
                            &alone[..t * h],
                        );
                    }
                });
            }
        });
    }
}

#[test]
fn attention_rows_do_not_depend_on_padding_or_batch() {
    use qgc_runtime::cpu::attention::{attention, AttnDims};
    use qgc_runtime::cpu::HeadLayout;
    let _g = lock();
    let mut rng = Rng::new(13);
    let (nq, nkv, d, dv) = (8usize, 2usize, 76usize, 24usize);
    // Rows' tokens before the new one; 0 (only itself), one 32-key block and a bit, several.
    let lens = [33usize, 0, 5, 64, 31, 32, 1, 90, 7, 40, 12, 63, 2, 17, 45, 9];
    let keys: Vec<Vec<f32>> = lens.iter().map(|&l| rng.vec(nkv * (l + 1) * d, -1.0, 1.0)).collect();
    let vals: Vec<Vec<f32>> = lens.iter().map(|&l| rng.vec(nkv * (l + 1) * dv, -1.0, 1.0)).collect();
    let qs: Vec<Vec<f32>> = lens.iter().map(|_| rng.vec(nq * d, -2.0, 2.0)).collect();
    let scale = 1.0 / (d as f32).sqrt();
    each_level(|lv| {
        let alone: Vec<Vec<f32>> = (0..lens.len())
            .map(|r| {
                let (l, mut out) = (lens[r], vec![0.0f32; nq * dv]);
                let dims = AttnDims { batch: 1, s: 1, q_heads: nq, kv_heads: nkv, d, dv, past: l, capacity: l + 1 };
                let ql = HeadLayout::dense(1, nq, d);
                attention(&qs[r], ql, &keys[r], &vals[r], dims, &[l as i32], scale, None, &mut out).unwrap();
                out
            })
            .collect();
        in_pools(|threads| {
            for b in 1..=lens.len() {
                let past = lens[..b].iter().copied().max().unwrap_or(0);
                let cap = past + 3;
                // Padding slots hold noise: masking, not zeros, must keep them out.
                let mut kc = rng_fill(b * nkv * cap * d, 7 + b as u64);
                let mut vc = rng_fill(b * nkv * cap * dv, 8 + b as u64);
                for r in 0..b {
                    let pad = past - lens[r];
                    for g in 0..nkv {
                        let n = lens[r] + 1;
                        kc[((r * nkv + g) * cap + pad) * d..][..n * d].copy_from_slice(&keys[r][g * n * d..][..n * d]);
                        vc[((r * nkv + g) * cap + pad) * dv..][..n * dv]
                            .copy_from_slice(&vals[r][g * n * dv..][..n * dv]);
                    }
                }
                let q: Vec<f32> = qs[..b].concat();
                let pos: Vec<i32> = lens[..b].iter().map(|&l| l as i32).collect();
                let dims = AttnDims { batch: b, s: 1, q_heads: nq, kv_heads: nkv, d, dv, past, capacity: cap };
                let mut out = vec![0.0f32; b * nq * dv];
                attention(&q, HeadLayout::dense(b, nq, d), &kc, &vc, dims, &pos, scale, None, &mut out).unwrap();
                for r in 0..b {
                    let what = format!("{lv:?} B={b} row {r} (padding {}), {threads} threads", past - lens[r]);
                    same_bits(&what, &out[r * nq * dv..][..nq * dv], &alone[r]);
                }
            }
        });
    });
}

/// `n` values in [-1, 1) from `seed`.
fn rng_fill(n: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).vec(n, -1.0, 1.0)
}

/// Not a test: a measurement, run by hand (`qgc bench` times one sequence only). Decode tok/s
/// at batch 1 and 16 on the `small` benchmark config (`../shared/bench/small`, or the directory
/// in `QGC_BENCH_MODEL`) with random bf16 weights: B prompts of 64 tokens through
/// `prefill_last`, then 24 greedy decode steps; the median step after the first two.
///
/// `cargo test --release -p qgc-runtime --test batch_invariance -- --ignored --nocapture decode_speed`
#[test]
#[ignore = "a measurement, not a check; run by hand with --release"]
fn decode_speed() {
    use qgc_runtime::cpu::bandwidth::median;
    use qgc_runtime::sampling::argmax;
    let dir = std::env::var_os("QGC_BENCH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/small"));
    let m = qgc_runtime::open_model(&dir, &LowerOptions::default()).expect("open the benchmark model");
    let w = Bf16Weights::random(&m.spec, 0);
    let model = CpuModel::compile(&m.program, &w, CpuOptions::default()).expect("compile");
    let v = m.spec.vocab_size;
    let batches: Vec<usize> = std::env::var("QGC_BENCH_BATCHES")
        .ok()
        .map(|s| s.split(',').map(|b| b.trim().parse().expect("batch sizes")).collect())
        .unwrap_or_else(|| vec![1, 16]);
    for b in batches {
        let mut s = session(&m.program, &model, v, b);
        let prompts: Vec<Vec<i32>> = (0..b).map(|i| tokens(i as u64 + 1, 64, v)).collect();
        let last = s.prefill_last(&prompts).expect("prefill");
        let mut next: Vec<i32> = last.iter().map(|l| argmax(l.as_f32().unwrap()) as i32).collect();
        let mut steps = Vec::new();
        for _ in 0..24 {
            let t0 = std::time::Instant::now();
            let l = s.decode(&next).expect("decode");
            steps.push(t0.elapsed().as_secs_f64());
            next = l.as_f32().unwrap().chunks(v).map(|r| argmax(r) as i32).collect();
        }
        let step = median(&mut steps[2..]);
        println!(
            "decode B={b:>2}: {:.1} ms/step, {:.1} tok/s ({} threads)",
            step * 1e3,
            b as f64 / step,
            rayon::current_num_threads()
        );
    }
}

/// Not a test: a measurement, run by hand. The matmul of decode at the `small` config's
/// vocabulary projection shape (K = 1024, N = 32768 of its 151936 rows), bf16 and f32: GFLOP/s
/// of `linear_invariant` (what decode runs at every M) next to `linear` (the panel GEMM from
/// `GEMM_MIN_ROWS` rows, which decode ran before it had to be batch-invariant; below that, the
/// same GEMV), interleaved, the fastest of 9 rounds of 3 calls. `QGC_BENCH_MS=1,16` picks the M.
///
/// `cargo test --release -p qgc-runtime --test batch_invariance -- --ignored --nocapture matmul_speed`
#[test]
#[ignore = "a measurement, not a check; run by hand with --release"]
fn matmul_speed() {
    use qgc_runtime::cpu::linear::{linear, linear_invariant, Epilogue};
    let (k, n) = (1024usize, 32768usize);
    // 64-byte aligned, as the runtime's arena and a memory-mapped checkpoint's tensors are.
    fn aligned<T: Copy + Default>(v: Vec<T>) -> (Vec<T>, usize) {
        let mut a = vec![T::default(); v.len() + 64];
        let off = a.as_ptr().align_offset(64);
        a[off..off + v.len()].copy_from_slice(&v);
        (a, off)
    }
    let (wf, of) = aligned((0..n * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect());
    let (wb, ob) = aligned(wf[of..of + n * k].iter().map(|&v| half::bf16::from_f32(v)).collect());
    let (x, ox) = aligned((0..64 * k).map(|i| ((i * 104729 % 997) as f32 - 498.0) * 1e-3).collect());
    let (wf, wb, x) = (&wf[of..of + n * k], &wb[ob..ob + n * k], &x[ox..ox + 64 * k]);
    let mut y = vec![0.0f32; 64 * n];
    let time = |f: &mut dyn FnMut()| {
        f();
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            f();
        }
        t0.elapsed().as_secs_f64() / 3.0
    };
    let ms: Vec<usize> = std::env::var("QGC_BENCH_MS")
        .ok()
        .map(|s| s.split(',').map(|b| b.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16, 32, 64]);
    for (name, w) in [("bf16", WeightRef::Bf16(wb)), ("f32", WeightRef::F32(wf))] {
        let bytes = match w {
            WeightRef::Bf16(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) },
            WeightRef::F32(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) },
        };
        let mut tr = f64::MAX;
        for _ in 0..5 {
            tr = tr.min(time(&mut || {
                std::hint::black_box(qgc_runtime::cpu::bandwidth::read_pass(bytes));
            }));
        }
        println!("{name}: read pass {:.2} ms", tr * 1e3);
        for &m in &ms {
            let (mut ti, mut tf) = (f64::MAX, f64::MAX);
            for _ in 0..9 {
                ti = ti.min(time(&mut || linear_invariant(x, w, m, k, n, Epilogue::Plain, &mut y)));
                tf = tf.min(time(&mut || linear(x, w, m, k, n, Epilogue::Plain, &mut y)));
            }
            let gf = 2.0 * (m * n * k) as f64 / 1e9;
            println!(
                "{name} M={m:>2}: invariant {:>6.2} ms {:>5.1} GFLOP/s | linear {:>6.2} ms {:>5.1} GFLOP/s",
                ti * 1e3,
                gf / ti,
                tf * 1e3,
                gf / tf
            );
        }
    }
}
