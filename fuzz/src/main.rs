//! A small, self-contained mutation fuzzer for the `halyard-stomp` parser.
//! It needs nothing but a stable toolchain. See README.md for usage.
//!
//! It starts from a seed corpus of valid (and a few broken) frames, mutates
//! them (bit flips, byte sets, inserts of random bytes and STOMP tokens,
//! deletes, duplication, splicing, truncation, number swaps, new chunk
//! boundaries, limits nudged onto the input's own line/section/body sizes,
//! version changes) and runs every result through
//! [`halyard_stomp_fuzz::check_case`]. Inputs that produce a parse outcome
//! not seen before join the corpus (cheap feedback, no instrumentation).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs};

use halyard_stomp::{Limits, Version};
use halyard_stomp_fuzz::driver::{files_in, keep_shortest, save_corpus};
use halyard_stomp_fuzz::{
    Case, Finding, MAX_BODY, MAX_CHUNKS, MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, Rng, Summary,
    check_case, seed_cases,
};

const USAGE: &str = "\
usage: halyard-stomp-fuzz [OPTIONS]
       halyard-stomp-fuzz --replay FILE...
       halyard-stomp-fuzz --write-seeds DIR

options:
  --seconds S       stop after S seconds (default 60 when --iterations is not given)
  --iterations N    stop after N executions
  --seed X          RNG seed (default: from the clock; printed at start)
  --max-len N       longest input, in bytes (default 2048)
  --corpus DIR      add every file in DIR to the seeds (raw STOMP bytes)
  --artifacts DIR   where findings are written (default: artifacts)
  --keep-going      record findings and continue instead of stopping
  --replay FILE...  run saved cases (from artifacts/) and print what happens
  --replay-dir DIR... run every case file in DIR (a corpus, regressions)
  --save-corpus DIR  after the run, write the shortest case of each outcome
                    (at most 300) to DIR
  --write-seeds DIR write the seed corpus as case files (for afl-fuzz -i)
";

