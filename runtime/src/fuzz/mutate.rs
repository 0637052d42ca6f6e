//! Deterministic structured mutators: a seeded generator, byte-level edits, and edits of JSON
//! documents at a random node (numbers turned huge, zero or negative, keys dropped, types
//! swapped, arrays grown) — the kinds of input a fuzzer makes, from seeds that are real files.

use serde_json::Value;

/// A small deterministic generator (the interpreter's SplitMix64, seeded apart from it): the
/// same seed gives the same inputs on every machine, so a failure seen in CI is the failure a
/// developer reproduces.
#[derive(Debug, Clone)]
pub struct Rng(qgc_ir::interp::Rng);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(qgc_ir::interp::Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15))
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        (self.bits() % n.max(1) as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers that break size arithmetic: zero, one, negatives, powers of two around the 32- and
/// 64-bit edges, huge floats, fractions.
const INTERESTING: [f64; 22] = [
    0.0,
    1.0,
    -1.0,
    2.0,
    3.0,
    7.0,
    64.0,
    255.0,
    65_536.0,
    2_147_483_647.0,
    2_147_483_648.0,
    4_294_967_296.0,
    6.0e9,
    9_007_199_254_740_992.0,
    9.223_372_036_854_776e18,
    1.844_674_407_370_955e19,
    1e308,
    -1e308,
    0.5,
    1e-300,
    -2_147_483_648.0,
    1e12,
];

/// Bytes a parser treats specially.
const TOKENS: [&[u8]; 16] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"-",
    b"0",
    b"9999999999999999999999",
    b"null",
    b"\\u0000",
    b"\xff",
    b"\xe4\xbd",
    b"1e999",
    b"\n",
];

/// A mutated copy of `input`: one to four edits, structured (JSON) when the input parses and
/// `json` allows, else byte-level; `others` are spliced from.
pub fn mutate(input: &[u8], others: &[Vec<u8>], json: bool, rng: &mut Rng) -> Vec<u8> {
    let edits = 1 + rng.below(4);
    if json && !rng.one_in(5) {
        if let Ok(mut v) = serde_json::from_slice::<Value>(input) {
            for _ in 0..edits {
                mutate_json(&mut v, rng);
            }
            return serde_json::to_vec(&v).unwrap_or_default();
        }
    }
    let mut out = input.to_vec();
    for _ in 0..edits {
        mutate_bytes(&mut out, others, rng);
    }
    out
}

/// One byte-level edit: flip, overwrite, insert, delete, duplicate, splice or truncate.
pub fn mutate_bytes(b: &mut Vec<u8>, others: &[Vec<u8>], rng: &mut Rng) {
    let n = b.len();
    let at = rng.below(n + 1);
    match rng.below(8) {
        0 if n > 0 => {
            let i = rng.below(n);
            b[i] ^= 1 << rng.below(8);
        }
        1 if n > 0 => {
            let i = rng.below(n);
            b[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'0', b'9', b'"']);
        }
        2 => {
            let t = *rng.pick(&TOKENS);
            b.splice(at..at, t.iter().copied());
        }
        3 if n > 0 => {
            let len = 1 + rng.below((n - at.min(n - 1)).min(64));
            let start = at.min(n - 1);
            b.drain(start..(start + len).min(n));
        }
        4 if n > 0 => {
            let start = rng.below(n);
            let len = 1 + rng.below((n - start).min(256));
            let chunk = b[start..start + len].to_vec();
            b.splice(at..at, chunk);
        }
        5 if !others.is_empty() => {
            let o = rng.pick(others);
            let from = rng.below(o.len() + 1);
            let len = rng.below((o.len() - from).min(512) + 1);
            let end = (at + rng.below(64)).min(n);
            b.splice(at..end, o[from..from + len].iter().copied());
        }
        6 => b.truncate(at),
        _ => {
            let len = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..len).map(|_| rng.bits() as u8).collect();
            b.splice(at..at, bytes);
        }
    }
}

/// One edit at a random node of `v`.
pub fn mutate_json(v: &mut Value, rng: &mut Rng) {
    let mut count = 0usize;
    count_nodes(v, &mut count);
    let target = rng.below(count);
    let mut seen = 0usize;
    if let Some(node) = nth_node(v, target, &mut seen) {
        edit_node(node, rng);
    }
}

fn count_nodes(v: &Value, n: &mut usize) {
    *n += 1;
    match v {
        Value::Array(a) => a.iter().for_each(|x| count_nodes(x, n)),
        Value::Object(o) => o.values().for_each(|x| count_nodes(x, n)),
        _ => {}
    }
}

fn nth_node<'a>(v: &'a mut Value, target: usize, seen: &mut usize) -> Option<&'a mut Value> {
    if *seen == target {
        return Some(v);
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|x| nth_node(x, target, seen)),
        Value::Object(o) => o.values_mut().find_map(|x| nth_node(x, target, seen)),
        _ => None,
    }
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1.8e19 {
        if x >= 0.0 {
            Value::from(x as u64)
        } else {
            Value::from(x as i64)
        }
    } else {
        serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
    }
}

