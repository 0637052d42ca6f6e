//! Ragged batches: sequences of different lengths, left-padded by `Session::prefill_ragged` and
//! then decoded together, give every sequence exactly what it gets alone (qwen3-next.md §3.12),
//! on every fixture, for both GDN prefill forms, through the MTP block too, and against HF's
//! greedy generation.

mod common;

use common::{fixture, fixtures, reference, rel_err};
use qgc_ir::LowerOptions;
use qgc_runtime::weights::{self, Checkpoint, Weights};
use qgc_runtime::Tensor;
use qgc_runtime::{open_model, Model, Session};
use std::path::Path;

const TOL: f64 = 1e-5;
const DECODES: usize = 10;

fn open(dir: &Path, opts: &LowerOptions) -> (Model, Weights) {
    let m = open_model(dir, opts).unwrap();
    let ckpt = Checkpoint::open(dir).unwrap();
    weights::check(&m.spec, &ckpt).unwrap();
    (m, Weights::new(ckpt))
}

/// A session without a position limit (HF's default RoPE has none either).
fn session<'w>(m: &Model, w: &'w Weights, batch: usize) -> Session<'w> {
    Session::new(m.program.clone(), w, m.spec.vocab_size, usize::MAX, batch)
}

/// `n` deterministic pseudo-random token ids below `vocab`.
fn tokens(seed: u64, n: usize, vocab: usize) -> Vec<i32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as i32
        })
        .collect()
}

/// Each sequence's logits `[len_b + DECODES, V]` (flattened) when the first `lens[b]` tokens of
/// `seqs[b]` are prefilled together and the rest decoded together one at a time.
fn batched(m: &Model, w: &Weights, seqs: &[Vec<i32>], lens: &[usize]) -> Vec<Vec<f32>> {
    let mut s = session(m, w, seqs.len());
    let prompts: Vec<Vec<i32>> = seqs.iter().zip(lens).map(|(t, &n)| t[..n].to_vec()).collect();
    let first = s.prefill_ragged(&prompts).unwrap();
    let mut rows: Vec<Vec<f32>> = first.iter().map(|t| t.as_f32().unwrap().to_vec()).collect();
    for (b, t) in first.iter().enumerate() {
        assert_eq!(t.shape, vec![lens[b], m.spec.vocab_size], "row {b}");
    }
    for step in 0..DECODES {
        let next: Vec<i32> = seqs.iter().zip(lens).map(|(t, &n)| t[n + step]).collect();
        let l = s.decode(&next).unwrap();
        let v = l.shape[2];
        rows.iter_mut().zip(l.as_f32().unwrap().chunks(v)).for_each(|(r, x)| r.extend_from_slice(x));
    }
    let want: Vec<usize> = lens.iter().map(|n| n + DECODES).collect();
    assert_eq!(s.positions(), want);
    assert_eq!(s.position(), lens.iter().max().unwrap() + DECODES);
    rows
}

/// The same as [`batched`] for one sequence on its own (B = 1, no padding).
fn alone(m: &Model, w: &Weights, seq: &[i32], len: usize) -> Vec<f32> {
    let mut s = session(m, w, 1);
    let mut out = s.prefill(&[seq[..len].to_vec()]).unwrap().as_f32().unwrap().to_vec();
    for &t in &seq[len..len + DECODES] {
        out.extend_from_slice(s.decode(&[t]).unwrap().as_f32().unwrap());
    }
    out
}

#[test]
fn ragged_batch_rows_equal_each_sequence_alone() {
    // 70 > one 64-token GDN chunk; 1 and 2 are shorter than every fixture's conv kernel (≤ 4).
    let lens = [37, 1, 70, 5, 2];
    for dir in fixtures() {
        for (form, opts) in
            [("chunked", LowerOptions::default()), ("recurrent", LowerOptions { gdn_prefill_chunk: None })]
        {
            let (m, w) = open(&dir, &opts);
            let seqs: Vec<Vec<i32>> =
                lens.iter().enumerate().map(|(b, &n)| tokens(b as u64, n + DECODES, m.spec.vocab_size)).collect();
            let rows = batched(&m, &w, &seqs, &lens);
            for (b, row) in rows.iter().enumerate() {
                let e = rel_err(row, &alone(&m, &w, &seqs[b], lens[b]));
                eprintln!("{}: {form}: row {b} (prompt {}): rel {e:.2e}", dir.display(), lens[b]);
                assert!(e <= TOL, "{}: {form}: row {b} (prompt {}): rel {e:.3e}", dir.display(), lens[b]);
            }
        }
    }
}

