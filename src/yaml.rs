//! YAML files users write (pipelines, data YAMLs), parsed strictly, with errors in the words of
//! the file's author: the file, line and column, what is wrong said once, and the line at fault.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, MessageFormatter, UserMessageFormatter};

/// A YAML file that does not hold what it must.
#[derive(Debug)]
pub struct YamlError {
    file: PathBuf,
    /// Line and column, from 1, when known.
    at: Option<(u64, u64)>,
    /// What is wrong, worded for the file's author (never a parser option to set).
    pub message: String,
    /// The line at fault with a caret under the column.
    excerpt: Option<String>,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some((line, column)) = self.at {
            write!(f, "line {line} column {column}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(excerpt) = &self.excerpt {
            write!(f, "\n{excerpt}")?;
        }
        Ok(())
    }
}

impl std::error::Error for YamlError {}

/// Parses `text`, the contents of `file`.
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|err| {
        let err = err.without_snippet();
        let at = err
            .location()
            .filter(|l| *l != Location::UNKNOWN)
            .map(|l| (l.line(), l.column()));
        YamlError {
            file: file.to_path_buf(),
            at,
            message: printable(&UserMessageFormatter.format_message(err)),
            excerpt: at.and_then(|(line, column)| excerpt(text, line, column)),
        }
    })
}

/// Line `line` of `text` with a caret under `column` (both from 1).
fn excerpt(text: &str, line: u64, column: u64) -> Option<String> {
    let source = printable(
        text.lines()
            .nth(usize::try_from(line).ok()?.checked_sub(1)?)?,
    );
    let number = line.to_string();
    let pad: String = source
        .chars()
        .take(usize::try_from(column).ok()?.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let gutter = " ".repeat(number.len());
    Some(format!("{number} | {source}\n{gutter} | {pad}^"))
}

/// `text` with control characters (but tabs) shown as spaces: safe to print on a terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_where_and_what_once() {
        let text = "models: [a]\nmodels: [b]\n";
        let err =
            parse::<std::collections::BTreeMap<String, Vec<String>>>(text, Path::new("p.yaml"))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml: line 2 column 1: duplicate mapping key `models` is not allowed here\n\
             2 | models: [b]\n  | ^"
        );
    }
}
