//! Takes the TLS keys (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) out of a libpq DSN, in either of
//! its forms, and gives back the rest for the driver, which refuses the keys it does not know and the
//! `sslmode` values it does not implement (see `tls`).

use super::tls::TlsKeys;
use crate::error::{Error, Result};

/// (the DSN without the TLS keys, the TLS keys as written).
pub fn split_tls(dsn: &str) -> Result<(String, TlsKeys)> {
    let mut keys = TlsKeys::default();
    let trimmed = dsn.trim();
    if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((trimmed.to_string(), keys));
        };
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !keys.take(&percent_decode(k)?, &percent_decode(v)?) {
                rest.push(pair);
            }
        }
        let out = match rest.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", rest.join("&")),
        };
        return Ok((out, keys));
    }
    let mut rest = Vec::new();
    for (k, v) in key_values(trimmed)? {
        if !keys.take(&k, &v) {
            rest.push(format!(
                "{k}='{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((rest.join(" "), keys))
}

fn invalid(why: &str) -> Error {
    Error::Config(format!("invalid PostgreSQL DSN: {why}"))
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| invalid("bad %-escape in the URL"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("the URL decodes to invalid UTF-8"))
}

/// libpq's `key = value` form: values plain or in single quotes, `\` escaping the next character.
fn key_values(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(&format!("expected \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                None if quoted => return Err(invalid("unterminated quoted value")),
                None => break,
                Some('\'') if quoted => break,
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_leave_a_url() {
        let (rest, keys) = split_tls(
            "postgresql://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:p@h:5/db?application_name=x");
        assert_eq!(keys.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(keys.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, keys) = split_tls("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), keys.sslmode.as_deref()),
            ("postgres://h/db", Some("require"))
        );
    }

    #[test]
    fn tls_keys_leave_a_key_value_string() {
        let (rest, keys) = split_tls(
            "host=h port = 5 sslmode=verify-ca password='it\\'s' sslrootcert='/a b/c\\'a.pem' dbname=d",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(keys.sslrootcert.as_deref(), Some("/a b/c'a.pem"));
        assert!(
            rest.starts_with("host='h' port='5' password='it\\'s'"),
            "{rest}"
        );
        assert!(rest.ends_with("dbname='d'"), "{rest}");
        let (rest, _) = split_tls("host=h password='a\\'b'").unwrap();
        assert_eq!(rest, "host='h' password='a\\'b'");
        assert!(split_tls("host=h sslmode='verify-full").is_err());
        assert!(split_tls("host h").is_err());
    }
}
