//! CUDA C for the fused elementwise chains ([`EwChain`]): one grid-stride kernel per chain,
//! computing every element with the formulas of the Cranelift loops in their default
//! (`Precision::F64`) mode, so GPU results equal the host loops and the interpreter:
//! - `exp`, `sigmoid`, `silu`, `softplus` are evaluated in f64 and rounded once to f32, in the
//!   same forms as `host::math`: `e = exp(-|x|)`, `σ = (x ≥ 0 ? 1 : e) / (1 + e)`,
//!   `silu = x·(x ≥ 0 ? 1 : e) / (1 + e)`, `softplus = max(x, 0) + log1p(e)` (`x` itself above
//!   20, PyTorch's threshold — the same value after rounding to f32); NaN stays NaN;
//! - `add`, `mul`, `scale` and `neg` are single f32 operations, written `__fadd_rn` /
//!   `__fmul_rn` so that NVRTC cannot contract a multiply and an add into one FMA (the loops
//!   and the interpreter round each op);
//! - inputs are indexed by their [`Bcast`]: `Full` at `i`, `Suffix` at `i % inner`, `Row` at
//!   `i / inner`, `Scalar` at `0`, with the inner length `L` a `long long inner` parameter
//!   (present only when the chain has suffix or row inputs, after `n`).
//!
//! The kernel is `extern "C" __global__ void <name>(float* out, const float* in0, ...,
//! long long n[, long long inner])`; `out` may be a `Full` input's buffer (each element is read
//! and written by one thread). Launch any 1-D grid: the loop strides over `n`. Rendering is
//! byte-stable (no map iteration), and [`chain_kernel_name`] names a chain by its structure so
//! identical chains share one kernel. The shared device helpers are guarded by
//! `QGC_EW_HELPERS`, so several rendered chains can be concatenated into one module.

use crate::host::chain::{Bcast, Binary, EwChain, EwNode, Unary};
use std::fmt::Write;

/// The device helpers every rendered chain uses (guarded: defined once per module).
const HELPERS: &str = r#"#ifndef QGC_EW_HELPERS
#define QGC_EW_HELPERS
__device__ __forceinline__ float qgc_ew_exp(float x) {
    return (float)exp((double)x);
}
__device__ __forceinline__ float qgc_ew_sigmoid(float x) {
    const double d = (double)x, e = exp(-fabs(d));
    return (float)((d >= 0.0 ? 1.0 : e) / (1.0 + e));
}
__device__ __forceinline__ float qgc_ew_silu(float x) {
    const double d = (double)x, e = exp(-fabs(d));
    return (float)((d * (d >= 0.0 ? 1.0 : e)) / (1.0 + e));
}
__device__ __forceinline__ float qgc_ew_softplus(float x) {
    const double d = (double)x;
    return (float)(d > 20.0 ? d : fmax(d, 0.0) + log1p(exp(-fabs(d))));
}
#endif
"#;

/// The CUDA C text of one kernel `name` evaluating `chain` per element (see the module doc).
/// The chain should satisfy [`EwChain::validate`]; an empty chain renders a kernel that
/// writes nothing.
pub fn render_chain(name: &str, chain: &EwChain) -> String {
    let rows = chain.has_rows();
    let mut s = String::from(HELPERS);
    let _ = writeln!(s, "// {}", canonical(chain));
    let _ = write!(s, "extern \"C\" __global__ void {name}(float* out");
    for k in 0..chain.inputs.len() {
        let _ = write!(s, ", const float* in{k}");
    }
    s.push_str(", long long n");
    if rows {
        s.push_str(", long long inner");
    }
    s.push_str(") {\n");
    s.push_str("    const long long step = (long long)gridDim.x * blockDim.x;\n");
    s.push_str("    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {\n");
    for (i, node) in chain.nodes.iter().enumerate() {
        let expr = match *node {
            EwNode::Input(k) => {
                let at = match chain.inputs.get(k) {
                    Some(Bcast::Full) | None => "i",
                    Some(Bcast::Suffix) => "i % inner",
                    Some(Bcast::Row) => "i / inner",
                    Some(Bcast::Scalar) => "0",
                };
                format!("in{k}[{at}]")
            }
            EwNode::Unary(u, a) => match u {
                Unary::Silu => format!("qgc_ew_silu(v{a})"),
                Unary::Sigmoid => format!("qgc_ew_sigmoid(v{a})"),
                Unary::Softplus => format!("qgc_ew_softplus(v{a})"),
                Unary::Exp => format!("qgc_ew_exp(v{a})"),
                Unary::Neg => format!("-v{a}"),
                Unary::Scale(by) => format!("__fmul_rn(v{a}, __uint_as_float(0x{:08x}u) /* {by:?} */)", by.to_bits()),
            },
            EwNode::Binary(Binary::Add, a, b) => format!("__fadd_rn(v{a}, v{b})"),
            EwNode::Binary(Binary::Mul, a, b) => format!("__fmul_rn(v{a}, v{b})"),
        };
        let _ = writeln!(s, "        const float v{i} = {expr};");
    }
    if let Some(last) = chain.nodes.len().checked_sub(1) {
        let _ = writeln!(s, "        out[i] = v{last};");
    }
    s.push_str("    }\n}\n");
    s
}

