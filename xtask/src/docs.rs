//! The command lines the README and `docs/*.md` show, so that tests can parse each one with the
//! real clap definition and the docs cannot rot (issue 19): `tracer …` in
//! `tracer/tests/docs.rs`, `cargo xtask …` in `xtask/src/main.rs`'s tests.
//!
//! What counts as a command: a line in a fenced block tagged `sh`, `shell`, `bash` or `console`.
//! Untagged blocks are output, synopses (`tracer run [--iface NAME]...`) or trees; `json` blocks
//! are log samples: neither is read. In a command block, `\` continuations are joined, a `#`
//! comment (a whole line, or ` #` after a command) is cut, and so is everything from the first
//! `|`, `>`, `<`, `&&`, `||` or `;` on. The program is found as the first word equal to it (or ending
//! in `/` + it, as `target/release/tracer`), after `sudo`, `VAR=value` prefixes or another
//! command's `--` (`kubectl debug … -- tracer run …`). Shell variables (`$NODE`, `${NODE}`,
//! `$(HOST_IP)`) and `<placeholders>` become `10.0.0.1`, which is a plausible name, path and address.
use std::path::{Path, PathBuf};

/// One command line found in a doc page.
#[derive(Debug, Clone)]
pub struct DocCommand {
    pub file: PathBuf,
    /// 1-based line of the command's first line.
    pub line: usize,
    /// The arguments after the program's words (`run`, `--netns`, …).
    pub args: Vec<String>,
    /// The logical line as written (continuations joined), for messages.
    pub text: String,
}

/// `README.md` and every `docs/*.md` under `root`, sorted.
pub fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect()
        })
        .unwrap_or_default();
    pages.sort();
    files.extend(pages);
    files
}

/// Every invocation of `program` (one or more words: `["tracer"]`, `["cargo", "xtask"]`) in the
/// command blocks of `files`.
pub fn doc_commands(files: &[PathBuf], program: &[&str]) -> Vec<DocCommand> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut in_block = false;
        let mut commands = false;
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if let Some(tag) = trimmed.strip_prefix("```") {
                in_block = !in_block;
                commands = in_block && matches!(tag.trim(), "sh" | "shell" | "bash" | "console");
                pending = None;
                continue;
            }
            if !in_block || !commands {
                continue;
            }
            let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
            let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
            if let Some(head) = line.strip_suffix('\\') {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
                continue;
            }
            joined.push_str(line);
            if let Some(args) = invocation(&joined, program) {
                found.push(DocCommand {
                    file: file.clone(),
                    line: start,
                    args,
                    text: joined.trim().to_string(),
                });
            }
        }
    }
    found
}

/// The arguments of `program` in one logical shell line, if it runs `program`.
fn invocation(line: &str, program: &[&str]) -> Option<Vec<String>> {
    let line = strip_comment(line);
    let mut cut = line.len();
    for stop in ["|", ">", "<", "&&", ";"] {
        if let Some(at) = line.find(stop) {
            cut = cut.min(at);
        }
    }
    let words: Vec<String> = line[..cut]
        .split_whitespace()
        .map(|w| substitute(w.trim_matches(|c| c == '\'' || c == '"')))
        .collect();
    let mut at = 0;
    loop {
        // Skip what may precede the program: sudo, VAR=value, and another command up to `--`.
        while at < words.len() && (words[at] == "sudo" || is_assignment(&words[at])) {
            at += 1;
        }
        if at + program.len() <= words.len()
            && words[at..at + program.len()]
                .iter()
                .zip(program)
                .enumerate()
                .all(|(k, (w, p))| w == p || (k == 0 && w.ends_with(&format!("/{p}"))))
        {
            return Some(words[at + program.len()..].to_vec());
        }
        match words[at..].iter().position(|w| w == "--") {
            Some(dash) => at += dash + 1,
            None => return None,
        }
    }
}

fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    match line.find(" #") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with('-')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// `$X`, `${X}`, `$(X)` and `<x>` become a plausible value.
fn substitute(word: &str) -> String {
    const VALUE: &str = "10.0.0.1";
    if word.starts_with('<') && word.ends_with('>') && word.len() > 2 {
        return VALUE.to_string();
    }
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('(') | Some('{') => {
                let close = if chars.next() == Some('(') { ')' } else { '}' };
                for c in chars.by_ref() {
                    if c == close {
                        break;
                    }
                }
            }
            _ => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
            }
        }
        out.push_str(VALUE);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_shapes_are_understood() {
        let t = ["tracer"];
        let a = |s: &str| invocation(s, &t);
        assert_eq!(
            a("sudo tracer run --all-drops  # x"),
            Some(vec!["run".into(), "--all-drops".into()])
        );
        assert_eq!(
            a("RUST_LOG=debug sudo ./tracer check | tee x"),
            Some(vec!["check".into()])
        );
        assert_eq!(
            a("target/release/tracer report a.jsonl > v.txt"),
            Some(vec!["report".into(), "a.jsonl".into()])
        );
        assert_eq!(
            a("kubectl debug node/$NODE -it -- tracer run --netns $(NS)"),
            Some(vec!["run".into(), "--netns".into(), "10.0.0.1".into()])
        );
        assert_eq!(a("# tracer run"), None);
        assert_eq!(a("kubectl -n tracer logs ds/tracer"), None);
        assert_eq!(a("cargo xtask demo"), None);
        assert_eq!(
            invocation("cargo xtask bench --smoke", &["cargo", "xtask"]),
            Some(vec!["bench".into(), "--smoke".into()])
        );
    }
}
