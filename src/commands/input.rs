//! Checks of what users give, shared by the commands' arguments.

use crate::graphql::error::{AppError, AppResult};

/// A name or label given by the user: trimmed, 1 to `max` characters, no control or invisible
/// formatting characters (a newline, a NUL or a right-to-left override would be stored upstream
/// and shown back everywhere).
pub(crate) fn text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(AppError::bad_input(format!("{field} must not be blank")));
    }
    let count = v.chars().count();
    if count > max {
        return Err(AppError::bad_input(format!("{field} must be at most {max} characters, got {count}")));
    }
    let unfit = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    };
    if let Some((at, c)) = v.chars().enumerate().find(|&(_, c)| unfit(c)) {
        // Counted in the value as given, before trimming.
        let lead = value.chars().count() - value.trim_start().chars().count();
        return Err(AppError::bad_input(format!(
            "{field} must not contain control or invisible formatting characters, found U+{:04X} at character {}",
            c as u32,
            lead + at + 1
        )));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_refuse_control_and_invisible_characters_where_they_were_given() {
        assert_eq!(text("n", "  Garage nord \n", 64).unwrap(), "Garage nord");
        for (given, at) in [("a\u{0}b", "U+0000 at character 2"), ("  ab\u{202E}c", "U+202E at character 5")] {
            let e = text("n", given, 64).unwrap_err().message().to_string();
            assert!(e.contains(at), "{given:?}: {e}");
        }
        for bad in ["a\u{200B}b", "a\u{2028}b", "a\u{FEFF}"] {
            assert!(text("n", bad, 64).is_err(), "{bad:?}");
        }
        assert!(text("n", "   ", 64).unwrap_err().message().contains("blank"));
        assert!(text("n", &"é".repeat(65), 64).unwrap_err().message().contains("at most 64 characters, got 65"));
        assert_eq!(text("n", "Borne « Été » ⚡", 64).unwrap(), "Borne « Été » ⚡");
    }
}
