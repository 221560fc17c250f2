//! How entries and times are shown: a table or lines for people, JSON for
//! scripts.

use serde_json::json;
use todoapp_api::ToDoEntry;

/// `then` relative to `now` (both Unix seconds): "5 minutes ago", "in 2 hours".
pub fn relative_time(then: i64, now: i64) -> String {
    let delta = now - then;
    let ago = delta >= 0;
    let secs = delta.unsigned_abs();
    if secs < 5 {
        return "just now".to_owned();
    }
    const UNITS: [(u64, &str); 6] = [
        (365 * 86_400, "year"),
        (30 * 86_400, "month"),
        (7 * 86_400, "week"),
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
    ];
    let (count, unit) = UNITS
        .iter()
        .find(|(size, _)| secs >= *size)
        .map(|(size, unit)| (secs / size, *unit))
        .unwrap_or((secs, "second"));
    let plural = if count == 1 { "" } else { "s" };
    if ago {
        format!("{count} {unit}{plural} ago")
    } else {
        format!("in {count} {unit}{plural}")
    }
}

/// RFC 3339 (UTC) of Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
    .to_string()
}

fn when(timestamp: Option<&prost_types::Timestamp>, now: i64) -> String {
    timestamp
        .map(|t| relative_time(t.seconds, now))
        .unwrap_or_else(|| "-".into())
}

pub fn entry_json(entry: &ToDoEntry) -> serde_json::Value {
    json!({
        "id": entry.id,
        "title": entry.title,
        "text": entry.text,
        "done": entry.done.unwrap_or(false),
        "created_at": entry.created_at.as_ref().map(|t| t.to_string()),
        "updated_at": entry.updated_at.as_ref().map(|t| t.to_string()),
    })
}

const TITLE_WIDTH: usize = 60;

fn shorten(title: &str) -> String {
    let flat = crate::error::one_line(title);
    if flat.chars().count() <= TITLE_WIDTH {
        flat
    } else {
        let mut short: String = flat.chars().take(TITLE_WIDTH - 1).collect();
        short.push('…');
        short
    }
}

/// Aligned columns: id, done, title, created, updated.
pub fn table(entries: &[ToDoEntry], now: i64) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "DONE".to_owned(),
        "TITLE".to_owned(),
        "CREATED".to_owned(),
        "UPDATED".to_owned(),
    ]];
    for entry in entries {
        rows.push([
            entry.id.to_string(),
            if entry.done.unwrap_or(false) {
                "yes"
            } else {
                "-"
            }
            .to_owned(),
            shorten(&entry.title),
            when(entry.created_at.as_ref(), now),
            when(entry.updated_at.as_ref(), now),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            // The id column is right-aligned, the others left-aligned.
            let pad = width - cell.chars().count();
            if i == 0 {
                line.insert_str(line.len() - cell.len(), &" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One entry for people.
pub fn detail(entry: &ToDoEntry, now: i64) -> String {
    let stamp = |t: Option<&prost_types::Timestamp>| match t {
        Some(t) => format!("{} ({t})", relative_time(t.seconds, now)),
        None => "-".to_owned(),
    };
    let mut out = format!(
        "id:      {}\ntitle:   {}\ndone:    {}\ncreated: {}\nupdated: {}\n",
        entry.id,
        entry.title,
        if entry.done.unwrap_or(false) {
            "yes"
        } else {
            "no"
        },
        stamp(entry.created_at.as_ref()),
        stamp(entry.updated_at.as_ref()),
    );
    if !entry.text.is_empty() {
        out.push_str("text:\n");
        for line in entry.text.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = 1_000_000_000;
        assert_eq!(relative_time(now, now), "just now");
        assert_eq!(relative_time(now - 4, now), "just now");
        assert_eq!(relative_time(now - 42, now), "42 seconds ago");
        assert_eq!(relative_time(now - 60, now), "1 minute ago");
        assert_eq!(relative_time(now - 3 * 3600 - 5, now), "3 hours ago");
        assert_eq!(relative_time(now - 86_400, now), "1 day ago");
        assert_eq!(relative_time(now - 15 * 86_400, now), "2 weeks ago");
        assert_eq!(relative_time(now - 400 * 86_400, now), "1 year ago");
        assert_eq!(relative_time(now + 59 * 60 + 30, now), "in 59 minutes");
    }

    fn entry(id: i32, title: &str, done: bool) -> ToDoEntry {
        ToDoEntry {
            id,
            title: title.into(),
            done: Some(done),
            created_at: Some(prost_types::Timestamp {
                seconds: 940,
                nanos: 0,
            }),
            updated_at: None,
            ..ToDoEntry::default()
        }
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(
            &[entry(7, "buy milk", true), entry(12, "a\nb", false)],
            1000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID  DONE  TITLE     CREATED       UPDATED");
        assert_eq!(lines[1], " 7  yes   buy milk  1 minute ago  -");
        assert_eq!(lines[2], "12  -     a b       1 minute ago  -");
    }

    #[test]
    fn json_has_every_field() {
        let value = entry_json(&entry(3, "t", true));
        assert_eq!(value["id"], 3);
        assert_eq!(value["done"], true);
        assert_eq!(value["created_at"], "1970-01-01T00:15:40Z");
        assert!(value["updated_at"].is_null());
    }
}
