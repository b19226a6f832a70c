//! The stable-Rust mutation fuzzer shared by the byte- and text-input
//! targets (`url`, `config`, `journal`, `selector`): a [`Target`] gives
//! seeds, tokens worth inserting and its check; [`main`] does the rest
//! (arguments, mutation, outcome-novelty feedback, findings, replay,
//! corpus saving). The STOMP fuzzer (`src/main.rs`) has its own loop
//! because its inputs are structured [`Case`](crate::Case)s.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs};

use crate::Rng;

/// The largest single allocation one input may cause: a length field
/// trusted before it is checked shows up as a (much) larger one.
pub const MAX_ALLOCATION: usize = 16 << 20;

/// One fuzz target.
pub struct Target {
    /// Its name: the bin's, and the prefix of its findings' file names.
    pub name: &'static str,
    /// Inputs to start from.
    pub seeds: Vec<Vec<u8>>,
    /// Byte strings worth inserting (syntax of the input language).
    pub tokens: &'static [&'static [u8]],
    /// Longest input the mutator makes.
    pub max_len: usize,
    /// The check: `Ok` with a signature of what the input did (novel
    /// signatures join the corpus), `Err` with the broken invariant.
    pub check: fn(&[u8]) -> Result<u64, String>,
}

/// Runs `check` on `input`, turning a panic and an allocation above
/// [`MAX_ALLOCATION`] into findings. Used by the AFL targets too.
pub fn run(check: fn(&[u8]) -> Result<u64, String>, input: &[u8]) -> Result<u64, String> {
    crate::alloc_watch::reset();
    let result = match panic::catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(result) => result,
        Err(payload) => Err(format!(
            "panic: {}",
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".to_owned())
        )),
    };
    let largest = crate::alloc_watch::largest();
    if result.is_ok() && largest > MAX_ALLOCATION {
        return Err(format!(
            "allocated {largest} bytes at once for a {}-byte input",
            input.len()
        ));
    }
    result
}

const USAGE: &str = "\
usage: BIN [--seconds S | --iterations N] [--seed X] [--corpus DIR]... [--artifacts DIR]
           [--keep-going] [--save-corpus DIR] [--max-len N]
       BIN --replay FILE...          run files through the check
       BIN --replay-dir DIR...       run every file in DIR through the check
       BIN --write-seeds DIR         write the built-in seeds as files
Without --seconds/--iterations: 60 s. A finding is saved to ARTIFACTS/NAME-SEED-N
and makes the exit status non-zero.
";

