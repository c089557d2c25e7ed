//! Python string semantics the original relies on (`str.split()`, `str.strip()`, `str.lower()`,
//! regex `\w` and `\b`), so that tokens, base commands and defanged strings come out the same.

/// Python's `str.isspace()`: Unicode White_Space plus the separators `\x1c`..`\x1f`.
pub fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// Python's `str.split()` without arguments: runs of whitespace separate, no empty parts.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_is_space).filter(|p| !p.is_empty())
}

/// Python's `str.lower()` (full Unicode lowercase mapping).
pub fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Python's regex `\w` for `str` patterns: Unicode alphanumerics and the underscore.
pub fn py_is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Maximal runs of word characters with at least `min_len` characters, in order.
///
/// `\b\w+\b` is `min_len = 1`; scikit-learn's default `(?u)\b\w\w+\b` is `min_len = 2`.
pub fn word_tokens(s: &str, min_len: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut count = 0usize;
    for (i, c) in s.char_indices() {
        if py_is_word(c) {
            if start.is_none() {
                start = Some(i);
                count = 0;
            }
            count += 1;
        } else if let Some(st) = start.take()
            && count >= min_len
        {
            out.push(&s[st..i]);
        }
    }
    if let Some(st) = start
        && count >= min_len
    {
        out.push(&s[st..]);
    }
    out
}

/// Removes control characters below 0x20 except tab, newline and carriage return, then strips
/// (the longtail command cleaning step).
pub fn clean_command(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|&c| c as u32 >= 32 || matches!(c, '\t' | '\n' | '\r'))
        .collect();
    py_strip(&kept).to_string()
}

/// The loader's sanitiser: drops `[\x00-\x1F\x7F-\x9F]` except tab, newline and carriage return.
pub fn sanitize_text(s: &str) -> String {
    if !s
        .chars()
        .any(|c| matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f) && !matches!(c, '\t' | '\n' | '\r'))
    {
        return s.to_string();
    }
    s.chars()
        .filter(|&c| {
            !matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f) || matches!(c, '\t' | '\n' | '\r')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_python_word_boundaries() {
        assert_eq!(
            word_tokens("cd /tmp; wget http://x.y/a-b", 1),
            ["cd", "tmp", "wget", "http", "x", "y", "a", "b"]
        );
        assert_eq!(word_tokens("a bb ccc", 2), ["bb", "ccc"]);
        assert_eq!(word_tokens("über_1", 1), ["über_1"]);
    }

    #[test]
    fn strip_and_split_use_python_whitespace() {
        assert_eq!(py_strip("\u{1f} a b \u{a0}"), "a b");
        assert_eq!(py_split("a\u{1c}b  c").collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
