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
    /// HF's repetition penalty, `> 0`; `1` is off. Looks at the prompt and the generated ids.
    pub repetition_penalty: f32,
    /// OpenAI's presence penalty, in `[-2, 2]`; `0` is off: subtracted once from the logit of
    /// every id generated so far (the prompt is not counted, as in vLLM).
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty, in `[-2, 2]`; `0` is off: subtracted from an id's logit once
    /// per time it was generated so far.
    pub frequency_penalty: f32,
    /// Seed of the draws: the same seed and logits give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_k: 20,
            top_p: 0.8,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: argmax of the raw logits.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }

    /// Whether this is greedy decoding (temperature 0): the argmax of the logits after the
    /// penalties, no other setting applies.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether a penalty changes the logits (then even greedy needs them and the history).
    pub fn penalised(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
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
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad("presence_penalty", self.presence_penalty, "in [-2, 2]");
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad("frequency_penalty", self.frequency_penalty, "in [-2, 2]");
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

/// The ids a sequence holds before the token being sampled: what the penalties look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct History<'a> {
    /// The prompt (the repetition penalty counts it).
    pub prompt: &'a [i32],
    /// The ids generated so far (every penalty counts them).
    pub generated: &'a [i32],
}

impl<'a> History<'a> {
    /// A history of generated ids only.
    pub fn generated(generated: &'a [i32]) -> History<'a> {
        History { prompt: &[], generated }
    }
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

    /// The next token from `logits` (`[vocab]`, one row) after `history` (what the penalties
    /// look at). Greedy consumes no randomness.
    pub fn sample(&mut self, logits: &[f32], history: History) -> i32 {
        if self.params.is_greedy() {
            return match self.penalised_logits(logits, history) {
                Some(scores) => argmax(&scores) as i32,
                None => argmax(logits) as i32,
            };
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

    /// The logits after the penalties, `None` when none applies.
    fn penalised_logits(&self, logits: &[f32], history: History) -> Option<Vec<f32>> {
        let p = &self.params;
        if !p.penalised() {
            return None;
        }
        let mut scores = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            penalise(&mut scores, history.prompt.iter().chain(history.generated), p.repetition_penalty);
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut count = std::collections::HashMap::<usize, u32>::new();
            for &id in history.generated {
                if let Some(i) = usize::try_from(id).ok().filter(|&i| i < scores.len()) {
                    *count.entry(i).or_default() += 1;
                }
            }
            for (i, n) in count {
                scores[i] -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
        Some(scores)
    }

    /// What [`Sampler::sample`] draws from: the surviving `(id, probability)` pairs, most likely
    /// first (equal probabilities by id), probabilities summing to 1. Greedy gives the argmax
    /// (after the penalties) with probability 1.
    pub fn distribution(&self, logits: &[f32], history: History) -> Vec<(i32, f64)> {
        let p = &self.params;
        if logits.is_empty() {
            return vec![(0, 1.0)];
        }
        let scores = self.penalised_logits(logits, history).unwrap_or_else(|| logits.to_vec());
        if p.is_greedy() {
            return vec![(argmax(&scores) as i32, 1.0)];
        }
        let mut cand: Vec<(i32, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_nan())
            .map(|(i, &s)| (i as i32, s / p.temperature))
            .collect();
        if cand.is_empty() {
            return vec![(argmax(&scores) as i32, 1.0)];
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
fn penalise<'a>(scores: &mut [f32], history: impl Iterator<Item = &'a i32>, penalty: f32) {
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
        SamplingParams { temperature, top_k, top_p, min_p, seed: 7, ..SamplingParams::default() }
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
    fn greedy_ignores_the_cut_settings_but_applies_penalties() {
        let logits = [0.1, 2.0, 1.9, -5.0];
        let cut = SamplingParams { temperature: 0.0, top_k: 1, top_p: 0.01, min_p: 0.9, seed: 3, ..Default::default() };
        let mut s = Sampler::new(cut);
        assert_eq!(s.sample(&logits, History::generated(&[1, 1, 1])), 1);
        assert_eq!(s.distribution(&logits, History::generated(&[1])), vec![(1, 1.0)]);
        // As HF's greedy search and vLLM: the penalty first (2.0 / 2 < 1.9), then the argmax.
        let rep = SamplingParams { repetition_penalty: 2.0, ..cut };
        let prompt = History { prompt: &[1], generated: &[] };
        assert_eq!(Sampler::new(rep).sample(&logits, prompt), 2);
        assert_eq!(Sampler::new(rep).distribution(&logits, prompt), vec![(2, 1.0)]);
        assert_eq!(Sampler::new(cut).sample(&logits, prompt), 1, "no penalty, no change");
    }

    #[test]
    fn presence_and_frequency_penalties_subtract_per_generated_id() {
        // Generated: id 0 twice, id 2 once; the prompt's id 1 is not counted.
        let h = History { prompt: &[1, 1], generated: &[0, 2, 0, 7, -1] };
        let logits = [1.0f32, 1.0, 1.0, 1.0];
        let p = SamplingParams { presence_penalty: 0.5, frequency_penalty: 0.25, ..params(1.0, 0, 1.0, 0.0) };
        // Scores: 1 - 0.5 - 2·0.25 = 0, 1, 1 - 0.5 - 0.25 = 0.25, 1.
        let e = [0f64.exp(), 1f64.exp(), 0.25f64.exp(), 1f64.exp()];
        let z: f64 = e.iter().sum();
        let d = Sampler::new(p).distribution(&logits, h);
        assert_dist(&d, &[(1, e[1] / z), (3, e[3] / z), (2, e[2] / z), (0, e[0] / z)]);
        // Negative values encourage repeats.
        let q = SamplingParams { presence_penalty: -2.0, ..SamplingParams::greedy() };
        assert_eq!(Sampler::new(q).sample(&logits, h), 0);
        assert!(SamplingParams { frequency_penalty: 2.5, ..p }.validate().unwrap_err().contains("frequency_penalty"));
    }

    #[test]
    fn temperature_one_is_the_softmax() {
        let probs = [0.1, 0.2, 0.3, 0.4];
        let s = Sampler::new(params(1.0, 0, 1.0, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(3, 0.4), (2, 0.3), (1, 0.2), (0, 0.1)]);
    }

    #[test]
    fn temperature_scales_the_logits() {
        // logits ln(p) at T=0.5 become 2 ln(p): probabilities p^2 / sum p^2.
        let probs = [0.2, 0.8];
        let s = Sampler::new(params(0.5, 0, 1.0, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(1, 0.64 / 0.68), (0, 0.04 / 0.68)]);
    }

    #[test]
    fn temperature_to_zero_approaches_argmax() {
        let logits = [0.3, 1.0, 0.99, -2.0];
        let mut s = Sampler::new(params(1e-4, 0, 1.0, 0.0));
        let d = s.distribution(&logits, History::default());
        assert_eq!(d[0].0, 1);
        assert!(d[0].1 > 1.0 - 1e-12, "{d:?}");
        for _ in 0..100 {
            assert_eq!(s.sample(&logits, History::default()), 1);
        }
    }

    #[test]
    fn top_k_keeps_the_k_largest_and_ties_at_the_kth() {
        let probs = [0.1, 0.2, 0.3, 0.4];
        let s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(3, 0.4 / 0.7), (2, 0.3 / 0.7)]);
        let s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        let d = s.distribution(&[1.0, 2.0, 1.0, 0.0], History::default());
        assert_eq!(d.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1, 0, 2]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let probs = [0.1, 0.2, 0.3, 0.4];
        // 0.4 < 0.6, 0.4 + 0.3 >= 0.6: two tokens.
        let s = Sampler::new(params(1.0, 0, 0.6, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(3, 0.4 / 0.7), (2, 0.3 / 0.7)]);
        // 0.75 needs three (0.4 + 0.3 = 0.7 < 0.75).
        let s = Sampler::new(params(1.0, 0, 0.75, 0.0));
        assert_eq!(s.distribution(&logits_of(&probs), History::default()).len(), 3);
        // A tiny p keeps the top token only.
        let s = Sampler::new(params(1.0, 0, 0.01, 0.0));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(3, 1.0)]);
    }

    #[test]
    fn min_p_is_relative_to_the_most_likely_token() {
        let probs = [0.06, 0.14, 0.3, 0.5];
        // floor 0.5 * 0.5 = 0.25: 0.5 and 0.3 stay.
        let s = Sampler::new(params(1.0, 0, 1.0, 0.5));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(3, 0.5 / 0.8), (2, 0.3 / 0.8)]);
        // floor 0.1 * 0.5 = 0.05: everything stays.
        let s = Sampler::new(params(1.0, 0, 1.0, 0.1));
        assert_eq!(s.distribution(&logits_of(&probs), History::default()).len(), 4);
    }

