//! Memory admission: every allocation sized from user input (weights drawn or converted, expert
//! stacks, decode state for a batch and a context, a call's arena) is checked against one
//! process-wide budget *before* it is made, with sizes computed in checked arithmetic, and
//! refused with a named error instead of aborting the process ("random f32 weights: 512.0 GiB
//! needed, 23.1 GiB of memory available").
//!
//! The budget is `--memory-limit` when given ([`set_limit`]), else the memory the machine can
//! give now: `MemAvailable` from `/proc/meminfo`, capped by a cgroup limit (`memory.max`) when
//! one applies ([`available`]). Long-lived allocations hold a [`Reservation`] (released on drop),
//! so later requests see what earlier ones took; one-off checks use [`Budget::admit`]. The
//! server and the CUDA backend admit requests and device weights through the same type.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The size does not fit in 64 bits.
    #[error("{what}: the size overflows 64-bit arithmetic")]
    Overflow {
        /// What was being sized.
        what: String,
    },
    /// More than the budget leaves.
    #[error("{what}: {} needed, {} of memory {}", human(*.need), human(*.available), .source_desc)]
    TooBig {
        /// What was being sized ("random f32 weights").
        what: String,
        /// Bytes it needs.
        need: u64,
        /// Bytes the budget has left.
        available: u64,
        /// Where the budget comes from, for the message.
        source_desc: String,
    },
}

/// `12.3 GiB`-style byte counts.
pub fn human(bytes: u64) -> String {
    qgc_ir::poly::human_bytes(bytes, 1)
}

/// Parses `8GiB`, `512MiB`, `24G`, `1e9`, `4096` (bytes) into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size (e.g. 8GiB, 512MiB, 24G)"))?;
    let mul: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, TiB, or k, M, G, T)")),
    };
    let v = n * mul;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(format!("{s:?} is not a size this machine can have"));
    }
    Ok(v as u64)
}

/// The bytes this process may allocate now: `MemAvailable`, capped by the cgroup's
/// `memory.max` minus its `memory.current`; `None` when neither can be read.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kb.checked_mul(1024)
    });
    let cgroup = (|| {
        let max: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse().ok()?;
        let cur: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse().ok()?;
        Some(max.saturating_sub(cur))
    })();
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A memory budget: a limit and what live reservations hold.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    from_flag: bool,
}

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static GLOBAL: OnceLock<Budget> = OnceLock::new();

/// Sets the process budget to `bytes` (`--memory-limit`); must come before the first use of
/// [`global`] (later calls are ignored). `None` keeps the default.
pub fn set_limit(bytes: Option<u64>) {
    let _ = LIMIT.set(bytes);
}

/// The process-wide budget (see the module doc).
pub fn global() -> &'static Budget {
    GLOBAL.get_or_init(|| match LIMIT.get().copied().flatten() {
        Some(b) => Budget::new(b, true),
        None => Budget::new(available().unwrap_or(u64::MAX), false),
    })
}

impl Budget {
    /// A budget of `limit` bytes (`from_flag`: it came from `--memory-limit`).
    pub fn new(limit: u64, from_flag: bool) -> Budget {
        Budget { limit, used: AtomicU64::new(0), from_flag }
    }

    /// Bytes not held by a reservation.
    pub fn left(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    fn refuse(&self, what: &str, need: u64) -> BudgetError {
        let source_desc = if self.from_flag { "left under --memory-limit" } else { "available" }.to_string();
        BudgetError::TooBig { what: what.to_string(), need, available: self.left(), source_desc }
    }

    /// Checks that `bytes` (`None`: the size overflowed) fit in what is left, holding nothing.
    /// `what` is only formatted when it is refused (callers on a per-call path pass
    /// `format_args!`).
    pub fn admit(&self, what: impl fmt::Display, bytes: Option<u64>) -> Result<u64, BudgetError> {
        let need = bytes.ok_or_else(|| BudgetError::Overflow { what: what.to_string() })?;
        if need > self.left() {
            return Err(self.refuse(&what.to_string(), need));
        }
        Ok(need)
    }

    /// Holds `bytes` until the reservation drops (or is resized).
    pub fn reserve(&'static self, what: impl fmt::Display, bytes: Option<u64>) -> Result<Reservation, BudgetError> {
        let mut r = Reservation { budget: self, bytes: 0 };
        r.resize(what, bytes)?;
        Ok(r)
    }
}

/// Bytes held in a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: &'static Budget,
    bytes: u64,
}

