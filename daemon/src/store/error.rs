//! Store errors, classified by what the caller should do: retry (transient), set the data aside
//! (bad data) or stop (fatal), from SQLSTATE classes and SQLite result codes. A leaf: the
//! evaluator and the telemetry classify errors with it without depending on the stores.

/// A store failure, classified by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable, busy or out of resources (connection, I/O, pool timeout,
    /// SQLSTATE classes 08, 40, 53, 57P0x, SQLite BUSY/LOCKED): retry the same work later.
    #[error("store unavailable{}: {error:#}", sqlstate(.code))]
    Transient { code: Option<String>, error: anyhow::Error },
    /// The store refused a value of the batch (SQLSTATE classes 22 and 54, SQLite TOOBIG,
    /// MISMATCH, RANGE, a value the driver cannot encode): retrying the same batch cannot help;
    /// find the message that carries the value and set it aside.
    #[error("store refused the data{}: {error:#}", sqlstate(.code))]
    BadData { code: Option<String>, error: anyhow::Error },
    /// Anything else (a schema, permission or program error): stop and say why.
    #[error("store error{}: {error:#}", sqlstate(.code))]
    Fatal { code: Option<String>, error: anyhow::Error },
}

fn sqlstate(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default()
}

/// The three kinds of [`StoreError`], for classification without an error value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    Transient,
    BadData,
    Fatal,
}

impl StoreErrorKind {
    /// A Postgres SQLSTATE's kind.
    pub fn of_sqlstate(code: &str) -> Self {
        match code.get(..2) {
            Some("08" | "40" | "53") => StoreErrorKind::Transient,
            Some("57") if code.starts_with("57P0") => StoreErrorKind::Transient,
            Some("22" | "54") => StoreErrorKind::BadData,
            _ => StoreErrorKind::Fatal,
        }
    }

    /// A SQLite (extended) result code's kind.
    pub fn of_sqlite(code: i64) -> Self {
        match code & 0xff {
            5 | 6 => StoreErrorKind::Transient,      // BUSY, LOCKED
            18 | 20 | 25 => StoreErrorKind::BadData, // TOOBIG, MISMATCH, RANGE
            _ => StoreErrorKind::Fatal,
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Transient { .. } => StoreErrorKind::Transient,
            StoreError::BadData { .. } => StoreErrorKind::BadData,
            StoreError::Fatal { .. } => StoreErrorKind::Fatal,
        }
    }

    /// The SQLSTATE (Postgres) or result code (SQLite) when the database reported one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Transient { code, .. } | StoreError::BadData { code, .. } | StoreError::Fatal { code, .. } => {
                code.as_deref()
            }
        }
    }

    fn new(kind: StoreErrorKind, code: Option<String>, error: anyhow::Error) -> Self {
        match kind {
            StoreErrorKind::Transient => StoreError::Transient { code, error },
            StoreErrorKind::BadData => StoreError::BadData { code, error },
            StoreErrorKind::Fatal => StoreError::Fatal { code, error },
        }
    }

    /// Classify an error from a store implementation by the first database or I/O error in its
    /// chain; an error without one (a program error) is fatal.
    pub fn classify(error: anyhow::Error) -> Self {
        let (kind, code) = classify_chain(&error);
        StoreError::new(kind, code, error)
    }
}

impl StoreErrorKind {
    /// The kind [`StoreError::classify`] would give `error`, without taking it (for counting the
    /// errors of store calls that return `anyhow::Error`).
    pub fn of_error(error: &anyhow::Error) -> Self {
        classify_chain(error).0
    }

    /// The kind of the database or I/O error in `error`'s chain; None for an error that did not
    /// come from the store (a computation's own error).
    pub fn of_database_error(error: &anyhow::Error) -> Option<Self> {
        database_cause(error).map(|(kind, _)| kind)
    }

    /// The `class` label of `tierwatch_store_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Transient => "transient",
            StoreErrorKind::BadData => "bad_data",
            StoreErrorKind::Fatal => "fatal",
        }
    }

    pub const ALL: [StoreErrorKind; 3] = [StoreErrorKind::Transient, StoreErrorKind::BadData, StoreErrorKind::Fatal];
}

/// The kind and code of the first database or I/O error in an error's chain (fatal without one).
fn classify_chain(error: &anyhow::Error) -> (StoreErrorKind, Option<String>) {
    database_cause(error).unwrap_or((StoreErrorKind::Fatal, None))
}

/// The kind and code of the first database or I/O error in an error's chain, if any.
fn database_cause(error: &anyhow::Error) -> Option<(StoreErrorKind, Option<String>)> {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return Some(classify_sqlx(e));
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return Some((StoreErrorKind::Transient, None));
        }
    }
    None
}

fn classify_sqlx(e: &sqlx::Error) -> (StoreErrorKind, Option<String>) {
    use sqlx::Error as E;
    match e {
        E::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code().to_string();
                (StoreErrorKind::of_sqlstate(&code), Some(code))
            } else if let Some(code) = db.code() {
                let kind = code.parse::<i64>().map_or(StoreErrorKind::Fatal, StoreErrorKind::of_sqlite);
                (kind, Some(code.into_owned()))
            } else {
                (StoreErrorKind::Fatal, None)
            }
        }
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::WorkerCrashed => (StoreErrorKind::Transient, None),
        E::Encode(_) => (StoreErrorKind::BadData, None),
        _ => (StoreErrorKind::Fatal, None),
    }
}

impl From<anyhow::Error> for StoreError {
    fn from(e: anyhow::Error) -> Self {
        StoreError::classify(e)
    }
}
