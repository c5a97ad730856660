//! tierwatch: per-tier quality, confidence drift and the cross-cost-center deflection ledger for
//! an LLM routing layer.
//!
//! Data flow: [`source`] (Kafka) → [`decode`] (wire formats, validation) → [`join`] (attribution by
//! conversation) → [`metrics`] (additive deltas) → [`store`] (Postgres, one transaction per batch
//! with the offsets). [`pipeline`] drives the loop; [`http`] serves /metrics, /healthz, /readyz and
//! /report ([`report`], the self-contained HTML page).

pub mod alert;
pub mod config;
pub mod decode;
pub mod demo;
pub mod drift;
pub mod event;
pub mod http;
pub mod join;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod progress;
pub mod replay;
pub mod report;
pub mod rescore;
pub mod router_eval;
pub mod secret;
pub mod sim;
pub mod source;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod testkit;
