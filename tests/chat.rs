//! Chat with kept state: a two-turn chat feeds only each turn's new tokens and gives the logits
//! of one prefill of the whole transcript; a saved and reloaded state continues exactly as the
//! kept one; `qgc chat` end to end with piped stdin; bad state files and commands give exact
//! one-line errors and the chat goes on.

mod common;

use common::{fixture, rel_err, root, temp_dir};
use qgc_ir::{LowerOptions, ModelSpec};
use qgc_runtime::chat::{Chat, ChatError, Turn};
use qgc_runtime::generate::{GenerateConfig, StopReason};
use qgc_runtime::sampling::SamplingParams;
use qgc_runtime::session::SavedState;
use qgc_runtime::weights::Weights;
use qgc_runtime::Tensor;
use qgc_runtime::{open_model, Model, Session};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const TINY: &str = "models/qwen3-next-tiny.json";
/// Stand-ins for `<|im_end|>\n` in the fixture's 320-token vocabulary.
const CLOSE: [i32; 2] = [5, 7];
/// Turns long enough that the transcript spans two of GDN prefill's 64-token chunks, which the
/// turns cut elsewhere.
const TURN1: [i32; 40] = ids(1);
const TURN2: [i32; 30] = ids(100);

const fn ids<const N: usize>(from: i32) -> [i32; N] {
    let mut a = [0; N];
    let mut i = 0;
    while i < N {
        a[i] = from + i as i32;
        i += 1;
    }
    a
}

fn cfg(n: usize, eos: &[i32], sampling: SamplingParams) -> GenerateConfig {
    GenerateConfig { max_new_tokens: n, max_positions: usize::MAX, eos_ids: eos.to_vec(), stop: Vec::new(), sampling }
}

fn hybrid() -> (Model, Weights) {
    let dir = fixture("hybrid-3to1");
    let m = open_model(&dir, &LowerOptions::default()).unwrap();
    let w = Weights::open(&m.spec, &dir).unwrap();
    (m, w)
}

fn chat<'w>(m: &Model, w: &'w Weights) -> Chat<'w> {
    let s = Session::new(m.program.clone(), w, m.spec.vocab_size, usize::MAX, 1);
    Chat::new(s, &m.spec, CLOSE.to_vec()).unwrap()
}

fn turn(c: &mut Chat, tokens: &[i32], cfg: &GenerateConfig) -> Turn {
    let t = c.turn(tokens, None, cfg, |_| panic!("no tokenizer, no text")).unwrap();
    assert_eq!(c.session().position(), c.fed().len(), "the state holds the fed tokens");
    t
}

/// Logits of one prefill of `tokens` on a fresh session.
fn prefill(m: &Model, w: &Weights, tokens: &[i32]) -> Tensor {
    let mut s = Session::new(m.program.clone(), w, m.spec.vocab_size, usize::MAX, 1);
    s.prefill(&[tokens.to_vec()]).unwrap()
}

/// Checks that `t`'s logits are the last row of one prefill of the conversation up to its reply.
fn assert_matches_one_prefill(m: &Model, w: &Weights, t: &Turn) {
    let transcript = &t.reply.prompt_ids;
    assert!(transcript.ends_with(&t.fed));
    let whole = prefill(m, w, transcript);
    let all = whole.as_f32().unwrap();
    let tail = &all[(transcript.len() - 1) * m.spec.vocab_size..];
    let err = rel_err(t.logits.as_f32().unwrap(), tail);
    assert!(err <= 1e-5, "max rel diff {err:e} over {} fed of {} tokens", t.fed.len(), transcript.len());
}

