//! Spec validation: every constraint, every error at once, each located by JSON path.
//!
//! Each entry of `blocks` is checked once at `blocks.NAME…`, inline layers at their own path
//! (`layers[1].pattern[0].mixer.head_dim`), references and counts at the entry that makes them.
//! Paths and the field names inside messages come from a [`Naming`], so the HF importer reports
//! the same checks at its config keys (`num_key_value_heads: 3 does not divide ...`).
//!
//! Rules (see the module's checks for the exact messages):
//! - `name` non-empty; `vocab_size`, `hidden_size`, `max_position_embeddings` positive;
//!   `rms_norm_eps` positive and finite;
//! - `layers` and every `pattern` non-empty, `repeat >= 1`, every block reference defined, at most
//!   [`MAX_LAYERS`] layers after expansion (counted with saturating arithmetic, never expanded);
//! - gated DeltaNet: the four head counts/dims positive, `num_value_heads` a multiple of
//!   `num_key_heads`, `conv_kernel >= 1` (1 is a per-channel scale with an empty conv state);
//! - gated attention: heads, kv heads and `head_dim` positive, `num_kv_heads` divides `num_heads`,
//!   `rope_theta` positive and finite, `partial_rotary_factor` in [0, 1] with at most head_dim rotated dims;
//! - MoE: `num_experts` positive, `1 <= top_k <= num_experts`, widths positive; dense width positive;
//! - `mtp.num_layers` in 1..=[`MAX_LAYERS`], `mtp.layer` a block name or a layer using gated
//!   attention;
//! - once everything else holds: no layer, embedding or whole model above 2^[`MAX_PARAMS_LOG2`]
//!   parameters, so later `usize` shape arithmetic cannot overflow.

use super::{FfnSpec, LayerItem, LayerSpec, MixerSpec, MtpFile, SpecError, SpecFile};

/// Most decoder layers a spec may expand to (also the most MTP layers).
pub(super) const MAX_LAYERS: u64 = 4096;

/// Models, layers and embeddings may have at most `2^MAX_PARAMS_LOG2` parameters.
pub(super) const MAX_PARAMS_LOG2: u32 = 48;

/// How validation names what it reports.
pub(super) trait Naming {
    /// Path of `field` (`mixer.num_kv_heads`, dotted, relative to the layer) of the layer written at
    /// `base` (`blocks.attn`, `layers[2]`); `base` is empty for top-level fields, `field` is empty
    /// for the entry itself.
    fn path(&self, base: &str, field: &str) -> String;
    /// How a message refers to another field of the same layer (`num_heads`).
    fn name(&self, field: &str) -> String;
}

/// The spec's own JSON paths.
struct SpecPaths;

impl Naming for SpecPaths {
    fn path(&self, base: &str, field: &str) -> String {
        match (base.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => base.to_string(),
            (false, false) => format!("{base}.{field}"),
        }
    }
    fn name(&self, field: &str) -> String {
        field.rsplit('.').next().unwrap_or(field).to_string()
    }
}

/// All problems of `f`, at the paths the user wrote.
pub(super) fn check(f: &SpecFile) -> Vec<SpecError> {
    check_named(f, &SpecPaths)
}

/// All problems of `f`, named by `naming`.
pub(super) fn check_named(f: &SpecFile, naming: &dyn Naming) -> Vec<SpecError> {
    let mut c = Checker { f, naming, errors: Vec::new() };
    c.top_level();
    for (name, layer) in &f.blocks {
        if name.is_empty() {
            c.err("blocks", "", "a block name must not be empty".into());
        }
        c.layer(&format!("blocks.{name}"), layer);
    }
    if f.layers.is_empty() {
        c.err("", "layers", "must not be empty".into());
    }
    for (i, item) in f.layers.iter().enumerate() {
        c.item(&format!("layers[{i}]"), item);
    }
    let n = count_layers(&f.layers);
    if n > MAX_LAYERS {
        let n = if n == u64::MAX { "more than 2^64".to_string() } else { n.to_string() };
        c.err("", "layers", format!("expands to {n} layers, more than the supported {MAX_LAYERS}"));
    }
    if let Some(m) = &f.mtp {
        c.mtp(m);
    }
    if c.errors.is_empty() {
        c.sizes();
    }
    c.errors
}

