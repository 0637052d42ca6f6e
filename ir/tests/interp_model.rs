//! A small hybrid model (GDN, GDN, GDN, attention; MoE with a shared expert on every layer),
//! lowered and run by the interpreter with random weights. Checks that the state carries a
//! sequence across calls exactly: split prefill, prefill + decode, decode from scratch, batch
//! rows independent, and the chunked and recurrent GDN forms agree.

use qgc_ir::interp::{run, MapWeights, Rng, Tensor};
use qgc_ir::{lower, Bindings, LowerOptions, ModelSpec, Program};
use std::collections::BTreeMap;

const SPEC: &str = r#"{
  "name": "tiny-hybrid",
  "vocab_size": 50,
  "hidden_size": 32,
  "rms_norm_eps": 1e-6,
  "max_position_embeddings": 4096,
  "blocks": {
    "gdn": {
      "mixer": {"type": "gated_deltanet", "num_key_heads": 2, "num_value_heads": 4,
                "key_head_dim": 8, "value_head_dim": 6, "conv_kernel": 4},
      "ffn": {"type": "moe", "num_experts": 8, "top_k": 3, "expert_width": 8,
              "norm_topk_prob": true, "shared_expert": {"width": 12}}
    }
  },
  "layers": [
    {"pattern": ["gdn"], "repeat": 3},
    {
      "mixer": {"type": "gated_attention", "num_heads": 4, "num_kv_heads": 2, "head_dim": 8,
                "rope_theta": 10000000.0, "partial_rotary_factor": 0.5},
      "ffn": {"type": "moe", "num_experts": 8, "top_k": 3, "expert_width": 8,
              "norm_topk_prob": true, "shared_expert": {"width": 12}}
    }
  ]
}"#;

fn spec() -> ModelSpec {
    ModelSpec::from_json(SPEC).expect("spec parses")
}

fn program(chunk: Option<usize>) -> Program {
    lower(&spec(), &LowerOptions { gdn_prefill_chunk: chunk }).expect("spec lowers")
}

fn weights() -> MapWeights {
    MapWeights::random(&spec(), 42)
}

/// A batch of sequences advanced through one program: the state between calls.
struct Seqs<'a> {
    prog: &'a Program,
    w: &'a MapWeights,
    b: usize,
    past: usize,
    /// Left-padding slots per row (their positions are negative).
    pad: Vec<usize>,
    state: BTreeMap<String, Tensor>,
}

impl<'a> Seqs<'a> {
    fn new(prog: &'a Program, w: &'a MapWeights, b: usize) -> Self {
        let bind = Bindings { b, s: 0, p: 0 };
        let state = prog.state.iter().map(|d| (d.name.clone(), Tensor::zeros(d.ty.eval(&bind)))).collect();
        Seqs { prog, w, b, past: 0, pad: vec![0; b], state }
    }

    /// Feeds `tokens[b]` (equal lengths) through prefill, or decode when `decode`; returns the
    /// logits [B, S, V] as rows per sequence: `out[b][s]`.
    fn call(&mut self, tokens: &[&[i32]], decode: bool) -> Vec<Vec<Vec<f32>>> {
        let s = tokens[0].len();
        let mut inputs = std::mem::take(&mut self.state);
        let flat: Vec<i32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        inputs.insert("tokens".into(), Tensor::i32(vec![self.b, s], flat));
        let (past, pad) = (self.past as i32, &self.pad);
        let pos = (0..self.b).flat_map(|bi| (0..s as i32).map(move |t| past + t - pad[bi] as i32)).collect();
        inputs.insert("positions".into(), Tensor::i32(vec![self.b, s], pos));
        let g = if decode { &self.prog.decode } else { &self.prog.prefill };
        let mut out = run(g, &Bindings { b: self.b, s, p: self.past }, &inputs, self.w).expect("graph runs");
        let logits = out.remove("logits").expect("logits");
        assert_eq!(out.len(), self.prog.state.len(), "every state tensor comes back");
        self.state = out;
        self.past += s;
        let v = logits.shape[2];
        let data = logits.as_f32().unwrap();
        (0..self.b).map(|bi| (0..s).map(|t| data[(bi * s + t) * v..][..v].to_vec()).collect()).collect()
    }

