//! Pipeline benchmark: the cost of the prepare and track stages per stream event, on one core,
//! with the capture reader measured apart.
//!
//! ```sh
//! cargo bench -p llmprobe --bench pipeline -- [CAPTURE] [--runs N]
//! ```
//!
//! Without CAPTURE it writes the synthetic capture of `tests/assets/bench_replay.py` (1000
//! concurrent plaintext streams x 300 chunks, four dialects) with that script's own generator,
//! so both benchmarks replay the same events. Each run:
//!
//! 1. reads the capture into memory with [`CaptureReader`] (timed: the reader's events/s);
//! 2. feeds those events through prepare (masking) and track (conntrack, HTTP/1.1, framing,
//!    dialects, records) on this one thread (timed: events/s, ns/event), counting every heap
//!    allocation with a counting global allocator (allocations/event);
//!
//! and a last pass stops just before the final chunk of every stream (1000 streams open, each
//! with its state at its largest), measures the heap, drops prepare and track, and measures it
//! again: the difference over the open streams is the pipeline's bytes per open stream.
//!
//! Times are CPU time of the one thread (on a shared machine, wall time also counts time other
//! processes held the core; it is printed too). The figures are medians over the runs; the last line is `BENCH_JSON {...}` for scripts. The
//! records' digest (FNV-1a over their JSON lines) lets two builds be compared quickly; the
//! byte-for-byte check between binaries is `bench_replay.py`'s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use llmprobe::clock::Clock;
use llmprobe::conntrack::{TrackerConfig, TrackerOutput};
use llmprobe::llm::{LlmCall, tracking};
use llmprobe::pipeline::prepare::Prepare;
use llmprobe::probes::capture::CaptureReader;
use llmprobe::probes::events::ProbeEvent;
use llmprobe::telemetry::SelfMetrics;

/// The system allocator, counting calls and bytes in use.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = IN_USE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the counters have no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation is an allocation call too (it may move the block).
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time of this thread, in seconds: on a shared machine, wall time also counts the time
/// other processes held the core.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

fn in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// The synthetic capture, written by `bench_replay.py`'s generator.
fn synthetic_capture(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let assets = root.join("tests/assets");
    let path = dir.join("llmprobe-bench-pipeline.capture.jsonl");
    let script = format!(
        "import sys; sys.path.insert(0, {assets:?}); import bench_replay; \
         bench_replay.generate({path:?}, 1000, 300)",
        assets = assets.display().to_string(),
        path = path.display().to_string(),
    );
    let status = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3 runs tests/assets/bench_replay.py's generator");
    assert!(status.success(), "the capture generator failed");
    path
}

fn read(path: &Path) -> (Clock, Vec<ProbeEvent>) {
    let file = std::fs::File::open(path).expect("open the capture");
    let reader = CaptureReader::new(BufReader::with_capacity(1 << 16, file)).expect("a capture");
    let clock = reader.clock();
    let events = reader
        .collect::<anyhow::Result<Vec<_>>>()
        .expect("a readable capture");
    (clock, events)
}

struct Pipeline {
    prepare: Prepare,
    tracker: tracking::LlmTracker,
    out: TrackerOutput<LlmCall>,
    calls: Vec<LlmCall>,
}

impl Pipeline {
    fn new(clock: Clock) -> Self {
        let metrics = Arc::new(SelfMetrics::unregistered());
        Pipeline {
            prepare: Prepare::new(false, metrics.clone()),
            tracker: tracking::tracker(TrackerConfig::default(), clock, metrics),
            out: TrackerOutput::default(),
            calls: Vec::with_capacity(4096),
        }
    }

    /// The replay loop of `pipeline::replay`, records kept.
    #[inline(never)]
    fn feed(&mut self, events: impl Iterator<Item = ProbeEvent>) {
        for mut ev in events {
            self.prepare.event(&mut ev);
            self.tracker.handle(ev, &mut self.out);
            self.out.mutes.clear();
            if !self.out.calls.is_empty() {
                self.calls.append(&mut self.out.calls);
            }
        }
    }
}

