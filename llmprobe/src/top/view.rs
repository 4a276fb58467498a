//! What `llmprobe top` shows: the model (the agent's latest snapshot, the link's state and the
//! screen's own state) and [`render`], a pure function from it to a ratatui [`Buffer`].
//!
//! Invariants:
//! * Process names and model names come from processes an attacker controls: every string
//!   from the agent goes through [`clean`] (controls C0, DEL and C1, bidi overrides and
//!   invisible format characters escaped as `\x1b` / `\u{202e}`, at most [`MAX_CHARS`]
//!   characters) and is cut to its column's display width with `…` (wide characters count
//!   two cells). No byte of such a name reaches the terminal as a control.
//! * Sorting is total and stable (ties broken by pid / model), so the order never flickers.
//! * Rendering reads the model only: the same model draws the same cells.

use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget};
use serde::Deserialize;
use unicode_width::UnicodeWidthChar;

/// Characters kept of any string from the agent (before escaping).
pub const MAX_CHARS: usize = 128;

/// A call in flight, as `/api/v1/in-flight` lists it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FlightRow {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// `client` or `server`.
    pub role: String,
    /// Provider.
    pub provider: String,
    /// Requested model, once known.
    pub model: Option<String>,
    /// Seconds since the first request byte.
    pub elapsed_s: f64,
    /// Time to the first output, once seen.
    pub ttft_s: Option<f64>,
    /// Output tokens so far.
    pub tokens: u64,
    /// Output tokens per second since the first one.
    pub tokens_per_s: Option<f64>,
}

/// One model's figures, as `/api/v1/rollups` lists them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RollupRow {
    /// Model.
    pub model: String,
    /// Provider.
    pub provider: String,
    /// `client` or `server`: a call between two processes of the node is seen from both ends.
    pub role: String,
    /// Calls that ended in the window.
    pub calls: u64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Share of calls that failed.
    pub error_rate: f64,
    /// Share of calls aborted.
    pub abort_rate: f64,
    /// TTFT median, seconds.
    pub ttft_p50_s: Option<f64>,
    /// TTFT 95th percentile, seconds.
    pub ttft_p95_s: Option<f64>,
    /// Time per output token, median, seconds.
    pub tpot_p50_s: Option<f64>,
    /// Output tokens per second of call time.
    pub output_tokens_per_s: Option<f64>,
}

/// One refresh's data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Calls in flight (the agent's oldest first).
    pub flights: Vec<FlightRow>,
    /// How many were in flight in all (the agent lists at most 256).
    pub in_flight_total: usize,
    /// Per-model rollups.
    pub rollups: Vec<RollupRow>,
    /// Their window, seconds.
    pub window_s: u32,
}

/// The link to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// No answer yet.
    Connecting,
    /// The last refresh worked, this long ago.
    Up {
        /// Seconds since the last refresh.
        ago_s: f64,
    },
    /// The last refresh failed; the data shown (if any) is this old.
    Down {
        /// What went wrong (already said for an operator).
        error: String,
        /// Seconds since the last good refresh.
        ago_s: Option<f64>,
    },
}

/// A pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// Calls in flight.
    Flights,
    /// Per-model rollups.
    Rollups,
}

/// Columns of the in-flight pane, left to right.
pub const FLIGHT_COLUMNS: [&str; 9] = [
    "PROCESS", "PID", "ROLE", "MODEL", "PROVIDER", "ELAPSED", "TOKENS", "TOK/S", "TTFT",
];
/// Columns of the rollup pane, left to right.
pub const ROLLUP_COLUMNS: [&str; 11] = [
    "MODEL", "PROVIDER", "ROLE", "CALLS", "CALLS/S", "TTFT P50", "TTFT P95", "TPOT P50", "ERR%",
    "ABORT%", "TOK/S",
];
const FLIGHT_ELAPSED: usize = 5;
const ROLLUP_CALLS: usize = 3;

