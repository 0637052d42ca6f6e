//! `qgc bench`: prefill and decode speed of one sequence, and decode against the DRAM floor
//! (the bytes of weights one decode step reads, over a copy-bandwidth probe run in the same
//! process), measured like `../shared/bench/hf_cpu.py` measures HF transformers so the two can be
//! run side by side: a 64-token warm-up prefill, a timed prefill of N random tokens (logits of
//! the last token only), then M greedy decode steps, the median step after the first two.

use crate::load::{BackendArgs, BackendKind, ModelArgs};
use anyhow::{bail, Result};
use qgc_ir::interp::Rng;
use qgc_ir::LowerOptions;
use qgc_runtime::cpu::bandwidth::{self, median};
use qgc_runtime::sampling::argmax;
use qgc_runtime::Session;
use std::time::Instant;

/// How the weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsDtype {
    /// f32.
    F32,
    /// bf16 (widened to f32 in registers by the kernels).
    Bf16,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Storage of --random-weights (a checkpoint keeps its own dtype).
    #[arg(long, value_enum, default_value_t = WeightsDtype::F32)]
    weights_dtype: WeightsDtype,
    /// Prompt tokens in the timed prefill.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = crate::load::at_least_one)]
    prefill: usize,
    /// Decode steps timed after it (the median of all but the first two is reported).
    #[arg(long, value_name = "M", default_value_t = 24, value_parser = crate::load::at_least_one)]
    decode: usize,
    /// Seed of the random weights and tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (keys prefill_tok_s, decode_tok_s, decode_floor_ratio, ...).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let opened = a.model.open(&LowerOptions::default())?;
    if a.weights_dtype == WeightsDtype::Bf16 && !a.model.random_weights() {
        bail!("--weights-dtype applies to --random-weights; a checkpoint is benchmarked in its own dtype");
    }
    let t0 = Instant::now();
    let (m, loaded) = opened.load(a.seed, a.backend.backend, a.weights_dtype == WeightsDtype::Bf16)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let cpu = a.backend.compile(&m, loaded.raw())?;
    let compile_s = t0.elapsed().as_secs_f64();
    let vocab = m.spec.vocab_size;
    let backend = crate::load::backend(&cpu, loaded.source());
    let mut s = Session::with_backend(m.program.clone(), backend, vocab, usize::MAX, 1);
    // The whole run's context must fit before any of it is allocated.
    s.admit_context(a.prefill.saturating_add(a.decode))?;
    let mut rng = Rng::new(a.seed ^ 0x5eed);
    let tokens: Vec<i32> = (0..a.prefill).map(|_| rng.below(vocab) as i32).collect();

    let warm = tokens.len().min(64);
    s.prefill_last(&[tokens[..warm].to_vec()])?;
    s.reset();
    let t0 = Instant::now();
    let logits = s.prefill_last(std::slice::from_ref(&tokens))?.remove(0);
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut next = argmax(logits.as_f32().unwrap_or_default()) as i32;
    let mut steps = Vec::with_capacity(a.decode);
    for _ in 0..a.decode {
        let t0 = Instant::now();
        let l = s.decode(&[next])?;
        steps.push(t0.elapsed().as_secs_f64());
        next = argmax(l.as_f32().unwrap_or_default()) as i32;
    }
    let timed = if steps.len() > 2 { &mut steps[2..] } else { &mut steps[..] };
    let decode_s = median(timed);

    let bw = bandwidth::probe(256 << 20, 5);
    let decode_bytes = cpu.decode_bytes();
    // The floor is the memory the weights live in: the host's, or a GPU's (a timed device
    // copy); the PTX interpreter has none worth stating.
    let floor_gbs = match (&cpu, a.backend.device) {
        (crate::load::Compiled::Cuda(c), crate::load::DeviceKind::Gpu) => Some(device_copy_gbs(c.device())?),
        (crate::load::Compiled::Cuda(_), crate::load::DeviceKind::Ptx) => None,
        _ => Some(bw.copy_gbs),
    };
    let floor_s = decode_bytes.zip(floor_gbs).map(|(b, g)| b as f64 / (g * 1e9));
    let prefill_tok_s = a.prefill as f64 / prefill_s;
    let decode_tok_s = 1.0 / decode_s;
    let ratio = floor_s.map(|f| f / decode_s);
    let params: u64 = m.spec.param_counts().total;
    // KV bytes one decode step reads at the end of the run (the runtime keeps KV in f32).
    let context = (a.prefill + a.decode) as u64;
    let kv_read_bytes = m.spec.state_bytes(context, 4).kv_cache;
    let dtype = match (loaded.is_checkpoint(), a.weights_dtype) {
        (true, _) => "checkpoint",
        (_, WeightsDtype::Bf16) => "bf16",
        _ => "f32",
    };
    let backend = match a.backend.backend {
        BackendKind::Cpu => "cpu",
        BackendKind::Interp => "interp",
        BackendKind::Cuda => match a.backend.device {
            crate::load::DeviceKind::Gpu => "cuda",
            crate::load::DeviceKind::Ptx => "cuda-ptx",
        },
    };
    let order = match a.backend.prefill_order {
        crate::load::PrefillOrder::Invariant => "invariant",
        crate::load::PrefillOrder::Fastest => "fastest",
    };
    if a.json {
        let v = serde_json::json!({
            "engine": "qgc",
            "backend": backend,
            "weights_dtype": dtype,
            "threads": bw.threads,
            "params": params,
            "prefill_tokens": a.prefill,
            "decode_tokens": a.decode,
            "prefill_tok_s": prefill_tok_s,
            "prefill_order": order,
            "decode_tok_s": decode_tok_s,
            "decode_floor_ratio": ratio,
            "decode_bytes_per_token": decode_bytes,
            "context_tokens": context,
            "kv_read_bytes_per_token": kv_read_bytes,
            "copy_bandwidth_gb_s": bw.copy_gbs,
            "floor_bandwidth_gb_s": floor_gbs,
            "read_bandwidth_gb_s": bw.read_gbs,
            "floor_tok_s": floor_s.map(|f| 1.0 / f),
            "load_s": load_s,
            "compile_s": compile_s,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "qgc bench: {} ({:.0} M parameters), backend {backend}, weights {dtype}, {} threads",
        a.model.model.display(),
        params as f64 / 1e6,
        bw.threads
    );
    println!("  load     {load_s:>8.2} s   compile {compile_s:.2} s");
    println!(
        "  prefill  {:>8.1} tok/s  ({} tokens in {prefill_s:.2} s, logits of the last; --prefill-order {order})",
        prefill_tok_s, a.prefill
    );
    println!("  decode   {:>8.1} tok/s  (median of {} steps, {:.1} ms)", decode_tok_s, timed.len(), decode_s * 1e3);
    if let (Some(bytes), Some(floor), Some(r)) = (decode_bytes, floor_s, ratio) {
        println!(
            "  floor    {:>8.1} tok/s  ({:.0} MB of weights per token at {:.1} GB/s copy bandwidth; decode at {:.0}% of it)",
            1.0 / floor,
            bytes as f64 / 1e6,
            floor_gbs.unwrap_or(bw.copy_gbs),
            r * 100.0
        );
    }
    Ok(())
}

/// A GPU's copy bandwidth in GB/s (bytes read plus written per second, as the host probe counts
/// it): the median of 5 timed 256 MiB device-to-device copies.
fn device_copy_gbs(dev: &dyn qgc_runtime::cuda::Device) -> Result<f64> {
    let bytes = 256usize << 20;
    let (a, b) = (dev.alloc(bytes)?, dev.alloc(bytes)?);
    let run = || -> Result<f64> {
        dev.zero(a, bytes)?;
        dev.dtod(a, b, bytes)?;
        dev.synchronize()?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            dev.dtod(a, b, bytes)?;
            dev.synchronize()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        Ok(2.0 * bytes as f64 / times[2] / 1e9)
    };
    let r = run();
    let _ = (dev.free(a), dev.free(b));
    r
}
