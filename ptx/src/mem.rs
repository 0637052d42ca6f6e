//! Device memory as the interpreter keeps it: global allocations at aligned synthetic addresses
//! with red zones between them, never reused (so a stale or out-of-bounds pointer is caught,
//! not silently aliased), and per-block shared memory with a racecheck shadow.

use std::collections::BTreeMap;

/// Where global allocations start (a high, recognisable address).
pub const GLOBAL_BASE: u64 = 0x7f00_0000_0000;
/// Red zone after every allocation, bytes.
pub const RED_ZONE: u64 = 4096;
/// Start of the shared window in `.shared` addressing (not 0, so a null offset is caught).
pub const SHARED_BASE: u64 = 0x1_0000;
/// Start of the local window in `.local` addressing.
pub const LOCAL_BASE: u64 = 0x2_0000;
/// Generic-address window of shared memory (`cvta.shared` adds it).
pub const GENERIC_SHARED: u64 = 0x0000_1000_0000_0000;
/// Generic-address window of local memory.
pub const GENERIC_LOCAL: u64 = 0x0000_2000_0000_0000;

/// One global allocation.
#[derive(Debug)]
pub struct Alloc {
    /// Bytes.
    pub data: Vec<u8>,
    /// What it is (for reports): `alloc #3`, `module m: __cudart_i2opi_f`.
    pub name: String,
    /// Freed (kept, so a use after free is named).
    pub freed: bool,
    /// Module constants and `.const`.
    pub readonly: bool,
}

/// Why an access failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Not inside any live allocation; the nearest one below, if any.
    OutOfBounds(Option<(u64, usize, String)>),
    /// Inside a freed allocation.
    Freed(String),
    /// The address is not a multiple of the access size.
    Misaligned,
    /// A write to read-only memory.
    ReadOnly(String),
}

impl Fault {
    /// A sentence for reports.
    pub fn describe(&self, addr: u64, size: usize) -> String {
        match self {
            Fault::OutOfBounds(Some((base, len, name))) => {
                let end = base + *len as u64;
                if addr >= end {
                    format!("{} bytes past the end of {name} at {base:#x} ({len} bytes)", addr - end)
                } else {
                    format!("straddles the end of {name} at {base:#x} ({len} bytes, access of {size})")
                }
            }
            Fault::OutOfBounds(None) => "below every allocation".to_string(),
            Fault::Freed(n) => format!("inside {n}, which was freed"),
            Fault::Misaligned => format!("not aligned to {size} bytes"),
            Fault::ReadOnly(n) => format!("{n} is read-only"),
        }
    }
}

/// Global memory.
#[derive(Debug, Default)]
pub struct Global {
    allocs: BTreeMap<u64, Alloc>,
    next: u64,
    count: usize,
}

impl Global {
    /// A fresh memory.
    pub fn new() -> Global {
        Global { allocs: BTreeMap::new(), next: GLOBAL_BASE, count: 0 }
    }

    /// Allocates `bytes` zeroed bytes named `name` (256-byte aligned, red zone after).
    pub fn alloc(&mut self, bytes: usize, name: Option<String>, readonly: bool) -> u64 {
        let base = self.next;
        self.count += 1;
        let name = name.unwrap_or_else(|| format!("allocation #{}", self.count));
        self.allocs.insert(base, Alloc { data: vec![0; bytes], name, freed: false, readonly });
        self.next = (base + bytes as u64 + RED_ZONE).div_ceil(256) * 256;
        base
    }

    /// Frees the allocation at `base`; false when there is none.
    pub fn free(&mut self, base: u64) -> bool {
        match self.allocs.get_mut(&base) {
            Some(a) if !a.freed => {
                a.freed = true;
                a.data = Vec::new();
                true
            }
            _ => false,
        }
    }

    /// Bytes of the live allocation starting at `base`.
    pub fn size(&self, base: u64) -> Option<usize> {
        self.allocs.get(&base).filter(|a| !a.freed).map(|a| a.data.len())
    }

    /// Live allocations (for leak reports).
    pub fn live(&self) -> impl Iterator<Item = (u64, &Alloc)> {
        self.allocs.iter().filter(|(_, a)| !a.freed).map(|(b, a)| (*b, a))
    }

