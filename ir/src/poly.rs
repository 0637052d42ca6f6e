//! Polynomial sizes over the shape symbols.
//!
//! A [`Dim`] is linear in `B`, `S`, `P`; a tensor's element count is a product of dims and so a
//! polynomial, e.g. `8192·B·S` bytes for an f32 `[B,S,2048]`. [`Poly`] is such a polynomial with
//! non-negative integer coefficients (saturating at `u64::MAX`: a size that large is refused
//! before anything is allocated, see `runtime::budget`). Because every coefficient is non-negative and the symbols
//! are non-negative, the coefficient-wise order ([`Poly::le`], also `PartialOrd`) implies the
//! value order under every binding: `a <= b` ⇒ `a.eval(x) <= b.eval(x)` for all `x`. That is what
//! lets a memory plan reason about sizes once for every call shape.

use crate::types::{Bindings, Dim, TensorType};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Exponents of `B`, `S`, `P` (in that order): `[1,1,0]` is `B·S`.
pub type Monomial = [u8; 3];

const NAMES: [&str; 3] = ["B", "S", "P"];

/// `Σ coeff · B^i S^j P^k` with `u64` coefficients ≥ 0.
///
/// Terms are kept sorted by monomial with no zero coefficients, so structural equality is
/// polynomial equality.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Poly {
    terms: Vec<(Monomial, u64)>,
}

impl Poly {
    /// The zero polynomial.
    pub fn zero() -> Poly {
        Poly::default()
    }

    /// A constant.
    pub fn constant(c: u64) -> Poly {
        Poly::term([0; 3], c)
    }

    /// `c · monomial`.
    pub fn term(m: Monomial, c: u64) -> Poly {
        if c == 0 {
            Poly::zero()
        } else {
            Poly { terms: vec![(m, c)] }
        }
    }

    /// The terms, sorted by monomial, coefficients non-zero.
    pub fn terms(&self) -> &[(Monomial, u64)] {
        &self.terms
    }

    /// Whether this is the zero polynomial.
    pub fn is_zero(&self) -> bool {
        self.terms.is_empty()
    }

    /// The coefficient of `m` (0 when absent).
    pub fn coeff(&self, m: Monomial) -> u64 {
        self.terms.binary_search_by(|(k, _)| k.cmp(&m)).map_or(0, |i| self.terms[i].1)
    }

    /// `Some(poly)` when `d` has no negative coefficient or constant (a dim is linear).
    pub fn from_dim(d: &Dim) -> Option<Poly> {
        (d.constant >= 0 && d.coeffs.iter().all(|&c| c >= 0)).then(|| Poly::dim_upper(d))
    }

    /// The least polynomial ≥ `d` under every binding: negative parts dropped (`S-1` ↦ `S`).
    pub fn dim_upper(d: &Dim) -> Poly {
        let mut p = Poly::constant(d.constant.max(0) as u64);
        for (i, &c) in d.coeffs.iter().enumerate() {
            let mut m = [0; 3];
            m[i] = 1;
            p = p.add(&Poly::term(m, c.max(0) as u64));
        }
        p
    }

    /// Element count of a shape: `(poly, exact)`; not exact when a dim had negative parts, in
    /// which case the poly is an upper bound.
    pub fn numel(shape: &[Dim]) -> (Poly, bool) {
        shape.iter().fold((Poly::constant(1), true), |(p, exact), d| {
            (p.mul(&Poly::dim_upper(d)), exact && Poly::from_dim(d).is_some())
        })
    }

    /// Bytes of a value of type `t` (an upper bound when a dim had negative parts).
    pub fn bytes(t: &TensorType) -> Poly {
        Poly::numel(&t.shape).0.scale(t.dtype.size() as u64)
    }

    /// `self + o`.
    pub fn add(&self, o: &Poly) -> Poly {
        self.merge(o, u64::saturating_add)
    }

    /// Coefficient-wise maximum: the least polynomial that is `>=` both (a slot that must hold
    /// either value).
    pub fn lub(&self, o: &Poly) -> Poly {
        self.merge(o, u64::max)
    }

