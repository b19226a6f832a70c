//! The mutation fuzzer for the JMS selector parser and evaluator
//! (`halyard-selector`), on stable Rust, on the shared driver
//! (`halyard_stomp_fuzz::driver`). See README.md.
//!
//! It starts from [`SELECTOR_SEEDS`], stacks 1–4 mutations per execution
//! (selector tokens and boundary numbers inserted, deletes, duplicated
//! ranges, splices with other corpus entries, byte changes) and runs the
//! result through [`check_selector`](halyard_stomp_fuzz::selector::check_selector).
//! Inputs with an outcome not seen before join the corpus.

use std::process::ExitCode;

use halyard_stomp_fuzz::driver::{self, Target};
use halyard_stomp_fuzz::selector::{SELECTOR_SEEDS, check_selector_bytes};

const TOKENS: &[&[u8]] = &[
    b" ",
    b"(",
    b")",
    b"((((((((",
    b"))))))))",
    b",",
    b"'",
    b"''",
    b"'x'",
    b"'%'",
    b"'_'",
    b"'!'",
    b"=",
    b"<>",
    b"<",
    b"<=",
    b">",
    b">=",
    b"+",
    b"-",
    b"*",
    b"/",
    b"%",
    b"--",
    b"/*",
    b"*/",
    b"\n",
    b"NOT ",
    b" AND ",
    b" OR ",
    b" BETWEEN ",
    b" IN ",
    b" LIKE ",
    b" ESCAPE ",
    b" IS ",
    b" NULL",
    b"TRUE",
    b"false",
    b"a",
    b"b",
    b"c",
    b"d",
    b"e",
    b"nan",
    b"big",
    b"small",
    b"num",
    b"uni",
    b"JMSPriority",
    b"XPATH",
    b"\"",
    b"0",
    b"07",
    b"08",
    b"0x",
    b"0xFF",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"1e308",
    b"1e309",
    b".5",
    b"5.",
    b"2.5e-3",
    b"5L",
    b"2.5f",
    "\u{e9}".as_bytes(),
    "\u{1f980}".as_bytes(),
    b"$",
    b"_",
    b"==",
    b"!=",
    b"&&",
    b"NOT NOT ",
];

fn main() -> ExitCode {
    let mut seeds: Vec<Vec<u8>> = SELECTOR_SEEDS
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    // Deep nesting, refused before it can recurse far.
    seeds.push(format!("{}a = 1{}", "(".repeat(80), ")".repeat(80)).into_bytes());
    seeds.push(format!("{}a = 1", "NOT ".repeat(80)).into_bytes());
    driver::main(Target {
        name: "selector",
        seeds,
        tokens: TOKENS,
        max_len: 8192,
        check: check_selector_bytes,
    })
}
