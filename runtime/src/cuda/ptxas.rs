//! The `ptxas -v` report: every shipped kernel — the sources of [`kernels::SOURCES`] and the
//! elementwise chain kernels codegen renders for a model's schedules — compiled by NVRTC,
//! assembled by `ptxas -arch=sm_XX -v`, with registers, static shared memory, stack frame and
//! spills per kernel and arch. `scripts/ptxas-report` (`examples/ptxas_report.rs`) writes the
//! table to `runtime/src/cuda/kernels/PTXAS.md` and fails when any kernel spills;
//! `tests/ptxas_report.rs` checks the kept file is current.
//!
//! The table is deterministic: NVRTC and ptxas are pinned (`scripts/cuda-tools`), the order is
//! fixed (sources in [`kernels::SOURCES`] order, then chains by name; within a source by kernel
//! name, then arch), and nothing time- or machine-dependent (ptxas's compile times, paths) is
//! written.

use super::kernels::{self, SOURCES};
use super::{nvrtc, CudaError};
use qgc_codegen::compile::compile_program;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The archs the report covers.
pub const ARCHS: [u32; 2] = [80, 90];

/// What `ptxas -v` says about one kernel for one arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The source (family) name, or `chain` for a rendered elementwise chain.
    pub source: String,
    /// The kernel (entry function).
    pub kernel: String,
    /// `sm_<arch>`.
    pub arch: u32,
    /// Registers per thread.
    pub registers: u32,
    /// Named barriers used.
    pub barriers: u32,
    /// Static shared memory bytes (dynamic shared memory is set at launch and not counted).
    pub smem: u64,
    /// Stack frame bytes per thread.
    pub stack: u64,
    /// Spill store bytes.
    pub spill_stores: u64,
    /// Spill load bytes.
    pub spill_loads: u64,
}

impl Stats {
    /// Whether ptxas spilled registers to local memory.
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// One rendered elementwise chain kernel and the entry points whose schedules launch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainKernel {
    /// `qgc_ew_<hash>` ([`qgc_codegen::cuda::chain_kernel_name`]).
    pub name: String,
    /// Its CUDA C ([`qgc_codegen::cuda::render_chain`]).
    pub text: String,
    /// The entry points that use it (`decode`, `prefill`, ...).
    pub entries: BTreeSet<&'static str>,
}

/// The distinct chain kernels of every entry point of the model `spec_json` (a model spec in
/// JSON), as the CUDA path renders and names them, sorted by name.
pub fn chains_of(spec_json: &str) -> Result<Vec<ChainKernel>, String> {
    let spec = qgc_ir::ModelSpec::from_json(spec_json).map_err(|e| format!("model spec: {e}"))?;
    let program = qgc_ir::lower(&spec, &qgc_ir::LowerOptions::default()).map_err(|e| format!("lowering: {e}"))?;
    let (compiled, _) = compile_program(&program, &mut |_, _| {}).map_err(|e| format!("compiling: {e}"))?;
    let mut by_name: BTreeMap<String, ChainKernel> = BTreeMap::new();
    for e in &compiled.entries {
        for ch in &e.schedule.chains {
            let name = qgc_codegen::cuda::chain_kernel_name(ch);
            let k = by_name.entry(name.clone()).or_insert_with(|| ChainKernel {
                text: qgc_codegen::cuda::render_chain(&name, ch),
                name,
                entries: BTreeSet::new(),
            });
            k.entries.insert(e.entry.name());
        }
    }
    Ok(by_name.into_values().collect())
}

/// The `ptxas` beside NVRTC, or an error naming the install command.
pub fn ptxas_path() -> Result<PathBuf, CudaError> {
    let tools = nvrtc::tools()?;
    tools.ptxas.ok_or_else(|| {
        CudaError::Invalid(format!(
            "ptxas not found beside {} (expected bin/ptxas); run {} to install it",
            tools.nvrtc.display(),
            nvrtc::INSTALL
        ))
    })
}

/// `ptxas --version`'s version (`V13.0.88`).
pub fn ptxas_version(ptxas: &Path) -> Result<String, CudaError> {
    let out = Command::new(ptxas)
        .arg("--version")
        .output()
        .map_err(|e| CudaError::Driver { call: format!("{} --version", ptxas.display()), message: e.to_string() })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.starts_with('V') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| CudaError::Driver {
            call: format!("{} --version", ptxas.display()),
            message: format!("no version in {text:?}"),
        })
}