#[test]
fn two_turns_feed_only_new_tokens_and_equal_one_prefill() {
    let (m, w) = hybrid();
    let mut c = chat(&m, &w);
    let greedy = cfg(5, &[], SamplingParams::greedy());
    let t1 = turn(&mut c, &TURN1, &greedy);
    assert_eq!(t1.fed, TURN1);
    assert_eq!(t1.logits.shape, [1, m.spec.vocab_size]);
    assert_eq!(t1.reply.stop_reason, StopReason::MaxTokens);
    let gen1 = t1.reply.generated_ids.clone();
    assert_eq!(gen1.len(), 5);
    // The last sampled token was never fed: it is owed, with the turn's close.
    assert_eq!(c.fed(), [&TURN1[..], &gen1[..4]].concat());
    assert_eq!(c.pending(), [&gen1[4..], &CLOSE[..]].concat());

    let t2 = turn(&mut c, &TURN2, &greedy);
    // Fed: the owed tokens and the new turn, nothing of the conversation again.
    assert_eq!(t2.fed.len(), 1 + CLOSE.len() + TURN2.len());
    assert_eq!(t2.fed, [&gen1[4..], &CLOSE[..], &TURN2[..]].concat());
    assert_eq!(t2.timings.prompt_tokens, t2.fed.len());
    let transcript = [&TURN1[..], &gen1[..], &CLOSE[..], &TURN2[..]].concat();
    assert_eq!(t2.reply.prompt_ids, transcript);
    assert_matches_one_prefill(&m, &w, &t1);
    assert_matches_one_prefill(&m, &w, &t2);
    // The reply is what generating from the whole transcript gives.
    let mut fresh = chat(&m, &w);
    let again = turn(&mut fresh, &transcript, &greedy);
    assert_eq!(again.reply.generated_ids, t2.reply.generated_ids);

    c.reset();
    assert!(c.is_empty() && c.session().position() == 0);
    let t1b = turn(&mut c, &TURN1, &greedy);
    assert_eq!(t1b.reply.generated_ids, gen1, "reset starts over");
}

#[test]
fn a_reply_ended_by_its_end_token_owes_only_the_close() {
    let (m, w) = hybrid();
    let mut c = chat(&m, &w);
    // Make the second greedy token of the reply the end-of-turn token.
    let probe = turn(&mut c, &TURN1, &cfg(2, &[], SamplingParams::greedy()));
    let end = probe.reply.generated_ids[1];
    // Stopped by the end token as an EOS id, or by -n right on the close's first token.
    for (eos, n) in [(vec![end], 8), (vec![], 2)] {
        let close = [end, 9];
        let s = Session::new(m.program.clone(), &w, m.spec.vocab_size, usize::MAX, 1);
        let mut c = Chat::new(s, &m.spec, close.to_vec()).unwrap();
        let t1 = turn(&mut c, &TURN1, &cfg(n, &eos, SamplingParams::greedy()));
        let gen1 = &t1.reply.generated_ids;
        assert_eq!(gen1.len(), 2);
        // The end token was sampled, not fed; the next turn feeds it (as the close) first.
        assert_eq!(c.fed(), [&TURN1[..], &gen1[..1]].concat());
        assert_eq!(c.pending(), close);
        let t2 = turn(&mut c, &TURN2, &cfg(3, &eos, SamplingParams::greedy()));
        assert_eq!(t2.fed, [&close[..], &TURN2[..]].concat());
        assert_matches_one_prefill(&m, &w, &t2);
    }
}

#[test]
fn saved_state_continues_exactly() {
    let (m, w) = hybrid();
    let sampled = SamplingParams { seed: 3, temperature: 1.0, top_k: 0, ..SamplingParams::default() };
    let mut a = chat(&m, &w);
    turn(&mut a, &TURN1, &cfg(4, &[], sampled));
    let bytes = a.save().unwrap();
    let direct = turn(&mut a, &TURN2, &cfg(6, &[], sampled));

    let mut b = chat(&m, &w);
    b.load(&bytes, "state.safetensors").unwrap();
    assert_eq!(b.session().position(), b.fed().len());
    let loaded = turn(&mut b, &TURN2, &cfg(6, &[], sampled));
    assert_eq!(loaded.fed, direct.fed);
    assert_eq!(loaded.logits, direct.logits, "bit-exact");
    assert_eq!(loaded.reply.generated_ids, direct.reply.generated_ids);
    assert_eq!(b.transcript(), a.transcript());
    assert!(b.session().state().unwrap() == a.session().state().unwrap(), "the same state");

    // A fresh conversation saves and loads too (empty caches, empty transcript).
    let empty = chat(&m, &w).save().unwrap();
    b.load(&empty, "empty").unwrap();
    assert!(b.is_empty() && b.session().position() == 0);
}