/// Decoder layers `items` expand to, saturating at `u64::MAX`.
fn count_layers(items: &[LayerItem]) -> u64 {
    items.iter().fold(0u64, |n, item| n.saturating_add(count_item(item)))
}

fn count_item(item: &LayerItem) -> u64 {
    match item {
        LayerItem::Block(_) | LayerItem::Layer(_) => 1,
        LayerItem::Repeat(r) => (r.repeat as u64).saturating_mul(count_layers(&r.pattern)),
    }
}

struct Checker<'a> {
    f: &'a SpecFile,
    naming: &'a dyn Naming,
    errors: Vec<SpecError>,
}

impl Checker<'_> {
    fn err(&mut self, base: &str, field: &str, message: String) {
        self.errors.push(SpecError { path: self.naming.path(base, field), message });
    }

    fn positive(&mut self, base: &str, field: &str, value: usize) {
        if value == 0 {
            self.err(base, field, "must be positive".into());
        }
    }

    fn positive_finite(&mut self, base: &str, field: &str, value: f64) {
        if !(value > 0.0 && value.is_finite()) {
            self.err(base, field, format!("must be positive and finite, got {value}"));
        }
    }

    fn name(&self, field: &str) -> String {
        self.naming.name(field)
    }

    fn top_level(&mut self) {
        let f = self.f;
        if f.name.trim().is_empty() {
            self.err("", "name", "must not be empty".into());
        }
        self.positive("", "vocab_size", f.vocab_size);
        self.positive("", "hidden_size", f.hidden_size);
        self.positive_finite("", "rms_norm_eps", f.rms_norm_eps);
        self.positive("", "max_position_embeddings", f.max_position_embeddings);
    }

    /// A `layers` or `pattern` entry at `path`.
    fn item(&mut self, path: &str, item: &LayerItem) {
        match item {
            LayerItem::Block(name) => {
                if !self.f.blocks.contains_key(name) {
                    let msg = self.unknown_block(name);
                    self.err(path, "", msg);
                }
            }
            LayerItem::Layer(l) => self.layer(path, l),
            LayerItem::Repeat(r) => {
                if r.pattern.is_empty() {
                    self.err(path, "pattern", "must not be empty".into());
                }
                if r.repeat == 0 {
                    self.err(path, "repeat", "must be at least 1, got 0".into());
                }
                for (j, p) in r.pattern.iter().enumerate() {
                    self.item(&format!("{path}.pattern[{j}]"), p);
                }
            }
        }
    }

    fn unknown_block(&self, name: &str) -> String {
        if self.f.blocks.is_empty() {
            format!("unknown block {name:?} (no blocks are defined)")
        } else {
            let known: Vec<&str> = self.f.blocks.keys().map(String::as_str).collect();
            format!("unknown block {name:?} (blocks: {})", known.join(", "))
        }
    }

    /// One layer definition written at `base`.
    fn layer(&mut self, base: &str, l: &LayerSpec) {
        self.mixer(base, &l.mixer);
        self.ffn(base, &l.ffn);
    }

    fn mixer(&mut self, base: &str, mixer: &MixerSpec) {
        match mixer {
            MixerSpec::GatedDeltanet(g) => {
                self.positive(base, "mixer.num_key_heads", g.num_key_heads);
                self.positive(base, "mixer.num_value_heads", g.num_value_heads);
                self.positive(base, "mixer.key_head_dim", g.key_head_dim);
                self.positive(base, "mixer.value_head_dim", g.value_head_dim);
                let (hk, hv) = (g.num_key_heads, g.num_value_heads);
                if hk > 0 && hv > 0 && hv % hk != 0 {
                    let msg = format!("{hv} is not a multiple of {} {hk}", self.name("mixer.num_key_heads"));
                    self.err(base, "mixer.num_value_heads", msg);
                }
                self.positive(base, "mixer.conv_kernel", g.conv_kernel);
            }
            MixerSpec::GatedAttention(a) => {
                self.positive(base, "mixer.num_heads", a.num_heads);
                self.positive(base, "mixer.num_kv_heads", a.num_kv_heads);
                self.positive(base, "mixer.head_dim", a.head_dim);
                if a.num_heads > 0 && a.num_kv_heads > 0 && a.num_heads % a.num_kv_heads != 0 {
                    let msg =
                        format!("{} does not divide {} {}", a.num_kv_heads, self.name("mixer.num_heads"), a.num_heads);
                    self.err(base, "mixer.num_kv_heads", msg);
                }
                self.positive_finite(base, "mixer.rope_theta", a.rope_theta);
                let f = a.partial_rotary_factor;
                if !(0.0..=1.0).contains(&f) {
                    self.err(base, "mixer.partial_rotary_factor", format!("must be in [0, 1], got {f}"));
                } else if a.rotated_dims() > a.head_dim {
                    let msg = format!(
                        "gives rotary dim int({} {} * {f}) = {}, which rotates {} dims (rounded up to even, as HF does), more than {} {}",
                        self.name("mixer.head_dim"),
                        a.head_dim,
                        a.rotary_dim(),
                        a.rotated_dims(),
                        self.name("mixer.head_dim"),
                        a.head_dim
                    );
                    self.err(base, "mixer.partial_rotary_factor", msg);
                }
            }
        }
    }

    fn ffn(&mut self, base: &str, ffn: &FfnSpec) {
        match ffn {
            FfnSpec::Moe(m) => {
                self.positive(base, "ffn.num_experts", m.num_experts);
                let (e, k) = (m.num_experts, m.top_k);
                if e > 0 && !(1..=e).contains(&k) {
                    let msg = format!("must be between 1 and {} {e}, got {k}", self.name("ffn.num_experts"));
                    self.err(base, "ffn.top_k", msg);
                } else if k == 0 {
                    self.err(base, "ffn.top_k", "must be at least 1, got 0".into());
                }
                self.positive(base, "ffn.expert_width", m.expert_width);
                if let Some(s) = &m.shared_expert {
                    self.positive(base, "ffn.shared_expert.width", s.width);
                }
            }
            FfnSpec::Dense(d) => self.positive(base, "ffn.width", d.width),
        }
    }

    fn mtp(&mut self, m: &MtpFile) {
        if m.num_layers == 0 {
            self.err("", "mtp.num_layers", "must be at least 1, got 0".into());
        } else if m.num_layers as u64 > MAX_LAYERS {
            let msg = format!("{} is more than the supported {MAX_LAYERS}", m.num_layers);
            self.err("", "mtp.num_layers", msg);
        }
        let base = "mtp.layer";
        match &m.layer {
            LayerItem::Block(name) => match self.f.blocks.get(name) {
                None => {
                    let msg = self.unknown_block(name);
                    self.err(base, "", msg);
                }
                Some(l) if !matches!(l.mixer, MixerSpec::GatedAttention(_)) => {
                    let msg = format!("block {name:?} uses {}; the mtp layer must use gated_attention", l.mixer.kind());
                    self.err(base, "", msg);
                }
                Some(_) => {}
            },
            LayerItem::Layer(l) => {
                self.layer(base, l);
                if !matches!(l.mixer, MixerSpec::GatedAttention(_)) {
                    let msg = format!("must be gated_attention in the mtp layer, got {}", l.mixer.kind());
                    self.err(base, "mixer", msg);
                }
            }
            LayerItem::Repeat(_) => {
                let msg = "must be a block name or a layer, not a {\"pattern\", \"repeat\"} segment".into();
                self.err(base, "", msg);
            }
        }
    }

    /// Parameter bounds; runs only on an otherwise valid spec (all references resolve).
    fn sizes(&mut self) {
        let f = self.f;
        let h = f.hidden_size as u128;
        let limit = 1u128 << MAX_PARAMS_LOG2;
        let mut over = false;
        let embedding = (f.vocab_size as u128).saturating_mul(h);
        if embedding > limit {
            self.err("", "vocab_size", format!("the embedding (vocab_size * hidden_size) {}", too_many(embedding)));
            over = true;
        }
        for (name, l) in &f.blocks {
            if layer_params(l, h) > limit {
                self.err(&format!("blocks.{name}"), "", format!("this layer {}", too_many(layer_params(l, h))));
                over = true;
            }
        }
        let mut total = embedding.saturating_mul(2);
        for (i, item) in f.layers.iter().enumerate() {
            let (n, big) = self.item_params(&format!("layers[{i}]"), item, h, limit);
            over |= big;
            total = total.saturating_add(n);
        }
        if let Some(m) = &f.mtp {
            let n = self.item_params("mtp.layer", &m.layer, h, limit).0;
            total = total.saturating_add(n.saturating_mul(m.num_layers as u128));
            // Its fc ([h, 2h]) and three norms: h² grows fastest of all.
            let fc = h.saturating_mul(h).saturating_mul(2).saturating_add(h.saturating_mul(3));
            if fc > limit {
                self.err(
                    "",
                    "hidden_size",
                    format!("the MTP block's fc (hidden_size * 2 * hidden_size) {}", too_many(fc)),
                );
                over = true;
            }
            total = total.saturating_add(fc);
        }
        if total > limit && !over {
            self.err("", "layers", format!("the expanded model {}", too_many(total)));
        }
    }

    /// Parameters of the layers `item` stands for, and whether an inline layer among them was
    /// reported as too large.
    fn item_params(&mut self, path: &str, item: &LayerItem, h: u128, limit: u128) -> (u128, bool) {
        match item {
            LayerItem::Block(name) => (self.f.blocks.get(name).map_or(0, |l| layer_params(l, h)), false),
            LayerItem::Layer(l) => {
                let n = layer_params(l, h);
                if n > limit {
                    self.err(path, "", format!("this layer {}", too_many(n)));
                }
                (n, n > limit)
            }
            LayerItem::Repeat(r) => {
                let (mut sum, mut big) = (0u128, false);
                for (j, p) in r.pattern.iter().enumerate() {
                    let (n, b) = self.item_params(&format!("{path}.pattern[{j}]"), p, h, limit);
                    sum = sum.saturating_add(n);
                    big |= b;
                }
                (sum.saturating_mul(r.repeat as u128), big)
            }
        }
    }
}

