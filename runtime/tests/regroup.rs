//! Regrouping a decode batch (what `qgc serve` does whenever sequences join or leave):
//! `Session::regroup` keeps some rows, adds single sequences, and every row goes on decoding
//! exactly as its sequence does alone; `Session::row` takes one row out as a single sequence;
//! `rows::split` / `rows::stack` + `restore` (the generic path) give the same batch.
//!
//! Reference: each sequence run alone in a batch-1 session (prefill, then decode). Decode is
//! batch-invariant, so rows must match their alone runs bit for bit.

mod cpu_common;
use cpu_common::tokens;
use qgc_ir::interp::MapWeights;
use qgc_ir::{lower, LowerOptions, Program, SpecFile};
use qgc_runtime::compiled::{CpuModel, CpuOptions};
use qgc_runtime::session::SavedState;
use qgc_runtime::{rows, Backend, Session};

struct Alone {
    /// State after `prompt` minus its last token (what a server holds before decode).
    state: SavedState,
    /// Tokens fed by decode: the prompt's last, then more.
    feed: Vec<i32>,
    /// Logits of each decode step.
    logits: Vec<Vec<f32>>,
}

fn alone(program: &Program, m: &CpuModel, vocab: usize, len: usize, seed: u64) -> Alone {
    let prompt = tokens(seed, len, vocab);
    let mut s = Session::with_backend(program.clone(), Backend::Cpu(m), vocab, usize::MAX, 1);
    if len > 1 {
        s.feed(&[prompt[..len - 1].to_vec()]).unwrap();
    }
    let state = s.saved().unwrap();
    let feed: Vec<i32> = [prompt[len - 1]].into_iter().chain(tokens(seed + 1000, 5, vocab)).collect();
    let logits = feed.iter().map(|&t| s.decode(&[t]).unwrap().as_f32().unwrap().to_vec()).collect();
    Alone { state, feed, logits }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn regrouped_rows_decode_as_their_sequences_alone() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/qwen3-next-tiny.json");
    let file: SpecFile = serde_json::from_str(&std::fs::read_to_string(root).unwrap()).unwrap();
    let spec = file.resolve().unwrap();
    let program = lower(&spec, &LowerOptions::default()).unwrap();
    let w = MapWeights::random(&spec, 5);
    let m = CpuModel::compile(&program, &w, CpuOptions::default()).unwrap();
    let vocab = spec.vocab_size;
    let seqs: Vec<Alone> =
        [7, 1, 30, 12].iter().enumerate().map(|(i, &l)| alone(&program, &m, vocab, l, i as u64 + 1)).collect();
    let mut batch = Session::with_backend(program.clone(), Backend::Cpu(&m), vocab, usize::MAX, 1);
    // Rows (sequence, next feed index).
    let mut rows: Vec<(usize, usize)> = Vec::new();
    let decode = |batch: &mut Session, rows: &mut Vec<(usize, usize)>| {
        let feed: Vec<i32> = rows.iter().map(|&(s, k)| seqs[s].feed[k]).collect();
        let out = batch.decode(&feed).unwrap();
        let v = out.as_f32().unwrap();
        for (r, (s, k)) in rows.iter_mut().enumerate() {
            let row = &v[r * vocab..(r + 1) * vocab];
            assert_eq!(bits(row), bits(&seqs[*s].logits[*k]), "sequence {s}, step {k}, row {r}");
            *k += 1;
        }
    };
    // Two join an empty batch; both decode.
    batch.regroup(&[], &[&seqs[0].state, &seqs[1].state]).unwrap();
    rows.extend([(0, 0), (1, 0)]);
    decode(&mut batch, &mut rows);
    // Row 0 leaves (taken out whole), a longer one joins: everyone is re-padded.
    let taken = batch.row(0).unwrap();
    assert_eq!(taken.position, 7, "the prompt's 6 tokens and one decoded");
    batch.regroup(&[1], &[&seqs[2].state]).unwrap();
    rows = vec![rows[1], (2, 0)];
    decode(&mut batch, &mut rows);
    // The one taken out comes back, and a fourth joins.
    batch.regroup(&[0, 1], &[&taken, &seqs[3].state]).unwrap();
    rows.extend([(0, 1), (3, 0)]);
    decode(&mut batch, &mut rows);
    decode(&mut batch, &mut rows);
    assert_eq!(batch.batch(), 4);
    // The generic path builds the same batch.
    let saved = batch.saved().unwrap();
    let split = rows::split(&program.state, &saved).unwrap();
    let order = [2usize, 0, 3, 1];
    let stacked = rows::stack(&program.state, &order.iter().map(|&i| &split[i]).collect::<Vec<_>>()).unwrap();
    let mut again = Session::with_backend(program.clone(), Backend::Cpu(&m), vocab, usize::MAX, 1);
    again.restore(stacked).unwrap();
    batch.regroup(&order, &[]).unwrap();
    let feed: Vec<i32> = order.iter().map(|&r| seqs[rows[r].0].feed[rows[r].1]).collect();
    let (a, b) = (batch.decode(&feed).unwrap(), again.decode(&feed).unwrap());
    assert_eq!(bits(a.as_f32().unwrap()), bits(b.as_f32().unwrap()));
    // Bad calls change nothing.
    assert!(batch.regroup(&[9], &[]).is_err());
    assert!(batch.regroup(&[], &[]).is_err());
    assert_eq!(batch.batch(), 4);
}