/// The number before `unit` in an item like `72 registers` / `0 bytes smem`.
fn number_before(item: &str, unit: &str) -> Option<u64> {
    let at = item.find(unit)?;
    item[..at].split_whitespace().last()?.parse().ok()
}

/// Parses `ptxas -v` output into per-kernel stats (source and arch left for the caller).
pub fn parse(output: &str) -> Result<Vec<Stats>, String> {
    let mut v: Vec<Stats> = Vec::new();
    let mut cur: Option<Stats> = None;
    for line in output.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("ptxas info    : Compiling entry function '") {
            if let Some(done) = cur.take() {
                v.push(done);
            }
            let kernel = rest.split('\'').next().unwrap_or("").to_string();
            cur = Some(Stats {
                source: String::new(),
                kernel,
                arch: 0,
                registers: 0,
                barriers: 0,
                smem: 0,
                stack: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if l.contains("bytes stack frame") {
            let s = cur.as_mut().ok_or_else(|| format!("stack line outside a kernel: {l}"))?;
            for item in l.split(',') {
                if let Some(n) = number_before(item, "bytes stack frame") {
                    s.stack = n;
                } else if let Some(n) = number_before(item, "bytes spill stores") {
                    s.spill_stores = n;
                } else if let Some(n) = number_before(item, "bytes spill loads") {
                    s.spill_loads = n;
                }
            }
        } else if let Some(rest) = l.strip_prefix("ptxas info    : Used ") {
            let s = cur.as_mut().ok_or_else(|| format!("usage line outside a kernel: {l}"))?;
            for item in format!("Used {rest}").split(',') {
                if let Some(n) = number_before(item, "registers") {
                    s.registers = u32::try_from(n).map_err(|_| format!("registers in {l}"))?;
                } else if let Some(n) = number_before(item, "barriers") {
                    s.barriers = u32::try_from(n).map_err(|_| format!("barriers in {l}"))?;
                } else if let Some(n) = number_before(item, "bytes smem") {
                    s.smem = n;
                }
            }
        }
    }
    v.extend(cur);
    Ok(v)
}

/// Writes `ptx` to `dir/<name>-sm<arch>.ptx` and assembles it with `ptxas -arch=sm_<arch> -v`
/// (the cubin beside it); the per-kernel stats, sorted by kernel name.
pub fn assemble(ptxas: &Path, dir: &Path, name: &str, ptx: &str, arch: u32) -> Result<Vec<Stats>, CudaError> {
    let fail = |message: String| CudaError::Driver { call: format!("ptxas -arch=sm_{arch} -v {name}"), message };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let file = dir.join(format!("{name}-sm{arch}.ptx"));
    std::fs::write(&file, ptx).map_err(|e| fail(format!("writing {}: {e}", file.display())))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch=sm_{arch}"))
        .arg("-v")
        .arg(&file)
        .arg("-o")
        .arg(file.with_extension("cubin"))
        .output()
        .map_err(|e| fail(format!("running {}: {e}", ptxas.display())))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(fail(format!("{}:\n{text}", out.status)));
    }
    let mut stats = parse(&text).map_err(fail)?;
    for s in &mut stats {
        s.source = name.to_string();
        s.arch = arch;
    }
    stats.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    Ok(stats)
}

/// A generated report.
#[derive(Debug, Clone)]
pub struct Report {
    /// NVRTC's (major, minor).
    pub nvrtc: (i32, i32),
    /// ptxas's version (`V13.0.88`).
    pub ptxas: String,
    /// The archs covered.
    pub archs: Vec<u32>,
    /// Where the chains came from (e.g. `models/qwen3-next-tiny.json`), if any.
    pub chains_from: Option<String>,
    /// The chain kernels covered.
    pub chains: Vec<ChainKernel>,
    /// One row per kernel and arch, in report order.
    pub rows: Vec<Stats>,
}

/// Compiles every source of [`SOURCES`] and every chain in `chains` for each of `archs` with
/// NVRTC (through the PTX cache), assembles the PTX with ptxas in `ptx_dir`, and collects the
/// stats. `chains_from` names the model the chains came from, for the header.
pub fn generate(
    archs: &[u32],
    chains: Vec<ChainKernel>,
    chains_from: Option<String>,
    ptx_dir: &Path,
) -> Result<Report, CudaError> {
    let ptxas = ptxas_path()?;
    let nvrtc_version = nvrtc::version()?;
    let ptxas_ver = ptxas_version(&ptxas)?;
    // (unit index, arch): units are the sources, then the chains.
    let units: Vec<(String, String, Vec<String>)> = SOURCES
        .iter()
        .map(|s| (s.name.to_string(), s.full_text(), s.kernels.iter().map(|k| k.to_string()).collect()))
        .chain(chains.iter().map(|c| (c.name.clone(), c.text.clone(), vec![c.name.clone()])))
        .collect();
    let jobs: Vec<(usize, u32)> = (0..units.len()).flat_map(|u| archs.iter().map(move |&a| (u, a))).collect();
    let results: Vec<Vec<Stats>> = jobs
        .par_iter()
        .map(|&(u, arch)| {
            let (name, text, want) = &units[u];
            let ptx = nvrtc::compile_text(name, text, arch)?;
            let stats = assemble(&ptxas, ptx_dir, name, &ptx, arch)?;
            let mut got: Vec<&str> = stats.iter().map(|s| s.kernel.as_str()).collect();
            let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
            got.sort_unstable();
            want.sort_unstable();
            if got != want {
                return Err(CudaError::Invalid(format!(
                    "{name} (sm_{arch}): ptxas reported kernels {got:?}, the source lists {want:?}"
                )));
            }
            Ok(stats)
        })
        .collect::<Result<_, CudaError>>()?;
    // Order: unit, then kernel name, then arch.
    let mut rows = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        let mut of_unit: Vec<Stats> =
            jobs.iter().zip(&results).filter(|((ju, _), _)| *ju == u).flat_map(|(_, r)| r.iter().cloned()).collect();
        of_unit.sort_by(|a, b| (a.kernel.as_str(), a.arch).cmp(&(b.kernel.as_str(), b.arch)));
        for s in &mut of_unit {
            if u >= SOURCES.len() {
                s.source = "chain".into();
            } else {
                s.source = unit.0.clone();
            }
        }
        rows.extend(of_unit);
    }
    Ok(Report { nvrtc: nvrtc_version, ptxas: ptxas_ver, archs: archs.to_vec(), chains_from, chains, rows })
}