/// The end of a parameter-limit message.
fn too_many(n: u128) -> String {
    format!("has about {:.3e} parameters, more than the supported 2^{MAX_PARAMS_LOG2}", n as f64)
}

/// Parameters of one layer with residual width `h` (as `tensors::layer_tensors` declares them),
/// in saturating arithmetic.
fn layer_params(l: &LayerSpec, h: u128) -> u128 {
    let m = |xs: &[u128]| xs.iter().fold(1u128, |a, &x| a.saturating_mul(x));
    let s = |xs: &[u128]| xs.iter().fold(0u128, |a, &x| a.saturating_add(x));
    let mixer = match &l.mixer {
        MixerSpec::GatedDeltanet(g) => {
            let (hk, hv) = (g.num_key_heads as u128, g.num_value_heads as u128);
            let (dk, dv, k) = (g.key_head_dim as u128, g.value_head_dim as u128, g.conv_kernel as u128);
            let conv_dim = s(&[m(&[2, hk, dk]), m(&[hv, dv])]);
            let qkvz = m(&[s(&[m(&[2, hk, dk]), m(&[2, hv, dv])]), h]);
            s(&[qkvz, m(&[2, hv, h]), m(&[conv_dim, k]), m(&[2, hv]), dv, m(&[h, hv, dv])])
        }
        MixerSpec::GatedAttention(a) => {
            let (q, kv, d) = (a.num_heads as u128, a.num_kv_heads as u128, a.head_dim as u128);
            s(&[m(&[2, q, d, h]), m(&[2, kv, d, h]), m(&[h, q, d]), m(&[2, d])])
        }
    };
    let ffn = match &l.ffn {
        FfnSpec::Dense(d) => m(&[3, d.width as u128, h]),
        FfnSpec::Moe(moe) => {
            let e = moe.num_experts as u128;
            let shared = moe.shared_expert.as_ref().map_or(0, |x| s(&[m(&[3, x.width as u128, h]), h]));
            s(&[m(&[e, h]), m(&[3, e, moe.expert_width as u128, h]), shared])
        }
    };
    s(&[mixer, ffn, m(&[2, h])])
}
