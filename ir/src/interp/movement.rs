//! Data movement: embedding gather, reshape, slice and concat. Slice and concat work on both
//! f32 and i32 tensors.

use super::{dims, f32s, i32s, want, Data, Tensor};

/// Row gather: `table` f32 `[V,H]`, `ids` i32 [..] -> f32 [.., H]. An id outside `0..V` is an error.
pub fn embed(table: &Tensor, ids: &Tensor) -> Result<Tensor, String> {
    let [v, h] = dims::<2>(table, "embedding table")?;
    let t = f32s(table, "embedding table")?;
    let ids_v = i32s(ids, "token ids")?;
    let mut out = Vec::with_capacity(ids_v.len() * h);
    for (n, &id) in ids_v.iter().enumerate() {
        let row = usize::try_from(id).ok().filter(|&r| r < v);
        let row = row.ok_or_else(|| format!("token id {id} (flat index {n}) is outside the vocabulary 0..{v}"))?;
        out.extend_from_slice(&t[row * h..(row + 1) * h]);
    }
    let mut shape = ids.shape.clone();
    shape.push(h);
    Ok(Tensor::f32(shape, out))
}

/// `x` with its elements in row-major order under a new `shape` of equal element count.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    want(n == x.numel(), || format!("cannot reshape {} to {shape:?}", x.describe()))?;
    Ok(Tensor { shape: shape.to_vec(), data: x.data.clone() })
}

/// `x[..., start..start+len, ...]` along `axis`.
pub fn slice(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor, String> {
    want(axis < x.shape.len(), || format!("slice axis {axis} out of range for {}", x.describe()))?;
    let n = x.shape[axis];
    want(start + len <= n, || {
        format!("slice {start}..{} out of 0..{n} on axis {axis} of {}", start + len, x.describe())
    })?;
    let inner: usize = x.shape[axis + 1..].iter().product();
    let (from, take) = (start * inner, len * inner);
    let rows = n * inner;
    let data = match &x.data {
        Data::F32(v) => Data::F32(slice_rows(v, rows, from, take)),
        Data::I32(v) => Data::I32(slice_rows(v, rows, from, take)),
    };
    let mut shape = x.shape.clone();
    shape[axis] = len;
    Ok(Tensor { shape, data })
}

/// From each block of `rows` elements, the `take` elements starting at `from`.
fn slice_rows<T: Copy>(v: &[T], rows: usize, from: usize, take: usize) -> Vec<T> {
    if rows == 0 {
        return Vec::new();
    }
    v.chunks(rows).flat_map(|block| &block[from..from + take]).copied().collect()
}

/// Concatenation of `parts` along `axis`; all other dims and the dtype must agree.
pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = parts.first().ok_or("concat of nothing")?;
    want(axis < first.shape.len(), || format!("concat axis {axis} out of range for {}", first.describe()))?;
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for p in parts {
        let same_rank = p.shape.len() == first.shape.len();
        let off_axis = same_rank && (0..p.shape.len()).all(|d| d == axis || p.shape[d] == first.shape[d]);
        let same_dtype = std::mem::discriminant(&p.data) == std::mem::discriminant(&first.data);
        want(off_axis && same_dtype, || format!("concat operands {} and {} differ", first.describe(), p.describe()))?;
        shape[axis] += p.shape[axis];
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let data = match &first.data {
        Data::F32(_) => {
            let blocks: Vec<(&[f32], usize)> =
                parts.iter().map(|p| (p.as_f32().unwrap_or(&[]), p.shape[axis] * inner)).collect();
            Data::F32(interleave(&blocks, outer))
        }
        Data::I32(_) => {
            let blocks: Vec<(&[i32], usize)> =
                parts.iter().map(|p| (p.as_i32().unwrap_or(&[]), p.shape[axis] * inner)).collect();
            Data::I32(interleave(&blocks, outer))
        }
    };
    Ok(Tensor { shape, data })
}

/// For each of `outer` rows, the row's block of every part in turn (`(data, block size)`).
fn interleave<T: Copy>(parts: &[(&[T], usize)], outer: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(parts.iter().map(|(v, _)| v.len()).sum());
    for o in 0..outer {
        for (v, n) in parts {
            out.extend_from_slice(&v[o * n..(o + 1) * n]);
        }
    }
    out
}