    fn prefill(&mut self, tokens: &[&[i32]]) -> Vec<Vec<Vec<f32>>> {
        self.call(tokens, false)
    }

    /// A first prefill of sequences of different lengths, left-padded with token `fill`;
    /// returns each sequence's own logits rows (padding slots dropped).
    fn prefill_ragged(&mut self, tokens: &[&[i32]], fill: i32) -> Vec<Vec<Vec<f32>>> {
        assert_eq!(self.past, 0, "padding only goes in front");
        let s = tokens.iter().map(|t| t.len()).max().unwrap();
        self.pad = tokens.iter().map(|t| s - t.len()).collect();
        let padded: Vec<Vec<i32>> = tokens.iter().map(|t| [vec![fill; s - t.len()], t.to_vec()].concat()).collect();
        let rows = self.prefill(&padded.iter().map(|t| t.as_slice()).collect::<Vec<_>>());
        rows.into_iter().zip(&self.pad).map(|(r, &p)| r[p..].to_vec()).collect()
    }
}

/// max|a − b| / max|b| over rows of logits.
fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (ra, rb) in a.iter().zip(b) {
        for (&x, &y) in ra.iter().zip(rb) {
            num = num.max((f64::from(x) - f64::from(y)).abs());
            den = den.max(f64::from(y).abs());
        }
    }
    num / den
}

fn random_tokens(seed: u64, n: usize) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(50) as i32).collect()
}

#[test]
fn split_prefill_equals_one_prefill() {
    let (prog, w) = (program(Some(64)), weights());
    let toks = random_tokens(1, 150);
    let full = Seqs::new(&prog, &w, 1).prefill(&[&toks]).remove(0);
    let max_logit = full.iter().flatten().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(max_logit > 0.1, "logits are degenerate: max |logit| {max_logit}");
    for split in [70, 2, 1, 3, 64, 149] {
        let mut seq = Seqs::new(&prog, &w, 1);
        let mut got = seq.prefill(&[&toks[..split]]).remove(0);
        got.extend(seq.prefill(&[&toks[split..]]).remove(0));
        let e = rel_err(&got, &full);
        println!("split prefill {split}+{}: rel err {e:.2e}", 150 - split);
        assert!(e < 1e-5, "split {split}: logits differ by {e:e}");
    }
    // The state matters: the second part from a fresh state gives different logits.
    let restarted = Seqs::new(&prog, &w, 1).prefill(&[&toks[70..]]).remove(0);
    assert!(rel_err(&restarted, &full[70..]) > 1e-2, "a fresh state should change the logits");
}

#[test]
fn prefill_then_decode_equals_longer_prefill() {
    let (prog, w) = (program(Some(64)), weights());
    let toks = random_tokens(2, 101);
    let full = Seqs::new(&prog, &w, 1).prefill(&[&toks]).remove(0);
    for t in [100, 1, 2, 3, 64] {
        let mut seq = Seqs::new(&prog, &w, 1);
        seq.prefill(&[&toks[..t]]);
        let step = seq.call(&[&toks[t..t + 1]], true).remove(0);
        let e = rel_err(&step, &full[t..t + 1]);
        println!("prefill {t} + decode: rel err {e:.2e}");
        assert!(e < 1e-5, "prefill {t} then decode differs from prefill {} by {e:e}", t + 1);
    }
}

#[test]
fn decode_from_scratch_equals_prefill() {
    let (prog, w) = (program(Some(16)), weights());
    let toks = random_tokens(3, 40);
    let full = Seqs::new(&prog, &w, 1).prefill(&[&toks]).remove(0);
    let mut seq = Seqs::new(&prog, &w, 1);
    let steps: Vec<Vec<f32>> = toks.iter().map(|t| seq.call(&[&[*t]], true).remove(0).remove(0)).collect();
    let e = rel_err(&steps, &full);
    println!("40 decode steps vs prefill 40: rel err {e:.2e}");
    assert!(e < 1e-5, "token-by-token decode differs from prefill by {e:e}");
}

