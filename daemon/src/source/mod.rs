//! Event sources. Kafka is the production source; file replay and the simulator come later.

pub mod kafka;