    /// `self · o`.
    pub fn mul(&self, o: &Poly) -> Poly {
        let mut out = Poly::zero();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &o.terms {
                let m = [ma[0] + mb[0], ma[1] + mb[1], ma[2] + mb[2]];
                out = out.add(&Poly::term(m, ca.saturating_mul(*cb)));
            }
        }
        out
    }

    /// `k · self`.
    pub fn scale(&self, k: u64) -> Poly {
        if k == 0 {
            return Poly::zero();
        }
        Poly { terms: self.terms.iter().map(|&(m, c)| (m, c.saturating_mul(k))).collect() }
    }

    /// Every coefficient rounded up to a multiple of `a`: ≥ `self` under every binding, and a
    /// multiple of `a` under every binding (so sums of aligned sizes are aligned offsets).
    pub fn align_up(&self, a: u64) -> Poly {
        Poly { terms: self.terms.iter().map(|&(m, c)| (m, c.div_ceil(a).saturating_mul(a))).collect() }
    }

    /// Coefficient-wise `self <= o`, which implies `self.eval(x) <= o.eval(x)` for every binding.
    pub fn le(&self, o: &Poly) -> bool {
        self.terms.iter().all(|&(m, c)| c <= o.coeff(m))
    }

    /// Value under concrete bindings, `None` when it does not fit in 64 bits (coefficients are
    /// saturating: a saturated one counts as an overflow).
    pub fn checked_eval(&self, b: &Bindings) -> Option<u64> {
        let vals = [b.b as u64, b.s as u64, b.p as u64];
        self.terms.iter().try_fold(0u64, |acc, &(m, c)| {
            if c == u64::MAX {
                return None;
            }
            let t = (0..3).try_fold(c, |t, i| t.checked_mul(vals[i].checked_pow(u32::from(m[i]))?))?;
            acc.checked_add(t)
        })
    }

    /// Value under concrete bindings (saturating at `u64::MAX`).
    pub fn eval(&self, b: &Bindings) -> u64 {
        let vals = [b.b as u64, b.s as u64, b.p as u64];
        self.terms.iter().fold(0u64, |acc, &(m, c)| {
            let t = (0..3).fold(c, |t, i| t.saturating_mul(vals[i].saturating_pow(u32::from(m[i]))));
            acc.saturating_add(t)
        })
    }

    fn merge(&self, o: &Poly, f: impl Fn(u64, u64) -> u64) -> Poly {
        let mut terms = Vec::with_capacity(self.terms.len() + o.terms.len());
        let (mut i, mut j) = (0, 0);
        while i < self.terms.len() || j < o.terms.len() {
            let ord = match (self.terms.get(i), o.terms.get(j)) {
                (Some(a), Some(b)) => a.0.cmp(&b.0),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            let (m, c) = match ord {
                Ordering::Less => (self.terms[i].0, f(self.terms[i].1, 0)),
                Ordering::Greater => (o.terms[j].0, f(0, o.terms[j].1)),
                Ordering::Equal => (self.terms[i].0, f(self.terms[i].1, o.terms[j].1)),
            };
            i += usize::from(ord != Ordering::Greater);
            j += usize::from(ord != Ordering::Less);
            if c != 0 {
                terms.push((m, c));
            }
        }
        Poly { terms }
    }
}

impl PartialOrd for Poly {
    /// The coefficient-wise partial order (`None` when neither is `<=` the other).
    fn partial_cmp(&self, o: &Poly) -> Option<Ordering> {
        match (self.le(o), o.le(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl From<u64> for Poly {
    fn from(c: u64) -> Poly {
        Poly::constant(c)
    }
}

impl fmt::Display for Poly {
    /// Highest degree first (then `B` before `S` before `P`), e.g. `8192·B·S + 1024·B·P + 64`; `B^2` for powers; `0` when zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "0");
        }
        let mut terms: Vec<&(Monomial, u64)> = self.terms.iter().collect();
        terms.sort_by_key(|(m, _)| std::cmp::Reverse((m.iter().map(|&e| u32::from(e)).sum::<u32>(), *m)));
        for (n, (m, c)) in terms.into_iter().enumerate() {
            if n > 0 {
                write!(f, " + ")?;
            }
            let mut parts = Vec::new();
            if *c != 1 || *m == [0; 3] {
                parts.push(c.to_string());
            }
            for (i, &e) in m.iter().enumerate() {
                match e {
                    0 => {}
                    1 => parts.push(NAMES[i].to_string()),
                    _ => parts.push(format!("{}^{e}", NAMES[i])),
                }
            }
            write!(f, "{}", parts.join("·"))?;
        }
        Ok(())
    }
}

/// `12.3 GiB`-style byte counts with `decimals` places (plain `B` below a KiB), up to PiB:
/// the one formatter of sizes every crate prints.
pub fn human_bytes(bytes: u64, decimals: usize) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut x, mut u) = (bytes as f64, 0);
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{x:.decimals$} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Sym;

    fn bind(b: usize, s: usize, p: usize) -> Bindings {
        Bindings { b, s, p }
    }

    #[test]
    fn arithmetic_eval_and_display() {
        let b = Poly::from_dim(&Dim::sym(Sym::B)).unwrap();
        let ps = Poly::from_dim(&Dim::sym(Sym::P).plus(Dim::sym(Sym::S))).unwrap();
        let kv = b.mul(&ps).scale(4 * 256);
        assert_eq!(kv.to_string(), "1024·B·S + 1024·B·P");
        assert_eq!(kv.eval(&bind(2, 3, 5)), 1024 * 2 * 8);
        let sq = b.mul(&b).add(&Poly::constant(7));
        assert_eq!(sq.to_string(), "B^2 + 7");
        assert_eq!(Poly::zero().to_string(), "0");
        assert_eq!(b.add(&b).scale(0), Poly::zero());
    }

    #[test]
    fn order_lub_and_alignment() {
        let t = |m, c| Poly::term(m, c);
        let a = t([1, 1, 0], 8192);
        let c = t([1, 0, 1], 1024).add(&t([0; 3], 3));
        assert!(a <= a.lub(&c) && c <= a.lub(&c));
        assert_eq!(a.partial_cmp(&c), None);
        assert!(t([1, 0, 0], 32) < t([1, 0, 0], 64));
        let al = c.align_up(64);
        assert_eq!(al.to_string(), "1024·B·P + 64");
        assert!(c <= al);
        for x in [bind(0, 0, 0), bind(3, 70, 100)] {
            assert_eq!(al.eval(&x) % 64, 0);
        }
    }

    #[test]
    fn dims_with_negative_parts_are_bounded_above() {
        let s_minus_1 = Dim::sym(Sym::S).plus(Dim { constant: -1, coeffs: [0; 3] });
        assert!(Poly::from_dim(&s_minus_1).is_none());
        assert_eq!(Poly::dim_upper(&s_minus_1).to_string(), "S");
        let (n, exact) = Poly::numel(&[Dim::sym(Sym::B), s_minus_1, Dim::c(4)]);
        assert_eq!((n.to_string(), exact), ("4·B·S".to_string(), false));
    }
}