struct Options {
    seconds: Option<u64>,
    iterations: Option<u64>,
    seed: u64,
    corpus: Vec<PathBuf>,
    artifacts: PathBuf,
    keep_going: bool,
    replay: Vec<PathBuf>,
    replay_dirs: Vec<PathBuf>,
    replaying: bool,
    write_seeds: Option<PathBuf>,
    save_corpus: Option<PathBuf>,
    max_len: Option<usize>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        seconds: None,
        iterations: None,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        corpus: Vec::new(),
        artifacts: PathBuf::from("artifacts"),
        keep_going: false,
        replay: Vec::new(),
        replay_dirs: Vec::new(),
        replaying: false,
        write_seeds: None,
        save_corpus: None,
        max_len: None,
    };
    let mut args = env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.ok_or_else(|| format!("{what} needs a value"))?
            .parse()
            .map_err(|e| format!("{what}: {e}"))
    };
    let path = |v: Option<String>, what: &str| -> Result<PathBuf, String> {
        v.map(PathBuf::from)
            .ok_or_else(|| format!("{what} needs a value"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => o.seconds = Some(num(args.next(), "--seconds")?),
            "--iterations" => o.iterations = Some(num(args.next(), "--iterations")?),
            "--seed" => o.seed = num(args.next(), "--seed")?,
            "--corpus" => o.corpus.push(path(args.next(), "--corpus")?),
            "--artifacts" => o.artifacts = path(args.next(), "--artifacts")?,
            "--keep-going" => o.keep_going = true,
            "--max-len" => o.max_len = Some(num(args.next(), "--max-len")?.max(1) as usize),
            "--write-seeds" => o.write_seeds = Some(path(args.next(), "--write-seeds")?),
            "--save-corpus" => o.save_corpus = Some(path(args.next(), "--save-corpus")?),
            "--replay" => {
                o.replaying = true;
                o.replay.extend(args.by_ref().map(PathBuf::from))
            }
            "--replay-dir" => {
                o.replaying = true;
                o.replay_dirs.extend(args.by_ref().map(PathBuf::from))
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.seconds.is_none() && o.iterations.is_none() {
        o.seconds = Some(60);
    }
    Ok(o)
}

/// The files directly in `dir`, sorted (a missing directory has none).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn replay(target: &Target, files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for file in files {
        match fs::read(file) {
            Ok(data) => {
                if let Err(finding) = run(target.check, &data) {
                    println!("{}: FINDING {finding}", file.display());
                    failed += 1;
                }
            }
            Err(e) => {
                println!("{}: {e}", file.display());
                failed += 1;
            }
        }
    }
    println!(
        "{}: replayed {} files, {failed} failed",
        target.name,
        files.len()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

const BOUNDARY_NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483647",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1e308",
    b"1e309",
    b"nan",
    b"inf",
    b"-0.0",
];

const INTERESTING_BYTES: &[u8] = b"\0\x01\x7f\x80\xff \n\r\t:=/\\\"'[](),.?&%@#-";

/// Stacks 1–4 random mutations on `input`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], target: &Target) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(11) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = if rng.chance(2) {
                    INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]
                } else {
                    rng.next_u64() as u8
                };
            }
            2 | 3 if !target.tokens.is_empty() => {
                let t = target.tokens[rng.below(target.tokens.len())];
                input.splice(at..at, t.iter().copied());
            }
            4 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, bytes);
            }
            5 => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            6 => {
                let end = (at + rng.below(32)).min(input.len());
                let copy = input[at.min(end)..end].to_vec();
                input.splice(end..end, copy);
            }
            7 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            8 => input.truncate(at),
            9 => {
                // Replace a run of digits (or insert) with a boundary number.
                let start = (0..input.len())
                    .map(|i| (at + i) % input.len())
                    .find(|&i| input[i].is_ascii_digit())
                    .unwrap_or(at.min(input.len()));
                let end = (start..input.len())
                    .find(|&i| !input[i].is_ascii_digit())
                    .unwrap_or(input.len());
                let n = BOUNDARY_NUMBERS[rng.below(BOUNDARY_NUMBERS.len())];
                input.splice(start..end, n.iter().copied());
            }
            _ if input.len() >= 4 => {
                // Overwrite with a little-endian boundary integer (length
                // fields of binary formats).
                let v: u64 = match rng.below(6) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => u32::MAX as u64,
                    3 => 1 << 30,
                    4 => rng.below(input.len() + 2) as u64,
                    _ => rng.next_u64() & 0xffff,
                };
                let w = if rng.chance(2) { 4 } else { 8 };
                let i = rng.below(input.len());
                for (k, b) in v.to_le_bytes()[..w].iter().enumerate() {
                    if let Some(slot) = input.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            _ => input.push(rng.next_u64() as u8),
        }
    }
    input.truncate(target.max_len);
}

