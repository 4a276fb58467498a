//! llmprobe: an eBPF agent that sees what LLM traffic really does, with no change to the apps it
//! observes. Data flows one way, in the order of these modules:
//! [`probes`] → [`conntrack`] → [`protocol`] → [`llm`] → [`export`], with [`gpu`] beside it;
//! [`pipeline`] runs them as stages over bounded channels and [`app`] composes the stages.
//! [`secrets`] is the one secret policy every stage asks.
//! See ARCHITECTURE.md.

pub mod app;
pub mod clock;
pub mod conntrack;
pub mod content;
pub mod doctor;
pub mod export;
pub mod gpu;
pub mod ids;
pub mod live;
pub mod llm;
pub mod pipeline;
pub mod probes;
pub mod protocol;
pub mod secrets;
pub mod telemetry;
pub mod top;
