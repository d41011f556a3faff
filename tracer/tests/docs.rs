//! Every `tracer …` command the README and `docs/*.md` show parses with the real command line
//! (issue 19), so that the docs cannot rot. Which lines count as commands (fenced `sh`/`console`
//! blocks; untagged blocks are output and synopses) is in `xtask/src/docs.rs`. Needs no root.
use clap::Parser;
use std::path::Path;
use tracer::cli::Cli;
use xtask::docs::{doc_commands, doc_files};

/// Commands that show an error on purpose: (file name, a piece of the line, why). None today.
const EXPECTED_TO_FAIL: &[(&str, &str, &str)] = &[];

/// How many `tracer` invocations the README and docs/ held when this test was written: finding
/// fewer means the extraction broke (or commands were removed: then lower this on purpose).
const AT_LEAST: usize = 14;

#[test]
fn every_tracer_command_in_the_docs_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commands = doc_commands(&doc_files(&root), &["tracer"]);
    let mut failures = Vec::new();
    for c in &commands {
        let expected_error = EXPECTED_TO_FAIL.iter().any(|(file, piece, _)| {
            c.file.file_name().is_some_and(|f| f == *file) && c.text.contains(piece)
        });
        let argv = std::iter::once("tracer".to_string()).chain(c.args.iter().cloned());
        match (Cli::try_parse_from(argv), expected_error) {
            (Ok(_), false) | (Err(_), true) => {}
            (Ok(_), true) => failures.push(format!(
                "{}:{}: `{}` parses, but EXPECTED_TO_FAIL says it shows an error",
                c.file.display(),
                c.line,
                c.text
            )),
            (Err(e), false) => failures.push(format!(
                "{}:{}: `{}`:\n{}",
                c.file.display(),
                c.line,
                c.text,
                e.render()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        commands.len() >= AT_LEAST,
        "found {} tracer commands in README.md and docs/, expected at least {AT_LEAST}: {commands:#?}",
        commands.len()
    );
}
