//! Tables as Unix tools print them: on a terminal, aligned columns under a header, one line
//! per row, fitted to the width (less useful columns dropped, long text shortened, an
//! address or id never broken); into a pipe or file, tab-separated rows with no header, so
//! grep, cut and awk work.

use std::io::IsTerminal;

use crate::outln;

/// How a column behaves when the terminal is narrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Shown whole, whatever the width: addresses, ids, times.
    Keep,
    /// Shortened with "…" when the line is too long.
    Shorten,
    /// Dropped when the line is too long (lower rank first), else shown whole.
    Drop(u8),
}

/// Where a column appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Both,
    TerminalOnly,
    PlainOnly,
}

#[derive(Debug, Clone)]
struct Column {
    title: &'static str,
    fit: Fit,
    shown: Shown,
}

/// A table being built: columns first, then rows with one cell per column.
#[derive(Debug, Default)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

/// Output goes to a terminal of this many columns, or to a pipe or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Terminal(usize),
    Plain,
}

impl Mode {
    /// What stdout is now; `COLUMNS` overrides the terminal's width.
    pub fn of_stdout() -> Mode {
        if !std::io::stdout().is_terminal() {
            return Mode::Plain;
        }
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .or_else(|| {
                console::Term::stdout()
                    .size_checked()
                    .map(|(_, w)| w as usize)
            })
            .unwrap_or(80);
        Mode::Terminal(width.max(20))
    }
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// A column shown whole.
    pub fn keep(mut self, title: &'static str) -> Self {
        self.columns.push(Column {
            title,
            fit: Fit::Keep,
            shown: Shown::Both,
        });
        self
    }

    /// A column shortened when the line is too long.
    pub fn shorten(mut self, title: &'static str) -> Self {
        self.columns.push(Column {
            title,
            fit: Fit::Shorten,
            shown: Shown::Both,
        });
        self
    }

    /// A column dropped when the line is too long; `rank` 1 goes first.
    pub fn drop(mut self, title: &'static str, rank: u8) -> Self {
        self.columns.push(Column {
            title,
            fit: Fit::Drop(rank),
            shown: Shown::Both,
        });
        self
    }

    /// The last column added is shown on a terminal only (a compact form of others).
    pub fn terminal_only(mut self) -> Self {
        if let Some(c) = self.columns.last_mut() {
            c.shown = Shown::TerminalOnly;
        }
        self
    }

