//! Names operators give to customers and console groups: checked once at the edge, so a list
//! never shows a blank entry, a name that breaks a table, or two customers told apart only by
//! case.

use std::fmt;

/// The longest name, in characters (not bytes: a name in Greek or Japanese gets as many).
pub const MAX_NAME_CHARS: usize = 200;

/// What a name is the name of; the refusal speaks of it and gives a fitting example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Customer,
    Group,
}

impl NameKind {
    fn example(self) -> &'static str {
        match self {
            NameKind::Customer => "Contoso Ltd",
            NameKind::Group => "Sales",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Customer => "a customer",
            NameKind::Group => "a console group",
        })
    }
}

/// Why a name was refused; says which name and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} needs a name, such as \"{}\"", what.example())]
    Empty { what: NameKind },
    #[error(
        "the name of {what} is {length} characters long; at most {MAX_NAME_CHARS} are allowed, so shorten it"
    )]
    TooLong { what: NameKind, length: usize },
    #[error(
        "the name of {what} contains the control character U+{:04X} at position {position}; remove it (tabs and line breaks count too)",
        u32::from(*character)
    )]
    ControlCharacter {
        what: NameKind,
        character: char,
        /// 1-based, in characters of the text as given.
        position: usize,
    },
}

/// The name as it is stored: trimmed, not empty, at most [`MAX_NAME_CHARS`] characters and
/// free of control characters (which would break the console's tables and the CLI's output).
pub fn check_name(what: NameKind, text: &str) -> Result<String, NameError> {
    let name = text.trim();
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    let leading = text.chars().count() - text.trim_start().chars().count();
    if let Some((i, character)) = name.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(NameError::ControlCharacter {
            what,
            character,
            position: leading + i + 1,
        });
    }
    let length = name.chars().count();
    if length > MAX_NAME_CHARS {
        return Err(NameError::TooLong { what, length });
    }
    Ok(name.to_string())
}

/// Whether two names differ only in case (Unicode lower-casing), so that "Contoso" and
/// "CONTOSO" are refused as two customers: an operator could not tell them apart in a list.
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_stored_trimmed() {
        assert_eq!(
            check_name(NameKind::Customer, "  Contoso Ltd \n").unwrap(),
            "Contoso Ltd"
        );
    }

    #[test]
    fn a_blank_name_is_refused_with_an_example() {
        assert_eq!(
            check_name(NameKind::Customer, "   ")
                .unwrap_err()
                .to_string(),
            "a customer needs a name, such as \"Contoso Ltd\""
        );
        assert_eq!(
            check_name(NameKind::Group, "").unwrap_err().to_string(),
            "a console group needs a name, such as \"Sales\""
        );
    }

    #[test]
    fn a_name_longer_than_the_limit_is_refused_with_its_length() {
        let e = check_name(NameKind::Customer, &"x".repeat(201))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the name of a customer is 201 characters long; at most 200 are allowed, so shorten it"
        );
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        let greek = "λ".repeat(MAX_NAME_CHARS);
        assert_eq!(check_name(NameKind::Group, &greek).unwrap(), greek);
    }

    #[test]
    fn a_control_character_is_refused_with_its_code_and_position() {
        let e = check_name(NameKind::Customer, "Cont\u{7}oso")
            .unwrap_err()
            .to_string();
        assert!(e.contains("U+0007 at position 5"), "{e}");
    }

    #[test]
    fn tab_and_newline_inside_a_name_are_control_characters() {
        assert_eq!(
            check_name(NameKind::Group, "Sales\tEast"),
            Err(NameError::ControlCharacter {
                what: NameKind::Group,
                character: '\t',
                position: 6
            })
        );
        let e = check_name(NameKind::Group, "  Sales\nEast")
            .unwrap_err()
            .to_string();
        assert!(e.contains("U+000A at position 8"), "{e}");
    }

    #[test]
    fn names_that_differ_only_in_case_are_the_same_name() {
        assert!(same_name("Contoso Ltd", "CONTOSO ltd"));
        assert!(same_name("Ärzte Müller", "ÄRZTE MÜLLER"));
        assert!(same_name("ΟΔΟΣ", "οδος"));
        assert!(!same_name("Contoso", "Contoso Ltd"));
    }
}
