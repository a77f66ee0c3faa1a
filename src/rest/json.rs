//! JSON as TensorFlow Serving's REST API reads and writes it.
//!
//! TensorFlow Serving parses with RapidJSON, accepting the non-standard
//! `NaN`, `Infinity` and `-Infinity` tokens, keeping integers apart from
//! numbers with a fraction or exponent, and reporting errors with RapidJSON's
//! texts and a byte offset; and it prints floats with `%g`-like rules. serde
//! does none of this, so this module is a small parser and printer of our
//! own.

use std::fmt::Write;

/// A JSON value; object members keep their order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// A non-negative integer above i64::MAX.
    UInt(u64),
    /// A number with a fraction or exponent, or NaN/Infinity.
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A parse error: RapidJSON's message and the byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub message: &'static str,
    pub offset: usize,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 256;

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Json {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// RapidJSON's type name, as TensorFlow Serving's messages show it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "Null",
            Json::Bool(false) => "False",
            Json::Bool(true) => "True",
            Json::Object(_) => "Object",
            Json::Array(_) => "Array",
            Json::String(_) => "String",
            Json::Int(_) | Json::UInt(_) | Json::Float(_) => "Number",
        }
    }
}

/// Parses one JSON document.
///
/// # Errors
/// With RapidJSON's message for the first error, and its byte offset.
pub fn parse(input: &[u8]) -> Result<Json, ParseError> {
    let mut p = Parser { s: input, at: 0 };
    p.ws();
    if p.at == p.s.len() {
        return Err(ParseError { message: "The document is empty.", offset: p.at });
    }
    let v = p.value(0)?;
    p.ws();
    if p.at != p.s.len() {
        return Err(p.err("The document root must not be followed by other values."));
    }
    Ok(v)
}

impl Parser<'_> {
    fn err(&self, message: &'static str) -> ParseError {
        ParseError { message, offset: self.at }
    }

    fn ws(&mut self) {
        while self.at < self.s.len() && matches!(self.s[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn literal(&mut self, word: &[u8], v: Json) -> Result<Json, ParseError> {
        if self.s[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(v)
        } else {
            Err(self.err("Invalid value."))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("Invalid value."));
        }
        match self.peek() {
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(b'-' | b'0'..=b'9' | b'N' | b'I') => self.number(),
            _ => Err(self.err("Invalid value.")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.at += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.err("Missing a comma or ']' after an array element.")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.at += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("Missing a name for object member."));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("Missing a colon after a name of object member."));
            }
            self.at += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.err("Missing a comma or '}' after an object member.")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self
            .s
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.err("Incorrect hex digit after \\u escape in string."))?;
        let text =
            std::str::from_utf8(digits).map_err(|_| self.err("Incorrect hex digit after \\u escape in string."))?;
        let v =
            u32::from_str_radix(text, 16).map_err(|_| self.err("Incorrect hex digit after \\u escape in string."))?;
        self.at += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                self.at = start;
                return Err(self.err("Missing a closing quotation mark in string."));
            };
            self.at += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("Invalid escape character in string."));
                    };
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) && self.s[self.at..].starts_with(b"\\u") {
                                self.at += 2;
                                let low = self.hex4()?;
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        _ => {
                            self.at -= 1;
                            return Err(self.err("Invalid escape character in string."));
                        }
                    }
                }
                c if c < 0x20 => {
                    self.at -= 1;
                    return Err(self.err("Invalid encoding in string."));
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| ParseError { message: "Invalid encoding in string.", offset: start })
    }

    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.at;
        let minus = self.peek() == Some(b'-');
        if minus {
            self.at += 1;
        }
        // RapidJSON's kParseNanAndInfFlag, as TF Serving parses: NaN, Inf
        // and Infinity, each with an optional minus sign.
        if self.peek() == Some(b'N') {
            return self.literal(b"NaN", Json::Float(f64::NAN));
        }
        if self.peek() == Some(b'I') {
            let inf = if minus { f64::NEG_INFINITY } else { f64::INFINITY };
            self.literal(b"Inf", Json::Null)?;
            if self.peek() == Some(b'i') {
                return self.literal(b"inity", Json::Float(inf));
            }
            return Ok(Json::Float(inf));
        }
        let digits = |p: &mut Parser<'_>| {
            let from = p.at;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.at += 1;
            }
            p.at - from
        };
        if digits(self) == 0 {
            return Err(self.err("Invalid value."));
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            float = true;
            if digits(self) == 0 {
                return Err(self.err("Miss fraction part in number."));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            float = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("Miss exponent in number."));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).expect("ASCII digits");
        if !float {
            if let Ok(v) = text.parse::<i64>() {
                return Ok(Json::Int(v));
            }
            if let Ok(v) = text.parse::<u64>() {
                return Ok(Json::UInt(v));
            }
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Json::Float(v)),
            _ => Err(ParseError { message: "Number too big to be stored in double.", offset: start }),
        }
    }
}