/// A stable kernel name for `chain`: `qgc_ew_` and the 64-bit FNV-1a hash (16 hex digits) of
/// a canonical text of its structure (input indexings, nodes, scale factors by their bits, and
/// whether it has rows — not the inner length, which is a kernel parameter). Equal chains get
/// equal names on every run and machine.
pub fn chain_kernel_name(chain: &EwChain) -> String {
    format!("qgc_ew_{:016x}", fnv1a(canonical(chain).as_bytes()))
}

/// The canonical text [`chain_kernel_name`] hashes.
fn canonical(chain: &EwChain) -> String {
    let mut s = String::from("in=");
    for b in &chain.inputs {
        s.push(match b {
            Bcast::Full => 'F',
            Bcast::Suffix => 'S',
            Bcast::Row => 'R',
            Bcast::Scalar => 'C',
        });
    }
    s.push_str(";v=");
    for n in &chain.nodes {
        let _ = match *n {
            EwNode::Input(k) => write!(s, "in{k},"),
            EwNode::Unary(Unary::Silu, a) => write!(s, "silu{a},"),
            EwNode::Unary(Unary::Sigmoid, a) => write!(s, "sigmoid{a},"),
            EwNode::Unary(Unary::Softplus, a) => write!(s, "softplus{a},"),
            EwNode::Unary(Unary::Exp, a) => write!(s, "exp{a},"),
            EwNode::Unary(Unary::Neg, a) => write!(s, "neg{a},"),
            EwNode::Unary(Unary::Scale(by), a) => write!(s, "scale{:08x}.{a},", by.to_bits()),
            EwNode::Binary(Binary::Add, a, b) => write!(s, "add{a}.{b},"),
            EwNode::Binary(Binary::Mul, a, b) => write!(s, "mul{a}.{b},"),
        };
    }
    s.push_str(if chain.has_rows() { ";rows" } else { ";flat" });
    s
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The PTX of every kernel a program launches, for one arch, as an artifact carries it
/// (`qgc compile --target cuda[:sm_XX]`): module name (a kernel family, or a rendered chain's
/// [`chain_kernel_name`]) → PTX text. A GPU machine runs such an artifact without NVRTC.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CudaKernels {
    /// Compute capability the PTX targets (90 for sm_90).
    pub arch: u32,
    /// NVRTC version that wrote it (`13.0`).
    pub nvrtc: String,
    /// Module name → PTX.
    pub modules: std::collections::BTreeMap<String, String>,
}

/// Every elementwise chain `p` launches, by kernel name ([`chain_kernel_name`]), over all its
/// entry points' schedules (the first of equal names: the inner length is a launch parameter).
pub fn launched_chains(p: &crate::compile::CompiledProgram) -> std::collections::BTreeMap<String, &EwChain> {
    let mut out = std::collections::BTreeMap::new();
    for c in p.entries.iter().flat_map(|e| &e.schedule.chains) {
        out.entry(chain_kernel_name(c)).or_insert(c);
    }
    out
}

/// The arches an artifact may target (`sm_50` … `sm_200`).
pub const ARCHES: std::ops::RangeInclusive<u32> = 50..=200;

impl CudaKernels {
    /// Whether `name` is a rendered elementwise chain's module (else a kernel family's).
    pub fn is_chain(name: &str) -> bool {
        name.starts_with("qgc_ew_")
    }

    /// How many kernel-family modules it holds.
    pub fn families(&self) -> usize {
        self.modules.keys().filter(|k| !Self::is_chain(k)).count()
    }

    /// How many chain modules it holds.
    pub fn chains(&self) -> usize {
        self.modules.keys().filter(|k| Self::is_chain(k)).count()
    }

    /// Bytes of PTX text, all modules together.
    pub fn ptx_bytes(&self) -> usize {
        self.modules.values().map(String::len).sum()
    }

    /// One line for summaries: `sm_90, 10 kernel families + 7 chains, 1.2 MiB of PTX (NVRTC 13.0)`.
    pub fn summary(&self) -> String {
        format!(
            "sm_{}, {} kernel families + {} chains, {} of PTX (NVRTC {})",
            self.arch,
            self.families(),
            self.chains(),
            qgc_ir::poly::human_bytes(self.ptx_bytes() as u64, 1),
            self.nvrtc
        )
    }

