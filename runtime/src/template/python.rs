//! Python's ways of printing values, as Jinja2 under transformers shows them to a template:
//! `str()` for `{{ x }}`, `json.dumps` for HF's `tojson`, and C-locale `strftime`.

use super::map_entries;
use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, Output, State, Value};
use std::fmt::Write as _;

/// `{{ x }}` as Jinja2 prints it: Python's `str()` for None, booleans, floats and containers.
pub(super) fn python_formatter(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Seq | ValueKind::Map => {
            let mut s = String::new();
            py_repr(&mut s, value, 0)?;
            out.write_str(&s).map_err(Error::from)
        }
        ValueKind::Number if !value.is_integer() => {
            out.write_str(&py_float(f64::try_from(value.clone())?, false)).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python's `repr()` of a JSON-like value.
fn py_repr(s: &mut String, value: &Value, depth: usize) -> Result<(), Error> {
    if depth > 128 {
        return Err(Error::new(ErrorKind::InvalidOperation, "value nested too deeply to print"));
    }
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => s.push_str("None"),
        ValueKind::Bool => s.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if value.is_integer() => s.push_str(&value.to_string()),
        ValueKind::Number => s.push_str(&py_float(f64::try_from(value.clone())?, false)),
        ValueKind::String => py_str_repr(s, value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            s.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                py_repr(s, &item, depth + 1)?;
            }
            s.push(']');
        }
        ValueKind::Map => {
            s.push('{');
            for (i, (k, v)) in map_entries(value).iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                py_repr(s, k, depth + 1)?;
                s.push_str(": ");
                py_repr(s, v, depth + 1)?;
            }
            s.push('}');
        }
        _ => s.push_str(&value.to_string()),
    }
    Ok(())
}

fn py_str_repr(s: &mut String, text: &str) {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    s.push(quote);
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c == quote => {
                s.push('\\');
                s.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                let _ = match n {
                    0..=0xff => write!(s, "\\x{n:02x}"),
                    0x100..=0xffff => write!(s, "\\u{n:04x}"),
                    _ => write!(s, "\\U{n:08x}"),
                };
            }
            c => s.push(c),
        }
    }
    s.push(quote);
}

