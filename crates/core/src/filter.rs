//! Filter rules (PRODUCT.md, mapping rule 6): ordered rules that route source users to
//! console groups.
//!
//! A source has an ordered list of [`FilterRule`]s, each with a destination console group
//! and an [`Expression`]. The first rule whose expression matches a user gives the user's
//! group ([`first_match`]); what happens to a user no rule matches (`Main`, or skipped for
//! "only matching users") is the caller's decision.
//!
//! # The filter language
//!
//! The same text is accepted by the CLI, the API and the web console, and is what a rule
//! is stored as.
//!
//! ```text
//! rule     = clause { "and" clause }            "and" is a whole word, any case
//! clause   = field operator [ value | list ]
//! list     = value { "," value }                only after `in`
//! value    = '"' text '"' | "'" text "'" | unquoted
//! ```
//!
//! Examples:
//!
//! ```text
//! jobTitle equals Driver and accountEnabled is_true
//! department in Sales, "Research and Development"
//! memberOf equals "All Drivers" and mail ends_with @contoso.com
//! displayName matches ^A.*(Smith|Jones)$
//! ```
//!
//! **Fields** (any case on input, written back in Graph casing): `memberOf`,
//! `accountEnabled`, `assignedLicenses`, `companyName`, `department`, `displayName`,
//! `givenName`, `jobTitle`, `mail`, `mailEnabled`, `userType`, `surname`,
//! `proxyAddresses`, `userPrincipalName`, `id`.
//!
//! **Operators** (any case; the spaced forms such as `not equals`, `starts with`,
//! `is not empty` are accepted and written back in snake case): `equals`, `not_equals`,
//! `contains`, `starts_with`, `ends_with`, `matches`, `is_true`, `is_false`, `is_empty`,
//! `is_not_empty`, `in`.
//!
//! - `is_true`, `is_false`, `is_empty` and `is_not_empty` take no value; all others take
//!   exactly one, except `in`, which takes a comma-separated list.
//! - `accountEnabled` and `mailEnabled` are true/false fields: they take `is_true`,
//!   `is_false`, `is_empty`, `is_not_empty`, and `equals`/`not_equals` with `true` or
//!   `false`. A missing value is neither true nor false (it `is_empty`). All other fields
//!   are text and take every operator except `is_true`/`is_false`.
//!
//! **Values.** An unquoted value runs to the next ` and ` (whitespace, `and`, whitespace)
//! or the end of the rule and is trimmed; in an `in` list an unquoted item also ends at a
//! comma. A quote (`"` or `'`) at the start of a value opens a quoted value, which ends at
//! the same quote; inside it, that quote is written twice (`"say ""hi"""`). Quote a
//! value that contains the word `and`, a comma in a list, or leading or trailing spaces. A
//! quote inside an unquoted value (`O'Brien`) is an ordinary character. Empty values are
//! refused (use `is_empty`).
//!
//! **Matching.** Text comparison ignores case, also for non-ASCII letters (`ÅSA` equals
//! `åsa`). `matches` is a case-insensitive regular expression (Rust `regex` syntax,
//! unanchored: use `^` and `$`), compiled once when the rule is parsed. On a multi-valued
//! field (`proxyAddresses`, `assignedLicenses`, `memberOf`) a positive operator matches
//! when any value does; `not_equals` holds when no value equals, `is_empty` when there are
//! no values.
//!
//! - `proxyAddresses` entries are compared both whole (`smtp:a@b.com`) and without their
//!   prefix (`a@b.com`).
//! - `memberOf` compares each group the user belongs to (transitively) by id and by its
//!   current display name in the snapshot ([`GroupNames`]).
//!   [`Expression::check_groups`] refuses `equals`/`not_equals`/`in` values that name no
//!   known group.
//! - `assignedLicenses` compares SKU ids and, when [`GroupNames::with_sku_part_numbers`]
//!   supplied them, SKU part numbers such as `SPE_E3`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::snapshot::{SourceGroup, SourceUser};

/// A source user property a clause can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    MemberOf,
    AccountEnabled,
    AssignedLicenses,
    CompanyName,
    Department,
    DisplayName,
    GivenName,
    JobTitle,
    Mail,
    MailEnabled,
    UserType,
    Surname,
    ProxyAddresses,
    UserPrincipalName,
    Id,
}

/// What kind of values a [`Field`] holds, which decides the operators it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// At most one text value.
    Text,
    /// Any number of text values.
    MultiText,
    /// `true`, `false` or missing.
    Boolean,
}

impl FieldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::MultiText => "multi-valued text",
            FieldKind::Boolean => "true/false",
        }
    }

    /// Whether a clause on a field of this kind may use `operator`.
    pub fn accepts(self, operator: Operator) -> bool {
        match self {
            FieldKind::Boolean => matches!(
                operator,
                Operator::IsTrue
                    | Operator::IsFalse
                    | Operator::IsEmpty
                    | Operator::IsNotEmpty
                    | Operator::Equals
                    | Operator::NotEquals
            ),
            FieldKind::Text | FieldKind::MultiText => {
                !matches!(operator, Operator::IsTrue | Operator::IsFalse)
            }
        }
    }

    fn operators(self) -> impl Iterator<Item = Operator> {
        Operator::ALL
            .iter()
            .copied()
            .filter(move |o| self.accepts(*o))
    }
}