impl Reservation {
    /// An empty reservation in the process budget.
    pub fn none() -> Reservation {
        Reservation { budget: global(), bytes: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds `bytes` instead (more: admitted against what is left; fewer: released). `what` is
    /// only formatted when it is refused.
    pub fn resize(&mut self, what: impl fmt::Display, bytes: Option<u64>) -> Result<(), BudgetError> {
        let need = bytes.ok_or_else(|| BudgetError::Overflow { what: what.to_string() })?;
        let b = self.budget;
        if need <= self.bytes {
            b.used.fetch_sub(self.bytes - need, Ordering::Relaxed);
            self.bytes = need;
            return Ok(());
        }
        let more = need - self.bytes;
        let mut used = b.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(more) > b.limit {
                return Err(b.refuse(&what.to_string(), more));
            }
            match b.used.compare_exchange_weak(used, used + more, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.bytes = need;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// `Π dims · elem` in checked arithmetic (`None` on overflow).
pub fn bytes_of(dims: &[usize], elem: u64) -> Option<u64> {
    dims.iter().try_fold(elem, |acc, &d| acc.checked_mul(d as u64))
}

/// Reads a whole file whose size comes from the user (a prompt, a token list, a config, a state
/// file), refusing — as an `OutOfMemory` I/O error carrying the [`BudgetError`] message —
/// one larger than the budget leaves. The read itself is bounded too, so a device or a pipe
/// that never ends (`/dev/zero`) is refused rather than read until memory runs out.
pub fn read(path: impl AsRef<std::path::Path>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let path = path.as_ref();
    let f = std::fs::File::open(path)?;
    let refuse = |need: u64| {
        let e = global().admit(format!("reading {}", path.display()), Some(need)).err();
        std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.map_or_else(|| "too large".into(), |e| e.to_string()))
    };
    let left = global().left();
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > left {
        return Err(refuse(len));
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(left.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > left {
        return Err(refuse(out.len() as u64));
    }
    Ok(out)
}

/// [`read`] as UTF-8 text (an `InvalidData` error when it is not).
pub fn read_to_string(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("24G"), Ok(24_000_000_000));
        assert_eq!(parse_size("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err() && parse_size("-1G").is_err() && parse_size("1e30TiB").is_err());
        assert_eq!(human(512 << 30), "512.0 GiB");
        assert_eq!(human(100), "100 B");
    }

    #[test]
    fn reservations_count_against_the_limit_and_release() {
        let b: &'static Budget = Box::leak(Box::new(Budget::new(1000, true)));
        let r = b.reserve("a", Some(600)).unwrap();
        assert_eq!(b.left(), 400);
        let err = b.reserve("state tensors", Some(500)).unwrap_err();
        assert_eq!(err.to_string(), "state tensors: 500 B needed, 400 B of memory left under --memory-limit");
        assert!(b.admit("x", Some(400)).is_ok() && b.admit("x", None).is_err());
        drop(r);
        assert_eq!(b.left(), 1000);
        let mut r = b.reserve("a", Some(100)).unwrap();
        r.resize("a", Some(900)).unwrap();
        assert!(r.resize("a", Some(1001)).is_err());
        assert_eq!(r.bytes(), 900);
        r.resize("a", Some(10)).unwrap();
        assert_eq!(b.left(), 990);
        assert_eq!(bytes_of(&[usize::MAX, 2], 4), None);
    }
}
