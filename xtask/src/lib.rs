//! Project tasks (`cargo xtask ...`) and the network-namespace lab used by the tracer's tests.

pub mod bench;
pub mod demo;
pub mod docs;
pub mod incident;
pub mod lab;
pub mod routed;
pub mod setup;
pub mod vm;
pub mod vm_scenario;

/// `test result: ok. 87 passed; 0 failed; 0 ignored; ...` → (87, 0).
pub fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use super::parse_test_result;

    #[test]
    fn test_result_lines_are_counted() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 87 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 7.81s"
            ),
            Some((87, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured"),
            Some((4, 1))
        );
        assert_eq!(parse_test_result("running 5 tests"), None);
    }
}