impl Field {
    pub const ALL: &'static [Field] = &[
        Field::MemberOf,
        Field::AccountEnabled,
        Field::AssignedLicenses,
        Field::CompanyName,
        Field::Department,
        Field::DisplayName,
        Field::GivenName,
        Field::JobTitle,
        Field::Mail,
        Field::MailEnabled,
        Field::UserType,
        Field::Surname,
        Field::ProxyAddresses,
        Field::UserPrincipalName,
        Field::Id,
    ];

    /// The Graph property name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::MemberOf => "memberOf",
            Field::AccountEnabled => "accountEnabled",
            Field::AssignedLicenses => "assignedLicenses",
            Field::CompanyName => "companyName",
            Field::Department => "department",
            Field::DisplayName => "displayName",
            Field::GivenName => "givenName",
            Field::JobTitle => "jobTitle",
            Field::Mail => "mail",
            Field::MailEnabled => "mailEnabled",
            Field::UserType => "userType",
            Field::Surname => "surname",
            Field::ProxyAddresses => "proxyAddresses",
            Field::UserPrincipalName => "userPrincipalName",
            Field::Id => "id",
        }
    }

    pub fn kind(self) -> FieldKind {
        match self {
            Field::AccountEnabled | Field::MailEnabled => FieldKind::Boolean,
            Field::MemberOf | Field::AssignedLicenses | Field::ProxyAddresses => {
                FieldKind::MultiText
            }
            _ => FieldKind::Text,
        }
    }

    /// Calls `test` on each text value of the field until one passes; `false` when none
    /// does or the field has no values. Always `false` for true/false fields.
    fn any_value(self, user: &SourceUser, ctx: &GroupNames, test: &dyn Fn(&str) -> bool) -> bool {
        let single = |value: Option<&str>| value.is_some_and(|v| present(v) && test(v));
        match self {
            Field::AccountEnabled | Field::MailEnabled => false,
            Field::CompanyName => single(user.company_name.as_deref()),
            Field::Department => single(user.department.as_deref()),
            Field::DisplayName => single(user.display_name.as_deref()),
            Field::GivenName => single(user.given_name.as_deref()),
            Field::JobTitle => single(user.job_title.as_deref()),
            Field::Mail => single(user.mail.as_deref()),
            Field::UserType => single(user.user_type.as_deref()),
            Field::Surname => single(user.surname.as_deref()),
            Field::UserPrincipalName => single(user.user_principal_name.as_deref()),
            Field::Id => present(&user.id) && test(&user.id),
            Field::ProxyAddresses => user.proxy_addresses.iter().any(|entry| {
                present(entry)
                    && (test(entry)
                        || entry
                            .split_once(':')
                            .is_some_and(|(_, address)| present(address) && test(address)))
            }),
            Field::AssignedLicenses => user.assigned_licenses.iter().any(|sku| {
                present(sku) && (test(sku) || ctx.sku_part_number(sku).is_some_and(test))
            }),
            Field::MemberOf => user
                .member_of
                .iter()
                .any(|group| present(group) && (test(group) || ctx.name(group).is_some_and(test))),
        }
    }

    fn boolean(self, user: &SourceUser) -> Option<bool> {
        match self {
            Field::AccountEnabled => user.account_enabled,
            Field::MailEnabled => user.mail_enabled,
            _ => None,
        }
    }
}

fn present(value: &str) -> bool {
    !value.trim().is_empty()
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Field {
    type Err = FilterError;

    /// Case-insensitive Graph name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Field::ALL
            .iter()
            .copied()
            .find(|field| field.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| FilterError::UnknownField {
                name: wanted.to_string(),
                clause: 0,
                text: String::new(),
            })
    }
}

/// How a clause compares a field with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Equals,
    NotEquals,
    Contains,
    StartsWith,
    EndsWith,
    Matches,
    IsTrue,
    IsFalse,
    IsEmpty,
    IsNotEmpty,
    In,
}

impl Operator {
    pub const ALL: &'static [Operator] = &[
        Operator::Equals,
        Operator::NotEquals,
        Operator::Contains,
        Operator::StartsWith,
        Operator::EndsWith,
        Operator::Matches,
        Operator::IsTrue,
        Operator::IsFalse,
        Operator::IsEmpty,
        Operator::IsNotEmpty,
        Operator::In,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEquals => "not_equals",
            Operator::Contains => "contains",
            Operator::StartsWith => "starts_with",
            Operator::EndsWith => "ends_with",
            Operator::Matches => "matches",
            Operator::IsTrue => "is_true",
            Operator::IsFalse => "is_false",
            Operator::IsEmpty => "is_empty",
            Operator::IsNotEmpty => "is_not_empty",
            Operator::In => "in",
        }
    }

    /// Whether the operator takes a value (`in`: a list of them).
    pub fn takes_value(self) -> bool {
        !matches!(
            self,
            Operator::IsTrue | Operator::IsFalse | Operator::IsEmpty | Operator::IsNotEmpty
        )
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operator {
    type Err = FilterError;

    /// Case-insensitive; words may be joined by `_` or by spaces (`starts with`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.split_whitespace().collect::<Vec<_>>().join("_");
        Operator::ALL
            .iter()
            .copied()
            .find(|op| op.as_str().eq_ignore_ascii_case(&wanted))
            .ok_or_else(|| FilterError::UnknownOperator {
                name: s.trim().to_string(),
                clause: 0,
                text: String::new(),
            })
    }
}

/// Why a filter text or clause is refused. Every message names the wrong part and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("empty rule; write at least one clause such as 'jobTitle equals Driver'")]
    Empty,
    #[error("{} is empty; put a clause such as 'department equals Sales' between the 'and's", ClauseNo(*clause))]
    EmptyClause { clause: usize },
    #[error("unknown field '{name}'{}; fields: {}", at(*clause, text), names(Field::ALL))]
    UnknownField {
        name: String,
        clause: usize,
        text: String,
    },
    #[error("unknown operator '{name}'{}; operators: {}", at(*clause, text), names(Operator::ALL))]
    UnknownOperator {
        name: String,
        clause: usize,
        text: String,
    },
    #[error("{} ('{text}') is missing an operator after {field}; operators: {}", ClauseNo(*clause), names(Operator::ALL))]
    MissingOperator {
        field: Field,
        clause: usize,
        text: String,
    },
    #[error("'{operator}' cannot be used on {field}, a {} field ({}); use one of: {}", field.kind().as_str(), ClauseNo(*clause), operators_for(*field))]
    WrongType {
        field: Field,
        operator: Operator,
        clause: usize,
    },
    #[error("{} is missing a value: write '{field} {operator} <value>'", ClauseNo(*clause))]
    MissingValue {
        field: Field,
        operator: Operator,
        clause: usize,
    },
    #[error("'{operator}' takes no value, but {} has '{value}'; remove it, or join the next clause with 'and'", ClauseNo(*clause))]
    UnexpectedValue {
        operator: Operator,
        value: String,
        clause: usize,
    },
    #[error("'{operator}' takes one value, but {} has {count}; use 'in' for a list", ClauseNo(*clause))]
    TooManyValues {
        operator: Operator,
        count: usize,
        clause: usize,
    },
    #[error("{} has an empty value; remove the extra comma, or use is_empty to test for a missing value", ClauseNo(*clause))]
    EmptyValue { clause: usize },
    #[error("{field} is true or false, so '{operator}' needs 'true' or 'false', not '{value}' ({})", ClauseNo(*clause))]
    NotABoolean {
        field: Field,
        operator: Operator,
        value: String,
        clause: usize,
    },
    #[error("'matches' needs a valid regular expression: {message} in '{pattern}' ({})", ClauseNo(*clause))]
    BadRegex {
        pattern: String,
        message: String,
        clause: usize,
    },
    #[error("unclosed quote in {}; end the value with the quote it starts with ({quote})", ClauseNo(*clause))]
    UnclosedQuote { quote: char, clause: usize },
    #[error("unexpected '{rest}' after the quoted value in {}; put the whole value in the quotes, or join clauses with 'and'", ClauseNo(*clause))]
    TrailingText { rest: String, clause: usize },
    #[error("no group is named or has the id '{value}' (memberOf in {}){}", ClauseNo(*clause), group_hint(close))]
    UnknownGroup {
        value: String,
        clause: usize,
        /// Display names of known groups close to `value`, closest first.
        close: Vec<String>,
    },
}

