//! Attack tests (threat model in the README): each attack is run by an unprivileged process
//! (`nobody`, through `llmprobe_tests::as_nobody`) against the real agent with the real eBPF
//! programs. During each: the agent stays alive and under its memory budget, a well-behaved
//! client's LLM calls made at the same time are still recorded, and every refusal is counted.