#[test]
fn a_corrupted_row_differs_and_only_that_row() {
    let dir = fixture("hybrid-3to1");
    let (m, w) = open(&dir, &LowerOptions::default());
    let lens = [5, 37, 70];
    let seqs: Vec<Vec<i32>> =
        lens.iter().enumerate().map(|(b, &n)| tokens(100 + b as u64, n + DECODES, m.spec.vocab_size)).collect();
    let mut bad = seqs.clone();
    bad[1][3] = (bad[1][3] + 1) % m.spec.vocab_size as i32;
    let rows = batched(&m, &w, &bad, &lens);
    for (b, row) in rows.iter().enumerate() {
        let e = rel_err(row, &alone(&m, &w, &seqs[b], lens[b]));
        if b == 1 {
            assert!(e > 1e-2, "row 1 was corrupted but matches: rel {e:.3e}");
        } else {
            assert!(e <= TOL, "row {b}: rel {e:.3e}");
        }
    }
}

/// Greedy generation for a left-padded prompt in a batch reproduces HF's `generate` ids.
#[test]
fn ragged_greedy_generation_matches_hf() {
    for dir in fixtures() {
        let r = reference(&dir);
        let (m, w) = open(&dir, &LowerOptions::default());
        let v = m.spec.vocab_size;
        let prompts = vec![tokens(7, 3, v), r.gen_prompt.clone(), tokens(8, 20, v)];
        let mut s = session(&m, &w, prompts.len());
        let argmax = |row: &[f32]| row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b }) as i32;
        let first = s.prefill_ragged(&prompts).unwrap();
        let mut next: Vec<i32> = first.iter().map(|t| argmax(&t.as_f32().unwrap()[(t.shape[0] - 1) * v..])).collect();
        let mut ids = vec![next[1]];
        for _ in 1..r.gen_ids.len() {
            let l = s.decode(&next).unwrap();
            next = l.as_f32().unwrap().chunks(v).map(argmax).collect();
            ids.push(next[1]);
        }
        assert_eq!(ids, r.gen_ids, "{}", dir.display());
    }
}

/// Rows `from..to` of row `b` of a `[B, S, H]` tensor, as `[1, to-from, H]`.
fn rows(t: &Tensor, b: usize, from: usize, to: usize) -> Tensor {
    let (s, h) = (t.shape[1], t.shape[2]);
    Tensor::f32(vec![1, to - from, h], t.as_f32().unwrap()[(b * s + from) * h..(b * s + to) * h].to_vec())
}