    fn find(&self, addr: u64, size: usize) -> Result<(u64, &Alloc), Fault> {
        let Some((&base, a)) = self.allocs.range(..=addr).next_back() else { return Err(Fault::OutOfBounds(None)) };
        if a.freed {
            return Err(Fault::Freed(a.name.clone()));
        }
        if addr + size as u64 > base + a.data.len() as u64 {
            return Err(Fault::OutOfBounds(Some((base, a.data.len(), a.name.clone()))));
        }
        Ok((base, a))
    }

    /// Reads `out.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Fault> {
        let (base, a) = self.find(addr, out.len())?;
        let o = (addr - base) as usize;
        out.copy_from_slice(&a.data[o..o + out.len()]);
        Ok(())
    }

    /// Writes `src` at `addr`.
    pub fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), Fault> {
        let (base, a) = self.find(addr, src.len())?;
        if a.readonly {
            return Err(Fault::ReadOnly(a.name.clone()));
        }
        let o = (addr - base) as usize;
        if let Some(a) = self.allocs.get_mut(&base) {
            a.data[o..o + src.len()].copy_from_slice(src);
        }
        Ok(())
    }

    /// A mutable view of `len` bytes at `addr` (host copies, GEMMs).
    pub fn slice_mut(&mut self, addr: u64, len: usize) -> Result<&mut [u8], Fault> {
        let (base, _) = self.find(addr, len)?;
        let o = (addr - base) as usize;
        match self.allocs.get_mut(&base) {
            Some(a) => Ok(&mut a.data[o..o + len]),
            None => Err(Fault::OutOfBounds(None)),
        }
    }

    /// A view of `len` bytes at `addr`.
    pub fn slice(&self, addr: u64, len: usize) -> Result<&[u8], Fault> {
        let (base, a) = self.find(addr, len)?;
        let o = (addr - base) as usize;
        Ok(&a.data[o..o + len])
    }
}

/// Who touched a shared byte last in the current barrier interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shadow {
    /// Last writer thread + 1 (0: none) and the barrier epoch and warp-sync epoch it wrote in.
    pub writer: u32,
    /// Epoch of the write.
    pub w_epoch: u32,
    /// Warp-sync count of the writer's warp at the write.
    pub w_warp_epoch: u32,
    /// Reader thread + 1 (0: none, `u32::MAX`: several) and its epoch.
    pub reader: u32,
    /// Epoch of the reads.
    pub r_epoch: u32,
    /// Warp-sync count of the reader's warp at the read.
    pub r_warp_epoch: u32,
}

/// A shared-memory hazard: the two threads (block-linear ids), whether each wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hazard {
    /// The earlier thread.
    pub other: u32,
    /// Whether the earlier access was a write.
    pub other_wrote: bool,
}

/// Checks and records an access of `len` bytes at `off` by thread `t` (warp `t / 32`).
/// `epoch` is the block's barrier count, `warp_epoch` the warp's sync count.
pub fn race_check(
    shadow: &mut [Shadow],
    off: usize,
    len: usize,
    t: u32,
    write: bool,
    epoch: u32,
    warp_epoch: u32,
) -> Option<Hazard> {
    let me = t + 1;
    let mut hazard = None;
    for s in shadow.iter_mut().skip(off).take(len) {
        // Same warp, synced since: ordered.
        let ordered = |other: u32, we: u32| other != 0 && (other - 1) / 32 == t / 32 && we != warp_epoch;
        if s.writer != 0 && s.writer != me && s.w_epoch == epoch && !ordered(s.writer, s.w_warp_epoch) {
            hazard = hazard.or(Some(Hazard { other: s.writer - 1, other_wrote: true }));
        }
        if write && s.reader != 0 && s.reader != me && s.r_epoch == epoch {
            let other = if s.reader == u32::MAX { u32::MAX } else { s.reader - 1 };
            if s.reader == u32::MAX || !ordered(s.reader, s.r_warp_epoch) {
                hazard = hazard.or(Some(Hazard { other, other_wrote: false }));
            }
        }
        if write {
            *s = Shadow { writer: me, w_epoch: epoch, w_warp_epoch: warp_epoch, ..*s };
        } else if s.r_epoch != epoch || s.reader == 0 || s.reader == me {
            s.reader = me;
            s.r_epoch = epoch;
            s.r_warp_epoch = warp_epoch;
        } else {
            s.reader = u32::MAX;
        }
    }
    hazard
}
