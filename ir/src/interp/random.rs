//! Deterministic test data: a small seeded RNG and an in-memory [`WeightSource`], including a
//! random-weight model for a [`ModelSpec`] (for interpreter, pass and backend tests).

use super::{InterpError, Tensor, WeightSource};
use crate::spec::ModelSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// SplitMix64: a tiny, seeded, platform-independent generator (not cryptographic).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`, as f32.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        (f64::from(lo) + (f64::from(hi) - f64::from(lo)) * self.unit()) as f32
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// An f32 tensor of `shape` with elements uniform in `[lo, hi)`.
    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape.to_vec(), self.vec(n, lo, hi))
    }
}

/// Weights held in memory by logical name.
#[derive(Debug, Clone, Default)]
pub struct MapWeights {
    /// The tensors, by logical name (see `spec::TensorDecl`).
    pub tensors: BTreeMap<String, Arc<Tensor>>,
}

impl MapWeights {
    /// An empty set.
    pub fn new() -> MapWeights {
        MapWeights::default()
    }

    /// Adds (or replaces) `name`.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), Arc::new(t));
    }

    /// Random weights for every tensor of `spec` (`spec.tensors()`), deterministic in `seed`:
    /// linear and expert weights U(±√3/√fan_in) (unit-variance outputs), embeddings U(-1, 1),
    /// zero-centred norms U(-0.3, 0.3) (plain norms U(0.5, 1.5)), `A_log` U(-1, 1.5),
    /// `dt_bias` U(-1, 1), conv weights U(±1/√K).
    pub fn random(spec: &ModelSpec, seed: u64) -> MapWeights {
        let mut rng = Rng::new(seed);
        let mut w = MapWeights::new();
        for decl in spec.tensors() {
            let (lo, hi) = init_range(&decl.name, &decl.shape, spec.zero_centred_norms);
            w.insert(decl.name.clone(), rng.tensor(&decl.shape, lo, hi));
        }
        w
    }
}

/// The uniform range `random` draws tensor `name` of `shape` from.
pub fn init_range(name: &str, shape: &[usize], zero_centred: bool) -> (f32, f32) {
    let fan_in = shape.last().copied().unwrap_or(1).max(1) as f32;
    if name.ends_with("linear_attn.norm.weight") || (name.contains("norm") && !zero_centred) {
        (0.5, 1.5)
    } else if name.contains("norm") {
        (-0.3, 0.3)
    } else if name.ends_with("A_log") {
        (-1.0, 1.5)
    } else if name.ends_with("dt_bias") || name == "model.embed_tokens.weight" {
        (-1.0, 1.0)
    } else if name.ends_with("conv1d.weight") {
        (-1.0 / fan_in.sqrt(), 1.0 / fan_in.sqrt())
    } else {
        let a = 3f32.sqrt() / fan_in.sqrt();
        (-a, a)
    }
}

impl WeightSource for MapWeights {
    fn weight(&self, name: &str, shape: &[usize]) -> Result<Arc<Tensor>, InterpError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| InterpError::Weight { name: name.into(), message: "not present".into() })?;
        if t.shape != shape {
            let message = format!("has shape {:?}, expected {shape:?}", t.shape);
            return Err(InterpError::Weight { name: name.into(), message });
        }
        Ok(Arc::clone(t))
    }
}
