//! `qgc chat`: an interactive conversation that keeps the KV and GDN state between turns and
//! feeds only each new turn's tokens ([`qgc_runtime::chat::Chat`]).
//!
//! Messages are read from stdin, one a line (piped input works the same; end of input ends the
//! chat), wrapped in the Qwen chat template, and the reply streams to stdout until `<|im_end|>`
//! or `-n` tokens. Everything else goes to stderr: the `> ` prompt (only when stdin is a
//! terminal), a stats line after each reply, and the answers to commands (`/help` lists them).
//! Bad commands and failed turns print one `error:` line and the chat goes on; only bad startup
//! arguments (and an unwritable stdout) end it with a non-zero exit.

use crate::load::{at_least_one, chat_prompt, prompt_opens_think, ModelArgs, SamplingArgs, TextOut};
use anyhow::{anyhow, Context, Result};
use qgc_runtime::chat::{Chat, Turn};
use qgc_runtime::generate::GenerateConfig;
use qgc_runtime::tokenizer::Tokenizer;
use qgc_runtime::Session;
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Instant;

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System message, sent with the first turn (and again after /reset).
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Hide <think>…</think> blocks from the replies.
    #[arg(long)]
    hide_think: bool,
    /// Generate at most N tokens per reply.
    #[arg(short = 'n', long = "max-new-tokens", value_name = "N", default_value_t = 512, value_parser = at_least_one)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    lower: super::LowerArgs,
    #[command(flatten)]
    backend: crate::load::BackendArgs,
}

/// What `/help` prints.
const HELP: &str = "\
commands:
  /reset       start a new conversation (the --system message is kept)
  /save FILE   save the state and transcript to FILE (safetensors)
  /load FILE   continue a conversation saved by /save with this model
  /help        this list
  /quit        end the chat (also /exit, or the end of input)
a line that starts with // is sent with one / removed";

/// Whether to read another line.
enum Flow {
    Continue,
    Quit,
}

/// The running chat and what every turn needs.
struct Driver<'w> {
    chat: Chat<'w>,
    tokenizer: Tokenizer,
    cfg: GenerateConfig,
    system: Option<String>,
    hide_think: bool,
    positions: usize,
    warned: bool,
}

pub fn run(a: &ChatArgs) -> Result<()> {
    let sampling = a.sampling.params()?;
    let opened = a.model.open(&a.lower.options())?;
    let tokenizer = opened
        .tokenizer(true, "pass a matching --tokenizer")?
        .ok_or_else(|| anyhow!("{}: no tokenizer", a.model.model.display()))?;
    let end = tokenizer.token_id("<|im_end|>").ok_or_else(|| {
        anyhow!("the tokenizer has no <|im_end|> token; qgc chat needs the Qwen chat template's special tokens")
    })?;
    let close: Vec<i32> = tokenizer.encode("<|im_end|>\n")?.into_iter().map(|t| t as i32).collect();
    let mut eos = opened.eos_ids(Some(&tokenizer));
    if !eos.contains(&(end as i32)) {
        eos.push(end as i32);
    }

    let t_load = Instant::now();
    let (m, loaded) = opened.load(a.sampling.seed, a.backend.backend, false)?;
    let cpu = a.backend.compile(&m, loaded.raw())?;
    eprintln!("load {:.2} s | /help lists the commands", t_load.elapsed().as_secs_f64());
    let session =
        Session::with_backend(m.program, crate::load::backend(&cpu, loaded.source()), m.spec.vocab_size, usize::MAX, 1);
    let mut d = Driver {
        chat: Chat::new(session, &m.spec, close)?,
        tokenizer,
        cfg: GenerateConfig {
            max_new_tokens: a.max_new_tokens,
            max_positions: usize::MAX,
            eos_ids: eos,
            stop: Vec::new(),
            sampling,
        },
        system: a.system.clone(),
        hide_think: a.hide_think,
        positions: m.spec.max_position_embeddings,
        warned: false,
    };

    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut input = stdin.lock();
    loop {
        if tty {
            eprint!("> ");
        }
        let mut buf = Vec::new();
        if input.read_until(b'\n', &mut buf).context("reading stdin")? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let flow = match line.strip_prefix('/') {
            Some(rest) if !rest.starts_with('/') => d.command(rest),
            Some(rest) => d.say(rest),
            None => d.say(line),
        }?;
        if let Flow::Quit = flow {
            return Ok(());
        }
    }
}