struct Options {
    seconds: Option<u64>,
    iterations: Option<u64>,
    seed: u64,
    max_len: usize,
    corpus: Vec<PathBuf>,
    artifacts: PathBuf,
    keep_going: bool,
    replay: Vec<PathBuf>,
    replaying: bool,
    write_seeds: Option<PathBuf>,
    save_corpus: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        seconds: None,
        iterations: None,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        max_len: 2048,
        corpus: Vec::new(),
        artifacts: PathBuf::from("artifacts"),
        keep_going: false,
        replay: Vec::new(),
        replaying: false,
        write_seeds: None,
        save_corpus: None,
    };
    let mut args = env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.ok_or_else(|| format!("{what} needs a value"))?
            .parse()
            .map_err(|e| format!("{what}: {e}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => o.seconds = Some(num(args.next(), "--seconds")?),
            "--iterations" => o.iterations = Some(num(args.next(), "--iterations")?),
            "--seed" => o.seed = num(args.next(), "--seed")?,
            "--max-len" => o.max_len = num(args.next(), "--max-len")?.max(1) as usize,
            "--corpus" => o
                .corpus
                .push(args.next().ok_or("--corpus needs a value")?.into()),
            "--artifacts" => o.artifacts = args.next().ok_or("--artifacts needs a value")?.into(),
            "--keep-going" => o.keep_going = true,
            "--write-seeds" => {
                o.write_seeds = Some(args.next().ok_or("--write-seeds needs a value")?.into())
            }
            "--save-corpus" => {
                o.save_corpus = Some(args.next().ok_or("--save-corpus needs a value")?.into())
            }
            "--replay" => {
                o.replaying = true;
                o.replay.extend(args.by_ref().map(PathBuf::from));
                if o.replay.is_empty() {
                    return Err("--replay needs files".into());
                }
            }
            "--replay-dir" => {
                o.replaying = true;
                for dir in args.by_ref() {
                    o.replay.extend(files_in(Path::new(&dir)));
                }
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

const INTERESTING_BYTES: &[u8] = b"\n\r:\\\0cnrt-+ 0123456789\x7f\x80\xbf\xc0\xc3\xe2\xf0\xff";

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
    b":",
    b"\\c",
    b"\\n",
    b"\\r",
    b"\\\\",
    b"\\t",
    b"\\",
    b"\0",
    b"content-length:",
    b"content-length:0\n",
    b"content-length:1\n",
    b"\ncontent-length:3\n\n",
    b"content-length: 2 \n",
    b"content-length:-1\n",
    b"content-length:18446744073709551615\n",
    b"content-length:99999999999999999999999\n",
    b"SEND\n",
    b"CONNECT\n",
    b"STOMP\r\n",
    b"CONNECTED\n",
    b"MESSAGE\n",
    b"ERROR\n",
    b"destination:/queue/a\n",
    b"accept-version:1.2\n",
    b"\xff",
    b"\xc3(",
    b"\xe2\x82",
    b"\xf0\x9f\x98\x80",
    b"\xef\xbb\xbf",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "7",
    "00",
    "63",
    "64",
    "65",
    "255",
    "256",
    "1023",
    "1024",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-0",
    " 1",
    "1 ",
];

fn random_limits(rng: &mut Rng) -> Limits {
    // Mostly tight limits, sometimes loose ones so that long inputs get deep.
    if rng.chance(4) {
        Limits {
            max_line_bytes: rng.range(64, MAX_LINE),
            max_headers: rng.range(8, MAX_HEADERS),
            max_header_bytes: rng.range(256, MAX_HEADER_BYTES),
            max_body_bytes: rng.range(128, MAX_BODY),
        }
    } else {
        Limits {
            max_line_bytes: rng.range(1, 48),
            max_headers: rng.range(0, 6),
            max_header_bytes: rng.range(1, 128),
            max_body_bytes: rng.range(0, 64),
        }
    }
}

fn random_chunks(rng: &mut Rng) -> Vec<usize> {
    match rng.below(5) {
        0 => Vec::new(),
        1 => vec![1],
        2 => (0..rng.range(1, MAX_CHUNKS))
            .map(|_| rng.range(1, 4))
            .collect(),
        _ => (0..rng.range(1, MAX_CHUNKS))
            .map(|_| rng.range(1, 255))
            .collect(),
    }
}

/// Positions right after each '\n' (line starts), plus 0.
fn line_starts(input: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            input
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect()
}

/// Moves one limit onto a size the input actually has (± 1): a line's
/// length (with or without its '\r'), the header section's length, a body's
/// length, a header count. Boundaries are where bugs live.
fn fit_limit_to_input(rng: &mut Rng, case: &mut Case) {
    let input = &case.input;
    let starts = line_starts(input);
    let jitter = |rng: &mut Rng, n: usize| (n + rng.below(3)).saturating_sub(1);
    match rng.below(4) {
        0 => {
            let s = starts[rng.below(starts.len())];
            let len = input[s..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(input.len() - s);
            let len = if rng.chance(2) {
                len
            } else {
                len.saturating_sub(1)
            };
            case.limits.max_line_bytes = jitter(rng, len).clamp(1, MAX_LINE);
        }
        1 => {
            if let Some(p) = find(input, b"\n\n").or_else(|| find(input, b"\r\n\r\n")) {
                let head = p + if input[p] == b'\r' { 4 } else { 2 };
                case.limits.max_header_bytes = jitter(rng, head).clamp(1, MAX_HEADER_BYTES);
            }
        }
        2 => {
            if let Some(p) = find(input, b"\n\n") {
                let body = input[p + 2..]
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(input.len() - p - 2);
                case.limits.max_body_bytes = jitter(rng, body).min(MAX_BODY);
            }
        }
        _ => {
            let lines = find(input, b"\n\n")
                .map(|p| input[..p].iter().filter(|&&b| b == b'\n').count())
                .unwrap_or(starts.len());
            case.limits.max_headers = jitter(rng, lines).min(MAX_HEADERS);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn mutate(rng: &mut Rng, case: &mut Case, corpus: &[Case], max_len: usize) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let input = &mut case.input;
        let len = input.len();
        match rng.below(14) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = if rng.chance(2) {
                    INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]
                } else {
                    rng.next_u64() as u8
                };
            }
            2 => {
                let at = rng.below(len + 1);
                let n = rng.range(1, 8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 | 4 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = rng.range(1, 16).min(len - at);
                input.drain(at..at + n);
            }
            6 if len > 0 => {
                let from = rng.below(len);
                let n = rng.range(1, 64).min(len - from);
                let copy = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            7 => {
                // Splice: our prefix, another entry's suffix (or a whole
                // other entry appended: several frames in a row).
                let other = &corpus[rng.below(corpus.len())].input;
                if rng.chance(2) {
                    input.extend_from_slice(other);
                } else {
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len() + 1);
                    input.truncate(cut);
                    input.extend_from_slice(&other[from..]);
                }
            }
            8 if len > 0 => input.truncate(rng.below(len)),
            9 => {
                // Replace a run of digits (e.g. a content-length) by an
                // interesting number, or insert one.
                let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
                let number = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
                if digits.is_empty() {
                    let at = rng.below(len + 1);
                    input.splice(at..at, number.iter().copied());
                } else {
                    let start = digits[rng.below(digits.len())];
                    let end = (start..len)
                        .find(|&i| !input[i].is_ascii_digit())
                        .unwrap_or(len);
                    input.splice(start..end, number.iter().copied());
                }
            }
            10 => case.chunks = random_chunks(rng),
            11 => fit_limit_to_input(rng, case),
            12 => {
                if rng.chance(2) {
                    case.limits = random_limits(rng);
                } else {
                    case.version = [Version::V1_0, Version::V1_1, Version::V1_2][rng.below(3)];
                }
            }
            _ => {
                // Swap a line ending for the other kind.
                let starts = line_starts(input);
                let s = starts[rng.below(starts.len())];
                if s >= 2 && input[s - 2] == b'\r' {
                    input.remove(s - 2);
                } else if s >= 1 {
                    input.insert(s - 1, b'\r');
                }
            }
        }
        case.input.truncate(max_len);
    }
}

fn signature(case: &Case, s: &Summary) -> u64 {
    let mut h = DefaultHasher::new();
    (case.version as u8).hash(&mut h);
    s.frames.min(4).hash(&mut h);
    s.heartbeats.min(2).hash(&mut h);
    s.with_length.min(2).hash(&mut h);
    s.max_headers.min(8).hash(&mut h);
    s.error.hash(&mut h);
    s.incomplete.hash(&mut h);
    case.chunks.is_empty().hash(&mut h);
    h.finish()
}

fn save(dir: &Path, name: &str, case: &Case) -> PathBuf {
    let _ = fs::create_dir_all(dir);
    let path = dir.join(name);
    if let Err(e) = fs::write(&path, case.to_bytes()) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    path
}

fn describe(case: &Case) -> String {
    format!(
        "version {} limits {:?} chunks {:?} input {:?}",
        case.version,
        case.limits,
        case.chunks,
        String::from_utf8_lossy(&case.input)
    )
}

/// Runs a case, turning a panic into a finding.
fn run(case: &Case) -> Result<Summary, Finding> {
    match panic::catch_unwind(AssertUnwindSafe(|| check_case(case))) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".to_owned());
            Err(Finding::Violation(format!("panic: {msg}")))
        }
    }
}