#[test]
fn batch_rows_equal_separate_runs() {
    let (prog, w) = (program(Some(64)), weights());
    let (a, b) = (random_tokens(4, 90), random_tokens(5, 90));
    let mut batch = Seqs::new(&prog, &w, 2);
    let mut both = batch.prefill(&[&a[..80], &b[..80]]);
    let steps = batch.call(&[&a[80..81], &b[80..81]], true);
    both.iter_mut().zip(steps).for_each(|(rows, step)| rows.extend(step));
    for (bi, toks) in [&a, &b].into_iter().enumerate() {
        let mut alone = Seqs::new(&prog, &w, 1);
        let mut rows = alone.prefill(&[&toks[..80]]).remove(0);
        rows.extend(alone.call(&[&toks[80..81]], true).remove(0));
        let e = rel_err(&both[bi], &rows);
        assert!(e < 1e-6, "batch row {bi} differs from its separate run by {e:e}");
    }
    assert!(rel_err(&both[0], &both[1]) > 1e-2, "different sequences should give different logits");
}

#[test]
fn chunked_and_recurrent_lowerings_agree() {
    let w = weights();
    let toks = random_tokens(6, 150);
    let reference = Seqs::new(&program(None), &w, 1).prefill(&[&toks]).remove(0);
    for chunk in [64, 16, 7] {
        let got = Seqs::new(&program(Some(chunk)), &w, 1).prefill(&[&toks]).remove(0);
        let e = rel_err(&got, &reference);
        println!("model logits, chunk {chunk} vs recurrent: rel err {e:.2e}");
        assert!(e < 1e-5, "chunk {chunk}: logits differ from the recurrent lowering by {e:e}");
    }
}

/// Left-padded rows of different lengths (one shorter than the conv kernel, one crossing chunk
/// boundaries) give each sequence's own logits, over the prefill and decode steps after it, for
/// both GDN forms; the padding token does not matter.
#[test]
fn ragged_batch_rows_equal_separate_runs() {
    let w = weights();
    let lens = [9, 1, 23, 2];
    let seqs: Vec<Vec<i32>> = lens.iter().enumerate().map(|(i, &n)| random_tokens(10 + i as u64, n + 3)).collect();
    for chunk in [Some(4), None] {
        let prog = program(chunk);
        let mut batch = Seqs::new(&prog, &w, lens.len());
        let prompts: Vec<&[i32]> = seqs.iter().zip(lens).map(|(t, n)| &t[..n]).collect();
        let mut rows = batch.prefill_ragged(&prompts, 7);
        for step in 0..3 {
            let next: Vec<&[i32]> = seqs.iter().zip(lens).map(|(t, n)| &t[n + step..n + step + 1]).collect();
            rows.iter_mut().zip(batch.call(&next, true)).for_each(|(r, s)| r.extend(s));
        }
        for (bi, toks) in seqs.iter().enumerate() {
            let mut alone = Seqs::new(&prog, &w, 1);
            let mut want = alone.prefill(&[&toks[..lens[bi]]]).remove(0);
            for t in lens[bi]..toks.len() {
                want.extend(alone.call(&[&toks[t..t + 1]], true).remove(0));
            }
            let e = rel_err(&rows[bi], &want);
            println!("chunk {chunk:?}: ragged row {bi} (len {}): rel err {e:.2e}", lens[bi]);
            assert!(e < 1e-5, "chunk {chunk:?}: row {bi} differs from its separate run by {e:e}");
        }
        let other = Seqs::new(&prog, &w, lens.len()).prefill_ragged(&prompts, 31);
        assert!(other.iter().zip(&rows).all(|(a, b)| rel_err(a, &b[..a.len()]) < 1e-5), "padding token matters");
    }
}
