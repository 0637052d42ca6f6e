//! Executing one launch: blocks one after another; inside a block each thread runs on its own
//! until it reaches a barrier, a warp collective or its end (`../shared/cuda.md` §2); a
//! collective completes once every non-exited lane of its mask has arrived with the same
//! opcode, qualifiers and mask, a barrier once every non-exited thread of the block waits at
//! it. Nothing runnable while someone waits is a deadlock. Threads run in the order the
//! [`Order`] knob says; shared accesses are race-checked between barriers.

use crate::alu::{self, mask, sext};
use crate::inst::{Op, Operand, Space, Sreg, Ty};
use crate::mem::{self, race_check, Fault, Global, Shadow};
use crate::{Dim3, LoadedKernel, Options, Order, PtxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Run,
    Barrier,
    /// Waiting at a collective: (opcode, mode word, mask).
    Coll(Op, &'static str, u32),
    Done,
}

struct Thread {
    regs: Vec<u64>,
    pc: usize,
    state: State,
    local: Vec<u8>,
    /// Collective inputs: value, b, c, and the destination operand index.
    pend: [u64; 3],
}

/// One block's execution state.
pub(crate) struct Block<'a> {
    k: &'a LoadedKernel,
    opts: &'a Options,
    ctaid: Dim3,
    grid: Dim3,
    ntid: Dim3,
    params: &'a [u8],
    shared: Vec<u8>,
    shadow: Vec<Shadow>,
    epoch: u32,
    warp_epoch: Vec<u32>,
    dyn_smem: u32,
    threads: Vec<Thread>,
    rng: u64,
    steps: u64,
    atomic: bool,
    /// The thread executing and the pc of its instruction.
    cur: (usize, usize),
}

fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Buffers a launch reuses from block to block (threads' registers and local memory, shared
/// memory and its shadow), so a grid of many blocks allocates once.
#[derive(Default)]
pub(crate) struct Scratch {
    threads: Vec<Thread>,
    shared: Vec<u8>,
    shadow: Vec<Shadow>,
}

/// Runs one block to completion.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_block(
    k: &LoadedKernel,
    opts: &Options,
    glob: &mut Global,
    (ctaid, grid, ntid): (Dim3, Dim3, Dim3),
    params: &[u8],
    dyn_smem: u32,
    seed: u64,
    scratch: &mut Scratch,
) -> Result<u64, PtxError> {
    let n = (ntid.0 * ntid.1 * ntid.2) as usize;
    let smem = k.shared_bytes + dyn_smem as usize;
    let mut threads = std::mem::take(&mut scratch.threads);
    threads.truncate(n);
    for t in threads.iter_mut() {
        t.regs.clear();
        t.regs.resize(k.kernel.regs, 0);
        t.local.clear();
        t.local.resize(k.local_bytes, 0);
        t.pc = 0;
        t.state = State::Run;
    }
    while threads.len() < n {
        threads.push(Thread {
            regs: vec![0; k.kernel.regs],
            pc: 0,
            state: State::Run,
            local: vec![0; k.local_bytes],
            pend: [0; 3],
        });
    }
    let mut shared = std::mem::take(&mut scratch.shared);
    shared.clear();
    shared.resize(smem, 0);
    let mut shadow = std::mem::take(&mut scratch.shadow);
    shadow.clear();
    if opts.racecheck {
        shadow.resize(smem, Shadow::default());
    }
    let mut b = Block {
        k,
        opts,
        ctaid,
        grid,
        ntid,
        params,
        shared,
        shadow,
        epoch: 1,
        warp_epoch: vec![1; n.div_ceil(32)],
        dyn_smem,
        threads,
        rng: seed,
        steps: 0,
        atomic: false,
        cur: (usize::MAX, 0),
    };
    let r = b.run(glob);
    scratch.threads = b.threads;
    scratch.shared = b.shared;
    scratch.shadow = b.shadow;
    r.map(|_| b.steps)
}