/// "clause N", or "the clause" when the clause stands alone (number 0).
struct ClauseNo(usize);

impl fmt::Display for ClauseNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("the clause"),
            n => write!(f, "clause {n}"),
        }
    }
}

fn at(clause: usize, text: &str) -> String {
    match (clause, text.is_empty()) {
        (0, _) => String::new(),
        (n, true) => format!(" in clause {n}"),
        (n, false) => format!(" in clause {n} ('{text}')"),
    }
}

fn names<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn operators_for(field: Field) -> String {
    names(&field.kind().operators().collect::<Vec<_>>())
}

fn group_hint(close: &[String]) -> String {
    if close.is_empty() {
        "; use a group's display name or id as the source shows it".to_string()
    } else {
        let list = close
            .iter()
            .map(|name| format!("'{name}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("; close names: {list}")
    }
}

/// Lower-cases for comparison, Unicode-aware; borrows when nothing changes.
fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// One `field operator value` test.
///
/// Build one with [`Clause::new`] or by parsing an [`Expression`]; equality compares
/// field, operator and values.
#[derive(Debug, Clone)]
pub struct Clause {
    pub field: Field,
    pub operator: Operator,
    /// The values as written (without quotes); empty for operators that take none, one
    /// item for `in` with a single value.
    pub values: Vec<String>,
    compiled: Compiled,
}

#[derive(Debug, Clone, Default)]
struct Compiled {
    /// `values`, lower-cased.
    folded: Vec<String>,
    /// For `matches`.
    regex: Option<Regex>,
    /// For `equals`/`not_equals` on a true/false field.
    boolean: Option<bool>,
}

impl PartialEq for Clause {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.operator == other.operator && self.values == other.values
    }
}

impl Eq for Clause {}

impl Clause {
    /// A clause on its own; errors refer to "the clause".
    pub fn new(
        field: Field,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Clause, FilterError> {
        Clause::build(field, operator, values, 0)
    }

    fn build(
        field: Field,
        operator: Operator,
        mut values: Vec<String>,
        clause: usize,
    ) -> Result<Clause, FilterError> {
        if !field.kind().accepts(operator) {
            return Err(FilterError::WrongType {
                field,
                operator,
                clause,
            });
        }
        if !operator.takes_value() {
            if let Some(value) = values.first() {
                return Err(FilterError::UnexpectedValue {
                    operator,
                    value: value.clone(),
                    clause,
                });
            }
            return Ok(Clause {
                field,
                operator,
                values,
                compiled: Compiled::default(),
            });
        }
        if values.is_empty() {
            return Err(FilterError::MissingValue {
                field,
                operator,
                clause,
            });
        }
        if operator != Operator::In && values.len() > 1 {
            return Err(FilterError::TooManyValues {
                operator,
                count: values.len(),
                clause,
            });
        }
        if values.iter().any(|v| v.is_empty()) {
            return Err(FilterError::EmptyValue { clause });
        }
        let mut compiled = Compiled::default();
        if field.kind() == FieldKind::Boolean {
            let value = &values[0];
            let boolean = if value.trim().eq_ignore_ascii_case("true") {
                true
            } else if value.trim().eq_ignore_ascii_case("false") {
                false
            } else {
                return Err(FilterError::NotABoolean {
                    field,
                    operator,
                    value: value.clone(),
                    clause,
                });
            };
            compiled.boolean = Some(boolean);
            values[0] = boolean.to_string();
        }
        if operator == Operator::Matches {
            let pattern = &values[0];
            let regex = RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| FilterError::BadRegex {
                    pattern: pattern.clone(),
                    message: regex_message(&e),
                    clause,
                })?;
            compiled.regex = Some(regex);
        }
        compiled.folded = values.iter().map(|v| fold(v).into_owned()).collect();
        Ok(Clause {
            field,
            operator,
            values,
            compiled,
        })
    }

    /// Whether the user passes this clause.
    pub fn matches(&self, user: &SourceUser, groups: &GroupNames) -> bool {
        if self.field.kind() == FieldKind::Boolean {
            let value = self.field.boolean(user);
            return match self.operator {
                Operator::IsTrue => value == Some(true),
                Operator::IsFalse => value == Some(false),
                Operator::IsEmpty => value.is_none(),
                Operator::IsNotEmpty => value.is_some(),
                Operator::Equals => value.is_some() && value == self.compiled.boolean,
                Operator::NotEquals => !(value.is_some() && value == self.compiled.boolean),
                _ => false,
            };
        }
        match self.operator {
            Operator::IsEmpty => !self.field.any_value(user, groups, &|_| true),
            Operator::IsNotEmpty => self.field.any_value(user, groups, &|_| true),
            Operator::NotEquals => !self.field.any_value(user, groups, &|v| self.test(v)),
            _ => self.field.any_value(user, groups, &|v| self.test(v)),
        }
    }

    /// The positive test on one text value (`not_equals` tests equality).
    fn test(&self, value: &str) -> bool {
        if self.operator == Operator::Matches {
            return self
                .compiled
                .regex
                .as_ref()
                .is_some_and(|r| r.is_match(value));
        }
        let Some(first) = self.compiled.folded.first() else {
            return false;
        };
        let value = fold(value);
        match self.operator {
            Operator::Equals | Operator::NotEquals => *value == **first,
            Operator::Contains => value.contains(first.as_str()),
            Operator::StartsWith => value.starts_with(first.as_str()),
            Operator::EndsWith => value.ends_with(first.as_str()),
            Operator::In => self.compiled.folded.iter().any(|v| **v == *value),
            _ => false,
        }
    }
}

/// The useful line of a regex error ("unclosed group"), without the ASCII-art pointer.
fn regex_message(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.operator)?;
        for (i, value) in self.values.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            write_value(f, value)?;
        }
        Ok(())
    }
}

