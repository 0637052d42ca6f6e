//! Token embedding: a row gather from an f32 or bf16 table (`Embed` in the IR).

use super::{CpuError, WeightRef};

/// `out[n] = table[ids[n]]` for every id; `table: [V, H]` (f32 or bf16), `ids: [T]`,
/// `out: [T, H]`. Errors on an id outside `0..V` (nothing after it is written).
pub fn embed(table: WeightRef, v: usize, h: usize, ids: &[i32], out: &mut [f32]) -> Result<(), CpuError> {
    assert!(table.len() == v * h, "embed: table must be [{v}, {h}]");
    assert!(out.len() >= ids.len() * h, "embed: out must be [{}, {h}]", ids.len());
    for (n, &id) in ids.iter().enumerate() {
        let row = usize::try_from(id).ok().filter(|&r| r < v);
        let row = row.ok_or(CpuError::TokenId { id, index: n, vocab: v })?;
        let o = &mut out[n * h..][..h];
        match table {
            WeightRef::F32(t) => o.copy_from_slice(&t[row * h..][..h]),
            WeightRef::Bf16(t) => o.iter_mut().zip(&t[row * h..][..h]).for_each(|(d, s)| *d = s.to_f32()),
        }
    }
    Ok(())
}
