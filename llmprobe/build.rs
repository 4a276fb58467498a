//! Builds the eBPF object (`llmprobe-ebpf`) with the nightly toolchain and bpf-linker, and puts it
//! in `OUT_DIR/llmprobe` for `include_bytes_aligned!`. `AYA_BUILD_SKIP=1` skips it (the agent then
//! embeds an empty object and refuses to `run`, but `replay` and the unit tests work).
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../llmprobe-ebpf");
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed=../llmprobe-common/src");
    let skip = std::env::var("AYA_BUILD_SKIP")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if skip {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("llmprobe");
        if !out.exists() {
            std::fs::write(&out, b"")?;
        }
    }
    let package = aya_build::Package {
        name: "llmprobe-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