fn edit_node(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Number(n) if !rng.one_in(6) => {
            let x = n.as_f64().unwrap_or(0.0);
            *v = match rng.below(5) {
                0 | 1 => number(*rng.pick(&INTERESTING)),
                2 => number(x + (rng.below(5) as f64 - 2.0)),
                3 => number(x * f64::from(1u32 << rng.below(20))),
                _ => number(-x),
            };
        }
        Value::String(s) if !rng.one_in(6) => {
            *s = match rng.below(6) {
                0 => String::new(),
                1 => s.repeat(1 + rng.below(64)),
                2 => rng.pick(&["<|im_start|>", "\u{0}", "é\u{301}", "🙂", "../../etc", "model.layers.0"]).to_string(),
                3 => format!("{s}{}", rng.below(1000)),
                4 => s.chars().rev().collect(),
                _ => s.chars().take(rng.below(s.len() + 1)).collect(),
            };
        }
        Value::Array(a) if !a.is_empty() && !rng.one_in(4) => {
            let i = rng.below(a.len());
            match rng.below(4) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let x = a[i].clone();
                    for _ in 0..1 + rng.below(8) {
                        a.insert(i, x.clone());
                    }
                }
                2 => {
                    let j = rng.below(a.len());
                    a.swap(i, j);
                }
                _ => a.truncate(i),
            }
        }
        Value::Object(o) if !o.is_empty() && !rng.one_in(4) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            match rng.below(3) {
                0 => {
                    o.remove(&k);
                }
                1 => {
                    let x = o[&k].clone();
                    o.insert(format!("{k}_{}", rng.below(10)), x);
                }
                _ => {
                    let other = rng.pick(&keys).clone();
                    let x = o[&other].clone();
                    o.insert(k, x);
                }
            }
        }
        _ => {
            *v = match rng.below(7) {
                0 => Value::Null,
                1 => Value::Bool(rng.one_in(2)),
                2 => Value::Array(vec![]),
                3 => Value::Object(Default::default()),
                4 => Value::String("x".repeat(rng.below(100))),
                5 => number(*rng.pick(&INTERESTING)),
                _ => Value::Array(vec![number(*rng.pick(&INTERESTING)); 1 + rng.below(4)]),
            };
        }
    }
}

/// A token-id list as a user might write one, or break one: ids in and out of range, huge and
/// negative numbers, separators, stray text and bytes that are not UTF-8.
pub fn token_list(rng: &mut Rng, vocab: usize) -> Vec<u8> {
    let most = if rng.one_in(20) { 4096 } else { 40 };
    let n = rng.below(most);
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            const SEPARATORS: [&str; 7] = [",", ", ", " ", ",\n", ",,", "\t", ";"];
            let sep: &&str = rng.pick(&SEPARATORS);
            out.push_str(sep);
        }
        let id: String = match rng.below(10) {
            0 => rng
                .pick(&["-1", "4294967296", "2147483648", "99999999999999999999", "0x10", "1.5", "", "abc"])
                .to_string(),
            1 => (vocab + rng.below(10)).to_string(),
            _ => rng.below(vocab.max(1)).to_string(),
        };
        out.push_str(&id);
    }
    let mut b = out.into_bytes();
    if rng.one_in(10) {
        mutate_bytes(&mut b, &[], rng);
    }
    b
}

/// Prompt text as people and scripts send it: words, chat special tokens written literally,
/// think tags, emoji and combining marks, control characters, long repeats, and sometimes bytes
/// that are not UTF-8.
pub fn prompt(rng: &mut Rng) -> Vec<u8> {
    const PIECES: [&str; 18] = [
        "Hello",
        " world",
        "<|im_start|>",
        "<|im_end|>",
        "<think>",
        "</think>",
        "<|endoftext|>",
        "\n",
        " ",
        "你好",
        "🙂",
        "e\u{301}",
        "\u{0}",
        "\u{202e}",
        "<tool_call>",
        "{\"a\": 1}",
        "\t",
        "ÅΩ",
    ];
    let most = if rng.one_in(20) { 600 } else { 30 };
    let n = rng.below(most);
    let mut s = String::new();
    for _ in 0..n {
        let p = rng.pick(&PIECES);
        if rng.one_in(30) {
            s.push_str(&p.repeat(1 + rng.below(200)));
        } else {
            s.push_str(p);
        }
    }
    let mut b = s.into_bytes();
    if rng.one_in(8) {
        mutate_bytes(&mut b, &[], rng);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_mutations_change_inputs() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert!((0..100).all(|_| a.bits() == b.bits()));
        let seed = br#"{"hidden_size": 64, "layers": ["a", "b"], "x": {"y": 1.5}}"#;
        let mut rng = Rng::new(1);
        let changed = (0..200).filter(|_| mutate(seed, &[], true, &mut rng) != seed.to_vec()).count();
        assert!(changed > 150, "{changed} of 200 mutations changed the input");
        let mut rng = Rng::new(2);
        let list = String::from_utf8_lossy(&token_list(&mut rng, 10)).to_string();
        assert!(list.len() < 200_000);
    }
}