#[test]
fn bad_state_files_change_nothing() {
    let (m, w) = hybrid();
    let mut c = chat(&m, &w);
    turn(&mut c, &TURN1, &cfg(3, &[], SamplingParams::greedy()));
    let good = c.save().unwrap();
    let before = c.transcript();
    // The error with its causes, as the CLI prints it.
    let msg = |c: &mut Chat, b: &[u8]| {
        let e = c.load(b, "s.safetensors").unwrap_err();
        let mut s = e.to_string();
        let mut at = std::error::Error::source(&e);
        while let Some(cause) = at {
            s += &format!(": {cause}");
            at = cause.source();
        }
        s
    };

    assert_eq!(msg(&mut c, b"hello"), "s.safetensors: not a qgc chat state file: header too small");
    assert_eq!(
        msg(&mut c, &good[..good.len() - 3]),
        "s.safetensors: not a qgc chat state file: incomplete metadata, file not fully covered"
    );
    let mut flipped = good.clone();
    let i = good.len() - 100;
    flipped[i] ^= 0x40;
    assert_eq!(msg(&mut c, &flipped), "s.safetensors: checksum mismatch: the state file is corrupted");
    // Another model's state (the same layers, another spec): both hashes named.
    let spec_of = |m: &Model| qgc_codegen::artifact::spec_hash(&m.spec);
    let mut spec = m.spec.clone();
    spec.rms_norm_eps *= 2.0;
    let other = Model { spec, ..m.clone() };
    let s = Session::new(other.program.clone(), &w, other.spec.vocab_size, usize::MAX, 1);
    let theirs = Chat::new(s, &other.spec, CLOSE.to_vec()).unwrap().save().unwrap();
    assert_eq!(
        msg(&mut c, &theirs),
        format!(
            "s.safetensors: the state is of another model: its spec hash is {}, this model's is {}",
            spec_of(&other),
            spec_of(&m)
        )
    );
    // A safetensors file that is not a chat state (the fixture's weights).
    let weights = std::fs::read(fixture("hybrid-3to1").join("model.safetensors")).unwrap();
    assert_eq!(
        msg(&mut c, &weights),
        "s.safetensors: not a qgc chat state file (no qgc-chat-state format in its metadata)"
    );
    assert!(matches!(c.load(&theirs, "x"), Err(ChatError::StateFile { .. })));
    assert_eq!(c.transcript(), before, "a failed load keeps the conversation");
    assert_eq!(c.session().position(), c.fed().len());
}

#[test]
fn restore_checks_every_state_tensor() {
    let (m, w) = hybrid();
    let mut s = Session::new(m.program.clone(), &w, m.spec.vocab_size, usize::MAX, 1);
    s.prefill(&[TURN1.to_vec()]).unwrap();
    let saved = SavedState {
        position: s.position(),
        padding: s.padding().to_vec(),
        state: s.state().unwrap(),
        mtp_position: 0,
        mtp_state: s.mtp_state().unwrap(),
    };
    let mut fresh = Session::new(m.program.clone(), &w, m.spec.vocab_size, usize::MAX, 1);
    let err = |f: &mut Session, st: SavedState| f.restore(st).unwrap_err().to_string();
    let k = saved.state.keys().find(|n| n.ends_with(".k")).unwrap().clone();
    let mut wrong = saved.clone();
    wrong.position += 1;
    let want = format!("{k} is {}, this model needs ", saved.state[&k].describe());
    assert!(err(&mut fresh, wrong).starts_with(&want));
    let mut missing = saved.clone();
    missing.state.remove(&k);
    assert_eq!(err(&mut fresh, missing), format!("{k} is missing"));
    let mut extra = saved.clone();
    extra.state.insert("state.l99.k".into(), Tensor::zeros(vec![1], qgc_ir::DType::F32));
    assert_eq!(err(&mut fresh, extra), "state.l99.k is not a state tensor of this model");
    let mut two = saved.clone();
    two.padding = vec![0, 0];
    // Restoring regroups to the state's batch size, but its tensors must hold that many rows.
    let e = err(&mut fresh, two);
    assert!(e.contains("this model needs f32[2,"), "{e}");
    assert_eq!(fresh.position(), 0, "failed restores change nothing");
    fresh.restore(saved).unwrap();
    let next = [50, 51];
    assert_eq!(fresh.prefill(&[next.to_vec()]).unwrap(), s.prefill(&[next.to_vec()]).unwrap());
}

