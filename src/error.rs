//! One error enum for the whole crate. The PyO3 layer maps each variant onto one exception class of
//! `ecomlogs.exceptions` (see `src/py/errors.rs`); nothing here knows about Python.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing, malformed or contradicts another one.
    #[error("{0}")]
    Config(String),
    /// The broker refused or could not be reached. `code` is librdkafka's error code when there is one.
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        code: Option<RDKafkaErrorCode>,
        #[source]
        source: KafkaError,
    },
    /// PostgreSQL refused or could not be reached. `sqlstate` is the server's code when there is one.
    #[error("{context}: {message}{}", sqlstate.as_ref().map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
    Database {
        context: String,
        sqlstate: Option<String>,
        message: String,
    },
    /// A bug in ecomlogs (a worker panicked): reported as such, never as the user's mistake.
    #[error("{0}")]
    Internal(String),
    /// The user asked us to stop (Ctrl-C in a terminal or a notebook).
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        let code = match &source {
            KafkaError::AdminOp(code) => Some(*code),
            other => other.rdkafka_error_code(),
        };
        Error::Kafka {
            context: context.into(),
            code,
            source,
        }
    }

    pub fn database(context: impl Into<String>, source: &postgres::Error) -> Self {
        let (sqlstate, message) = match source.as_db_error() {
            Some(db) => (Some(db.code().code().to_string()), describe_db(db)),
            None => (
                source.code().map(|c| c.code().to_string()),
                describe_pg(source),
            ),
        };
        Error::Database {
            context: context.into(),
            sqlstate,
            message,
        }
    }
}

/// The server's message with its DETAIL (which key, which row, which object) and HINT (what to do), as
/// psql shows them, on one line.
pub fn describe_db(db: &postgres::error::DbError) -> String {
    let mut out = db.message().to_string();
    if let Some(detail) = db.detail() {
        out.push_str("; DETAIL: ");
        out.push_str(detail);
    }
    if let Some(hint) = db.hint() {
        out.push_str("; HINT: ");
        out.push_str(hint);
    }
    one_line(&out)
}

/// `postgres::Error`'s Display is terse ("error connecting to server"); add its source chain. One line:
/// the server's DETAIL and HINT (on lines of their own in its Display) are joined with "; ".
pub fn describe_pg(e: &postgres::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    one_line(&out)
}

/// Error text is logged and shown as one line: line breaks (a multi-line DETAIL lists dependent objects
/// one per line) become "; ".
fn one_line(text: &str) -> String {
    text.trim_end()
        .split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn multi_line_text_becomes_one_line() {
        assert_eq!(
            one_line("cannot drop table t\nview a depends on it\r\nview b depends on it\n"),
            "cannot drop table t; view a depends on it; view b depends on it"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
