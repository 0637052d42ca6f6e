//! Opening a MODEL argument: a spec JSON, an HF model directory or config.json (imported on the
//! fly), or a compiled artifact. Every command that takes a MODEL goes through [`open_model`].

use qgc_codegen::compile::CompiledProgram;
use qgc_codegen::Artifact;
use qgc_ir::spec::hf;
use qgc_ir::{LowerOptions, ModelSpec, Program, SpecErrors};
use std::path::{Path, PathBuf};

/// What a MODEL argument turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A qgc spec (`models/*.json`).
    Spec,
    /// An HF model directory (config.json + safetensors).
    HfDir,
    /// An HF config.json on its own.
    HfConfig,
    /// A compiled artifact.
    Artifact,
}

/// A model ready to run: spec, lowered program, and where weights may come from.
#[derive(Debug, Clone)]
pub struct Model {
    /// The validated spec.
    pub spec: ModelSpec,
    /// Lowering options used.
    pub options: LowerOptions,
    /// Both entry points.
    pub program: Program,
    /// The compiled program, when MODEL was an artifact (otherwise compiled on demand).
    pub compiled: Option<CompiledProgram>,
    /// The PTX of its CUDA kernels, when MODEL was an artifact compiled with `--target cuda`
    /// (checked: every kernel family and chain is there); otherwise NVRTC compiles them.
    pub cuda: Option<qgc_codegen::cuda::CudaKernels>,
    /// What the argument was.
    pub kind: ModelKind,
    /// The HF directory, when MODEL was one (its weights are the default).
    pub hf_dir: Option<PathBuf>,
}

/// Failures opening a MODEL.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The path is not there or unreadable.
    #[error("{path}")]
    Io {
        /// MODEL path (or the file in it that could not be read).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON (and not an artifact).
    #[error("{path}: not a qgc artifact, spec or HF config: invalid JSON")]
    Json {
        /// MODEL path.
        path: String,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// The path is not something qgc opens.
    #[error("{path}: {message}")]
    NotAModel {
        /// MODEL path.
        path: String,
        /// What it is instead.
        message: String,
    },
    /// The spec or config is invalid; all problems listed.
    #[error("{path}: invalid {what}:\n{}", indent(.errors))]
    Spec {
        /// File.
        path: String,
        /// `spec` or `HF config`.
        what: &'static str,
        /// Every problem.
        errors: SpecErrors,
    },
    /// The artifact is unreadable.
    #[error(transparent)]
    Artifact(#[from] qgc_codegen::ArtifactError),
    /// Lowering failed (a bug: validated specs must lower).
    #[error("{path}: lowering failed")]
    Lower {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: qgc_ir::IrError,
    },
}

fn indent(e: &SpecErrors) -> String {
    e.0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// Opens `path` as a spec, HF dir/config or artifact; lowers with `options` unless it is an
/// artifact (which carries its own program).
pub fn open_model(path: &Path, options: &LowerOptions) -> Result<Model, ModelError> {
    let shown = path.display().to_string();
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ModelError::Io { path, source }
    };
    let not_a_model = |message: &str| ModelError::NotAModel { path: shown.clone(), message: message.into() };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_dir() {
        let config = path.join("config.json");
        if !config.is_file() {
            return Err(not_a_model("directory has no config.json (expected an HF model directory)"));
        }
        let text = crate::budget::read_to_string(&config).map_err(io(&config))?;
        let names = crate::weights::Checkpoint::open(path).ok().map(|c| c.names());
        let spec = import(&config, &text, names.as_deref())?;
        let mut m = lowered(spec, options, ModelKind::HfDir, &shown)?;
        m.hf_dir = Some(path.to_path_buf());
        return Ok(m);
    }
    let bytes = crate::budget::read(path).map_err(io(path))?;
    if Artifact::sniff(&bytes) {
        let art = Artifact::from_bytes(&bytes, &shown)?;
        if let Some(k) = &art.cuda {
            crate::cuda::nvrtc::check_families(k).map_err(|message| {
                ModelError::Artifact(qgc_codegen::ArtifactError::Invalid { path: shown.clone(), message })
            })?;
        }
        return Ok(Model {
            spec: art.spec,
            options: art.options,
            program: art.program,
            compiled: Some(art.compiled),
            cuda: art.cuda,
            kind: ModelKind::Artifact,
            hf_dir: None,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| not_a_model("not a qgc artifact and not UTF-8 JSON"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Json { path: shown.clone(), source: e })?;
    if value.get("model_type").is_some() {
        let spec = import(path, &text, None)?;
        return lowered(spec, options, ModelKind::HfConfig, &shown);
    }
    let spec =
        ModelSpec::from_json(&text).map_err(|errors| ModelError::Spec { path: shown.clone(), what: "spec", errors })?;
    lowered(spec, options, ModelKind::Spec, &shown)
}

fn import(config: &Path, text: &str, names: Option<&[String]>) -> Result<ModelSpec, ModelError> {
    let err = |errors| ModelError::Spec { path: config.display().to_string(), what: "HF config", errors };
    hf::import_config(text, names).and_then(|f| f.resolve()).map_err(err)
}

fn lowered(spec: ModelSpec, options: &LowerOptions, kind: ModelKind, path: &str) -> Result<Model, ModelError> {
    let program = qgc_ir::lower(&spec, options).map_err(|source| ModelError::Lower { path: path.into(), source })?;
    Ok(Model { spec, options: *options, program, compiled: None, cuda: None, kind, hf_dir: None })
}

/// Bytes of every weight of `spec` at `elem` bytes each (with the MTP block's when `mtp`), in
/// checked arithmetic (`None` on overflow): what drawing random weights or converting a
/// checkpoint to f32 is admitted against.
pub fn weight_bytes(spec: &ModelSpec, elem: u64, mtp: bool) -> Option<u64> {
    (spec.tensors().iter().filter(|d| mtp || !d.mtp))
        .try_fold(0u64, |acc, d| acc.checked_add(crate::budget::bytes_of(&d.shape, elem)?))
}

/// Refuses a model whose smallest call — one decode step of one sequence with one token in its
/// state — cannot fit in the memory budget (its arena plus that state): nothing of it could
/// run here. Sizes in checked arithmetic.
pub fn admit_one_step(spec: &ModelSpec, c: &CompiledProgram) -> Result<(), crate::budget::BudgetError> {
    let bind = qgc_ir::Bindings { b: 1, s: 1, p: 1 };
    let Some(decode) = c.entry(qgc_codegen::compile::Entry::Decode) else { return Ok(()) };
    let arena = decode.schedule.arena_bytes.checked_eval(&bind);
    let state = (c.state.iter())
        .map(|d| crate::budget::bytes_of(&d.ty.eval(&bind), d.ty.dtype.size() as u64))
        .try_fold(0u64, |acc, b| acc.checked_add(b?));
    let need = arena.zip(state).and_then(|(a, s)| a.checked_add(s));
    crate::budget::global().admit(format!("one decode step of {} (activations and state)", spec.name), need)?;
    Ok(())
}
