//! A small mutation fuzzer for the JMS selector parser and evaluator
//! (`halyard-selector`), on stable Rust. See README.md.
//!
//! It starts from [`SELECTOR_SEEDS`], stacks 1–4 text mutations per
//! execution (char inserts, deletes, replacements by selector tokens and
//! boundary numbers, duplicated ranges, splices with other corpus entries,
//! deep nesting) and runs the result through [`check_selector`]. Inputs
//! with an outcome not seen before join the corpus.

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs};

use halyard_stomp_fuzz::Rng;
use halyard_stomp_fuzz::selector::{Message, SELECTOR_SEEDS, SelectorOutcome, check_selector};

const USAGE: &str = "\
usage: selector [--seconds S | --iterations N] [--seed X] [--artifacts DIR]
       selector --replay FILE...
";

const TOKENS: &[&str] = &[
    " ",
    "(",
    ")",
    "((((((((",
    "))))))))",
    ",",
    "'",
    "''",
    "'x'",
    "'%'",
    "'_'",
    "'!'",
    "=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "--",
    "/*",
    "*/",
    "\n",
    "NOT ",
    " AND ",
    " OR ",
    " BETWEEN ",
    " IN ",
    " LIKE ",
    " ESCAPE ",
    " IS ",
    " NULL",
    "TRUE",
    "false",
    "a",
    "b",
    "c",
    "d",
    "e",
    "nan",
    "big",
    "small",
    "num",
    "uni",
    "JMSPriority",
    "XPATH",
    "\"",
    "0",
    "07",
    "08",
    "0x",
    "0xFF",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "1e308",
    "1e309",
    ".5",
    "5.",
    "2.5e-3",
    "5L",
    "2.5f",
    "\u{e9}",
    "\u{1f980}",
    "$",
    "_",
    "==",
    "!=",
    "&&",
    "NOT NOT ",
];

/// A char boundary of `s` at or before `i`.
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, text: &mut String, corpus: &[String]) {
    for _ in 0..1 + rng.below(4) {
        let at = boundary(text, rng.below(text.len() + 1));
        match rng.below(8) {
            0 | 1 => text.insert_str(at, TOKENS[rng.below(TOKENS.len())]),
            2 => {
                let end = boundary(text, at + 1 + rng.below(8));
                text.replace_range(at..end, "");
            }
            3 => {
                let end = boundary(text, at + 1 + rng.below(8));
                text.replace_range(at..end, TOKENS[rng.below(TOKENS.len())]);
            }
            4 => {
                let c = char::from_u32(rng.below(0x80) as u32).unwrap_or(' ');
                text.insert(at, c);
            }
            5 => {
                let end = boundary(text, at + rng.below(16));
                let copy = text[at..end].to_owned();
                text.insert_str(end, &copy);
            }
            6 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = boundary(other, rng.below(other.len() + 1));
                text.truncate(at);
                text.push_str(&other[from..]);
            }
            _ => {
                let n = rng.below(80);
                let (open, close) = if rng.below(2) == 0 {
                    ("(", ")")
                } else {
                    ("NOT ", "")
                };
                *text = format!("{}{text}{}", open.repeat(n), close.repeat(n));
            }
        }
    }
    if text.len() > 8192 {
        let cut = boundary(text, 8192);
        text.truncate(cut);
    }
}

fn run(text: &str, message: &Message) -> Result<SelectorOutcome, String> {
    match panic::catch_unwind(AssertUnwindSafe(|| check_selector(text, message))) {
        Ok(result) => result,
        Err(payload) => Err(format!(
            "panic: {}",
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    }
}

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let mut seconds = None;
    let mut iterations = None;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut artifacts = PathBuf::from("artifacts");
    let mut replay = Vec::new();
    while let Some(arg) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--seconds" => seconds = num(),
            "--iterations" => iterations = num(),
            "--seed" => seed = num().unwrap_or(seed),
            "--artifacts" => artifacts = args.next().map(PathBuf::from).unwrap_or(artifacts),
            "--replay" => replay.extend(args.by_ref().map(PathBuf::from)),
            _ => {
                eprint!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // Deep nesting is refused before it can recurse far, but panics print
    // noise; keep findings quiet and report them ourselves.
    panic::set_hook(Box::new(|_| {}));
    let message = Message::new();
    if !replay.is_empty() {
        let mut failed = false;
        for file in &replay {
            let text = fs::read(file).map(|b| String::from_utf8_lossy(&b).into_owned());
            match text
                .map_err(|e| e.to_string())
                .and_then(|t| run(&t, &message))
            {
                Ok(outcome) => println!("{}: ok {outcome:?}", file.display()),
                Err(e) => {
                    println!("{}: {e}", file.display());
                    failed = true;
                }
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let seconds = seconds.or(if iterations.is_none() { Some(60) } else { None });
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let mut corpus: Vec<String> = SELECTOR_SEEDS.iter().map(|s| (*s).to_owned()).collect();
    let mut seen = HashSet::new();
    let mut executions: u64 = 0;
    let started = Instant::now();
    loop {
        if iterations.is_some_and(|n| executions >= n)
            || (executions.is_multiple_of(1024) && deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        let mut text = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut text, &corpus);
        executions += 1;
        match run(&text, &message) {
            Ok(outcome) => {
                if seen.insert(outcome) && corpus.len() < 4096 {
                    corpus.push(text);
                }
            }
            Err(finding) => {
                let _ = fs::create_dir_all(&artifacts);
                let path = artifacts.join(format!("selector-{seed}-{executions}"));
                let _ = fs::write(&path, &text);
                println!(
                    "finding after {executions} executions: {finding}\n  input saved to {}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{executions} executions in {secs:.1}s ({:.0}/s), {} distinct outcomes, corpus {}",
        executions as f64 / secs,
        seen.len(),
        corpus.len()
    );
    ExitCode::SUCCESS
}