impl Driver<'_> {
    /// Runs `/name args`; failures are reported and the chat goes on.
    fn command(&mut self, cmd: &str) -> Result<Flow> {
        let (name, arg) = cmd.split_once(char::is_whitespace).map(|(n, a)| (n, a.trim())).unwrap_or((cmd, ""));
        let result = match (name, arg) {
            ("quit" | "exit", "") => return Ok(Flow::Quit),
            ("help", "") => Ok(HELP.to_string()),
            ("reset", "") => {
                self.chat.reset();
                self.warned = false;
                Ok("the conversation is reset".to_string())
            }
            ("save", "") | ("load", "") => Err(anyhow!("/{name} needs a FILE")),
            ("save", file) => self.save(Path::new(file)),
            ("load", file) => self.load(Path::new(file)),
            ("quit" | "exit" | "help" | "reset", _) => Err(anyhow!("/{name} takes no arguments")),
            _ => Err(anyhow!("unknown command /{name} (/help lists the commands)")),
        };
        match result {
            Ok(msg) => eprintln!("{msg}"),
            Err(e) => eprintln!("error: {e:#}"),
        }
        Ok(Flow::Continue)
    }

    fn save(&self, file: &Path) -> Result<String> {
        let bytes = self.chat.save()?;
        super::write_atomic(file, &bytes)?;
        Ok(format!("saved {} tokens to {}", self.chat.transcript().len(), file.display()))
    }

    fn load(&mut self, file: &Path) -> Result<String> {
        let bytes = qgc_runtime::budget::read(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        self.chat.load(&bytes, &file.display().to_string())?;
        self.warned = false;
        Ok(format!("loaded {} tokens from {}", self.chat.transcript().len(), file.display()))
    }

    /// Sends one message and streams the reply; a failed turn is reported and the chat goes on
    /// (only a failure to write stdout ends it).
    fn say(&mut self, message: &str) -> Result<Flow> {
        let system = if self.chat.is_empty() { self.system.as_deref() } else { None };
        let ids = match self.tokenizer.encode(&chat_prompt(system, message)) {
            Ok(ids) => ids.into_iter().map(|t| t as i32).collect::<Vec<_>>(),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Flow::Continue);
            }
        };
        let inside = prompt_opens_think(Some(&self.tokenizer), &ids);
        let mut out = TextOut::new(std::io::stdout().lock(), self.hide_think, inside);
        let turn = self.chat.turn(&ids, Some(&self.tokenizer), &self.cfg, |piece| out.push(piece));
        out.finish()?;
        match turn {
            Ok(t) => self.report(&t),
            Err(e) => eprintln!("error: {e}"),
        }
        Ok(Flow::Continue)
    }

    /// The stats line on stderr (and a warning once the context passes the model's positions).
    fn report(&mut self, t: &Turn) {
        let context = self.chat.session().position();
        if context > self.positions && !self.warned {
            self.warned = true;
            eprintln!(
                "warning: the conversation ran past the model's max_position_embeddings {}; computed anyway, as HF does",
                self.positions
            );
        }
        let rate = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}"));
        let tm = &t.timings;
        eprintln!(
            "fed {} tokens | context {context} tokens | prefill {:.2} s ({} tok/s) | generated {} tokens, {:.2} s ({} tok/s)",
            t.fed.len(),
            tm.prefill_s,
            rate(tm.prefill_tok_s()),
            tm.generated_tokens,
            tm.decode_s,
            rate(tm.decode_tok_s()),
        );
    }
}