/// Runs the fuzzer for `target` with the command line's options.
pub fn main(mut target: Target) -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            eprint!("{}", USAGE.replace("BIN", target.name));
            return ExitCode::from(2);
        }
    };
    if let Some(n) = opts.max_len {
        target.max_len = n;
    }
    // Panics are findings, printed as such; keep the default hook quiet.
    panic::set_hook(Box::new(|_| {}));
    if opts.replaying {
        let mut files = opts.replay.clone();
        for dir in &opts.replay_dirs {
            files.extend(files_in(dir));
        }
        return replay(&target, &files);
    }
    if let Some(dir) = &opts.write_seeds {
        let _ = fs::create_dir_all(dir);
        for (i, seed) in target.seeds.iter().enumerate() {
            if let Err(e) = fs::write(dir.join(format!("seed-{i:03}")), seed) {
                eprintln!("{}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        println!("wrote {} seeds to {}", target.seeds.len(), dir.display());
        return ExitCode::SUCCESS;
    }

    let mut rng = Rng(opts.seed);
    let mut corpus = target.seeds.clone();
    for dir in &opts.corpus {
        for file in files_in(dir) {
            if let Ok(data) = fs::read(&file) {
                corpus.push(data);
            }
        }
    }
    let seeds = corpus.len();
    // Signature -> the shortest input that produced it: the corpus to save.
    let mut seen: HashMap<u64, Vec<u8>> = HashMap::new();
    for input in &corpus {
        match run(target.check, input) {
            Ok(sig) => keep_shortest(&mut seen, sig, input),
            Err(finding) => {
                println!(
                    "a seed or corpus input fails: {finding}\n  {:?}",
                    String::from_utf8_lossy(input)
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{}: seed {} ({} starting inputs), {}{}",
        target.name,
        opts.seed,
        seeds,
        opts.seconds.map(|s| format!("{s} s")).unwrap_or_default(),
        opts.iterations
            .map(|n| format!(" / {n} iterations"))
            .unwrap_or_default(),
    );

    let start = Instant::now();
    let deadline = opts.seconds.map(|s| start + Duration::from_secs(s));
    let mut last_report = start;
    let mut iterations: u64 = 0;
    let mut findings: u64 = 0;
    loop {
        if opts.iterations.is_some_and(|n| iterations >= n) {
            break;
        }
        if iterations.is_multiple_of(256) {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            if now - last_report >= Duration::from_secs(30) {
                last_report = now;
                let secs = (now - start).as_secs_f64();
                println!(
                    "  {secs:>6.0} s  {iterations:>11} execs  {:>8.0} execs/s  corpus {}  outcomes {}",
                    iterations as f64 / secs,
                    corpus.len(),
                    seen.len(),
                );
            }
        }
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus, &target);
        iterations += 1;
        match run(target.check, &input) {
            Ok(sig) => {
                let novel = !seen.contains_key(&sig);
                keep_shortest(&mut seen, sig, &input);
                if novel || rng.chance(4000) {
                    if corpus.len() < 10_000 {
                        corpus.push(input);
                    } else {
                        let i = seeds + rng.below(corpus.len() - seeds);
                        corpus[i] = input;
                    }
                }
            }
            Err(finding) => {
                findings += 1;
                let _ = fs::create_dir_all(&opts.artifacts);
                let path = opts
                    .artifacts
                    .join(format!("{}-{}-{iterations}", target.name, opts.seed));
                if let Err(e) = fs::write(&path, &input) {
                    eprintln!("cannot write {}: {e}", path.display());
                }
                println!("FINDING #{findings} at iteration {iterations}: {finding}");
                println!("  input {:?}", String::from_utf8_lossy(&input));
                println!("  saved to {} (replay with --replay)", path.display());
                if !opts.keep_going {
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "done: {iterations} execs in {secs:.1} s ({:.0} execs/s), corpus {}, distinct outcomes {}, \
         findings {findings}",
        iterations as f64 / secs.max(1e-9),
        corpus.len(),
        seen.len()
    );
    if let Some(dir) = &opts.save_corpus {
        save_corpus(dir, &seen);
    }
    if findings > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Most outcome signatures remembered (with their shortest input): a
/// target whose signatures are too fine must not grow without bound over
/// a long run.
pub const MAX_SIGNATURES: usize = 100_000;

/// Keeps the shortest input seen for each outcome signature.
pub fn keep_shortest(seen: &mut HashMap<u64, Vec<u8>>, sig: u64, input: &[u8]) {
    let full = seen.len() >= MAX_SIGNATURES;
    match seen.get_mut(&sig) {
        Some(kept) if kept.len() <= input.len() => {}
        Some(kept) => *kept = input.to_vec(),
        None if !full => {
            seen.insert(sig, input.to_vec());
        }
        None => {}
    }
}

/// Most files a saved corpus holds (the shortest input per outcome; the
/// smallest ones if there are more outcomes than this).
pub const SAVED_CORPUS_FILES: usize = 300;

/// Writes the shortest input of each outcome to `dir` (one file each,
/// named by a hash of its content, so saving twice adds no duplicates).
pub fn save_corpus(dir: &Path, seen: &HashMap<u64, Vec<u8>>) {
    let mut inputs: Vec<&Vec<u8>> = seen.values().collect();
    inputs.sort_by_key(|i| (i.len(), i.to_vec()));
    inputs.truncate(SAVED_CORPUS_FILES);
    if let Err(e) = fs::create_dir_all(dir) {
        eprintln!("{}: {e}", dir.display());
        return;
    }
    for input in &inputs {
        let path = dir.join(format!("{:016x}", fnv1a(input)));
        if let Err(e) = fs::write(&path, input) {
            eprintln!("{}: {e}", path.display());
        }
    }
    println!("saved {} inputs to {}", inputs.len(), dir.display());
}

/// FNV-1a: a stable content hash for corpus file names.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