/// The MTP block over a left-padded batch: one draft call over the prompt slots, then one for
/// the last slot with the next token, per row equal to the row alone.
#[test]
fn ragged_mtp_drafts_equal_each_sequence_alone() {
    let (m, w) = open(&fixture("sharded-fused-mtp"), &LowerOptions::default());
    let (v, lens) = (m.spec.vocab_size, [12, 3, 20]);
    let seqs: Vec<Vec<i32>> = lens.iter().enumerate().map(|(b, &n)| tokens(200 + b as u64, n + 1, v)).collect();
    let smax = *lens.iter().max().unwrap();
    // (draft logits over the prompt, draft logits for the last slot) per row, alone.
    let alone: Vec<(Vec<f32>, Vec<f32>)> = seqs
        .iter()
        .zip(lens)
        .map(|(t, n)| {
            let mut s = session(&m, &w, 1);
            s.prefill(&[t[..n].to_vec()]).unwrap();
            let h = s.hidden().unwrap().clone();
            let (a, _) = s.mtp_draft(&rows(&h, 0, 0, n - 1), &[t[1..n].to_vec()]).unwrap();
            let d = t[n];
            let (b, _) = s.mtp_draft(&rows(&h, 0, n - 1, n), &[vec![d]]).unwrap();
            (a.as_f32().unwrap().to_vec(), b.as_f32().unwrap().to_vec())
        })
        .collect();
    let mut s = session(&m, &w, lens.len());
    s.prefill_ragged(&seqs.iter().zip(lens).map(|(t, n)| t[..n].to_vec()).collect::<Vec<_>>()).unwrap();
    let pads = s.padding().to_vec();
    assert_eq!(pads, [8, 17, 0]);
    let h = s.hidden().unwrap().clone();
    // Slot j's next token is slot j+1's (padding slots get the pad token or the first token).
    let next: Vec<Vec<i32>> =
        seqs.iter().zip(&pads).map(|(t, &p)| (1..smax).map(|j| if j < p { 0 } else { t[j - p] }).collect()).collect();
    let slots = |from: usize, to: usize| {
        let x: Vec<f32> = (0..lens.len()).flat_map(|b| rows(&h, b, from, to).as_f32().unwrap().to_vec()).collect();
        Tensor::f32(vec![lens.len(), to - from, h.shape[2]], x)
    };
    let (draft, _) = s.mtp_draft(&slots(0, smax - 1), &next).unwrap();
    let decoded: Vec<Vec<i32>> = seqs.iter().zip(lens).map(|(t, n)| vec![t[n]]).collect();
    let (after, _) = s.mtp_draft(&slots(smax - 1, smax), &decoded).unwrap();
    let d = draft.as_f32().unwrap();
    for (b, (want_a, want_b)) in alone.iter().enumerate() {
        let from = (b * (smax - 1) + pads[b]) * v;
        let e = rel_err(&d[from..(b + 1) * (smax - 1) * v], want_a);
        assert!(e <= TOL, "row {b}: draft over the prompt: rel {e:.3e}");
        let e = rel_err(&after.as_f32().unwrap()[b * v..(b + 1) * v], want_b);
        assert!(e <= TOL, "row {b}: draft after the prompt: rel {e:.3e}");
    }
}

/// Bad ragged calls are errors that leave the session as it was; equal lengths continue.
#[test]
fn ragged_prefill_errors() {
    let (m, w) = open(&fixture("hybrid-3to1"), &LowerOptions::default());
    let mut s = session(&m, &w, 2);
    let err = |r: Result<Vec<Tensor>, qgc_runtime::SessionError>| r.unwrap_err().to_string();
    assert_eq!(err(s.prefill_ragged(&[vec![1, 2], vec![]])), "sequence 1 is empty");
    assert_eq!(err(s.prefill_ragged(&[vec![1, 2]])), "expected 2 sequences, got 1");
    assert_eq!(err(s.prefill_ragged(&[vec![1, 2], vec![999]])), "token id 999 is outside the vocabulary (0..320)");
    assert_eq!((s.position(), s.padding()), (0, &[0, 0][..]));
    s.prefill_ragged(&[vec![1, 2, 3], vec![4]]).unwrap();
    assert_eq!((s.positions(), s.padding()), (vec![3, 1], &[0, 2][..]));
    let before = s.state().unwrap();
    assert_eq!(
        err(s.prefill_ragged(&[vec![1], vec![2, 3]])),
        "sequences of different lengths can only start a session (this one holds 3 tokens)"
    );
    assert_eq!(s.state().unwrap(), before);
    let more = s.prefill_ragged(&[vec![5, 6], vec![7, 8]]).unwrap();
    assert_eq!(more[0].shape, vec![2, 320]);
    assert_eq!(s.positions(), vec![5, 3]);
    s.reset();
    assert_eq!((s.positions(), s.padding()), (vec![0, 0], &[0, 0][..]));

    // The position limit is checked per sequence.
    let mut s = Session::new(m.program.clone(), &w, m.spec.vocab_size, 6, 2);
    s.prefill_ragged(&[vec![1; 6], vec![2; 4]]).unwrap();
    assert_eq!(s.decode(&[1, 2]).unwrap_err().to_string(), "sequence 0: 7 tokens exceed the model's 6 positions");
}