/// C's `%.{precision}g`.
fn format_g(v: f64, precision: usize) -> String {
    let sci = format!("{:.*e}", precision - 1, v);
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if exp < -4 || exp >= precision as i32 {
        let mantissa = trim_zeros(mantissa);
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

/// A float as TensorFlow Serving prints it: six significant digits unless
/// that does not read back as the same value (then nine for float, 17 for
/// double), `.0` appended to whole numbers, `NaN` and `Infinity` spelled out.
pub fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let short = format_g(v, 6);
    let round_trips =
        if single { short.parse::<f32>().ok() == Some(v as f32) } else { short.parse::<f64>().ok() == Some(v) };
    let mut text = if round_trips { short } else { format_g(v, if single { 9 } else { 17 }) };
    if !text.contains(['.', 'e']) {
        text.push_str(".0");
    }
    text
}

/// Appends `s` as a JSON string literal.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `v` as JSON text (floats in TensorFlow Serving's format).
pub fn write(out: &mut String, v: &Json) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Json::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Json::Float(f) => out.push_str(&format_float(*f, false)),
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item);
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write(out, item);
            }
            out.push('}');
        }
    }
}

/// `v` as JSON text.
pub fn to_string(v: &Json) -> String {
    let mut out = String::new();
    write(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rapidjsons_dialect() {
        let v = parse(br#" {"a": [1, -2, 3.5, 1e3, NaN, Infinity, -Infinity, 18446744073709551615], "b": "x\u00e9\n", "c": null, "d": true} "#).unwrap();
        let Json::Array(short) = parse(b"[Inf, -Inf, -NaN]").unwrap() else { panic!() };
        assert!(
            matches!(short[..], [Json::Float(a), Json::Float(b), Json::Float(c)] if a == f64::INFINITY && b == f64::NEG_INFINITY && c.is_nan())
        );
        assert!(parse(b"[Infin]").is_err());
        assert!(parse(b"[-Nope]").is_err());
        let Json::Array(a) = v.get("a").unwrap() else { panic!() };
        assert_eq!(a[0], Json::Int(1));
        assert_eq!(a[1], Json::Int(-2));
        assert_eq!(a[2], Json::Float(3.5));
        assert_eq!(a[3], Json::Float(1000.0));
        assert!(matches!(a[4], Json::Float(f) if f.is_nan()));
        assert_eq!(a[5], Json::Float(f64::INFINITY));
        assert_eq!(a[6], Json::Float(f64::NEG_INFINITY));
        assert_eq!(a[7], Json::UInt(u64::MAX));
        assert_eq!(v.get("b"), Some(&Json::String("xé\n".into())));
    }

    #[test]
    fn errors_carry_rapidjsons_text_and_offset() {
        let e = |s: &str| parse(s.as_bytes()).unwrap_err();
        assert_eq!(e("  "), ParseError { message: "The document is empty.", offset: 2 });
        assert_eq!(e("{\"a\" 1}").message, "Missing a colon after a name of object member.");
        assert_eq!(e("[1 2]"), ParseError { message: "Missing a comma or ']' after an array element.", offset: 3 });
        assert_eq!(e("{1:2}").message, "Missing a name for object member.");
        assert_eq!(e("[1.]").message, "Miss fraction part in number.");
        assert_eq!(e("1e").message, "Miss exponent in number.");
        assert_eq!(e("{} x").message, "The document root must not be followed by other values.");
        assert_eq!(e("\"abc").message, "Missing a closing quotation mark in string.");
        assert_eq!(e("nul").message, "Invalid value.");
        assert_eq!(e("1e999").message, "Number too big to be stored in double.");
        let deep = "[".repeat(100_000);
        assert_eq!(e(&deep).message, "Invalid value.", "deep nesting is refused, not a stack overflow");
    }

    #[test]
    fn floats_print_like_tensorflow_serving() {
        assert_eq!(format_float(4.0, true), "4.0");
        assert_eq!(format_float(9_000_000.0, true), "9e+06");
        assert_eq!(format_float(0.5, true), "0.5");
        assert_eq!(format_float(1e-5, true), "1e-05");
        assert_eq!(format_float(0.1f32 as f64, true), "0.1");
        assert_eq!(format_float(0.123_456_79_f32 as f64, true), "0.123456791");
        assert_eq!(format_float(-0.000123, false), "-0.000123");
        assert_eq!(format_float(f64::NAN, true), "NaN");
        assert_eq!(format_float(f64::NEG_INFINITY, true), "-Infinity");
        assert_eq!(format_float(123456.0, true), "123456.0");
        assert_eq!(format_float(1234567.0, true), "1234567.0");
        assert_eq!(
            to_string(&Json::Object(vec![("k\"".into(), Json::Array(vec![Json::Int(1), Json::Null]))])),
            r#"{"k\"":[1,null]}"#
        );
    }
}