/// Replays saved cases: each one's outcome when there are a few, only the
/// failures and a count when there are many (a corpus).
fn replay(files: &[PathBuf]) -> ExitCode {
    let verbose = files.len() <= 10;
    let mut failed = 0;
    for file in files {
        let data = match fs::read(file) {
            Ok(d) => d,
            Err(e) => {
                println!("{}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        let case = Case::from_bytes(&data);
        let result = run(&case);
        if verbose || result.is_err() {
            println!("{}: {}", file.display(), describe(&case));
        }
        match result {
            Ok(summary) if verbose => println!("  ok: {summary:?}"),
            Ok(_) => {}
            Err(finding) => {
                println!("  FINDING {finding}");
                failed += 1;
            }
        }
    }
    println!("stomp: replayed {} files, {failed} failed", files.len());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if opts.replaying {
        return replay(&opts.replay);
    }
    if let Some(dir) = &opts.write_seeds {
        for (i, case) in seed_cases().iter().enumerate() {
            save(dir, &format!("seed-{i:03}"), case);
        }
        println!(
            "wrote {} seed cases to {}",
            seed_cases().len(),
            dir.display()
        );
        return ExitCode::SUCCESS;
    }

    // Panics are reported as findings; keep the default hook's message off
    // the terminal for them (the finding prints it).
    panic::set_hook(Box::new(|_| {}));

    let mut rng = Rng(opts.seed);
    let mut corpus = seed_cases();
    for dir in &opts.corpus {
        match fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if let Ok(input) = fs::read(entry.path()) {
                        corpus.push(Case {
                            version: Version::V1_2,
                            limits: random_limits(&mut rng),
                            chunks: Vec::new(),
                            input,
                        });
                    }
                }
            }
            Err(e) => eprintln!("{}: {e}", dir.display()),
        }
    }
    let seeds = corpus.len();

    // Signature -> the shortest case that produced it (the corpus to save).
    let mut seen: HashMap<u64, Vec<u8>> = HashMap::new();
    for case in &corpus {
        match run(case) {
            Ok(s) => {
                keep_shortest(&mut seen, signature(case, &s), &case.to_bytes());
            }
            Err(f) => {
                eprintln!("seed fails: {f}\n  {}", describe(case));
                return ExitCode::FAILURE;
            }
        }
    }

    println!(
        "halyard-stomp-fuzz: seed {} ({} seed cases), {}{}",
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
    let mut frames: u64 = 0;
    let mut errors = std::collections::BTreeMap::<&'static str, u64>::new();
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
            if now - last_report >= Duration::from_secs(10) {
                last_report = now;
                let secs = (now - start).as_secs_f64();
                println!(
                    "  {:>6.0} s  {:>11} execs  {:>8.0} execs/s  corpus {}  frames {}",
                    secs,
                    iterations,
                    iterations as f64 / secs,
                    corpus.len(),
                    frames,
                );
            }
        }
        let mut case = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut case, &corpus, opts.max_len);
        iterations += 1;
        match run(&case) {
            Ok(summary) => {
                frames += summary.frames as u64;
                *errors.entry(summary.error.unwrap_or("none")).or_default() += 1;
                let sig = signature(&case, &summary);
                let novel = !seen.contains_key(&sig);
                keep_shortest(&mut seen, sig, &case.to_bytes());
                if novel || rng.chance(2000) {
                    if corpus.len() < 20_000 {
                        corpus.push(case);
                    } else {
                        let i = seeds + rng.below(corpus.len() - seeds);
                        corpus[i] = case;
                    }
                }
            }
            Err(finding) => {
                findings += 1;
                let path = save(
                    &opts.artifacts,
                    &format!("finding-{}-{iterations}", opts.seed),
                    &case,
                );
                println!("FINDING #{findings} at iteration {iterations}: {finding}");
                println!("  {}", describe(&case));
                println!("  saved to {} (replay with --replay)", path.display());
                if !opts.keep_going {
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "done: {iterations} execs in {secs:.1} s ({:.0} execs/s), corpus {}, frames parsed {frames}, \
         findings {findings}",
        iterations as f64 / secs.max(1e-9),
        corpus.len()
    );
    println!("  outcomes: {errors:?}");
    if let Some(dir) = &opts.save_corpus {
        save_corpus(dir, &seen);
    }
    if findings > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