/// Python's `str.isprintable` for the characters chat text meets: not control, separator
/// (other than space), format or private-use characters.
fn py_printable(c: char) -> bool {
    !matches!(c as u32,
        0..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000
        | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb | 0xf0000..=0x10ffff)
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
/// `json` spells the non-finite values `NaN`/`Infinity`, `repr` `nan`/`inf`.
pub fn py_float(x: f64, json: bool) -> String {
    if x.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if x.is_infinite() {
        let s = if json { "Infinity" } else { "inf" };
        return if x < 0.0 { format!("-{s}") } else { s.into() };
    }
    let sci = format!("{x:e}"); // shortest digits: "-1.2345e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() { String::new() } else { format!(".{tail}") };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{head}{frac}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
    } else if (point as usize) >= digits.len() {
        format!("{sign}{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// Options of Python's `json.dumps` that `tojson` takes.
struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// HF's `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
pub(super) fn tojson_filter(value: Value, args: Rest<Value>) -> Result<String, Error> {
    let mut positional: Vec<Value> = args.0;
    let kwargs = match positional.last() {
        Some(v) if v.is_kwargs() => Kwargs::try_from(positional.pop().unwrap_or_default())?,
        _ => Kwargs::try_from(Value::UNDEFINED)?,
    };
    if positional.len() > 4 {
        return Err(Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 options"));
    }
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    let mut opts: [Value; 4] = Default::default();
    for (i, name) in names.iter().enumerate() {
        if let Some(v) = positional.get(i) {
            opts[i] = v.clone();
        }
        if kwargs.has(name) {
            opts[i] = kwargs.get::<Value>(name)?;
        }
    }
    kwargs.assert_all_used()?;
    let indent = match opts[1].kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::String => Some(opts[1].as_str().unwrap_or_default().to_string()),
        ValueKind::Number => Some(" ".repeat(i64::try_from(opts[1].clone())?.clamp(0, 1024) as usize)),
        kind => return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: bad indent of type {kind}"))),
    };
    let (item_sep, key_sep) = match opts[2].kind() {
        ValueKind::Undefined | ValueKind::None if indent.is_some() => (",".into(), ": ".into()),
        ValueKind::Undefined | ValueKind::None => (", ".into(), ": ".into()),
        _ => {
            let seps: Vec<Value> = opts[2].try_iter()?.collect();
            match (seps.first().and_then(|v| v.as_str()), seps.get(1).and_then(|v| v.as_str())) {
                (Some(a), Some(b)) if seps.len() == 2 => (a.to_string(), b.to_string()),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
    };
    let style = JsonStyle { ensure_ascii: opts[0].is_true(), indent, item_sep, key_sep, sort_keys: opts[3].is_true() };
    let mut out = String::new();
    write_json(&mut out, &value, &style, 0)?;
    Ok(out)
}

fn write_json(out: &mut String, value: &Value, style: &JsonStyle, level: usize) -> Result<(), Error> {
    if level > 128 {
        return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&py_float(f64::try_from(value.clone())?, true)),
        ValueKind::String => json_str(out, value.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Seq => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, style, level, ('[', ']'), &items, |out, item| {
                write_json(out, item, style, level + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = map_entries(value);
            let mut keyed = Vec::with_capacity(entries.len());
            for (k, v) in entries.drain(..) {
                keyed.push((json_key(&k)?, v));
            }
            if style.sort_keys {
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, style, level, ('{', '}'), &keyed, |out, (k, v)| {
                json_str(out, k, style.ensure_ascii);
                out.push_str(&style.key_sep);
                write_json(out, v, style, level + 1)
            })?;
        }
        kind => {
            let msg = format!("tojson: object of type {kind} is not JSON serializable");
            return Err(Error::new(ErrorKind::InvalidOperation, msg));
        }
    }
    Ok(())
}

/// `[a, b]` / `{...}` with Python's layout: inline, or one item per line under `indent`.
fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    level: usize,
    brackets: (char, char),
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(brackets.0);
    if items.is_empty() {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = style.indent.as_ref().map(|ind| format!("\n{}", ind.repeat(level + 1)));
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        if let Some(nl) = &newline {
            out.push_str(nl);
        }
        write_item(out, item)?;
    }
    if let Some(ind) = &style.indent {
        out.push('\n');
        out.push_str(&ind.repeat(level));
    }
    out.push(brackets.1);
    Ok(())
}

/// A map key as Python's json writes it: strings as they are, numbers, booleans and None as text.
fn json_key(k: &Value) -> Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::Number if k.is_integer() => k.to_string(),
        ValueKind::Number => py_float(f64::try_from(k.clone())?, true),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.into(),
        ValueKind::None => "null".into(),
        kind => {
            let msg = format!("tojson: keys must be str, int, float, bool or None, not {kind}");
            return Err(Error::new(ErrorKind::InvalidOperation, msg));
        }
    })
}

/// A JSON string literal with Python's escapes (`\uXXXX` in lowercase hex).
fn json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The UTC calendar date of a day count from 1970-01-01: (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// C-locale `strftime` of a UTC time (seconds since 1970), as `strftime_now` gives it to
/// templates: `%a %A %b %B %h %c %C %d %D %e %F %H %I %j %m %M %n %p %R %S %t %T %u %w %x %X %y
/// %Y %z %Z %%` (`%z`, `%Z` empty: a naive local time, as HF's `datetime.now()`), with glibc's `-` flag (no padding) on numbers; anything else is kept as written.
pub fn strftime(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
    let yday = before + day as i64 + i64::from(leap && month > 2);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let pad = chars.next_if_eq(&'-').is_none();
        let num = |n: i64, width: usize| if pad { format!("{n:0width$}") } else { n.to_string() };
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let text = match d {
            'a' => WEEKDAYS[weekday][..3].to_string(),
            'A' => WEEKDAYS[weekday].to_string(),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_string(),
            'B' => MONTHS[month as usize - 1].to_string(),
            'c' => strftime("%a %b %e %H:%M:%S %Y", unix_seconds),
            'C' => num(year.div_euclid(100), 2),
            'd' => num(day.into(), 2),
            'D' | 'x' => strftime("%m/%d/%y", unix_seconds),
            'e' => {
                if pad {
                    format!("{day:2}")
                } else {
                    day.to_string()
                }
            }
            'F' => strftime("%Y-%m-%d", unix_seconds),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'j' => num(yday, 3),
            'm' => num(month.into(), 2),
            'M' => num(minute, 2),
            'n' => "\n".into(),
            'p' => if hour < 12 { "AM" } else { "PM" }.into(),
            'R' => strftime("%H:%M", unix_seconds),
            'S' => num(second, 2),
            't' => "\t".into(),
            'T' | 'X' => strftime("%H:%M:%S", unix_seconds),
            'u' => (if weekday == 0 { 7 } else { weekday }).to_string(),
            'w' => weekday.to_string(),
            'y' => num(year.rem_euclid(100), 2),
            'Y' => year.to_string(),
            'z' | 'Z' => String::new(), // a naive time, as HF's `datetime.now()`
            '%' => "%".into(),
            other => format!("%{}{other}", if pad { "" } else { "-" }),
        };
        out.push_str(&text);
    }
    out
}