impl Block<'_> {
    fn order(&mut self) -> Vec<usize> {
        let n = self.threads.len();
        let mut v: Vec<usize> = (0..n).collect();
        match self.opts.order {
            Order::Forward => {}
            Order::Reverse => v.reverse(),
            Order::Random(_) => {
                for i in (1..n).rev() {
                    let j = (next_rand(&mut self.rng) % (i as u64 + 1)) as usize;
                    v.swap(i, j);
                }
            }
        }
        v
    }

    fn run(&mut self, glob: &mut Global) -> Result<(), PtxError> {
        loop {
            for t in self.order() {
                while self.threads[t].state == State::Run {
                    self.step(t, glob)?;
                }
            }
            if self.threads.iter().all(|t| t.state == State::Done) {
                return Ok(());
            }
            if self.complete_collectives()? {
                continue;
            }
            let waiting = self.threads.iter().filter(|t| t.state == State::Barrier).count();
            let live = self.threads.iter().filter(|t| t.state != State::Done).count();
            if waiting == live {
                self.epoch += 1;
                for t in &mut self.threads {
                    if t.state == State::Barrier {
                        t.state = State::Run;
                    }
                }
                continue;
            }
            return Err(self.deadlock());
        }
    }

    fn deadlock(&self) -> PtxError {
        // Group the waiting threads by (pc, what they wait at).
        let mut groups: Vec<(usize, String, Vec<usize>)> = Vec::new();
        for (i, t) in self.threads.iter().enumerate() {
            let what = match t.state {
                State::Done | State::Run => continue,
                State::Barrier => "bar.sync".to_string(),
                State::Coll(op, w, m) => format!("{op:?} {w} mask {m:#010x}").to_lowercase(),
            };
            let pc = t.pc.saturating_sub(1);
            match groups.iter_mut().find(|g| g.0 == pc && g.1 == what) {
                Some(g) => g.2.push(i),
                None => groups.push((pc, what, vec![i])),
            }
        }
        let waiting: usize = groups.iter().map(|g| g.2.len()).sum();
        let parts: Vec<String> = groups
            .iter()
            .map(|(pc, what, ts)| {
                let first = self.tid3(ts[0]);
                let last = self.tid3(ts[ts.len() - 1]);
                format!("{} threads {first}..{last} at pc {pc} ({what})", ts.len())
            })
            .collect();
        PtxError::Exec {
            kernel: self.k.kernel.name.clone(),
            block: self.ctaid,
            thread: None,
            pc: None,
            message: format!("deadlock: {waiting} threads wait and none can run: {}", parts.join("; ")),
        }
    }

    /// An error for a thread waiting at a collective (its pc is past the instruction).
    fn err_waiting(&self, t: usize, message: String) -> PtxError {
        let pc = self.threads[t].pc.saturating_sub(1);
        PtxError::Exec {
            kernel: self.k.kernel.name.clone(),
            block: self.ctaid,
            thread: Some(self.tid3(t)),
            pc: Some((pc, self.k.kernel.text.get(pc).cloned().unwrap_or_default())),
            message,
        }
    }

    fn tid3(&self, i: usize) -> String {
        let (x, y, _) = self.ntid;
        let i = i as u32;
        format!("({},{},{})", i % x, (i / x) % y, i / (x * y))
    }

    pub(crate) fn err(&self, t: usize, message: String) -> PtxError {
        let pc = if self.cur.0 == t { self.cur.1 } else { self.threads[t].pc };
        PtxError::Exec {
            kernel: self.k.kernel.name.clone(),
            block: self.ctaid,
            thread: Some(self.tid3(t)),
            pc: Some((pc, self.k.kernel.text.get(pc).cloned().unwrap_or_default())),
            message,
        }
    }

    /// Completes every collective whose participants have all arrived; errors on undefined
    /// behaviour. Returns whether any completed.
    fn complete_collectives(&mut self) -> Result<bool, PtxError> {
        let mut any = false;
        let warps = self.threads.len().div_ceil(32);
        for w in 0..warps {
            let lanes: Vec<usize> = (w * 32..((w + 1) * 32).min(self.threads.len())).collect();
            for &l in &lanes {
                let State::Coll(op, word, m) = self.threads[l].state else { continue };
                let lane = (l - w * 32) as u32;
                if m & (1 << lane) == 0 {
                    return Err(self.err_waiting(
                        l,
                        format!("{op:?}.sync: the executing lane {lane} is not in its own membermask {m:#010x}")
                            .to_lowercase(),
                    ));
                }
                let mut ready = true;
                for (j, &o) in lanes.iter().enumerate() {
                    if m & (1 << j) == 0 {
                        continue;
                    }
                    match self.threads[o].state {
                        State::Coll(op2, w2, m2) if op2 == op && w2 == word && m2 == m => {}
                        State::Done => {
                            return Err(self.err_waiting(
                                l,
                                format!(
                                    "divergent {op:?}: lane {j} of membermask {m:#010x} has exited without reaching it"
                                )
                                .to_lowercase(),
                            ))
                        }
                        _ => ready = false,
                    }
                }
                if (m >> lanes.len().min(31)) != 0 && lanes.len() < 32 && m >> lanes.len() != 0 {
                    return Err(
                        self.err_waiting(l, format!("membermask {m:#010x} names lanes past the end of the block"))
                    );
                }
                if ready {
                    self.finish_collective(w, &lanes, op, word, m)?;
                    any = true;
                }
            }
        }
        Ok(any)
    }

    fn finish_collective(
        &mut self,
        w: usize,
        lanes: &[usize],
        op: Op,
        word: &'static str,
        m: u32,
    ) -> Result<(), PtxError> {
        let members: Vec<usize> =
            lanes.iter().enumerate().filter(|(j, _)| m & (1 << j) != 0).map(|(_, &l)| l).collect();
        let vals: Vec<[u64; 3]> = lanes.iter().map(|&l| self.threads[l].pend).collect();
        for &l in &members {
            let lane = l - w * 32;
            let pc = self.threads[l].pc - 1;
            let inst = &self.k.kernel.insts[pc];
            match op {
                Op::Shfl => {
                    let (b, c) = (vals[lane][1] as u32, vals[lane][2] as u32);
                    let (clamp, seg) = (c & 0x1f, (c >> 8) & 0x1f);
                    let (max_lane, min_lane) = ((lane as u32 & seg) | (clamp & !seg), lane as u32 & seg);
                    let (j, ok) = match word {
                        "up" => {
                            let j = lane as i64 - b as i64;
                            (j.max(0) as u32, j >= min_lane as i64)
                        }
                        "down" => {
                            let j = lane as u32 + b;
                            (j, j <= max_lane)
                        }
                        "bfly" => {
                            let j = lane as u32 ^ b;
                            (j, j <= max_lane)
                        }
                        _ => {
                            let j = min_lane | (b & !seg);
                            (j, j <= max_lane)
                        }
                    };
                    let j = if ok { j as usize } else { lane };
                    if j >= lanes.len() || m & (1 << j) == 0 {
                        return Err(
                            self.err_waiting(l, format!("shfl.sync: source lane {j} is not in membermask {m:#010x}"))
                        );
                    }
                    let v = vals[j][0] & 0xffff_ffff;
                    match inst.ops.first() {
                        Some(Operand::Pair(d, p)) => {
                            self.threads[l].regs[*d as usize] = v;
                            self.threads[l].regs[*p as usize] = ok as u64;
                        }
                        Some(Operand::Reg(d)) => self.threads[l].regs[*d as usize] = v,
                        _ => {}
                    }
                }
                Op::Vote => {
                    let preds: Vec<bool> = members.iter().map(|&o| vals[o - w * 32][0] != 0).collect();
                    let ballot = members
                        .iter()
                        .filter(|&&o| vals[o - w * 32][0] != 0)
                        .fold(0u64, |acc, &o| acc | 1 << (o - w * 32));
                    let v = match word {
                        "all" => preds.iter().all(|&p| p) as u64,
                        "any" => preds.iter().any(|&p| p) as u64,
                        "uni" => (preds.iter().all(|&p| p) || preds.iter().all(|&p| !p)) as u64,
                        _ => ballot,
                    };
                    if let Some(Operand::Reg(d)) = inst.ops.first() {
                        self.threads[l].regs[*d as usize] = v;
                    }
                }
                _ => {}
            }
            self.threads[l].state = State::Run;
        }
        self.warp_epoch[w] += 1;
        Ok(())
    }

    fn special(&self, t: usize, s: Sreg) -> u64 {
        let (x, y, _) = self.ntid;
        let i = t as u32;
        let tid = [i % x, (i / x) % y, i / (x * y)];
        let pick = |d: (u32, u32, u32), k: u8| match k {
            0 => d.0,
            1 => d.1,
            _ => d.2,
        } as u64;
        let lane = (t % 32) as u32;
        match s {
            Sreg::Tid(k) => tid[k as usize] as u64,
            Sreg::Ntid(k) => pick(self.ntid, k),
            Sreg::Ctaid(k) => pick(self.ctaid, k),
            Sreg::Nctaid(k) => pick(self.grid, k),
            Sreg::Laneid => lane as u64,
            Sreg::Warpid => (t / 32) as u64,
            Sreg::Nwarpid => self.threads.len().div_ceil(32) as u64,
            Sreg::Clock | Sreg::Clock64 => self.steps,
            Sreg::DynSmem => self.dyn_smem as u64,
            Sreg::TotalSmem => self.shared.len() as u64,
            Sreg::LanemaskLt => (1u64 << lane) - 1,
            Sreg::LanemaskLe => (1u64 << (lane + 1)) - 1,
            Sreg::LanemaskEq => 1u64 << lane,
            Sreg::LanemaskGe => !((1u64 << lane) - 1) & 0xffff_ffff,
            Sreg::LanemaskGt => !((1u64 << (lane + 1)) - 1) & 0xffff_ffff,
        }
    }

    /// The bits of source operand `o` read as type `ty`.
    pub(crate) fn val(&self, t: usize, o: &Operand, ty: Ty) -> Result<u64, PtxError> {
        Ok(match o {
            Operand::Reg(r) if r & 0x8000_0000 != 0 => (self.threads[t].regs[(r & 0x7fff_ffff) as usize] == 0) as u64,
            Operand::Reg(r) => self.threads[t].regs[*r as usize],
            Operand::Imm(v) => {
                if ty.float() {
                    alu::bits_of_float(sext(*v, 64) as f64, ty, None)
                } else {
                    *v
                }
            }
            Operand::FImm(f) => match ty {
                Ty::F(_) | Ty::Bf16 => alu::bits_of_float(*f, ty, None),
                // A float literal moved into a bit-typed register: its f32 (or f64) bits.
                Ty::B(64) | Ty::U(64) | Ty::S(64) => f.to_bits(),
                _ => (*f as f32).to_bits() as u64,
            },
            Operand::Special(s) => self.special(t, *s),
            Operand::Vec(parts) => {
                let w = ty.bits() / parts.len().max(1) as u32;
                let mut v = 0u64;
                for (i, p) in parts.iter().enumerate() {
                    let pv = self.val(t, p, Ty::B(w as u8))?;
                    v |= (pv & mask(w)) << (w * i as u32);
                }
                v
            }
            o => return Err(self.err(t, format!("operand {o:?} cannot be read"))),
        })
    }

    pub(crate) fn set(&mut self, t: usize, o: &Operand, v: u64) -> Result<(), PtxError> {
        match o {
            Operand::Reg(r) => self.threads[t].regs[(*r & 0x7fff_ffff) as usize] = v,
            Operand::Pair(d, _) => self.threads[t].regs[*d as usize] = v,
            Operand::Sink => {}
            o => return Err(self.err(t, format!("operand {o:?} cannot be written"))),
        }
        Ok(())
    }

    /// The address of a `[base+off]` operand.
    pub(crate) fn addr(&self, t: usize, o: &Operand) -> Result<u64, PtxError> {
        match o {
            Operand::Mem(base, off) => Ok(self.val(t, base, Ty::B(64))?.wrapping_add(*off as u64)),
            o => Err(self.err(t, format!("expected an address, found {o:?}"))),
        }
    }

    fn fault(&self, t: usize, what: &str, space: &str, addr: u64, size: usize, f: Fault) -> PtxError {
        self.err(
            t,
            format!("memcheck: invalid {space} {what} of {size} bytes at {addr:#x}: {}", f.describe(addr, size)),
        )
    }

    /// Reads `size` bytes of space `sp` at `addr`.
    pub(crate) fn load(
        &mut self,
        t: usize,
        glob: &mut Global,
        sp: Space,
        addr: u64,
        size: usize,
    ) -> Result<u64, PtxError> {
        let mut buf = [0u8; 8];
        self.access(t, glob, false, sp, addr, &mut buf[..size])?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Writes the low `size` bytes of `v` to space `sp` at `addr`.
    pub(crate) fn store(
        &mut self,
        t: usize,
        glob: &mut Global,
        (sp, addr): (Space, u64),
        size: usize,
        v: u64,
    ) -> Result<(), PtxError> {
        let mut buf = v.to_le_bytes();
        self.access(t, glob, true, sp, addr, &mut buf[..size])
    }

    /// One access: a read into `buf`, or (`write`) a write of `buf`.
    fn access(
        &mut self,
        t: usize,
        glob: &mut Global,
        write: bool,
        sp: Space,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<(), PtxError> {
        let size = buf.len();
        let what = if write { "write" } else { "read" };
        if self.opts.memcheck && !addr.is_multiple_of(size as u64) {
            return Err(self.fault(t, what, space_name(sp), addr, size, Fault::Misaligned));
        }
        let (sp, addr) = match sp {
            Space::Generic if (mem::GENERIC_SHARED..mem::GENERIC_LOCAL).contains(&addr) => {
                (Space::Shared, addr - mem::GENERIC_SHARED + mem::SHARED_BASE)
            }
            Space::Generic if (mem::GENERIC_LOCAL..mem::GLOBAL_BASE).contains(&addr) => {
                (Space::Local, addr - mem::GENERIC_LOCAL + mem::LOCAL_BASE)
            }
            Space::Generic | Space::Const => (Space::Global, addr),
            s => (s, addr),
        };
        match sp {
            Space::Global => {
                let r = if write { glob.write(addr, buf) } else { glob.read(addr, buf) };
                r.map_err(|f| self.fault(t, what, "global", addr, size, f))
            }
            Space::Shared => {
                let off = addr.wrapping_sub(mem::SHARED_BASE) as usize;
                if addr < mem::SHARED_BASE || off + size > self.shared.len() {
                    let m = format!("memcheck: invalid shared {what} of {size} bytes at offset {} (the block has {} bytes of shared memory)", addr as i64 - mem::SHARED_BASE as i64, self.shared.len());
                    return Err(self.err(t, m));
                }
                if self.opts.racecheck && !self.atomic {
                    let we = self.warp_epoch[t / 32];
                    if let Some(h) = race_check(&mut self.shadow, off, size, t as u32, write, self.epoch, we) {
                        let other = if h.other == u32::MAX {
                            "several threads".to_string()
                        } else {
                            format!("thread {}", self.tid3(h.other as usize))
                        };
                        let m = format!(
                            "racecheck: shared {what} of {size} bytes at offset {off} races with a {} by {other} with no barrier between them",
                            if h.other_wrote { "write" } else { "read" }
                        );
                        return Err(self.err(t, m));
                    }
                }
                if write {
                    self.shared[off..off + size].copy_from_slice(buf);
                } else {
                    buf.copy_from_slice(&self.shared[off..off + size]);
                }
                Ok(())
            }
            Space::Local => {
                let off = addr.wrapping_sub(mem::LOCAL_BASE) as usize;
                let local = &mut self.threads[t].local;
                if addr < mem::LOCAL_BASE || off + size > local.len() {
                    let m = format!(
                        "memcheck: invalid local {what} of {size} bytes at offset {} ({} bytes of local memory)",
                        addr as i64 - mem::LOCAL_BASE as i64,
                        local.len()
                    );
                    return Err(self.err(t, m));
                }
                if write {
                    local[off..off + size].copy_from_slice(buf);
                } else {
                    buf.copy_from_slice(&local[off..off + size]);
                }
                Ok(())
            }
            Space::Param => {
                let off = addr as usize;
                if write || off + size > self.params.len() {
                    return Err(self.err(
                        t,
                        format!("invalid param {what} at offset {off} ({} bytes of parameters)", self.params.len()),
                    ));
                }
                buf.copy_from_slice(&self.params[off..off + size]);
                Ok(())
            }
            _ => Err(self.err(t, "internal: unresolved state space".into())),
        }
    }

    /// Executes one instruction of thread `t`.
    fn step(&mut self, t: usize, glob: &mut Global) -> Result<(), PtxError> {
        let k = self.k;
        let pc = self.threads[t].pc;
        let Some(inst) = k.kernel.insts.get(pc) else {
            self.threads[t].state = State::Done;
            return Ok(());
        };
        self.steps += 1;
        if self.steps > self.opts.max_steps {
            return Err(
                self.err(t, format!("more than {} instructions in one block: an endless loop?", self.opts.max_steps))
            );
        }
        if let Some((p, neg)) = inst.guard {
            if (self.threads[t].regs[p as usize] != 0) == neg {
                self.threads[t].pc += 1;
                return Ok(());
            }
        }
        self.threads[t].pc += 1;
        self.cur = (t, pc);
        let r = crate::ops::exec(self, t, inst, glob);
        self.cur = (usize::MAX, 0);
        r
    }
}

fn space_name(s: Space) -> &'static str {
    match s {
        Space::Generic => "generic",
        Space::Global => "global",
        Space::Shared => "shared",
        Space::Local => "local",
        Space::Param => "param",
        Space::Const => "const",
    }
}

/// What `ops::exec` does to a thread's control state.
impl Block<'_> {
    pub(crate) fn jump(&mut self, t: usize, pc: usize) {
        self.threads[t].pc = pc;
    }
    pub(crate) fn exit(&mut self, t: usize) {
        self.threads[t].state = State::Done;
    }
    pub(crate) fn barrier(&mut self, t: usize) {
        self.threads[t].state = State::Barrier;
    }
    pub(crate) fn collective(&mut self, t: usize, op: Op, word: &'static str, mask: u32, pend: [u64; 3]) {
        self.threads[t].state = State::Coll(op, word, mask);
        self.threads[t].pend = pend;
    }
    pub(crate) fn active_mask(&self, t: usize) -> u32 {
        let w = t / 32;
        (w * 32..((w + 1) * 32).min(self.threads.len()))
            .filter(|&l| self.threads[l].state != State::Done)
            .fold(0u32, |m, l| m | 1 << (l - w * 32))
    }
    pub(crate) fn set_atomic(&mut self, on: bool) {
        self.atomic = on;
    }
    pub(crate) fn inst_text(&self, t: usize) -> &str {
        self.k.kernel.text.get(self.threads[t].pc.saturating_sub(1)).map_or("", |s| s.as_str())
    }
}
