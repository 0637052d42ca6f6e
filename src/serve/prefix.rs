//! The prefix cache for hybrid state: whole-sequence snapshots (KV of the attention layers plus
//! conv and recurrent state of the GDN layers) keyed by the exact tokens they consumed.
//!
//! A recurrent state cannot be rewound, so a request can only resume from a snapshot taken
//! exactly where its prompt and an earlier one part. Snapshots are therefore taken where the
//! next request is likely to part, not on a block grid:
//! - at the end of every prompt (all but its last token, which goes through decode) — the next
//!   turn of the conversation extends it;
//! - at the end of every reply (prompt and reply but the last token) — the next turn's prompt
//!   is this transcript plus the new message;
//! - where an admitted prompt parts from another waiting one (a shared document with different
//!   questions is computed once, then each question resumes from the fork);
//! - every `interval` tokens of a long prompt, for documents that later requests share.
//!
//! An LRU evicts under a byte limit. A hit restores the snapshot into the request's own state,
//! so the cached run feeds exactly the tokens an uncached one feeds after that point.

use qgc_runtime::budget::Reservation;
use qgc_runtime::rows;
use qgc_runtime::session::SavedState;

struct Entry {
    tokens: Vec<i32>,
    state: SavedState,
    bytes: u64,
    used: u64,
}

/// Snapshots of single-sequence state by the tokens they hold.
pub struct PrefixCache {
    entries: Vec<Entry>,
    bytes: u64,
    limit: u64,
    interval: usize,
    clock: u64,
    held: Reservation,
    evictions: u64,
}

impl PrefixCache {
    /// A cache of at most `limit` bytes (0: off) that also snapshots long prompts every
    /// `interval` tokens (0: never).
    pub fn new(limit: u64, interval: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            bytes: 0,
            limit,
            interval,
            clock: 0,
            held: Reservation::none(),
            evictions: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The byte limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Snapshots evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Snapshots held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The longest snapshot whose tokens begin `tokens` (a copy of its state and its length).
    pub fn lookup(&mut self, tokens: &[i32]) -> Option<(usize, SavedState)> {
        self.clock += 1;
        let best = self
            .entries
            .iter_mut()
            .filter(|e| !e.tokens.is_empty() && tokens.starts_with(&e.tokens))
            .max_by_key(|e| e.tokens.len())?;
        best.used = self.clock;
        Some((best.tokens.len(), best.state.clone()))
    }

    /// Keeps `state` (one sequence that consumed exactly `tokens`), evicting the least recently
    /// used snapshots to make room; a snapshot larger than the limit is not kept.
    pub fn insert(&mut self, tokens: Vec<i32>, state: SavedState) {
        if self.limit == 0 || tokens.is_empty() || state.position != tokens.len() {
            return;
        }
        self.clock += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.tokens == tokens) {
            e.used = self.clock;
            return;
        }
        let bytes = rows::bytes(&state);
        if bytes > self.limit {
            return;
        }
        while self.bytes + bytes > self.limit {
            self.evict_one();
        }
        let what = format!("a prefix-cache snapshot of {} tokens", tokens.len());
        while self.held.resize(&what, Some(self.bytes + bytes)).is_err() {
            if self.entries.is_empty() {
                return;
            }
            self.evict_one();
        }
        self.bytes += bytes;
        self.entries.push(Entry { tokens, state, bytes, used: self.clock });
    }

    fn evict_one(&mut self) {
        if let Some(i) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i) {
            let e = self.entries.swap_remove(i);
            self.bytes -= e.bytes;
            self.evictions += 1;
            let _ = self.held.resize("", Some(self.bytes));
        }
    }

    /// Where a prefill chunk starting at `fed` ends, at most `end`: the next snapshot point
    /// (an interval multiple or a fork).
    pub fn chunk_end(&self, fed: usize, end: usize, forks: &[usize]) -> usize {
        let mut at = end;
        if self.limit > 0 && self.interval > 0 {
            at = at.min((fed / self.interval + 1) * self.interval);
        }
        if self.limit > 0 {
            if let Some(&f) = forks.iter().filter(|&&f| f > fed).min() {
                at = at.min(f);
            }
        }
        at
    }

    /// Whether the state at `pos` (prefill up to `end`) is worth a snapshot.
    pub fn snapshot_at(&self, pos: usize, end: usize, forks: &[usize]) -> bool {
        self.limit > 0
            && (pos == end || (self.interval > 0 && pos.is_multiple_of(self.interval)) || forks.contains(&pos))
    }
}