/// Runs `qgc chat ARGS` with `input` on stdin; returns (exit code, stdout, stderr with `tmp` →
/// `$TMP`).
fn qgc_chat(args: &[&str], input: &str, tmp: &Path) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qgc"))
        .arg("chat")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A chat that fails at startup exits before reading: its stdin may be closed.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    let norm = |b: &[u8]| String::from_utf8_lossy(b).replace(&tmp.display().to_string(), "$TMP");
    let (stdout, stderr) = (norm(&out.stdout), norm(&out.stderr));
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// `qgc chat TINY --random-weights --temp 0 -n 8` with `lines` on stdin: (stdout, stderr lines).
fn tiny_chat(lines: &[&str], tmp: &Path) -> (String, Vec<String>) {
    let (code, out, err) =
        qgc_chat(&[TINY, "--random-weights", "--temp", "0", "-n", "8"], &(lines.join("\n") + "\n"), tmp);
    assert_eq!(code, 0, "{err}");
    (out, err.lines().map(str::to_string).collect())
}

/// The `fed N tokens` count of each stats line.
fn fed_counts(err: &[String]) -> Vec<usize> {
    err.iter().filter_map(|l| l.strip_prefix("fed ")?.split(' ').next()?.parse().ok()).collect()
}

/// Tokens of a later turn's own text with the shipped tokenizer.
fn turn_tokens(message: &str) -> usize {
    let text = format!("<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n");
    qgc_runtime::tokenizer::Tokenizer::qwen().encode(&text).unwrap().len()
}

#[test]
fn cli_chat_saves_resets_and_loads() {
    let tmp = temp_dir("chat");
    let f = tmp.join("s.safetensors").display().to_string();
    let (m1, m2) = ("Hello there", "What is two plus two?");
    let (first, _) = tiny_chat(&[m1], &tmp);
    let (direct, err) = tiny_chat(&[m1, m2, "/quit"], &tmp);
    assert!(direct.starts_with(&first) && direct.len() > first.len(), "{direct:?}");
    let second = &direct[first.len()..];
    assert!(second.ends_with('\n'), "{second:?}");
    // Turn 2 feeds what turn 1 owes (its last token unless that was <|im_end|>, then
    // <|im_end|>\n) and its own tokens, not the conversation.
    let fed = fed_counts(&err);
    assert_eq!(fed[0], turn_tokens(m1), "{err:?}");
    assert!([2, 3].map(|owed| owed + turn_tokens(m2)).contains(&fed[1]), "{err:?}");

    let (save, load) = (format!("/save {f}"), format!("/load {f}"));
    let (out, err) = tiny_chat(&[m1, &save, m2, "/reset", &load, m2, "/quit", "never sent"], &tmp);
    // The second reply after the round trip equals the one without it.
    assert_eq!(out, format!("{direct}{second}"));
    assert_eq!(fed_counts(&err), [fed[0], fed[1], fed[1]], "{err:?}");
    let said: Vec<&str> = err.iter().filter(|l| !l.starts_with("fed ")).map(String::as_str).collect();
    // The transcript: turn 1, its reply (at most -n 8 tokens) and <|im_end|>\n.
    let n: usize = said[1].split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!((turn_tokens(m1) + 2..=turn_tokens(m1) + 10).contains(&n), "{err:?}");
    assert_eq!(
        said[1..],
        [
            format!("saved {n} tokens to $TMP/s.safetensors"),
            "the conversation is reset".into(),
            format!("loaded {n} tokens from $TMP/s.safetensors")
        ],
        "{err:?}"
    );
    // The file has every state tensor and the documented metadata.
    let bytes = std::fs::read(&f).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["format"], "qgc-chat-state");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["positions"], format!("[{}]", n - meta["pending"].parse::<usize>().unwrap()));
    let spec = ModelSpec::from_json(&std::fs::read_to_string(root().join(TINY)).unwrap()).unwrap();
    assert_eq!(meta["spec_hash"], qgc_codegen::artifact::spec_hash(&spec));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    // 3 GDN layers (conv, ssm) and 1 attention layer (k, v), and the transcript.
    let want = ["state.l0.conv", "state.l0.ssm", "state.l1.conv", "state.l1.ssm", "state.l2.conv", "state.l2.ssm"];
    assert_eq!(names, [&want[..], &["state.l3.k", "state.l3.v", "transcript"]].concat());
    assert_eq!(st.tensor("transcript").unwrap().shape(), [n]);
}