    #[test]
    fn filters_apply_in_order_top_k_top_p_min_p() {
        let probs = [0.02, 0.08, 0.1, 0.2, 0.25, 0.35];
        // top-k 4 → {0.35, 0.25, 0.2, 0.1}/0.9; top-p 0.7 → mass before: 0, .389, .667, .889:
        // three kept → {0.35, 0.25, 0.2}/0.8; min-p 0.6 → floor 0.6 * 0.4375 = 0.2625 drops 0.2/0.8.
        let s = Sampler::new(params(1.0, 4, 0.7, 0.6));
        assert_dist(&s.distribution(&logits_of(&probs), History::default()), &[(5, 0.35 / 0.6), (4, 0.25 / 0.6)]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut scores = vec![2.0, -1.0, 0.5, 3.0];
        penalise(&mut scores, [0, 1, 0, 99, -4].iter(), 2.0);
        assert_eq!(scores, vec![1.0, -2.0, 0.5, 3.0]);
        // Through the sampler: logits [ln 2, 0] with id 0 penalised by 2 → [ln2/2, 0].
        let p = SamplingParams { repetition_penalty: 2.0, ..params(1.0, 0, 1.0, 0.0) };
        let d = Sampler::new(p).distribution(&[2f32.ln(), 0.0], History { prompt: &[0], generated: &[] });
        let a = 2f64.sqrt();
        assert_dist(&d, &[(0, a / (a + 1.0)), (1, 1.0 / (a + 1.0))]);
    }

    #[test]
    fn same_seed_same_draws_and_draws_follow_the_distribution() {
        let logits = logits_of(&[0.1, 0.2, 0.3, 0.4]);
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params(1.0, 0, 1.0, 0.0) });
            (0..4000).map(|_| s.sample(&logits, History::default())).collect::<Vec<_>>()
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
