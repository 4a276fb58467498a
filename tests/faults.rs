//! Fault tests: the agent killed or restarted mid-stream, a slow or dead collector, a full disk,
//! and a soak of concurrent streams. Real agent, real eBPF programs, real clients.