/// The screen's own state.
#[derive(Debug, Clone, PartialEq)]
pub struct Ui {
    /// The pane keys act on.
    pub focus: Pane,
    /// Sort column of each pane (index into its columns) and whether it is reversed.
    pub sort: [(usize, bool); 2],
    /// First row shown in each pane.
    pub scroll: [usize; 2],
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            focus: Pane::Flights,
            sort: [(FLIGHT_ELAPSED, false), (ROLLUP_CALLS, false)],
            scroll: [0, 0],
        }
    }
}

/// Everything drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Where the agent is (socket path or URL), as given.
    pub source: String,
    /// Seconds between refreshes.
    pub interval_s: f64,
    /// The latest data.
    pub snapshot: Option<Snapshot>,
    /// The link's state.
    pub link: Link,
    /// The screen's state.
    pub ui: Ui,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep going.
    Continue,
    /// Leave.
    Quit,
}

impl Model {
    /// A model with no data yet.
    pub fn new(source: String, interval_s: f64) -> Model {
        Model {
            source,
            interval_s,
            snapshot: None,
            link: Link::Connecting,
            ui: Ui::default(),
        }
    }

    fn pane_index(&self) -> usize {
        match self.ui.focus {
            Pane::Flights => 0,
            Pane::Rollups => 1,
        }
    }

    /// Handles a key: `q`, Esc or Ctrl-C quit; Tab / BackTab switch pane; `s` sorts the focused
    /// pane by its next column (`S` the previous); `r` reverses; arrows, PgUp/PgDn, Home scroll.
    pub fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> Action {
        let p = self.pane_index();
        let ncols = [FLIGHT_COLUMNS.len(), ROLLUP_COLUMNS.len()][p];
        match code {
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return Action::Quit,
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Tab | KeyCode::BackTab => {
                self.ui.focus = match self.ui.focus {
                    Pane::Flights => Pane::Rollups,
                    Pane::Rollups => Pane::Flights,
                }
            }
            KeyCode::Char('s') => self.ui.sort[p] = ((self.ui.sort[p].0 + 1) % ncols, false),
            KeyCode::Char('S') => {
                self.ui.sort[p] = ((self.ui.sort[p].0 + ncols - 1) % ncols, false)
            }
            KeyCode::Char('r') => self.ui.sort[p].1 = !self.ui.sort[p].1,
            KeyCode::Down | KeyCode::Char('j') => {
                self.ui.scroll[p] = self.ui.scroll[p].saturating_add(1)
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.ui.scroll[p] = self.ui.scroll[p].saturating_sub(1)
            }
            KeyCode::PageDown => self.ui.scroll[p] = self.ui.scroll[p].saturating_add(10),
            KeyCode::PageUp => self.ui.scroll[p] = self.ui.scroll[p].saturating_sub(10),
            KeyCode::Home => self.ui.scroll[p] = 0,
            _ => {}
        }
        Action::Continue
    }
}

