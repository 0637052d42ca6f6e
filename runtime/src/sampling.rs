//! Choosing the next token from a row of logits.
//!
//! [`Sampler::sample`] follows HF transformers' `generate` pipeline (and llama.cpp's default
//! chain): repetition penalty over the prompt and generated ids (positive logits divided by the
//! penalty, negative ones multiplied, each distinct id once), then temperature, top-k, top-p,
//! min-p, and a draw from what is left with a seeded generator. Temperature 0 is plain argmax of
//! the raw logits (ties go to the lowest id, as `torch.argmax`), with nothing else applied.

use qgc_ir::interp::Rng;

/// How to pick tokens. [`Default`] is Qwen's recommendation for the Instruct models
/// (temperature 0.7, top-p 0.8, top-k 20, min-p 0) with the repetition penalty off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature, `>= 0`; `0` is greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` highest logits (ties with the k-th kept, as HF does); `0` is off.
    pub top_k: usize,
    /// Keep the smallest most-likely set whose probability is at least `top_p`, in `(0, 1]`;
    /// `1` is off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely one's, in `[0, 1]`;
    /// `0` is off.
    pub min_p: f32,
    /// HF's repetition penalty, `> 0`; `1` is off.
    pub repetition_penalty: f32,
    /// Seed of the draws: the same seed and logits give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.7, top_k: 20, top_p: 0.8, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// Greedy decoding: argmax of the raw logits.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }

    /// Whether this is greedy decoding (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field's range; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, v: f32, want: &str| Err(format!("{field} must be {want}, got {v}"));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", self.repetition_penalty, "a finite number > 0");
        }
        Ok(())
    }
}

/// Index of the largest value; ties (and NaNs, which never win) go to the lowest index.
/// `0` for an empty slice.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// A token chooser with its own seeded generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    /// A sampler whose generator starts from `params.seed`.
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler { rng: Rng::new(params.seed), params }
    }

    /// Its parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token from `logits` (`[vocab]`, one row). `history` is the prompt and the ids
    /// generated so far, which the repetition penalty looks at. Greedy consumes no randomness.
    pub fn sample(&mut self, logits: &[f32], history: &[i32]) -> i32 {
        if self.params.is_greedy() {
            return argmax(logits) as i32;
        }
        let dist = self.distribution(logits, history);
        let u = self.rng.unit();
        let mut acc = 0.0;
        for &(id, p) in &dist {
            acc += p;
            if u < acc {
                return id;
            }
        }
        dist.last().map(|&(id, _)| id).unwrap_or(0)
    }

    /// What [`Sampler::sample`] draws from: the surviving `(id, probability)` pairs, most likely
    /// first (equal probabilities by id), probabilities summing to 1. Greedy gives the argmax
    /// with probability 1.
    pub fn distribution(&self, logits: &[f32], history: &[i32]) -> Vec<(i32, f64)> {
        let p = &self.params;
        if p.is_greedy() || logits.is_empty() {
            return vec![(argmax(logits) as i32, 1.0)];
        }
        let mut scores = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            penalise(&mut scores, history, p.repetition_penalty);
        }
        let mut cand: Vec<(i32, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_nan())
            .map(|(i, &s)| (i as i32, s / p.temperature))
            .collect();
        if cand.is_empty() {
            return vec![(argmax(logits) as i32, 1.0)];
        }
        if p.top_k > 0 && p.top_k < cand.len() {
            let mut vals: Vec<f32> = cand.iter().map(|c| c.1).collect();
            let k = p.top_k;
            let (_, kth, _) = vals.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            let kth = *kth;
            cand.retain(|c| c.1 >= kth);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut dist = softmax(&cand);
        if p.top_p < 1.0 {
            // Keep a token while the mass strictly before it is below top_p (HF's rule, read
            // from the most likely end): the smallest set whose mass reaches top_p.
            let mut before = 0.0;
            let keep = dist
                .iter()
                .take_while(|&&(_, q)| {
                    let k = before < f64::from(p.top_p);
                    before += q;
                    k
                })
                .count()
                .max(1);
            dist.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = f64::from(p.min_p) * dist[0].1;
            dist.retain(|&(_, q)| q >= floor);
        }
        let total: f64 = dist.iter().map(|d| d.1).sum();
        dist.iter_mut().for_each(|d| d.1 /= total);
        dist
    }
}

