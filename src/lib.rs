//! auditrail: ship an application's audit trail from its stdout to Kafka.
//!
//! The pipeline, one module per stage:
//! [`source`] (tail files, frame CRI/docker/raw lines, checkpoints) →
//! [`extract`] (which lines are audit records) → [`filter`] (which types are shipped) →
//! [`retention`] (class, topic, expiry) → [`envelope`] (the record as shipped) →
//! [`output`] (stdout, Kafka, syslog). [`pipeline`] is the per-line processor the sources
//! drive; [`ack`] carries confirmations back to the checkpoints. [`check`] and [`run`] are the
//! two commands that use them; [`verify`] reads back what was shipped and checks its
//! [`integrity`] chain.

// The library's surface: the two commands, the config they take, and the per-line stages
// the benchmarks measure. Everything else is crate-private, so unused code surfaces.
pub mod ack;
pub mod budget;
pub mod check;
pub mod config;
mod enrich;
pub mod envelope;
#[cfg(test)]
mod extending;
pub mod extract;
mod filter;
pub mod integrity;
pub mod line;
mod metrics;
mod output;
pub mod pipeline;
pub mod problem;
pub mod public_key;
mod reload;
mod retention;
pub mod run;
mod source;
pub mod verify;
mod yaml;

/// Framing, for the benchmarks.
pub use source::framing;

/// An error and its causes, each printed once: `cannot read input x.log: No such file or
/// directory`. Errors here keep their cause as `source`, never in their own message.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let message = e.to_string();
        // A transparent wrapper shows its source's message as its own.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = e.source();
    }
    text
}
