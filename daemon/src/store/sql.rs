//! What the code shared by both stores needs from sqlx, stated once.
//!
//! sqlx can run a query on "any database", but only under bounds that `DB: sqlx::Database` does
//! not imply: `&mut DB::Connection` must be an executor, the arguments must convert, and every
//! bound or decoded Rust type must be encodable or decodable for `DB`. Rust does not carry such
//! bounds from a trait to its users, so every generic function would have to repeat them. Instead
//! they are stated once, on the one implementation of [`Backend`] (for every [`Pooled`] store
//! whose database meets them), and the return types of `Backend`'s methods carry them to the
//! generic code: [`Backend::on`] is an executor, [`Backend::query`] a runnable statement, and a
//! row of [`Backend::Db`] reads columns through [`Columns`]. A backend implements [`Pooled`].

use std::future::Future;

use anyhow::Context;
use sqlx::database::Database;
use sqlx::{ColumnIndex, Decode, Encode, Execute, Executor, IntoArguments, Pool, Row, Type};

/// A transaction of a pool (`pool.begin()`).
pub(crate) type Tx<DB> = sqlx::Transaction<'static, DB>;

/// A row of a backend's database.
pub(crate) type RowOf<B> = <<B as Backend>::Db as Database>::Row;

/// A statement parameter of the shared store code. The Rust type of each variant is the one the
/// backends bound before the code was shared, so each statement sends the same parameter types.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'q> {
    I32(i32),
    I64(i64),
    OptI64(Option<i64>),
    F64(f64),
    OptF64(Option<f64>),
    Bool(bool),
    Str(&'q str),
    OptStr(Option<&'q str>),
    Bytes(Vec<u8>),
}

macro_rules! arg_from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl<'q> From<$t> for Arg<'q> {
            fn from(v: $t) -> Self {
                Arg::$v(v)
            }
        })*
    };
}

arg_from!(i32 => I32, i64 => I64, Option<i64> => OptI64, f64 => F64, Option<f64> => OptF64, bool => Bool,
    &'q str => Str, Option<&'q str> => OptStr, Vec<u8> => Bytes);

impl<'q> From<&'q String> for Arg<'q> {
    fn from(v: &'q String) -> Self {
        Arg::Str(v)
    }
}

/// The parameters of a statement, in order: `args![a, b, …]`.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$($crate::store::sql::Arg::from($a)),*]
    };
}
pub(crate) use args;

/// Typed column reads of a row, for the column types the shared code decodes.
pub(crate) trait Columns {
    fn i16(&self, i: usize) -> Result<i16, sqlx::Error>;
    fn i32(&self, i: usize) -> Result<i32, sqlx::Error>;
    fn i64(&self, i: usize) -> Result<i64, sqlx::Error>;
    fn opt_i64(&self, i: usize) -> Result<Option<i64>, sqlx::Error>;
    fn f64(&self, i: usize) -> Result<f64, sqlx::Error>;
    fn string(&self, i: usize) -> Result<String, sqlx::Error>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error>;
}

impl<R> Columns for R
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i16: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn i16(&self, i: usize) -> Result<i16, sqlx::Error> {
        self.try_get(i)
    }
    fn i32(&self, i: usize) -> Result<i32, sqlx::Error> {
        self.try_get(i)
    }
    fn i64(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.try_get(i)
    }
    fn opt_i64(&self, i: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(i)
    }
    fn f64(&self, i: usize) -> Result<f64, sqlx::Error> {
        self.try_get(i)
    }
    fn string(&self, i: usize) -> Result<String, sqlx::Error> {
        self.try_get(i)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(i)
    }
}

/// A store type and its pool: what a backend implements to get [`Backend`].
pub(crate) trait Pooled: Send + Sync {
    type Db: Database;

    fn pool(&self) -> &Pool<Self::Db>;
}