/// HF's `RepetitionPenaltyLogitsProcessor`: every distinct id in `history` (inside the vocabulary)
/// has its logit divided by `penalty` when positive and multiplied by it otherwise.
fn penalise(scores: &mut [f32], history: &[i32], penalty: f32) {
    let mut seen = vec![false; scores.len()];
    for &id in history {
        let Some(i) = usize::try_from(id).ok().filter(|&i| i < scores.len()) else { continue };
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let s = &mut scores[i];
        *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
    }
}

/// Softmax over sorted candidates (largest first), in f64.
fn softmax(cand: &[(i32, f32)]) -> Vec<(i32, f64)> {
    let max = f64::from(cand[0].1);
    let exps: Vec<f64> = cand.iter().map(|c| (f64::from(c.1) - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    cand.iter().zip(exps).map(|(c, e)| (c.0, e / total)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, min_p, repetition_penalty: 1.0, seed: 7 }
    }

    /// Logits whose softmax at temperature 1 is exactly `probs`.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    fn assert_dist(got: &[(i32, f64)], want: &[(i32, f64)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.0, w.0, "{got:?} vs {want:?}");
            assert!((g.1 - w.1).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn defaults_are_qwen_instruct_settings() {
        let d = SamplingParams::default();
        assert_eq!((d.temperature, d.top_k, d.top_p, d.min_p, d.repetition_penalty), (0.7, 20, 0.8, 0.0, 1.0));
        assert!(d.validate().is_ok());
        assert!(SamplingParams::greedy().is_greedy());
    }

    #[test]
    fn validate_names_the_field() {
        let p = SamplingParams { top_p: 0.0, ..Default::default() };
        assert_eq!(p.validate().unwrap_err(), "top_p must be in (0, 1], got 0");
        let p = SamplingParams { temperature: -1.0, ..Default::default() };
        assert_eq!(p.validate().unwrap_err(), "temperature must be a finite number >= 0, got -1");
        let p = SamplingParams { repetition_penalty: 0.0, ..Default::default() };
        assert!(p.validate().unwrap_err().starts_with("repetition_penalty"));
        let p = SamplingParams { min_p: 1.5, ..Default::default() };
        assert!(p.validate().unwrap_err().starts_with("min_p"));
    }

    #[test]
    fn argmax_takes_the_lowest_id_on_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn greedy_ignores_every_other_setting() {
        let logits = [0.1, 2.0, 2.0, -5.0];
        let p =
            SamplingParams { temperature: 0.0, top_k: 1, top_p: 0.01, min_p: 0.9, repetition_penalty: 100.0, seed: 3 };
        let mut s = Sampler::new(p);
        // The penalty would push id 1 below id 2; greedy must not apply it.
        assert_eq!(s.sample(&logits, &[1, 1, 1]), 1);
        assert_eq!(s.distribution(&logits, &[1]), vec![(1, 1.0)]);
    }

    #[test]
    fn temperature_one_is_the_softmax() {
        let probs = [0.1, 0.2, 0.3, 0.4];
        let s = Sampler::new(params(1.0, 0, 1.0, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(3, 0.4), (2, 0.3), (1, 0.2), (0, 0.1)]);
    }

    #[test]
    fn temperature_scales_the_logits() {
        // logits ln(p) at T=0.5 become 2 ln(p): probabilities p^2 / sum p^2.
        let probs = [0.2, 0.8];
        let s = Sampler::new(params(0.5, 0, 1.0, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(1, 0.64 / 0.68), (0, 0.04 / 0.68)]);
    }

    #[test]
    fn temperature_to_zero_approaches_argmax() {
        let logits = [0.3, 1.0, 0.99, -2.0];
        let mut s = Sampler::new(params(1e-4, 0, 1.0, 0.0));
        let d = s.distribution(&logits, &[]);
        assert_eq!(d[0].0, 1);
        assert!(d[0].1 > 1.0 - 1e-12, "{d:?}");
        for _ in 0..100 {
            assert_eq!(s.sample(&logits, &[]), 1);
        }
    }

    #[test]
    fn top_k_keeps_the_k_largest_and_ties_at_the_kth() {
        let probs = [0.1, 0.2, 0.3, 0.4];
        let s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(3, 0.4 / 0.7), (2, 0.3 / 0.7)]);
        let s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        let d = s.distribution(&[1.0, 2.0, 1.0, 0.0], &[]);
        assert_eq!(d.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1, 0, 2]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let probs = [0.1, 0.2, 0.3, 0.4];
        // 0.4 < 0.6, 0.4 + 0.3 >= 0.6: two tokens.
        let s = Sampler::new(params(1.0, 0, 0.6, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(3, 0.4 / 0.7), (2, 0.3 / 0.7)]);
        // 0.75 needs three (0.4 + 0.3 = 0.7 < 0.75).
        let s = Sampler::new(params(1.0, 0, 0.75, 0.0));
        assert_eq!(s.distribution(&logits_of(&probs), &[]).len(), 3);
        // A tiny p keeps the top token only.
        let s = Sampler::new(params(1.0, 0, 0.01, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(3, 1.0)]);
    }

    #[test]
    fn min_p_is_relative_to_the_most_likely_token() {
        let probs = [0.06, 0.14, 0.3, 0.5];
        // floor 0.5 * 0.5 = 0.25: 0.5 and 0.3 stay.
        let s = Sampler::new(params(1.0, 0, 1.0, 0.5));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(3, 0.5 / 0.8), (2, 0.3 / 0.8)]);
        // floor 0.1 * 0.5 = 0.05: everything stays.
        let s = Sampler::new(params(1.0, 0, 1.0, 0.1));
        assert_eq!(s.distribution(&logits_of(&probs), &[]).len(), 4);
    }

    #[test]
    fn filters_apply_in_order_top_k_top_p_min_p() {
        let probs = [0.02, 0.08, 0.1, 0.2, 0.25, 0.35];
        // top-k 4 → {0.35, 0.25, 0.2, 0.1}/0.9; top-p 0.7 → mass before: 0, .389, .667, .889:
        // three kept → {0.35, 0.25, 0.2}/0.8; min-p 0.6 → floor 0.6 * 0.4375 = 0.2625 drops 0.2/0.8.
        let s = Sampler::new(params(1.0, 4, 0.7, 0.6));
        assert_dist(&s.distribution(&logits_of(&probs), &[]), &[(5, 0.35 / 0.6), (4, 0.25 / 0.6)]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut scores = vec![2.0, -1.0, 0.5, 3.0];
        penalise(&mut scores, &[0, 1, 0, 99, -4], 2.0);
        assert_eq!(scores, vec![1.0, -2.0, 0.5, 3.0]);
        // Through the sampler: logits [ln 2, 0] with id 0 penalised by 2 → [ln2/2, 0].
        let p = SamplingParams { repetition_penalty: 2.0, ..params(1.0, 0, 1.0, 0.0) };
        let d = Sampler::new(p).distribution(&[2f32.ln(), 0.0], &[0]);
        let a = 2f64.sqrt();
        assert_dist(&d, &[(0, a / (a + 1.0)), (1, 1.0 / (a + 1.0))]);
    }

    #[test]
    fn same_seed_same_draws_and_draws_follow_the_distribution() {
        let logits = logits_of(&[0.1, 0.2, 0.3, 0.4]);
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params(1.0, 0, 1.0, 0.0) });
            (0..4000).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        let a = draw(11);
        assert_eq!(a, draw(11));
        assert_ne!(a, draw(12));
        for (id, p) in [(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)] {
            let f = a.iter().filter(|&&t| t == id).count() as f64 / a.len() as f64;
            assert!((f - p).abs() < 0.03, "id {id}: frequency {f}, want {p}");
        }
    }
}