/// Writes a value so that parsing gives it back: quoted when it would otherwise be cut,
/// trimmed or mistaken for a quoted value.
fn write_value(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let needs_quotes = value.is_empty()
        || value != value.trim()
        || value.starts_with(['"', '\''])
        || value.contains(',')
        || value
            .split_whitespace()
            .any(|word| word.eq_ignore_ascii_case("and"));
    if !needs_quotes {
        return f.write_str(value);
    }
    let quote = if !value.contains('"') {
        '"'
    } else if !value.contains('\'') {
        '\''
    } else {
        '"'
    };
    let doubled = format!("{quote}{quote}");
    write!(f, "{quote}{}{quote}", value.replace(quote, &doubled))
}

/// A rule's condition: clauses that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    pub clauses: Vec<Clause>,
}

impl Expression {
    /// Parses the filter language described in the [module documentation](self).
    pub fn parse(text: &str) -> Result<Expression, FilterError> {
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        let mut parser = Parser { text, pos: 0 };
        let mut clauses = Vec::new();
        loop {
            clauses.push(parser.clause(clauses.len() + 1)?);
            let before = parser.pos;
            parser.skip_ws();
            if parser.at_end() {
                break;
            }
            if parser.pos > before && parser.at_and() {
                parser.pos += 3;
                continue;
            }
            // Only reachable after a quoted value.
            let rest = parser.text[parser.pos..].trim();
            let rest = &rest[..find_and(rest).unwrap_or(rest.len())];
            return Err(FilterError::TrailingText {
                rest: rest.to_string(),
                clause: clauses.len(),
            });
        }
        Ok(Expression { clauses })
    }

    /// Whether the user passes every clause.
    pub fn matches(&self, user: &SourceUser, groups: &GroupNames) -> bool {
        self.clauses.iter().all(|c| c.matches(user, groups))
    }

    /// Whether any clause tests `memberOf`, so that the read must fetch memberships.
    pub fn mentions_member_of(&self) -> bool {
        self.clauses.iter().any(|c| c.field == Field::MemberOf)
    }