    /// The `--json` object of summaries: arch, families, chains, ptx_bytes, nvrtc.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "arch": format!("sm_{}", self.arch),
            "families": self.families(),
            "chains": self.chains(),
            "ptx_bytes": self.ptx_bytes(),
            "nvrtc": self.nvrtc,
        })
    }

    /// Checks what an artifact reader can without the runtime's kernel list: a sane arch, every
    /// module's PTX targeting it, and a module for every chain `p` launches.
    pub fn check(&self, p: &crate::compile::CompiledProgram) -> Result<(), String> {
        if !ARCHES.contains(&self.arch) {
            return Err(format!("CUDA kernels for sm_{}: not an arch qgc targets (sm_50 to sm_200)", self.arch));
        }
        for (name, ptx) in &self.modules {
            if ptx_target(ptx) != Some(self.arch) {
                return Err(format!("CUDA kernel module {name}: its PTX does not target sm_{}", self.arch));
            }
        }
        if let Some(missing) = launched_chains(p).into_keys().find(|n| !self.modules.contains_key(n)) {
            return Err(format!("CUDA kernels: no PTX for the elementwise chain {missing} the program launches"));
        }
        Ok(())
    }
}

/// The arch of PTX's `.target sm_XX` directive (`sm_90a` and the like count as `sm_90`).
pub(crate) fn ptx_target(ptx: &str) -> Option<u32> {
    let line = ptx.lines().map(str::trim).find(|l| l.starts_with(".target"))?;
    let first = line[".target".len()..].split(',').next()?.trim();
    let digits: String = first.strip_prefix("sm_")?.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `silu(x) · g[row] · 0.5 + b[col]` over rows of 4.
    fn chain() -> EwChain {
        EwChain {
            inputs: vec![Bcast::Full, Bcast::Row, Bcast::Suffix],
            nodes: vec![
                EwNode::Input(0),
                EwNode::Unary(Unary::Silu, 0),
                EwNode::Input(1),
                EwNode::Binary(Binary::Mul, 1, 2),
                EwNode::Unary(Unary::Scale(0.5), 3),
                EwNode::Input(2),
                EwNode::Binary(Binary::Add, 4, 5),
            ],
            inner: Some(4),
        }
    }

    #[test]
    fn renders_the_golden_text() {
        let want = String::from(HELPERS)
            + "// in=FRS;v=in0,silu0,in1,mul1.2,scale3f000000.3,in2,add4.5,;rows\n"
            + "extern \"C\" __global__ void qgc_ew_test(float* out, const float* in0, const float* in1, \
               const float* in2, long long n, long long inner) {\n"
            + "    const long long step = (long long)gridDim.x * blockDim.x;\n"
            + "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {\n"
            + "        const float v0 = in0[i];\n"
            + "        const float v1 = qgc_ew_silu(v0);\n"
            + "        const float v2 = in1[i / inner];\n"
            + "        const float v3 = __fmul_rn(v1, v2);\n"
            + "        const float v4 = __fmul_rn(v3, __uint_as_float(0x3f000000u) /* 0.5 */);\n"
            + "        const float v5 = in2[i % inner];\n"
            + "        const float v6 = __fadd_rn(v4, v5);\n"
            + "        out[i] = v6;\n"
            + "    }\n"
            + "}\n";
        let got = render_chain("qgc_ew_test", &chain());
        assert_eq!(got, want);
        assert_eq!(render_chain("qgc_ew_test", &chain()).as_bytes(), got.as_bytes());
    }

    #[test]
    fn flat_chains_take_no_inner_length() {
        let c = EwChain {
            inputs: vec![Bcast::Full, Bcast::Scalar],
            nodes: vec![
                EwNode::Input(0),
                EwNode::Input(1),
                EwNode::Binary(Binary::Add, 0, 1),
                EwNode::Unary(Unary::Exp, 2),
            ],
            inner: None,
        };
        let text = render_chain("k", &c);
        assert!(text.contains("void k(float* out, const float* in0, const float* in1, long long n) {"), "{text}");
        assert!(text.contains("const float v1 = in1[0];") && text.contains("const float v3 = qgc_ew_exp(v2);"));
    }

    #[test]
    fn names_follow_the_structure_only() {
        let a = chain();
        let name = chain_kernel_name(&a);
        assert_eq!(name, chain_kernel_name(&chain()));
        assert!(name.starts_with("qgc_ew_") && name.len() == "qgc_ew_".len() + 16);
        assert_eq!(name, format!("qgc_ew_{:016x}", fnv1a(canonical(&a).as_bytes())));
        // The inner length is a launch parameter: the same kernel serves every L.
        assert_eq!(name, chain_kernel_name(&EwChain { inner: Some(7), ..chain() }));
        let mut b = chain();
        b.nodes[4] = EwNode::Unary(Unary::Scale(0.25), 3);
        assert_ne!(name, chain_kernel_name(&b));
        let mut c = chain();
        c.inputs[1] = Bcast::Suffix;
        assert_ne!(name, chain_kernel_name(&c));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