/// `s` made safe for a terminal: controls and invisible format characters escaped, at most
/// [`MAX_CHARS`] characters of the input (`…` marks a cut), then at most `max_out` characters.
pub fn clean(s: &str, max_out: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        let cp = u32::from(c);
        if c.is_control() {
            if cp < 0x100 {
                out.push_str(&format!("\\x{cp:02x}"));
            } else {
                out.push_str(&format!("\\u{{{cp:x}}}"));
            }
        } else if matches!(cp, 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
        {
            out.push_str(&format!("\\u{{{cp:x}}}"));
        } else {
            out.push(c);
        }
    }
    if out.chars().count() > max_out {
        out = out.chars().take(max_out.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

/// `s` cut to `width` terminal cells, `…` marking a cut.
pub fn fit(s: &str, width: usize) -> String {
    let w = |c: char| c.width().unwrap_or(0);
    if s.chars().map(w).sum::<usize>() <= width {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + w(c) + 1 > width {
            break;
        }
        used += w(c);
        out.push(c);
    }
    if width > 0 {
        out.push('…');
    }
    out
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if !s.is_finite() || s < 0.0 => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1e3),
        Some(s) if s < 60.0 => format!("{s:.2}s"),
        Some(s) if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        Some(s) => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

fn num(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".into(),
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}", v * 100.0)
    } else {
        "-".into()
    }
}

/// Orders `a` before `b`? For a column: text ascending, numbers descending (so the default
/// ELAPSED puts the oldest call first), `-` last; `rev` flips it. Ties: by pid, then process.
fn cmp_f(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a.filter(|x| x.is_finite()), b.filter(|x| x.is_finite())) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// The in-flight rows in display order.
pub fn sorted_flights(rows: &[FlightRow], (col, rev): (usize, bool)) -> Vec<&FlightRow> {
    let mut v: Vec<&FlightRow> = rows.iter().collect();
    v.sort_by(|a, b| {
        let o = match col {
            0 => a.comm.cmp(&b.comm),
            1 => a.pid.cmp(&b.pid),
            2 => a.role.cmp(&b.role),
            3 => a.model.cmp(&b.model),
            4 => a.provider.cmp(&b.provider),
            5 => cmp_f(Some(a.elapsed_s), Some(b.elapsed_s)),
            6 => b.tokens.cmp(&a.tokens),
            7 => cmp_f(a.tokens_per_s, b.tokens_per_s),
            _ => cmp_f(a.ttft_s, b.ttft_s),
        };
        let o = if rev { o.reverse() } else { o };
        o.then(a.pid.cmp(&b.pid)).then(a.comm.cmp(&b.comm))
    });
    v
}

/// The rollup rows in display order.
pub fn sorted_rollups(rows: &[RollupRow], (col, rev): (usize, bool)) -> Vec<&RollupRow> {
    let mut v: Vec<&RollupRow> = rows.iter().collect();
    v.sort_by(|a, b| {
        let o = match col {
            0 => a.model.cmp(&b.model),
            1 => a.provider.cmp(&b.provider),
            2 => a.role.cmp(&b.role),
            3 => b.calls.cmp(&a.calls),
            4 => cmp_f(Some(a.calls_per_s), Some(b.calls_per_s)),
            5 => cmp_f(a.ttft_p50_s, b.ttft_p50_s),
            6 => cmp_f(a.ttft_p95_s, b.ttft_p95_s),
            7 => cmp_f(a.tpot_p50_s, b.tpot_p50_s),
            8 => cmp_f(Some(a.error_rate), Some(b.error_rate)),
            9 => cmp_f(Some(a.abort_rate), Some(b.abort_rate)),
            _ => cmp_f(a.output_tokens_per_s, b.output_tokens_per_s),
        };
        let o = if rev { o.reverse() } else { o };
        o.then(a.model.cmp(&b.model))
            .then(a.provider.cmp(&b.provider))
            .then(a.role.cmp(&b.role))
    });
    v
}

/// Whether a column holds text (left-aligned, sorted ascending) rather than a figure.
fn is_text(pane: Pane, col: usize) -> bool {
    match pane {
        Pane::Flights => matches!(col, 0 | 2 | 3 | 4),
        Pane::Rollups => matches!(col, 0..=2),
    }
}

fn widths(pane: Pane) -> Vec<Constraint> {
    match pane {
        Pane::Flights => vec![
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Fill(1),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
        Pane::Rollups => vec![
            Constraint::Fill(1),
            Constraint::Length(12),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(8),
        ],
    }
}

fn flight_cells(r: &FlightRow) -> Vec<String> {
    vec![
        clean(&r.comm, MAX_CHARS),
        r.pid.to_string(),
        clean(&r.role, MAX_CHARS),
        r.model
            .as_deref()
            .map_or("-".into(), |m| clean(m, MAX_CHARS)),
        clean(&r.provider, MAX_CHARS),
        secs(Some(r.elapsed_s)),
        r.tokens.to_string(),
        num(r.tokens_per_s, 1),
        secs(r.ttft_s),
    ]
}

fn rollup_cells(r: &RollupRow) -> Vec<String> {
    vec![
        clean(&r.model, MAX_CHARS),
        clean(&r.provider, MAX_CHARS),
        clean(&r.role, MAX_CHARS),
        r.calls.to_string(),
        num(Some(r.calls_per_s), 2),
        secs(r.ttft_p50_s),
        secs(r.ttft_p95_s),
        secs(r.tpot_p50_s),
        pct(r.error_rate),
        pct(r.abort_rate),
        num(r.output_tokens_per_s, 1),
    ]
}

/// The whole screen: the in-flight pane, the rollup pane, the footer (keys, the link).
pub fn render(m: &Model, area: Rect, buf: &mut Buffer) {
    let [flights, rollups, footer] = Layout::vertical([
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(2),
    ])
    .areas(area);
    render_pane(m, Pane::Flights, flights, buf);
    render_pane(m, Pane::Rollups, rollups, buf);
    render_footer(m, footer, buf);
}

/// The rows a pane has now.
pub fn pane_rows(m: &Model, pane: Pane) -> usize {
    m.snapshot.as_ref().map_or(0, |s| match pane {
        Pane::Flights => s.flights.len(),
        Pane::Rollups => s.rollups.len(),
    })
}

/// One pane: a bordered table with its title, header (the sort column marked `▼`/`▲`), and
/// the rows from the pane's scroll offset.
pub fn render_pane(m: &Model, pane: Pane, area: Rect, buf: &mut Buffer) {
    let idx = match pane {
        Pane::Flights => 0,
        Pane::Rollups => 1,
    };
    let (sort_col, rev) = m.ui.sort[idx];
    let headers: &[&str] = match pane {
        Pane::Flights => &FLIGHT_COLUMNS,
        Pane::Rollups => &ROLLUP_COLUMNS,
    };
    let rows: Vec<Vec<String>> = match &m.snapshot {
        None => Vec::new(),
        Some(s) => match pane {
            Pane::Flights => sorted_flights(&s.flights, m.ui.sort[0])
                .into_iter()
                .map(flight_cells)
                .collect(),
            Pane::Rollups => sorted_rollups(&s.rollups, m.ui.sort[1])
                .into_iter()
                .map(rollup_cells)
                .collect(),
        },
    };
    let focused = m.ui.focus == pane;
    let visible = usize::from(area.height.saturating_sub(3));
    let first = m.ui.scroll[idx].min(rows.len().saturating_sub(visible));
    let title = match (pane, &m.snapshot) {
        (Pane::Flights, Some(s)) if s.in_flight_total > s.flights.len() => format!(
            " Calls in flight: {} (the oldest {} listed) ",
            s.in_flight_total,
            s.flights.len()
        ),
        (Pane::Flights, s) => format!(
            " Calls in flight: {} ",
            s.as_ref().map_or(0, |s| s.in_flight_total)
        ),
        (Pane::Rollups, s) => format!(
            " Per model, calls ended in the last {} s ",
            s.as_ref().map_or(0, |s| s.window_s)
        ),
    };
    let scroll_note = if rows.len() > visible {
        format!(
            " rows {}-{} of {} ",
            first + 1,
            (first + visible).min(rows.len()),
            rows.len()
        )
    } else {
        String::new()
    };
    let border = if focused {
        Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(border)
        .title(Line::from(title).style(Style::default().add_modifier(Modifier::BOLD)))
        .title_bottom(Line::from(scroll_note).right_aligned());
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let cols = Layout::horizontal(widths(pane)).spacing(1).split(inner);
    let head_style = Style::default()
        .add_modifier(Modifier::BOLD)
        .bg(Color::Blue)
        .fg(Color::White);
    buf.set_style(Rect { height: 1, ..inner }, head_style);
    for (i, (h, c)) in headers.iter().zip(cols.iter()).enumerate() {
        let mut label = (*h).to_owned();
        if i == sort_col {
            // Descending unless the column is text (ascending), flipped by `r`.
            label.push(if is_text(pane, i) != rev {
                '▲'
            } else {
                '▼'
            });
        }
        put(
            buf,
            c.x,
            inner.y,
            c.width,
            &label,
            !is_text(pane, i),
            head_style,
        );
    }
    if rows.is_empty() {
        let msg = match (pane, &m.snapshot) {
            (_, None) => "waiting for the agent…".to_owned(),
            (Pane::Flights, _) => "no call in flight".to_owned(),
            (Pane::Rollups, Some(s)) => format!("no call ended in the last {} s", s.window_s),
        };
        if inner.height > 1 {
            put(
                buf,
                inner.x,
                inner.y + 1,
                inner.width,
                &msg,
                false,
                Style::default().fg(Color::DarkGray),
            );
        }
        return;
    }
    for (n, row) in rows.iter().skip(first).take(visible).enumerate() {
        let y = inner.y + 1 + n as u16;
        for (i, (text, c)) in row.iter().zip(cols.iter()).enumerate() {
            put(
                buf,
                c.x,
                y,
                c.width,
                text,
                !is_text(pane, i),
                Style::default(),
            );
        }
    }
}

/// Writes `text` cut to `width` cells at (x, y), right-aligned when asked.
fn put(buf: &mut Buffer, x: u16, y: u16, width: u16, text: &str, right: bool, style: Style) {
    let t = fit(text, usize::from(width));
    let used: usize = t.chars().map(|c| c.width().unwrap_or(0)).sum();
    let pad = if right {
        u16::try_from(usize::from(width).saturating_sub(used)).unwrap_or(0)
    } else {
        0
    };
    buf.set_stringn(x + pad, y, &t, usize::from(width - pad), style);
}

/// The footer: the keys, then the link to the agent.
pub fn render_footer(m: &Model, area: Rect, buf: &mut Buffer) {
    let key = |k: &'static str| Span::styled(k, Style::default().add_modifier(Modifier::BOLD));
    let keys = Line::from(vec![
        key("q"),
        Span::raw(" quit  "),
        key("Tab"),
        Span::raw(" pane  "),
        key("s"),
        Span::raw(" sort by next column  "),
        key("r"),
        Span::raw(" reverse  "),
        key("↑↓ PgUp PgDn Home"),
        Span::raw(" scroll"),
    ]);
    let source = clean(&m.source, 200);
    let status = match &m.link {
        Link::Connecting => Line::from(vec![
            Span::styled("● connecting", Style::default().fg(Color::Yellow)),
            Span::raw(format!(" to {source}")),
        ]),
        Link::Up { ago_s } => Line::from(vec![
            Span::styled("● connected", Style::default().fg(Color::Green)),
            Span::raw(format!(
                " to {source} · refreshed {ago_s:.1} s ago · every {:.1} s",
                m.interval_s
            )),
        ]),
        Link::Down { error, ago_s } => Line::from(vec![
            Span::styled(
                "✖ disconnected",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                ": {}{}",
                clean(error, 300),
                ago_s.map_or(String::new(), |a| format!(" · data shown is {a:.0} s old"))
            )),
        ]),
    };
    Paragraph::new(vec![keys, status]).render(area, buf);
}

/// The buffer's text, one line per row, trailing spaces trimmed (for `--once` and tests).
pub fn buffer_text(buf: &Buffer) -> String {
    let a = buf.area;
    let mut out = String::new();
    for y in a.y..a.y + a.height {
        let mut line = String::new();
        let mut skip = 0;
        for x in a.x..a.x + a.width {
            if skip > 0 {
                // The cells a wide character covers.
                skip -= 1;
                continue;
            }
            if let Some(c) = buf.cell((x, y)) {
                line.push_str(c.symbol());
                let w: usize = c.symbol().chars().map(|c| c.width().unwrap_or(0)).sum();
                skip = w.saturating_sub(1);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A plain-text snapshot: each pane as tall as its rows, then the footer, `width` wide.
pub fn plain(m: &Model, width: u16) -> String {
    let mut out = String::new();
    for pane in [Pane::Flights, Pane::Rollups] {
        let h = u16::try_from(pane_rows(m, pane).max(1) + 3).unwrap_or(u16::MAX);
        let area = Rect::new(0, 0, width, h);
        let mut buf = Buffer::empty(area);
        render_pane(m, pane, area, &mut buf);
        out.push_str(&buffer_text(&buf));
    }
    let area = Rect::new(0, 0, width, 2);
    let mut buf = Buffer::empty(area);
    render_footer(m, area, &mut buf);
    out.push_str(&buffer_text(&buf));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn flight(pid: u32, comm: &str, model: &str, elapsed: f64, tokens: u64) -> FlightRow {
        FlightRow {
            pid,
            comm: comm.into(),
            role: "client".into(),
            provider: "openai".into(),
            model: Some(model.into()),
            elapsed_s: elapsed,
            ttft_s: Some(0.3),
            tokens,
            tokens_per_s: Some(tokens as f64 / elapsed),
        }
    }

    fn model() -> Model {
        let mut m = Model::new("/run/llmprobe/api.sock".into(), 1.0);
        m.snapshot = Some(Snapshot {
            flights: vec![
                flight(101, "python3", "gpt-4o", 2.0, 40),
                flight(202, "node", "qwen-max", 9.5, 10),
                flight(303, "curl", "llama3", 0.5, 90),
            ],
            in_flight_total: 3,
            rollups: vec![
                RollupRow {
                    model: "gpt-4o".into(),
                    provider: "openai".into(),
                    role: "client".into(),
                    calls: 12,
                    calls_per_s: 0.2,
                    error_rate: 0.25,
                    abort_rate: 0.0,
                    ttft_p50_s: Some(0.31),
                    ttft_p95_s: Some(1.5),
                    tpot_p50_s: Some(0.02),
                    output_tokens_per_s: Some(48.0),
                },
                RollupRow {
                    model: "qwen-max".into(),
                    provider: "dashscope".into(),
                    calls: 3,
                    calls_per_s: 0.05,
                    ttft_p50_s: Some(2.0),
                    ..RollupRow::default()
                },
            ],
            window_s: 60,
        });
        m.link = Link::Up { ago_s: 0.25 };
        m
    }

    /// Draws through ratatui's TestBackend, as the real terminal does.
    fn screen(m: &Model, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        t.draw(|f| render(m, f.area(), f.buffer_mut()))
            .expect("draw");
        buffer_text(t.backend().buffer())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn order(lines: &[String], names: &[&str]) -> Vec<String> {
        let mut at: Vec<(usize, String)> = names
            .iter()
            .filter_map(|n| {
                lines
                    .iter()
                    .position(|l| l.contains(&format!("│{n} ")))
                    .map(|i| (i, (*n).to_owned()))
            })
            .collect();
        at.sort();
        at.into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn panes_show_their_columns_and_rows() {
        let s = screen(&model(), 140, 30);
        let all = s.join("\n");
        for h in FLIGHT_COLUMNS.iter().chain(ROLLUP_COLUMNS.iter()) {
            assert!(all.contains(h), "header {h} missing:\n{all}");
        }
        assert!(all.contains("Calls in flight: 3"), "{all}");
        assert!(all.contains("last 60 s"), "{all}");
        let py = s.iter().find(|l| l.contains("python3")).expect("row");
        for cell in [
            "101", "client", "gpt-4o", "openai", "2.00s", "40", "20.0", "300ms",
        ] {
            assert!(py.contains(cell), "{cell} not in {py:?}");
        }
        let gpt = s
            .iter()
            .find(|l| l.contains("gpt-4o") && l.contains("12"))
            .expect("rollup row");
        for cell in ["0.20", "310ms", "1.50s", "20ms", "25.0", "0.0", "48.0"] {
            assert!(gpt.contains(cell), "{cell} not in {gpt:?}");
        }
        assert!(
            all.contains("● connected to /run/llmprobe/api.sock"),
            "{all}"
        );
        assert!(all.contains("refreshed 0.2 s ago"), "{all}");
        assert!(all.contains("q quit"), "{all}");
        // Oldest first by default, the sort column marked.
        assert_eq!(
            order(&s, &["python3", "node", "curl"]),
            ["node", "python3", "curl"]
        );
        assert!(all.contains("ELAPSED▼"), "{all}");
        assert!(all.contains("CALLS▼"), "{all}");
    }

    #[test]
    fn keys_sort_reverse_and_switch_panes() {
        let mut m = model();
        let none = KeyModifiers::NONE;
        m.key(KeyCode::Char('s'), none); // TOKENS, most first
        let s = screen(&m, 140, 30);
        assert!(s.join("\n").contains("TOKENS▼"));
        assert_eq!(
            order(&s, &["python3", "node", "curl"]),
            ["curl", "python3", "node"]
        );
        m.key(KeyCode::Char('r'), none);
        let s = screen(&m, 140, 30);
        assert!(s.join("\n").contains("TOKENS▲"));
        assert_eq!(
            order(&s, &["python3", "node", "curl"]),
            ["node", "python3", "curl"]
        );
        // Wraps around to PROCESS: text, ascending.
        for _ in 0..3 {
            m.key(KeyCode::Char('s'), none); // TOK/S, TTFT, PROCESS
        }
        let s = screen(&m, 140, 30);
        assert!(s.join("\n").contains("PROCESS▲"), "{}", s.join("\n"));
        assert_eq!(
            order(&s, &["python3", "node", "curl"]),
            ["curl", "node", "python3"]
        );
        // Tab: `s` now sorts the rollups (CALLS -> CALLS/S) and leaves the flights alone.
        m.key(KeyCode::Tab, none);
        assert_eq!(m.ui.focus, Pane::Rollups);
        for _ in 0..2 {
            m.key(KeyCode::Char('s'), none); // TTFT P50, slowest first
        }
        let s = screen(&m, 140, 30);
        let all = s.join("\n");
        assert!(
            all.contains("TTFT P50▼") && all.contains("PROCESS▲"),
            "{all}"
        );
        let rollup_lines: Vec<String> = s
            .iter()
            .filter(|l| l.contains("openai ") || l.contains("dashscope"))
            .filter(|l| !l.contains("python3") && !l.contains("node") && !l.contains("curl"))
            .cloned()
            .collect();
        assert!(rollup_lines[0].contains("qwen-max"), "{rollup_lines:?}");
        assert_eq!(m.key(KeyCode::Char('q'), none), Action::Quit);
        assert_eq!(m.key(KeyCode::Esc, none), Action::Quit);
        assert_eq!(
            m.key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Action::Quit
        );
        assert_eq!(m.key(KeyCode::Char('x'), none), Action::Continue);
    }

    #[test]
    fn hostile_names_never_reach_the_terminal_raw() {
        let mut m = model();
        let evil = [
            "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mred",
            "two\nlines\rback",
            "\u{9b}31mc1\u{85}next",
            "rtl\u{202e}gnp.exe\u{200b}",
            &"long".repeat(400),
            &"宽".repeat(100),
        ];
        let s = m.snapshot.as_mut().expect("snapshot");
        s.flights = evil
            .iter()
            .enumerate()
            .map(|(i, e)| flight(i as u32 + 1, e, e, 1.0 + i as f64, 1))
            .collect();
        s.rollups = evil
            .iter()
            .map(|e| RollupRow {
                model: (*e).to_owned(),
                provider: (*e).to_owned(),
                calls: 1,
                ..RollupRow::default()
            })
            .collect();
        m.source = "/tmp/\u{1b}[2Jsock".into();
        m.link = Link::Down {
            error: "boom\u{1b}[H".into(),
            ago_s: Some(3.0),
        };
        let mut t = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
        t.draw(|f| render(&m, f.area(), f.buffer_mut()))
            .expect("draw");
        let buf = t.backend().buffer();
        for c in buf.content() {
            assert!(
                !c.symbol()
                    .chars()
                    .any(|ch| ch.is_control() || ('\u{202a}'..='\u{202e}').contains(&ch)),
                "a control reached a cell: {:?}",
                c.symbol()
            );
        }
        let text = buffer_text(buf);
        assert!(text.contains("\\x1b]0;pwned\\x07"), "{text}");
        assert!(text.contains("two\\x0alines"), "{text}");
        assert!(text.contains("\\x9b31mc1"), "{text}");
        assert!(text.contains("rtl\\u{202e}gnp"), "{text}");
        assert!(text.contains("disconnected: boom\\x1b[H"), "{text}");
        // Long names are cut with `…`, inside their column: the PID column still shows.
        let long = text
            .lines()
            .find(|l| l.contains("longlong"))
            .expect("long row");
        assert!(long.contains("│longlonglonglon… "), "{long}");
        assert!(long.contains(" 5 "), "{long}");
        // Wide characters count two cells: each row still spans the screen exactly.
        let wide = text.lines().find(|l| l.contains('宽')).expect("wide row");
        assert!(wide.contains('…'), "{wide}");
        assert!(wide.contains(" 6 "), "{wide}");
        for l in text.lines() {
            let w: usize = l.chars().map(|c| c.width().unwrap_or(0)).sum();
            assert!(w <= 120, "{l}");
        }
        m.link = Link::Connecting;
        let text = buffer_text(&{
            let area = Rect::new(0, 0, 120, 40);
            let mut b = Buffer::empty(area);
            render(&m, area, &mut b);
            b
        });
        assert!(text.contains("/tmp/\\x1b[2Jsock"), "{text}");
    }

    #[test]
    fn clean_and_fit() {
        assert_eq!(clean("a\u{1b}b", 99), "a\\x1bb");
        assert_eq!(clean("\u{7f}\u{80}", 99), "\\x7f\\x80");
        assert_eq!(
            clean(&"x".repeat(1000), 1000).chars().count(),
            MAX_CHARS + 1
        );
        assert_eq!(clean("abcdef", 4), "abc…");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(fit("宽宽宽", 5), "宽宽…");
        assert_eq!(fit("宽宽宽", 4), "宽…");
        assert_eq!(fit("abc", 0), "");
    }

    #[test]
    fn scrolling_is_clamped_and_noted() {
        let mut m = model();
        let s = m.snapshot.as_mut().expect("snapshot");
        s.flights = (0..50)
            .map(|i| flight(1000 + i, &format!("p{i}"), "m", 100.0 - f64::from(i), 1))
            .collect();
        s.in_flight_total = 300;
        for _ in 0..100 {
            m.key(KeyCode::Down, KeyModifiers::NONE);
        }
        let text = screen(&m, 120, 30).join("\n");
        assert!(
            text.contains("Calls in flight: 300 (the oldest 50 listed)"),
            "{text}"
        );
        assert!(text.contains("of 50"), "{text}");
        assert!(text.contains("│p49 "), "the last row shows: {text}");
        assert!(!text.contains("│p0 "), "{text}");
        m.key(KeyCode::Home, KeyModifiers::NONE);
        let text = screen(&m, 120, 30).join("\n");
        assert!(text.contains("│p0 ") && text.contains("rows 1-"), "{text}");
    }

    #[test]
    fn before_any_data_and_tiny_screens() {
        let m = Model::new("x".into(), 0.5);
        let text = screen(&m, 80, 20).join("\n");
        assert!(text.contains("waiting for the agent"), "{text}");
        assert!(text.contains("connecting to x"), "{text}");
        // Never a panic, whatever the size.
        let full = model();
        for (w, h) in [(1, 1), (5, 3), (20, 6), (300, 2), (2, 200)] {
            let _ = screen(&full, w, h);
        }
        let p = plain(&full, 120);
        assert!(p.contains("python3") && p.contains("qwen-max"), "{p}");
    }
}