fn digest(calls: &[LlmCall]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in calls {
        let mut line = serde_json::to_vec(c).expect("a record serialises");
        line.push(b'\n');
        for b in line {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Run {
    read_s: f64,
    read_cpu_s: f64,
    track_s: f64,
    track_cpu_s: f64,
    track_allocs: u64,
    read_allocs: u64,
    records: usize,
    digest: u64,
}

fn run(path: &Path) -> (Run, usize) {
    let a0 = allocs();
    let (t0, c0) = (Instant::now(), thread_cpu_s());
    let (clock, events) = read(path);
    let read_s = t0.elapsed().as_secs_f64();
    let read_cpu_s = thread_cpu_s() - c0;
    let read_allocs = allocs() - a0;
    let n = events.len();
    let mut p = Pipeline::new(clock);
    let a0 = allocs();
    let (t0, c0) = (Instant::now(), thread_cpu_s());
    p.feed(events.into_iter());
    let track_s = t0.elapsed().as_secs_f64();
    let track_cpu_s = thread_cpu_s() - c0;
    let track_allocs = allocs() - a0;
    let records = p.calls.len();
    let digest = digest(&p.calls);
    (
        Run {
            read_s,
            read_cpu_s,
            track_s,
            track_cpu_s,
            track_allocs,
            read_allocs,
            records,
            digest,
        },
        n,
    )
}

/// Bytes prepare and track hold per open stream just before every stream's last chunk.
fn state_per_stream(path: &Path) -> (f64, usize) {
    let (clock, events) = read(path);
    // The capture ends with one last chunk per stream, then one close per stream.
    let open = events
        .iter()
        .filter(|e| matches!(e, ProbeEvent::ConnOpen { .. }))
        .count();
    let stop = events.len() - 2 * open;
    let mut p = Pipeline::new(clock);
    let mut events = events.into_iter();
    p.feed(events.by_ref().take(stop));
    assert_eq!(p.tracker.connections(), open, "every stream open");
    let with = in_use();
    drop(p);
    let without = in_use();
    ((with - without) as f64 / open as f64, open)
}

fn main() {
    let mut capture = None;
    let mut runs = 5usize;
    let mut profile = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            // For a profiler: read once, then run prepare+track this many times, nothing else.
            "--profile" => {
                profile = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--profile N")
            }
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            _ if a.starts_with('-') => panic!("unknown option {a}"),
            _ => capture = Some(PathBuf::from(a)),
        }
    }
    let generated = capture.is_none();
    let path = capture.unwrap_or_else(|| synthetic_capture(&std::env::temp_dir()));
    // The token estimator's vocabulary loads once per process, beside the pipeline in a live
    // run; here before the clock starts.
    let _ = llmprobe::llm::tokens::estimate("warm up", 7);

    if profile > 0 {
        let (clock, events) = read(&path);
        for _ in 0..profile {
            let copy = events.clone();
            let t0 = Instant::now();
            Pipeline::new(clock).feed(copy.into_iter());
            eprintln!("prepare+track {:.3} s", t0.elapsed().as_secs_f64());
        }
        return;
    }
    let mut results = Vec::new();
    let mut events = 0;
    for i in 0..runs {
        let (r, n) = run(&path);
        events = n;
        eprintln!(
            "run {i}: read {:.3} s, prepare+track {:.3} s, CPU {:.3} s ({:.0} events/s), {:.3} allocations/event, {} records, digest {:016x}",
            r.read_s,
            r.track_s,
            r.track_cpu_s,
            n as f64 / r.track_cpu_s,
            r.track_allocs as f64 / n as f64,
            r.records,
            r.digest
        );
        results.push(r);
    }
    let (bytes_per_stream, streams) = state_per_stream(&path);
    if generated {
        let _ = std::fs::remove_file(&path);
    }
    let first = &results[0];
    assert!(
        results
            .iter()
            .all(|r| r.digest == first.digest && r.records == first.records),
        "runs disagree on the records"
    );
    // The figures are CPU time of the one thread (wall time is printed beside them).
    let track_s = median(results.iter().map(|r| r.track_cpu_s).collect());
    let read_s = median(results.iter().map(|r| r.read_cpu_s).collect());
    let track_wall_s = median(results.iter().map(|r| r.track_s).collect());
    let read_wall_s = median(results.iter().map(|r| r.read_s).collect());
    let n = events as f64;
    let allocs_per_event = median(results.iter().map(|r| r.track_allocs as f64 / n).collect());
    let read_allocs_per_event = median(results.iter().map(|r| r.read_allocs as f64 / n).collect());
    println!("events:                    {events}");
    println!(
        "reader:                    {:.0} events/s ({:.0} ns/event of CPU, {:.2} allocations/event; wall {:.0} events/s)",
        n / read_s,
        read_s * 1e9 / n,
        read_allocs_per_event,
        n / read_wall_s
    );
    println!(
        "prepare+track, one core:   {:.0} events/s ({:.0} ns/event of CPU; wall {:.0} events/s)",
        n / track_s,
        track_s * 1e9 / n,
        n / track_wall_s
    );
    println!("allocations per event:     {allocs_per_event:.3}");
    println!("bytes per open stream:     {bytes_per_stream:.0} ({streams} streams open)");
    println!(
        "records:                   {} (digest {:016x})",
        first.records, first.digest
    );
    println!(
        "BENCH_JSON {{\"bench\":\"pipeline\",\"events\":{events},\"runs\":{runs},\
         \"pipeline_events_per_s\":{:.0},\"pipeline_ns_per_event\":{:.1},\
         \"pipeline_wall_events_per_s\":{:.0},\"reader_wall_events_per_s\":{:.0},\
         \"allocs_per_event\":{allocs_per_event:.4},\"reader_events_per_s\":{:.0},\
         \"reader_ns_per_event\":{:.1},\"reader_allocs_per_event\":{read_allocs_per_event:.4},\
         \"bytes_per_open_stream\":{bytes_per_stream:.0},\"open_streams\":{streams},\
         \"records\":{},\"records_digest\":\"{:016x}\"}}",
        n / track_s,
        track_s * 1e9 / n,
        n / track_wall_s,
        n / read_wall_s,
        n / read_s,
        read_s * 1e9 / n,
        first.records,
        first.digest
    );
}
