//! "Did you mean" for misspelt keys and names.

/// The candidate closest to `word` by edit distance, when it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// Adds "did you mean `x`?" to a serde message of the form "unknown field `a`, expected one of
/// b, c" (or "unknown variant ..."; names may be backquoted), when one expected name is close.
pub fn with_suggestion(message: &str) -> String {
    let Some(unknown) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| {
            let rest = &message[message.find(p)? + p.len()..];
            Some(&rest[..rest.find('`')?])
        })
    else {
        return message.to_string();
    };
    let Some(list) = message.split("expected one of ").nth(1) else {
        return message.to_string();
    };
    let list = list.lines().next().unwrap_or_default();
    let expected = list.split(", ").map(|name| name.trim().trim_matches('`'));
    match closest(unknown, expected) {
        Some(best) => format!("{}\nhelp: did you mean `{best}`?", message.trim_end()),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(closest("amout", ["amount", "scope"]), Some("amount"));
        assert_eq!(
            closest("prune_magnitud", ["prune_magnitude", "store_sparse"]),
            Some("prune_magnitude")
        );
        assert_eq!(closest("zzz", ["amount", "scope"]), None);
    }

    #[test]
    fn extends_serde_messages() {
        let m = with_suggestion("unknown field `amout`, expected one of `amount`, `scope`");
        assert!(m.ends_with("did you mean `amount`?"), "{m}");
        let m = with_suggestion(
            "unknown variant `prune_magnitud`, expected one of prune_magnitude, store_sparse\n --> x",
        );
        assert!(m.ends_with("did you mean `prune_magnitude`?"), "{m}");
        assert_eq!(
            with_suggestion("invalid type: string"),
            "invalid type: string"
        );
    }
}