impl Report {
    /// The rows that spill.
    pub fn spilling(&self) -> Vec<&Stats> {
        self.rows.iter().filter(|s| s.spills()).collect()
    }

    /// The row with the most registers (first in report order on ties).
    pub fn max_registers(&self) -> Option<&Stats> {
        self.rows.iter().fold(None, |best: Option<&Stats>, s| match best {
            Some(b) if b.registers >= s.registers => Some(b),
            _ => Some(s),
        })
    }

    /// One paragraph: kernel count, the most registers, stack frames and spills.
    pub fn summary(&self) -> String {
        let kernels: BTreeSet<&str> = self.rows.iter().map(|s| s.kernel.as_str()).collect();
        let mut s = format!(
            "{} kernels ({} from {} sources, {} chain kernels) × {} archs = {} rows",
            kernels.len(),
            kernels.len() - self.chains.len(),
            SOURCES.len(),
            self.chains.len(),
            self.archs.len(),
            self.rows.len()
        );
        if let Some(m) = self.max_registers() {
            let _ = write!(s, "; most registers: {} (`{}`, sm_{})", m.registers, m.kernel, m.arch);
        }
        let stack: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.stack > 0)
            .map(|r| format!("`{}` sm_{} {} B", r.kernel, r.arch, r.stack))
            .collect();
        if stack.is_empty() {
            s.push_str("; stack frames: none");
        } else {
            let _ = write!(s, "; stack frames: {}", stack.join(", "));
        }
        let spills = self.spilling();
        if spills.is_empty() {
            s.push_str("; spills: none.");
        } else {
            let list: Vec<String> = spills
                .iter()
                .map(|r| {
                    format!("`{}` sm_{} ({} B stored, {} B loaded)", r.kernel, r.arch, r.spill_stores, r.spill_loads)
                })
                .collect();
            let _ = write!(s, "; **spills: {}**.", list.join(", "));
        }
        s
    }

    /// The markdown file (`runtime/src/cuda/kernels/PTXAS.md`).
    pub fn markdown(&self) -> String {
        let archs: Vec<String> = self.archs.iter().map(|a| format!("sm_{a}")).collect();
        let mut s = String::new();
        s.push_str("# ptxas report\n\n");
        s.push_str(
            "Generated by `scripts/ptxas-report`; do not edit by hand (`runtime/tests/ptxas_report.rs` fails \
             when this file is not what the script writes).\n\n",
        );
        let _ = writeln!(
            s,
            "Every shipped kernel — the kernel sources of `runtime/src/cuda/kernels` (each compiled with \
             `common.cuh` in front) and the elementwise chain kernels codegen renders{} — compiled by NVRTC \
             {}.{} (PTX for `compute_XX`) and assembled by `ptxas -arch=sm_XX -v` (ptxas {}) for {}.",
            match &self.chains_from {
                Some(m) => format!(" for the schedules of `{m}`"),
                None => String::new(),
            },
            self.nvrtc.0,
            self.nvrtc.1,
            self.ptxas,
            archs.join(" and ")
        );
        s.push_str(
            "Registers are per thread; smem is static shared memory only (dynamic shared memory is set at \
             launch); stack and spills are bytes per thread. The script fails when any kernel spills.\n\n",
        );
        let _ = writeln!(s, "Summary: {}\n", self.summary());
        s.push_str("| source | kernel | arch | registers | smem bytes | stack bytes | spill stores | spill loads | barriers |\n");
        s.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | `{}` | sm_{} | {} | {} | {} | {} | {} | {} |",
                r.source, r.kernel, r.arch, r.registers, r.smem, r.stack, r.spill_stores, r.spill_loads, r.barriers
            );
        }
        if !self.chains.is_empty() {
            s.push_str("\n## Chain kernels\n\n");
            s.push_str(
                "What each rendered chain computes (its canonical structure) and the entry points that launch it.\n\n",
            );
            s.push_str("| kernel | entries | structure |\n|---|---|---|\n");
            for c in &self.chains {
                let structure = c
                    .text
                    .lines()
                    .find_map(|l| l.strip_prefix("// in="))
                    .map(|l| format!("`in={l}`"))
                    .unwrap_or_default();
                let entries: Vec<&str> = c.entries.iter().copied().collect();
                let _ = writeln!(s, "| `{}` | {} | {} |", c.name, entries.join(", "), structure);
            }
        }
        s
    }
}