    /// Refuses a `memberOf` value of `equals`, `not_equals` or `in` that is neither the id
    /// nor the display name (any case) of a known group. Patterns (`contains`,
    /// `starts_with`, `ends_with`, `matches`) are not checked.
    pub fn check_groups(&self, known: &[SourceGroup]) -> Result<(), FilterError> {
        let known_keys: Vec<(String, Option<String>)> = known
            .iter()
            .map(|g| {
                (
                    fold(&g.id).into_owned(),
                    g.display_name.as_deref().map(|n| fold(n).into_owned()),
                )
            })
            .collect();
        for (i, clause) in self.clauses.iter().enumerate() {
            if clause.field != Field::MemberOf
                || !matches!(
                    clause.operator,
                    Operator::Equals | Operator::NotEquals | Operator::In
                )
            {
                continue;
            }
            for (value, folded) in clause.values.iter().zip(&clause.compiled.folded) {
                let found = known_keys
                    .iter()
                    .any(|(id, name)| id == folded || name.as_ref() == Some(folded));
                if !found {
                    return Err(FilterError::UnknownGroup {
                        value: value.clone(),
                        clause: i + 1,
                        close: close_names(folded, known),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Up to three display names of `known` that look like `wanted` (already folded).
pub(crate) fn close_names(wanted: &str, known: &[SourceGroup]) -> Vec<String> {
    let wanted_len = wanted.chars().count();
    let mut scored: Vec<(usize, &str)> = known
        .iter()
        .filter_map(|g| g.display_name.as_deref())
        .filter_map(|name| {
            let folded = fold(name);
            let distance = edit_distance(wanted, &folded);
            let close = distance <= (wanted_len / 3).max(2)
                || (wanted_len >= 3 && folded.contains(wanted))
                || (!folded.is_empty() && wanted.contains(folded.as_ref()));
            close.then_some((distance, name))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

impl fmt::Display for Expression {
    /// The canonical text: Graph field names, snake_case operators, values quoted only
    /// where needed. Parsing it gives the same expression back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, clause) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{clause}")?;
        }
        Ok(())
    }
}

impl FromStr for Expression {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expression::parse(s)
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Expression::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The byte index in `s` of the whitespace that starts the first ` and ` keyword, if any.
fn find_and(s: &str) -> Option<usize> {
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !c.is_whitespace() {
            continue;
        }
        let after_ws = skip_ws_from(s, i);
        if is_and_at(s, after_ws) {
            return Some(i);
        }
        while chars.peek().is_some_and(|(j, _)| *j < after_ws) {
            chars.next();
        }
    }
    None
}

/// The index of the first non-whitespace character of `s` at or after `at`.
fn skip_ws_from(s: &str, at: usize) -> usize {
    s[at..]
        .find(|c: char| !c.is_whitespace())
        .map_or(s.len(), |n| at + n)
}

/// Whether `s[at..]` starts with the word `and` (any case) followed by whitespace or the
/// end.
fn is_and_at(s: &str, at: usize) -> bool {
    s.get(at..at + 3)
        .is_some_and(|word| word.eq_ignore_ascii_case("and"))
        && s[at + 3..].chars().next().is_none_or(char::is_whitespace)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn at_and(&self) -> bool {
        is_and_at(self.text, self.pos)
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn word(&mut self) -> &str {
        let start = self.pos;
        let len = self
            .rest()
            .find(char::is_whitespace)
            .unwrap_or(self.rest().len());
        self.pos += len;
        &self.text[start..self.pos]
    }

    /// The clause's text from `start`, for messages: up to the next `and` outside quotes
    /// that open a word.
    fn clause_text(&self, start: usize) -> String {
        let s = &self.text[start..];
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (i, c) in s.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if (c == '"' || c == '\'')
                    && (previous.is_whitespace() || previous == ',') =>
                {
                    quote = Some(c)
                }
                None if c.is_whitespace() && is_and_at(s, skip_ws_from(s, i)) => {
                    return s[..i].trim().to_string();
                }
                None => {}
            }
            previous = c;
        }
        s.trim().to_string()
    }

    /// One clause, from the current position to just after its last value.
    fn clause(&mut self, number: usize) -> Result<Clause, FilterError> {
        self.skip_ws();
        let start = self.pos;
        if self.at_end() || self.at_and() {
            return Err(FilterError::EmptyClause { clause: number });
        }
        let field_word = self.word().to_string();
        let field = field_word
            .parse::<Field>()
            .map_err(|_| FilterError::UnknownField {
                name: field_word.clone(),
                clause: number,
                text: self.clause_text(start),
            })?;
        self.skip_ws();
        if self.at_end() || self.at_and() {
            return Err(FilterError::MissingOperator {
                field,
                clause: number,
                text: self.clause_text(start),
            });
        }
        let operator = self.operator(number, start)?;
        if !field.kind().accepts(operator) {
            return Err(FilterError::WrongType {
                field,
                operator,
                clause: number,
            });
        }
        let before = self.pos;
        self.skip_ws();
        let has_value = self.pos > before && !self.at_end() && !self.at_and();
        if !has_value {
            self.pos = before;
            return Clause::build(field, operator, Vec::new(), number);
        }
        let mut values = vec![self.value(operator == Operator::In, number)?];
        if operator == Operator::In {
            loop {
                let save = self.pos;
                self.skip_ws();
                if self.rest().starts_with(',') {
                    self.pos += 1;
                    self.skip_ws();
                    values.push(self.value(true, number)?);
                } else {
                    self.pos = save;
                    break;
                }
            }
        }
        Clause::build(field, operator, values, number)
    }

    /// The longest run of one to three words that names an operator.
    fn operator(&mut self, number: usize, clause_start: usize) -> Result<Operator, FilterError> {
        let start = self.pos;
        let mut ends = Vec::new();
        for _ in 0..3 {
            self.skip_ws();
            if self.at_end() {
                break;
            }
            self.word();
            ends.push(self.pos);
        }
        for end in ends.iter().rev() {
            if let Ok(operator) = self.text[start..*end].parse::<Operator>() {
                self.pos = *end;
                return Ok(operator);
            }
        }
        Err(FilterError::UnknownOperator {
            name: self.text[start..ends[0]].to_string(),
            clause: number,
            text: self.clause_text(clause_start),
        })
    }

    /// One value at the current (non-space) position: quoted, or unquoted up to the next
    /// `and` (and, in a list, the next comma).
    fn value(&mut self, in_list: bool, number: usize) -> Result<String, FilterError> {
        let rest = self.rest();
        if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let mut value = String::new();
            let mut chars = rest.char_indices().skip(1).peekable();
            while let Some((i, c)) = chars.next() {
                if c != quote {
                    value.push(c);
                } else if chars.peek().is_some_and(|(_, next)| *next == quote) {
                    value.push(quote);
                    chars.next();
                } else {
                    self.pos += i + c.len_utf8();
                    return Ok(value);
                }
            }
            return Err(FilterError::UnclosedQuote {
                quote,
                clause: number,
            });
        }
        let mut end = find_and(rest).unwrap_or(rest.len());
        if in_list {
            end = end.min(rest.find(',').unwrap_or(end));
        }
        let value = rest[..end].trim().to_string();
        self.pos += end;
        Ok(value)
    }
}

/// The evaluation context of filters: the snapshot's groups by id (for `memberOf` by
/// name) and, optionally, SKU part numbers by SKU id (for `assignedLicenses`).
#[derive(Debug, Clone, Default)]
pub struct GroupNames {
    names: HashMap<String, String>,
    skus: HashMap<String, String>,
}

impl GroupNames {
    /// The current display names of `groups`: a renamed group matches by its new name.
    pub fn new(groups: &[SourceGroup]) -> Self {
        GroupNames {
            names: groups
                .iter()
                .filter_map(|g| Some((g.id.clone(), g.display_name.clone()?)))
                .collect(),
            skus: HashMap::new(),
        }
    }

    /// Adds SKU part numbers (`SPE_E3`) by SKU id, so `assignedLicenses` can name either.
    pub fn with_sku_part_numbers<I, K, V>(mut self, skus: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.skus
            .extend(skus.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The display name of the group with this id.
    pub fn name(&self, group_id: &str) -> Option<&str> {
        self.names.get(group_id).map(String::as_str)
    }

    /// The part number of the SKU with this id, when known.
    pub fn sku_part_number(&self, sku_id: &str) -> Option<&str> {
        self.skus.get(sku_id).map(String::as_str)
    }
}

/// One filter rule of a source: users matching `expression` go to the console group
/// `group`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    pub id: i64,
    /// The destination console group.
    pub group: String,
    /// The rule in the filter language (`department eq 'Sales'`).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub expression: Expression,
}

/// The first rule, in order, whose expression the user matches.
pub fn first_match<'a>(
    rules: &'a [FilterRule],
    user: &SourceUser,
    groups: &GroupNames,
) -> Option<&'a FilterRule> {
    rules
        .iter()
        .find(|rule| rule.expression.matches(user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> SourceUser {
        SourceUser {
            id: "u-1".into(),
            user_principal_name: Some("asa@contoso.onmicrosoft.com".into()),
            mail: Some("Asa.Berg@Contoso.com".into()),
            proxy_addresses: vec![
                "SMTP:Asa.Berg@contoso.com".into(),
                "smtp:asa@fabrikam.com".into(),
                "SIP:asa@contoso.com".into(),
            ],
            display_name: Some("ÅSA Berg".into()),
            given_name: Some("Åsa".into()),
            surname: Some("Berg".into()),
            account_enabled: Some(true),
            assigned_licenses: vec!["sku-e3".into()],
            user_type: Some("Member".into()),
            company_name: None,
            job_title: Some("Driver".into()),
            department: Some("Research and Development".into()),
            mail_enabled: None,
            member_of: vec!["g-drivers".into(), "g-all".into()],
            ..SourceUser::default()
        }
    }

    fn group(id: &str, name: &str) -> SourceGroup {
        SourceGroup {
            id: id.into(),
            display_name: Some(name.into()),
            ..SourceGroup::default()
        }
    }

    fn groups() -> Vec<SourceGroup> {
        vec![
            group("g-drivers", "All Drivers"),
            group("g-all", "Everyone"),
            group("g-sales", "Sales Team"),
        ]
    }

    fn names() -> GroupNames {
        GroupNames::new(&groups())
    }

    fn check(text: &str) -> bool {
        check_user(text, &user())
    }

    fn check_user(text: &str, user: &SourceUser) -> bool {
        let expression = Expression::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        expression.matches(user, &names())
    }

    fn error(text: &str) -> String {
        match Expression::parse(text) {
            Ok(e) => panic!("{text} parsed as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_operator_works_on_a_text_field() {
        assert!(check("jobTitle equals Driver"));
        assert!(!check("jobTitle equals Drive"));
        assert!(check("jobTitle not_equals Pilot"));
        assert!(!check("jobTitle not_equals driver"));
        assert!(check("jobTitle contains riv"));
        assert!(!check("jobTitle contains pilot"));
        assert!(check("jobTitle starts_with dr"));
        assert!(!check("jobTitle starts_with river"));
        assert!(check("jobTitle ends_with VER"));
        assert!(!check("jobTitle ends_with dri"));
        assert!(check("jobTitle matches ^d.*r$"));
        assert!(check("jobTitle matches iv"));
        assert!(!check("jobTitle matches ^iv"));
        assert!(check("jobTitle is_not_empty"));
        assert!(!check("jobTitle is_empty"));
        assert!(check("companyName is_empty"));
        assert!(!check("companyName is_not_empty"));
        assert!(check("jobTitle in Pilot, Driver"));
        assert!(!check("jobTitle in Pilot, Drivers"));
        assert!(check("id equals U-1"));
    }

    #[test]
    fn a_missing_text_value_equals_nothing_and_differs_from_everything() {
        assert!(!check("companyName equals x"));
        assert!(check("companyName not_equals x"));
        assert!(!check("companyName contains x"));
        assert!(!check("companyName matches .*"));
        let blank = SourceUser {
            company_name: Some("  ".into()),
            ..user()
        };
        assert!(check_user("companyName is_empty", &blank));
    }

    #[test]
    fn every_operator_works_on_a_multi_valued_field() {
        assert!(check("proxyAddresses equals smtp:asa@fabrikam.com"));
        assert!(check("proxyAddresses equals asa@fabrikam.com"));
        assert!(check("proxyAddresses equals ASA.BERG@CONTOSO.COM"));
        assert!(!check("proxyAddresses equals asa@elsewhere.org"));
        assert!(check("proxyAddresses not_equals asa@elsewhere.org"));
        assert!(!check("proxyAddresses not_equals asa@fabrikam.com"));
        assert!(check("proxyAddresses contains fabrikam"));
        assert!(check("proxyAddresses starts_with sip:"));
        assert!(check("proxyAddresses starts_with asa@"));
        assert!(check("proxyAddresses ends_with @fabrikam.com"));
        assert!(!check("proxyAddresses ends_with @elsewhere.org"));
        assert!(check("proxyAddresses matches ^smtp:asa@"));
        assert!(check("proxyAddresses in x@y.com, asa@fabrikam.com"));
        assert!(check("proxyAddresses is_not_empty"));
        assert!(!check("proxyAddresses is_empty"));
        let bare = SourceUser {
            proxy_addresses: vec![],
            assigned_licenses: vec![],
            member_of: vec![],
            ..user()
        };
        assert!(check_user("proxyAddresses is_empty", &bare));
        assert!(check_user("assignedLicenses is_empty", &bare));
        assert!(check_user("memberOf is_empty", &bare));
        assert!(check_user("proxyAddresses not_equals a@b.com", &bare));
        assert!(!check_user("proxyAddresses contains a", &bare));
    }

    #[test]
    fn licences_match_by_sku_id_and_by_part_number_when_known() {
        assert!(check("assignedLicenses equals SKU-E3"));
        assert!(!check("assignedLicenses equals SPE_E3"));
        let skus = names().with_sku_part_numbers([("sku-e3", "SPE_E3")]);
        let expression = Expression::parse("assignedLicenses equals spe_e3").unwrap();
        assert!(expression.matches(&user(), &skus));
        let expression = Expression::parse("assignedLicenses not_equals SPE_E3").unwrap();
        assert!(!expression.matches(&user(), &skus));
    }

    #[test]
    fn booleans_take_is_true_is_false_and_equals_true_or_false() {
        assert!(check("accountEnabled is_true"));
        assert!(!check("accountEnabled is_false"));
        assert!(check("accountEnabled equals TRUE"));
        assert!(!check("accountEnabled equals false"));
        assert!(check("accountEnabled not_equals false"));
        assert!(check("accountEnabled is_not_empty"));
        let disabled = SourceUser {
            account_enabled: Some(false),
            ..user()
        };
        assert!(check_user("accountEnabled is_false", &disabled));
        assert!(check_user("accountEnabled equals false", &disabled));
        assert!(!check_user("accountEnabled is_true", &disabled));
    }

    #[test]
    fn a_missing_boolean_is_neither_true_nor_false() {
        assert!(!check("mailEnabled is_true"));
        assert!(!check("mailEnabled is_false"));
        assert!(!check("mailEnabled equals true"));
        assert!(!check("mailEnabled equals false"));
        assert!(check("mailEnabled not_equals true"));
        assert!(check("mailEnabled not_equals false"));
        assert!(check("mailEnabled is_empty"));
        assert!(!check("mailEnabled is_not_empty"));
    }

    #[test]
    fn text_comparison_ignores_case_also_for_non_ascii_letters() {
        assert!(check("givenName equals ÅSA"));
        assert!(check("givenName equals åsa"));
        assert!(check("displayName starts_with åsa"));
        assert!(check("displayName matches ^åsa b"));
        assert!(check("displayName in Ola, åsa berg"));
        assert!(check("JOBTITLE EQUALS driver AND ACCOUNTENABLED IS_TRUE"));
    }

    #[test]
    fn fields_and_operators_parse_in_any_case_and_print_canonically() {
        assert_eq!("JOBTITLE".parse::<Field>().unwrap(), Field::JobTitle);
        assert_eq!(
            "userprincipalname".parse::<Field>().unwrap(),
            Field::UserPrincipalName
        );
        assert_eq!(Field::MemberOf.to_string(), "memberOf");
        for field in Field::ALL {
            assert_eq!(field.to_string().parse::<Field>().unwrap(), *field);
        }
        for operator in Operator::ALL {
            assert_eq!(operator.to_string().parse::<Operator>().unwrap(), *operator);
            let spaced = operator.as_str().replace('_', " ");
            assert_eq!(spaced.parse::<Operator>().unwrap(), *operator);
        }
        assert_eq!(
            "Starts With".parse::<Operator>().unwrap(),
            Operator::StartsWith
        );
    }

    #[test]
    fn spaced_operators_are_accepted_and_normalised_to_snake_case() {
        let e = Expression::parse(
            "jobTitle not equals Pilot and mail starts with asa and surname ends with Berg \
             and accountEnabled is true and mailEnabled is not empty and companyName is empty",
        )
        .unwrap();
        assert_eq!(
            e.to_string(),
            "jobTitle not_equals Pilot and mail starts_with asa and surname ends_with Berg \
             and accountEnabled is_true and mailEnabled is_not_empty and companyName is_empty"
        );
        assert!(!e.matches(&user(), &names()));
        assert!(check(
            "jobTitle not equals Pilot and mail starts with asa and accountEnabled is true"
        ));
    }

    #[test]
    fn quoted_values_may_contain_and_commas_and_spaces() {
        assert!(check("department equals \"Research and Development\""));
        assert!(check(
            "department equals 'research AND development' and jobTitle equals Driver"
        ));
        assert!(check("department in Sales, \"Research and Development\""));
        let e = Expression::parse("displayName equals \" padded \"").unwrap();
        assert_eq!(e.clauses[0].values, [" padded "]);
        let e = Expression::parse("displayName equals 'say \"hi\"'").unwrap();
        assert_eq!(e.clauses[0].values, ["say \"hi\""]);
        let e = Expression::parse("displayName equals \"it's \"\"x\"\"\"").unwrap();
        assert_eq!(e.clauses[0].values, ["it's \"x\""]);
    }

    #[test]
    fn unquoted_values_run_to_the_next_and_and_are_trimmed() {
        let e =
            Expression::parse("  displayName   equals   O'Brien, Pat   AND jobTitle equals x  ")
                .unwrap();
        assert_eq!(e.clauses.len(), 2);
        assert_eq!(e.clauses[0].values, ["O'Brien, Pat"]);
        assert_eq!(e.clauses[1].values, ["x"]);
        // "and" inside a word is not the keyword.
        let e = Expression::parse("department equals Sandy andover").unwrap();
        assert_eq!(e.clauses[0].values, ["Sandy andover"]);
        let e = Expression::parse("department equals Research and jobTitle equals Development")
            .unwrap();
        assert_eq!(e.clauses[0].values, ["Research"]);
    }

    #[test]
    fn in_takes_a_comma_separated_list_of_quoted_or_unquoted_items() {
        let e = Expression::parse("department in Sales , 'A, B',\"C and D\",E and id is_not_empty")
            .unwrap();
        assert_eq!(e.clauses[0].values, ["Sales", "A, B", "C and D", "E"]);
        assert_eq!(e.clauses.len(), 2);
        assert!(check("department in sales, 'research and development'"));
        assert!(!check("department in sales, research"));
        let single = Expression::parse("department in Sales").unwrap();
        assert_eq!(single.clauses[0].values, ["Sales"]);
    }

    #[test]
    fn member_of_matches_by_group_name_or_id() {
        assert!(check("memberOf equals \"All Drivers\""));
        assert!(check("memberOf equals all drivers"));
        assert!(check("memberOf equals g-drivers"));
        assert!(check("memberOf equals G-ALL"));
        assert!(!check("memberOf equals \"Sales Team\""));
        assert!(check("memberOf not_equals \"Sales Team\""));
        assert!(!check("memberOf not_equals Everyone"));
        assert!(check("memberOf contains driv"));
        assert!(check("memberOf in Sales Team, Everyone"));
        assert!(check("memberOf matches ^all"));
        assert!(check("memberOf is_not_empty"));
    }

    #[test]
    fn member_of_is_transitive_through_the_users_member_of_ids() {
        // The read stores transitive group ids in member_of: a user in "Night Drivers",
        // which is nested in "All Drivers", carries both ids.
        let nested = SourceUser {
            member_of: vec!["g-night".into(), "g-drivers".into()],
            ..user()
        };
        let mut all = groups();
        all.push(group("g-night", "Night Drivers"));
        let e = Expression::parse("memberOf equals 'All Drivers'").unwrap();
        assert!(e.matches(&nested, &GroupNames::new(&all)));
    }

    #[test]
    fn member_of_by_name_uses_the_current_snapshot_names() {
        let renamed = vec![group("g-drivers", "Fleet"), group("g-all", "Everyone")];
        let old = Expression::parse("memberOf equals \"All Drivers\"").unwrap();
        let new = Expression::parse("memberOf equals fleet").unwrap();
        assert!(old.matches(&user(), &names()));
        assert!(!old.matches(&user(), &GroupNames::new(&renamed)));
        assert!(new.matches(&user(), &GroupNames::new(&renamed)));
        let by_id = Expression::parse("memberOf equals g-drivers").unwrap();
        assert!(by_id.matches(&user(), &GroupNames::new(&renamed)));
    }

    #[test]
    fn mentions_member_of_tells_whether_memberships_are_needed() {
        assert!(
            Expression::parse("jobTitle equals x and memberOf is_not_empty")
                .unwrap()
                .mentions_member_of()
        );
        assert!(
            !Expression::parse("jobTitle equals x")
                .unwrap()
                .mentions_member_of()
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_its_clause_and_the_valid_fields() {
        assert_eq!(
            error("jobTitle equals x and jobtitel equals Driver"),
            "unknown field 'jobtitel' in clause 2 ('jobtitel equals Driver'); fields: memberOf, \
             accountEnabled, assignedLicenses, companyName, department, displayName, givenName, \
             jobTitle, mail, mailEnabled, userType, surname, proxyAddresses, userPrincipalName, id"
        );
        assert!(
            error("jobtitel equals 'a and b' and id is_empty")
                .contains("in clause 1 ('jobtitel equals 'a and b''); fields:")
        );
    }

    #[test]
    fn an_unknown_operator_is_named_with_the_valid_operators() {
        assert_eq!(
            error("id is_empty and jobTitle eq Driver"),
            "unknown operator 'eq' in clause 2 ('jobTitle eq Driver'); operators: equals, \
             not_equals, contains, starts_with, ends_with, matches, is_true, is_false, \
             is_empty, is_not_empty, in"
        );
        assert!(error("jobTitle").starts_with("clause 1 ('jobTitle') is missing an operator"));
        assert!(error("jobTitle and id is_empty").contains("missing an operator after jobTitle"));
    }

    #[test]
    fn a_bad_regular_expression_is_refused_at_parse_time() {
        assert_eq!(
            error("displayName matches ^A(Smith"),
            "'matches' needs a valid regular expression: unclosed group in '^A(Smith' (clause 1)"
        );
    }

    #[test]
    fn unary_operators_refuse_a_value_and_the_others_need_one() {
        assert_eq!(
            error("accountEnabled is_true yes"),
            "'is_true' takes no value, but clause 1 has 'yes'; remove it, or join the next \
             clause with 'and'"
        );
        assert!(
            error("mail is empty 'x y'")
                .starts_with("'is_empty' takes no value, but clause 1 has 'x y'")
        );
        assert_eq!(
            error("id is_empty and jobTitle equals"),
            "clause 2 is missing a value: write 'jobTitle equals <value>'"
        );
        assert!(error("jobTitle in and id is_empty").starts_with("clause 1 is missing a value"));
        assert!(error("jobTitle equals ''").contains("clause 1 has an empty value"));
        assert!(error("jobTitle in a,,b").contains("clause 1 has an empty value"));
        assert!(error("jobTitle in a,").contains("clause 1 has an empty value"));
    }

    #[test]
    fn operators_must_fit_the_field_type() {
        assert_eq!(
            error("accountEnabled contains tru"),
            "'contains' cannot be used on accountEnabled, a true/false field (clause 1); use \
             one of: equals, not_equals, is_true, is_false, is_empty, is_not_empty"
        );
        assert!(
            error("jobTitle is_true")
                .starts_with("'is_true' cannot be used on jobTitle, a text field (clause 1)")
        );
        assert!(error("proxyAddresses is false").contains("a multi-valued text field"));
        assert_eq!(
            error("accountEnabled equals yes"),
            "accountEnabled is true or false, so 'equals' needs 'true' or 'false', not 'yes' \
             (clause 1)"
        );
        assert!(
            error("mailEnabled in true, false").starts_with("'in' cannot be used on mailEnabled")
        );
    }

    #[test]
    fn empty_rules_and_clauses_are_refused() {
        assert!(error("").starts_with("empty rule"));
        assert!(error("   ").starts_with("empty rule"));
        assert!(error("id is_empty and").starts_with("clause 2 is empty"));
        assert!(error("id is_empty and and id is_empty").starts_with("clause 2 is empty"));
        assert!(error("and id is_empty").starts_with("clause 1 is empty"));
    }

    #[test]
    fn quoting_errors_name_the_clause() {
        assert!(
            error("id is_empty and department equals \"Sales")
                .starts_with("unclosed quote in clause 2")
        );
        assert!(error("department in 'a', 'b").starts_with("unclosed quote in clause 1"));
        assert_eq!(
            error("department equals \"Sales\" Team and id is_empty"),
            "unexpected 'Team' after the quoted value in clause 1; put the whole value in the \
             quotes, or join clauses with 'and'"
        );
    }

    #[test]
    fn clauses_built_alone_report_the_clause() {
        let e = Clause::new(Field::Mail, Operator::Equals, vec!["a".into(), "b".into()]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "'equals' takes one value, but the clause has 2; use 'in' for a list"
        );
        let c = Clause::new(Field::Mail, Operator::In, vec!["a".into(), "b".into()]).unwrap();
        assert_eq!(c.to_string(), "mail in a, b");
        assert!(
            "nope"
                .parse::<Field>()
                .unwrap_err()
                .to_string()
                .starts_with("unknown field 'nope'; fields: memberOf")
        );
    }

    #[test]
    fn display_then_parse_gives_the_same_expression() {
        let texts = [
            "jobTitle equals Driver and accountEnabled is_true",
            "DEPARTMENT IN Sales, \"Research and Development\"",
            "memberOf equals \"All Drivers\" and mail ends_with @contoso.com",
            "displayName matches ^A.*(Smith|Jones)$",
            "displayName matches \"^(a and b|c)\\d+$\"",
            "displayName equals \" padded \" and surname equals 'O''Brien \"Jr\", and co'",
            "givenName equals ÅSA and companyName not equals 'and'",
            "department in 'a, b', c, \"'quoted'\", \"\"\"x\"\"\"",
            "mailEnabled equals FALSE and userType is not empty and id is empty",
            "proxyAddresses starts with smtp: and assignedLicenses contains e3",
            "userPrincipalName equals O'Brien@contoso.com",
        ];
        for text in texts {
            let parsed = Expression::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let printed = parsed.to_string();
            let again = Expression::parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(again, parsed, "{text} -> {printed}");
            assert_eq!(again.to_string(), printed);
        }
        assert_eq!(
            Expression::parse("DEPARTMENT IN Sales, \"Research and Development\"")
                .unwrap()
                .to_string(),
            "department in Sales, \"Research and Development\""
        );
        assert_eq!(
            Expression::parse("mailEnabled equals FALSE")
                .unwrap()
                .to_string(),
            "mailEnabled equals false"
        );
    }

    #[test]
    fn rules_serialise_with_the_expression_as_its_canonical_text() {
        let rule = FilterRule {
            id: 3,
            group: "Drivers".into(),
            expression: Expression::parse(
                "JOBTITLE equals Driver and memberOf equals 'All Drivers'",
            )
            .unwrap(),
        };
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(
            json,
            r#"{"id":3,"group":"Drivers","expression":"jobTitle equals Driver and memberOf equals All Drivers"}"#
        );
        let back: FilterRule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rule);
        let bad = serde_json::from_str::<FilterRule>(
            r#"{"id":1,"group":"x","expression":"jobtitel equals x"}"#,
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown field 'jobtitel'")
        );
    }

    #[test]
    fn first_match_picks_the_first_matching_rule_in_order() {
        let rule = |id, group: &str, text: &str| FilterRule {
            id,
            group: group.into(),
            expression: Expression::parse(text).unwrap(),
        };
        let rules = vec![
            rule(1, "Pilots", "jobTitle equals Pilot"),
            rule(2, "Drivers", "memberOf equals 'All Drivers'"),
            rule(3, "Everyone", "accountEnabled is_true"),
        ];
        let found = first_match(&rules, &user(), &names()).unwrap();
        assert_eq!(found.group, "Drivers");
        let pilot = SourceUser {
            job_title: Some("pilot".into()),
            ..user()
        };
        assert_eq!(first_match(&rules, &pilot, &names()).unwrap().id, 1);
        let nobody = SourceUser {
            job_title: None,
            member_of: vec![],
            account_enabled: None,
            ..user()
        };
        assert!(first_match(&rules, &nobody, &names()).is_none());
        assert!(first_match(&[], &user(), &names()).is_none());
    }

    #[test]
    fn check_groups_accepts_a_group_by_id_or_name_and_refuses_an_unknown_one() {
        let known = groups();
        for text in [
            "memberOf equals 'all drivers'",
            "memberOf equals G-SALES",
            "memberOf in Everyone, g-drivers and memberOf not_equals 'Sales Team'",
            "memberOf contains nothing-like-a-group",
            "jobTitle equals Unknown Group",
        ] {
            let e = Expression::parse(text).unwrap();
            assert_eq!(e.check_groups(&known), Ok(()), "{text}");
        }
        let e =
            Expression::parse("jobTitle equals x and memberOf in Everyone, 'Al Drivers'").unwrap();
        assert_eq!(
            e.check_groups(&known).unwrap_err().to_string(),
            "no group is named or has the id 'Al Drivers' (memberOf in clause 2); close names: \
             'All Drivers'"
        );
        let e = Expression::parse("memberOf equals Accounting").unwrap();
        assert_eq!(
            e.check_groups(&known).unwrap_err().to_string(),
            "no group is named or has the id 'Accounting' (memberOf in clause 1); use a group's \
             display name or id as the source shows it"
        );
        let e = Expression::parse("memberOf equals Sales").unwrap();
        assert!(
            e.check_groups(&known)
                .unwrap_err()
                .to_string()
                .ends_with("close names: 'Sales Team'")
        );
    }
}
