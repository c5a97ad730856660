//! Rescoring slice (SPEC §4.4): which decisions are sampled ([`sampler`]).

pub mod sampler;