/// Where the kept report lives (`runtime/src/cuda/kernels/PTXAS.md`), from the crate's folder.
pub fn report_path(manifest_dir: &Path) -> PathBuf {
    manifest_dir.join("src/cuda/kernels/PTXAS.md")
}

/// The kernels of [`kernels::SOURCES`], for coverage checks: `(source, kernel)`.
pub fn source_kernels() -> Vec<(&'static str, &'static str)> {
    kernels::SOURCES.iter().flat_map(|s| s.kernels.iter().map(move |k| (s.name, *k))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_v_output() {
        let out = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'b' for 'sm_80'\n\
ptxas info    : Function properties for b\n\
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 428 bytes cmem[0], 8 bytes cmem[2]\n\
ptxas info    : Compile time = 1.5 ms\n\
ptxas info    : Compiling entry function 'a' for 'sm_80'\n\
ptxas info    : Function properties for a\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 24 registers, used 0 barriers\n";
        let v = parse(out).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[0].kernel.as_str(),
                v[0].registers,
                v[0].barriers,
                v[0].smem,
                v[0].stack,
                v[0].spill_stores,
                v[0].spill_loads
            ),
            ("b", 40, 1, 2048, 16, 8, 4)
        );
        assert!(v[0].spills());
        assert_eq!((v[1].kernel.as_str(), v[1].registers, v[1].smem, v[1].stack), ("a", 24, 0, 0));
        assert!(!v[1].spills());
    }
}
