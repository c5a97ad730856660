use super::*;

#[test]
fn sqlstates_are_classified() {
    use StoreErrorKind::*;
    for (code, kind) in [
        ("08006", Transient), // connection_failure
        ("08003", Transient),
        ("40001", Transient), // serialization_failure
        ("40P01", Transient), // deadlock_detected
        ("53300", Transient), // too_many_connections
        ("57P01", Transient), // admin_shutdown
        ("57P03", Transient), // cannot_connect_now
        ("57014", Fatal),     // query_canceled: not a restart
        ("22021", BadData),   // character_not_in_repertoire (NUL)
        ("22003", BadData),   // numeric_value_out_of_range (bigint sum)
        ("22008", BadData),   // datetime_field_overflow
        ("54000", BadData),   // program_limit_exceeded (index row too large)
        ("42P01", Fatal),     // undefined_table
        ("42501", Fatal),     // insufficient_privilege
        ("23505", Fatal),     // unique_violation: a program error here
        ("", Fatal),
    ] {
        assert_eq!(StoreErrorKind::of_sqlstate(code), kind, "{code}");
    }
}

#[test]
fn sqlite_codes_are_classified() {
    use StoreErrorKind::*;
    for (code, kind) in [
        (5, Transient),   // BUSY
        (517, Transient), // BUSY_SNAPSHOT
        (6, Transient),   // LOCKED
        (262, Transient), // LOCKED_SHAREDCACHE
        (18, BadData),    // TOOBIG
        (20, BadData),    // MISMATCH
        (25, BadData),    // RANGE
        (1, Fatal),       // ERROR (e.g. no such table)
        (8, Fatal),       // READONLY
        (2067, Fatal),    // CONSTRAINT_UNIQUE
    ] {
        assert_eq!(StoreErrorKind::of_sqlite(code), kind, "{code}");
    }
}

#[test]
fn errors_are_classified_through_their_context_chain() {
    let io = anyhow::Error::new(sqlx::Error::Io(std::io::Error::other("reset"))).context("writing tw_quality");
    assert_eq!(StoreError::classify(io).kind(), StoreErrorKind::Transient);
    let timeout = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("starting a transaction");
    assert_eq!(StoreError::classify(timeout).kind(), StoreErrorKind::Transient);
    let program = anyhow::anyhow!("join state key is not UTF-8");
    assert_eq!(StoreError::classify(program).kind(), StoreErrorKind::Fatal);
    let closed = anyhow::Error::new(sqlx::Error::PoolClosed);
    assert_eq!(StoreError::classify(closed).kind(), StoreErrorKind::Fatal);
}

#[test]
fn dead_letter_details_are_escaped_and_bounded() {
    assert_eq!(safe_detail("poison\u{0}pill\n", 100), "poison\\u{0}pill\\u{a}");
    let long = safe_detail(&"é".repeat(1000), 64);
    assert!(long.len() <= 64, "{}", long.len());
    assert!(long.ends_with('…'));
    assert!(!safe_detail(&"\u{0}".repeat(500), 64).contains('\u{0}'));
    assert_eq!(safe_detail("plain", 100), "plain");
}
