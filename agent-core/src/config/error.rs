//! The error every configuration problem becomes: file, key, reason.
use std::path::Path;

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path (`input.cpu.interval`); empty for whole-file problems.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: impl AsRef<Path>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.as_ref().display().to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn file(file: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Self::new(file, "", reason)
    }

    fn render(&self) -> String {
        let reason = shorten(&self.reason);
        if self.key.is_empty() {
            format!("{}: {}", self.file, reason)
        } else {
            format!("{}: key `{}`: {}", self.file, self.key, reason)
        }
    }
}

/// Longest reason shown in full; serde quotes the offending value, and a
/// 1 MB string would make a 1 MB error line.
const MAX_REASON_CHARS: usize = 500;

fn shorten(reason: &str) -> std::borrow::Cow<'_, str> {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        None => reason.into(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &reason[..cut], reason.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_value_in_an_error_is_cut_short() {
        let long = format!("unknown input plugin `{}`", "x".repeat(1 << 20));
        let shown = ConfigError::new("etc/main.yaml", "open[0]", long).to_string();
        assert!(shown.len() < 1000, "{} bytes", shown.len());
        assert!(shown.starts_with("etc/main.yaml: key `open[0]`: unknown input plugin `xxx"));
        assert!(
            shown.ends_with(&format!("… ({} bytes in all)", (1 << 20) + 23)),
            "{shown}"
        );
        let short = ConfigError::new("etc/main.yaml", "interval", "must be positive");
        assert_eq!(
            short.to_string(),
            "etc/main.yaml: key `interval`: must be positive"
        );
    }
}
