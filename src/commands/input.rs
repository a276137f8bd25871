//! Checks of what users give, shared by the commands' arguments.

use crate::graphql::error::{AppError, AppResult};

/// A name or label given by the user: trimmed, 1 to `max` characters, no control or invisible
/// formatting characters (a newline, a NUL or a right-to-left override would be stored upstream
/// and shown back everywhere, and an invisible one makes two names that look the same differ).
///
/// Refused: every control (category Cc), every format character (category Cf, see [`FORMAT`]),
/// and the line and paragraph separators U+2028, U+2029. One exception keeps ordinary emoji
/// working: U+200D ZERO WIDTH JOINER is accepted between two emoji (the one before it may carry a
/// U+FE0F variation selector or a skin-tone modifier), as in "👩‍🔧" or "🏳️‍🌈"; anywhere else it
/// is refused. Variation selectors (U+FE0E, U+FE0F) are nonspacing marks (Mn), not Cf, and pass.
/// Tag characters (U+E0020…U+E007F) are Cf and refused, subdivision flags with them.
pub(crate) fn text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(AppError::bad_input(format!("{field} must not be blank")));
    }
    let count = v.chars().count();
    if count > max {
        return Err(AppError::bad_input(format!("{field} must be at most {max} characters, got {count}")));
    }
    let chars: Vec<char> = v.chars().collect();
    if let Some(at) = (0..chars.len()).find(|&at| unfit(&chars, at)) {
        let c = chars[at];
        // Counted in the value as given, before trimming.
        let lead = value.chars().count() - value.trim_start().chars().count();
        let joiner = if c == ZWJ { " (U+200D is allowed only between two emoji)" } else { "" };
        return Err(AppError::bad_input(format!(
            "{field} must not contain control or invisible formatting characters, found U+{:04X} at character {}{joiner}",
            c as u32,
            lead + at + 1
        )));
    }
    Ok(v.to_string())
}

/// A URL given by the user (a webhook's), trimmed: no control or format character inside it. A
/// URL parser drops or escapes them (WHATWG parsing removes a tab, CR or LF) while the text as
/// given is what is sent upstream, where a CR/LF could split a header or a log line. The place
/// is counted from 1 in `value` as given.
pub(crate) fn url_without_controls(field: &str, value: &str) -> AppResult<()> {
    let lead = value.chars().count() - value.trim_start().chars().count();
    match value.trim().chars().enumerate().find(|&(_, c)| c.is_control() || is_format(c)) {
        Some((at, c)) => Err(AppError::bad_input(format!(
            "{field} must not contain control or invisible formatting characters, found U+{:04X} at character {}",
            c as u32,
            lead + at + 1
        ))),
        None => Ok(()),
    }
}

const ZWJ: char = '\u{200D}';

/// Whether the character at `at` may not be in free text (see [`text`]).
fn unfit(chars: &[char], at: usize) -> bool {
    let c = chars[at];
    if c == ZWJ {
        return !joins_emoji(chars, at);
    }
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether the ZWJ at `at` stands between two emoji: the character before it (past a U+FE0F
/// variation selector) and the one after it are emoji.
fn joins_emoji(chars: &[char], at: usize) -> bool {
    let before = chars[..at].iter().rev().find(|&&c| c != '\u{FE0F}');
    let after = chars.get(at + 1);
    before.is_some_and(|&c| is_emoji(c)) && after.is_some_and(|&c| is_emoji(c))
}

/// The format characters (general category Cf) of Unicode 16.0, from its
/// `DerivedGeneralCategory.txt` (the lines ending `; Cf`), as inclusive ranges.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&(c as u32)))
}

fn is_format(c: char) -> bool {
    in_ranges(FORMAT, c)
}

/// Characters that stand as emoji on either side of a ZWJ: the blocks of Unicode's
/// `emoji-data.txt` Extended_Pictographic (pictographs, symbols, dingbats; the skin-tone
/// modifiers U+1F3FB…U+1F3FF are in the 1F000 block), written as ranges a little wider than the
/// property, which only matters next to a ZWJ.
const EMOJI: &[(u32, u32)] = &[
    (0x00A9, 0x00A9),
    (0x00AE, 0x00AE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x23FF),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25FE),
    (0x2600, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x1F000, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
];

fn is_emoji(c: char) -> bool {
    in_ranges(EMOJI, c)
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

    #[test]
    fn every_format_character_is_refused_and_emoji_sequences_pass() {
        for (given, at) in [
            ("a\u{AD}b", "U+00AD at character 2"),
            ("ab\u{61C}", "U+061C at character 3"),
            ("\u{180E}x", "U+180E at character 1"),
            ("x\u{E0041}", "U+E0041 at character 2"),
            ("x\u{E0001}", "U+E0001 at character 2"),
            ("a\u{200D}b", "U+200D at character 2 (U+200D is allowed only between two emoji)"),
            ("👩\u{200D}b", "U+200D at character 2"),
            ("a\u{200D}🔧", "U+200D at character 2"),
            ("👩\u{200D}", "U+200D at character 2"),
            ("x\u{2066}y", "U+2066 at character 2"),
            ("x\u{13430}y", "U+13430 at character 2"),
        ] {
            let e = text("n", given, 64).unwrap_err().message().to_string();
            assert!(e.contains(at), "{given:?}: {e}");
        }
        for ok in [
            "👩\u{200D}🔧 garage",
            "🏳\u{FE0F}\u{200D}🌈",
            "👩🏽\u{200D}🔧",
            "👨\u{200D}👩\u{200D}👧\u{200D}👦",
            "❤\u{FE0F} borne",
            "🧑\u{200D}🤝\u{200D}🧑",
        ] {
            assert_eq!(text("n", ok, 64).unwrap(), ok);
        }
    }

    #[test]
    fn urls_refuse_controls_naming_their_place() {
        let e = url_without_controls("webhookUrl", "https://x.example.com/a\r\nX-Evil: 1").unwrap_err();
        assert!(e.message().contains("U+000D at character 24"), "{}", e.message());
        assert!(url_without_controls("webhookUrl", "https://x.example.com/hook?a=1").is_ok());
    }
}