#[test]
fn cli_bad_inputs_keep_the_chat_going() {
    let tmp = temp_dir("chat-bad");
    let state = tmp.join("s.safetensors");
    // A state of another model (attention first, otherwise alike).
    let other = tmp.join("other.safetensors");
    let (code, _, err) = qgc_chat(
        &["models/qwen3-next-attn-first.json", "--random-weights", "-n", "2"],
        &format!("hi\n/save {}\n", other.display()),
        &tmp,
    );
    assert_eq!(code, 0, "{err}");
    tiny_chat(&["hi", &format!("/save {}", state.display())], &tmp);
    let bytes = std::fs::read(&state).unwrap();
    let mut flipped = bytes.clone();
    let i = bytes.len() - 10;
    flipped[i] ^= 1;
    std::fs::write(tmp.join("flipped.safetensors"), &flipped).unwrap();
    std::fs::write(tmp.join("short.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(tmp.join("text.safetensors"), "not a state").unwrap();

    let hash = |p: &str| {
        let spec = ModelSpec::from_json(&std::fs::read_to_string(root().join(p)).unwrap()).unwrap();
        qgc_codegen::artifact::spec_hash(&spec)
    };
    let lines = [
        "hi",
        "/load $TMP/missing.safetensors",
        "/load $TMP/flipped.safetensors",
        "/load $TMP/short.safetensors",
        "/load $TMP/text.safetensors",
        "/load $TMP/other.safetensors",
        "/load",
        "/save",
        "/save $TMP/no/such/dir/s.safetensors",
        "/frobnicate now",
        "/reset please",
        "/",
        "//still a message",
        "/exit",
    ]
    .map(|l| l.replace("$TMP", &tmp.display().to_string()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (out, err) = tiny_chat(&lines, &tmp);
    assert!(out.ends_with('\n'), "{out:?}");
    let errors: Vec<&str> = err.iter().filter(|l| l.starts_with("error")).map(String::as_str).collect();
    let want = [
        "error: $TMP/missing.safetensors: No such file or directory (os error 2)".to_string(),
        "error: $TMP/flipped.safetensors: checksum mismatch: the state file is corrupted".into(),
        "error: $TMP/short.safetensors: not a qgc chat state file: incomplete metadata, file not fully covered".into(),
        "error: $TMP/text.safetensors: not a qgc chat state file: header too large".into(),
        format!(
            "error: $TMP/other.safetensors: the state is of another model: its spec hash is {}, this model's is {}",
            hash("models/qwen3-next-attn-first.json"),
            hash(TINY)
        ),
        "error: /load needs a FILE".into(),
        "error: /save needs a FILE".into(),
        "error: writing $TMP/no/such/dir/s.safetensors: No such file or directory (os error 2)".into(),
        "error: unknown command /frobnicate (/help lists the commands)".into(),
        "error: /reset takes no arguments".into(),
        "error: unknown command / (/help lists the commands)".into(),
    ];
    assert_eq!(errors, want);
    // Both messages were answered, the second after every failed load: the state was kept.
    assert_eq!(fed_counts(&err).len(), 2, "{err:?}");
    assert!(fed_counts(&err)[1] > 3 && fed_counts(&err)[1] < 20, "{err:?}");
}

#[test]
fn cli_help_and_bad_startup_arguments() {
    let tmp = temp_dir("chat-args");
    let (out, err) = tiny_chat(&["/help"], &tmp);
    assert_eq!(out, "");
    assert!(err.iter().any(|l| l.starts_with("  /save FILE")), "{err:?}");
    let cases: [(&[&str], &str, i32); 4] = [
        (&[TINY], "error: models/qwen3-next-tiny.json: no weights: pass --weights DIR (an HF checkpoint directory) or --random-weights", 1),
        (&["tests/fixtures/hybrid-3to1"], "error: tokenizer has 151669 tokens but the model's vocabulary is 320; pass a matching --tokenizer", 1),
        (&[TINY, "--random-weights", "-n", "0"], "error: invalid value '0' for '--max-new-tokens <N>': must be at least 1\n\nFor more information, try '--help'.", 2),
        (&[TINY, "--random-weights", "--temp", "-1"], "error: invalid value '-1' for '--temp <T>': must be >= 0\n\nFor more information, try '--help'.", 2),
    ];
    for (args, want, want_code) in cases {
        let (code, out, err) = qgc_chat(args, "hi\n", &tmp);
        assert_eq!((code, out.as_str(), err.trim_end()), (want_code, "", want), "{args:?}");
    }
}