/// A store backend as the shared code sees it: its database and pool, and executor and statement
/// types that carry sqlx's bounds (see the module documentation).
pub(crate) trait Backend: Send + Sync {
    type Db: Database<Row: Columns>;

    fn pool(&self) -> &Pool<Self::Db>;

    /// A connection (`&mut *tx` of a transaction) as an executor.
    fn on<'c>(conn: &'c mut <Self::Db as Database>::Connection) -> impl Executor<'c, Database = Self::Db>;

    /// The pool as an executor (one statement on any free connection).
    fn pooled(&self) -> impl Executor<'_, Database = Self::Db>;

    /// `sql` with `args` bound.
    fn query<'q>(sql: &'q str, args: Vec<Arg<'q>>) -> impl Execute<'q, Self::Db> + 'q;

    /// Run `sql` in `tx`.
    fn execute(
        tx: &mut Tx<Self::Db>,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            Self::on(&mut **tx).execute(Self::query(sql, args)).await?;
            Ok(())
        }
    }

    /// The row of `sql` in `tx`, if any.
    fn fetch_optional_in(
        tx: &mut Tx<Self::Db>,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> impl Future<Output = Result<Option<RowOf<Self>>, sqlx::Error>> + Send {
        async move { Self::on(&mut **tx).fetch_optional(Self::query(sql, args)).await }
    }

    /// The one row of `sql` in `tx`.
    fn fetch_one_in(
        tx: &mut Tx<Self::Db>,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> impl Future<Output = Result<RowOf<Self>, sqlx::Error>> + Send {
        async move { Self::on(&mut **tx).fetch_one(Self::query(sql, args)).await }
    }

    /// The rows of `sql` in `tx`.
    fn fetch_all_in(
        tx: &mut Tx<Self::Db>,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> impl Future<Output = Result<Vec<RowOf<Self>>, sqlx::Error>> + Send {
        async move { Self::on(&mut **tx).fetch_all(Self::query(sql, args)).await }
    }

    /// The rows of `sql` on the pool.
    fn fetch_all(
        &self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> impl Future<Output = Result<Vec<RowOf<Self>>, sqlx::Error>> + Send {
        async move { self.pooled().fetch_all(Self::query(sql, args)).await }
    }

    /// The one row of `sql` on the pool.
    fn fetch_one(
        &self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> impl Future<Output = Result<RowOf<Self>, sqlx::Error>> + Send {
        async move { self.pooled().fetch_one(Self::query(sql, args)).await }
    }

    /// Run `sql` on the pool.
    fn execute_pooled(&self, sql: &str, args: Vec<Arg<'_>>) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            self.pooled().execute(Self::query(sql, args)).await?;
            Ok(())
        }
    }

    /// Begin a transaction.
    fn begin(&self) -> impl Future<Output = anyhow::Result<Tx<Self::Db>>> + Send {
        async move { self.pool().begin().await.context("starting a transaction") }
    }
}

impl<S, DB> Backend for S
where
    S: Pooled<Db = DB>,
    DB: Database<Row: Columns>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    type Db = DB;

    fn pool(&self) -> &Pool<DB> {
        Pooled::pool(self)
    }

    fn on<'c>(conn: &'c mut DB::Connection) -> impl Executor<'c, Database = DB> {
        conn
    }

    fn pooled(&self) -> impl Executor<'_, Database = DB> {
        Pooled::pool(self)
    }

    fn query<'q>(sql: &'q str, args: Vec<Arg<'q>>) -> impl Execute<'q, DB> + 'q {
        args.into_iter().fold(sqlx::query::<DB>(sql), |q, a| match a {
            Arg::I32(v) => q.bind(v),
            Arg::I64(v) => q.bind(v),
            Arg::OptI64(v) => q.bind(v),
            Arg::F64(v) => q.bind(v),
            Arg::OptF64(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Str(v) => q.bind(v),
            Arg::OptStr(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
        })
    }
}