    /// The last column added is printed into pipes only (a detail a terminal sums up).
    pub fn plain_only(mut self) -> Self {
        if let Some(c) = self.columns.last_mut() {
            c.shown = Shown::PlainOnly;
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Prints the table to stdout in the mode stdout is in.
    pub fn print(&self) {
        for line in self.render(Mode::of_stdout()) {
            outln!("{line}");
        }
    }

    /// The lines of the table in `mode`.
    pub fn render(&self, mode: Mode) -> Vec<String> {
        match mode {
            Mode::Plain => self.plain(),
            Mode::Terminal(width) => self.fitted(width),
        }
    }

    fn plain(&self) -> Vec<String> {
        let visible: Vec<usize> = (0..self.columns.len())
            .filter(|&i| self.columns[i].shown != Shown::TerminalOnly)
            .collect();
        self.rows
            .iter()
            .map(|row| {
                visible
                    .iter()
                    .map(|&i| one_line(&row[i]).replace('\t', " "))
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect()
    }

    fn fitted(&self, width: usize) -> Vec<String> {
        const GAP: usize = 2;
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|c| one_line(c)).collect())
            .collect();
        // A column with nothing in it says nothing on a terminal (it stays in pipes, where
        // columns are found by position).
        let mut visible: Vec<usize> = (0..self.columns.len())
            .filter(|&i| self.columns[i].shown != Shown::PlainOnly)
            .filter(|&i| self.columns[i].fit == Fit::Keep || cells.iter().any(|r| !r[i].is_empty()))
            .collect();
        let natural = |i: usize| {
            cells
                .iter()
                .map(|row| text_width(&row[i]))
                .chain(std::iter::once(self.columns[i].title.len()))
                .max()
                .unwrap_or(0)
        };
        let mut widths: Vec<usize> = (0..self.columns.len()).map(natural).collect();
        let total = |visible: &[usize], widths: &[usize]| {
            visible.iter().map(|&i| widths[i]).sum::<usize>()
                + GAP * visible.len().saturating_sub(1)
        };
        // Drop the least useful columns until the line fits (or none is left to drop).
        while total(&visible, &widths) > width {
            let droppable = visible
                .iter()
                .filter_map(|&i| match self.columns[i].fit {
                    Fit::Drop(rank) => Some((rank, i)),
                    _ => None,
                })
                .min();
            match droppable {
                Some((_, i)) => visible.retain(|&v| v != i),
                None => break,
            }
        }
        // Then shorten the shortenable ones, widest first, down to their title's width.
        while total(&visible, &widths) > width {
            let widest = visible
                .iter()
                .copied()
                .filter(|&i| self.columns[i].fit == Fit::Shorten)
                .filter(|&i| widths[i] > self.columns[i].title.len().max(8))
                .max_by_key(|&i| widths[i]);
            let Some(i) = widest else { break };
            let excess = total(&visible, &widths) - width;
            let floor = self.columns[i].title.len().max(8);
            widths[i] = widths[i].saturating_sub(excess).max(floor);
        }
        // Still too wide (a very long address): the shortened columns go too, last first,
        // rather than break a line or an address.
        while total(&visible, &widths) > width {
            let Some(&i) = visible
                .iter()
                .rev()
                .find(|&&i| self.columns[i].fit == Fit::Shorten)
            else {
                break;
            };
            visible.retain(|&v| v != i);
        }
        let last = visible.last().copied();
        let line = |texts: Vec<String>| -> String {
            let mut out = String::new();
            for (k, &i) in visible.iter().enumerate() {
                let text = &texts[k];
                let shown = if self.columns[i].fit == Fit::Shorten {
                    shorten(text, widths[i])
                } else {
                    text.clone()
                };
                out.push_str(&shown);
                if Some(i) != last {
                    let pad = widths[i].saturating_sub(text_width(&shown)) + GAP;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.trim_end().to_string()
        };
        let mut lines = Vec::with_capacity(cells.len() + 1);
        lines.push(line(
            visible
                .iter()
                .map(|&i| self.columns[i].title.to_uppercase())
                .collect(),
        ));
        for row in &cells {
            lines.push(line(visible.iter().map(|&i| row[i].clone()).collect()));
        }
        lines
    }
}

/// A cell on one line: line breaks become spaces.
fn one_line(text: &str) -> String {
    if text.contains(['\n', '\r']) {
        text.split(['\n', '\r'])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        text.to_string()
    }
}

fn text_width(text: &str) -> usize {
    console::measure_text_width(text)
}

/// `text` cut to `width` columns, ending in "…" when cut.
fn shorten(text: &str, width: usize) -> String {
    if text_width(text) <= width {
        return text.to_string();
    }
    console::truncate_str(text, width, "…").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Table {
        let mut t = Table::new()
            .keep("address")
            .shorten("name")
            .keep("type")
            .drop("source", 1)
            .drop("aliases", 2);
        t.row(vec![
            "alexandra.konstantinopoulou@research.contoso.com".into(),
            "Alexandra Konstantinopoulou (Research and Development)".into(),
            "user".into(),
            "#1".into(),
            "a.konstantinopoulou@contoso.com, alexandra@contoso.com".into(),
        ]);
        t.row(vec![
            "bob@contoso.com".into(),
            "Bob".into(),
            "shared".into(),
            "#1".into(),
            String::new(),
        ]);
        t
    }

    #[test]
    fn on_80_columns_each_row_is_one_line_and_addresses_stay_whole() {
        let lines = users().render(Mode::Terminal(80));
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("ADDRESS"));
        assert!(lines[1].contains("alexandra.konstantinopoulou@research.contoso.com"));
        for line in &lines {
            assert!(
                text_width(line) <= 80,
                "{line} is {} wide",
                text_width(line)
            );
        }
        assert!(
            lines[1].contains('…'),
            "the long name is shortened: {}",
            lines[1]
        );
        assert!(
            !lines[0].contains("ALIASES"),
            "the least useful column goes first"
        );
    }

    #[test]
    fn an_empty_column_is_left_out_on_a_terminal_only() {
        let mut t = Table::new().keep("run").shorten("error");
        t.row(vec!["1".into(), String::new()]);
        assert_eq!(t.render(Mode::Terminal(80)), vec!["RUN", "1"]);
        assert_eq!(t.render(Mode::Plain), vec!["1\t"]);
    }

    #[test]
    fn a_wide_terminal_shows_every_column_whole() {
        let lines = users().render(Mode::Terminal(250));
        assert!(lines[0].contains("ALIASES") && lines[0].contains("SOURCE"));
        assert!(lines[1].contains("(Research and Development)"));
        assert!(!lines.iter().any(|l| l.contains('…')));
    }

    #[test]
    fn into_a_pipe_rows_are_tab_separated_without_a_header() {
        let lines = users().render(Mode::Plain);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1], "bob@contoso.com\tBob\tshared\t#1\t",
            "every column, whole"
        );
        assert!(lines[0].split('\t').count() == 5);
    }

    #[test]
    fn terminal_only_and_plain_only_columns_appear_where_they_belong() {
        let mut t = Table::new()
            .keep("run")
            .keep("changes")
            .terminal_only()
            .keep("added")
            .plain_only();
        t.row(vec!["7".into(), "+3 ~1 -0".into(), "3".into()]);
        assert_eq!(t.render(Mode::Plain), vec!["7\t3"]);
        let lines = t.render(Mode::Terminal(80));
        assert_eq!(lines[0], "RUN  CHANGES");
        assert_eq!(lines[1], "7    +3 ~1 -0");
    }
}
