//! `cargo xtask shape [DIR...]`: the shape of the code, per Rust file: lines that are not tests
//! and the longest function (in lines). Test code is left out: files named `tests.rs` or
//! `test_support.rs`, files under a `tests` or `fuzz` directory, and every item marked
//! `#[cfg(test)]` (the attribute, the item and its braces). Brace matching skips strings, chars
//! and comments, so it is exact for rustfmt-formatted code.

use std::path::{Path, PathBuf};

/// One file's figures.
struct Shape {
    path: String,
    lines: usize,
    longest: Option<(String, usize)>,
}

/// Marks, per byte, whether it is code (not inside a comment, string or char literal).
fn code_mask(src: &[u8]) -> Vec<bool> {
    let mut mask = vec![true; src.len()];
    let mut i = 0;
    while i < src.len() {
        let rest = &src[i..];
        let skip_to = if rest.starts_with(b"//") {
            rest.iter()
                .position(|&b| b == b'\n')
                .map_or(src.len(), |p| i + p)
        } else if rest.starts_with(b"/*") {
            let mut depth = 0usize;
            let mut j = i;
            while j < src.len() {
                if src[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if src[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(end) = raw_string_end(src, i) {
            end
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < src.len() && src[j] != b'"' {
                j += if src[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            if rest.len() >= 3 && rest[1] == b'\\' {
                rest.iter()
                    .skip(2)
                    .position(|&b| b == b'\'')
                    .map_or(i + 1, |p| i + p + 3)
            } else if rest.len() >= 3 && rest[2] == b'\'' {
                i + 3
            } else {
                i + 1
            }
        } else {
            i + 1
        };
        if skip_to > i + 1 || rest[0] == b'"' {
            for m in mask.iter_mut().take(skip_to.min(src.len())).skip(i) {
                *m = false;
            }
        }
        i = skip_to.max(i + 1);
    }
    mask
}

/// The end of a raw string (`r"..."`, `r#"..."#`, `br"..."`) starting at `i`, if one does.
fn raw_string_end(src: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (src[i - 1].is_ascii_alphanumeric() || src[i - 1] == b'_') {
        return None;
    }
    let mut j = i;
    if src.get(j) == Some(&b'b') {
        j += 1;
    }
    if src.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = src[j..].iter().take_while(|&&b| b == b'#').count();
    j += hashes;
    if src.get(j) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    src[j + 1..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| j + 1 + p + close.len())
}

/// The byte just after the item that starts at `from`: its matching closing brace, or its `;`.
fn item_end(src: &[u8], mask: &[bool], from: usize) -> usize {
    let mut depth = 0usize;
    for j in from..src.len() {
        if !mask[j] {
            continue;
        }
        match src[j] {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            b';' if depth == 0 => return j + 1,
            _ => {}
        }
    }
    src.len()
}

fn line_of(src: &[u8], at: usize) -> usize {
    src[..at.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn shape_of(path: &Path, shown: String) -> anyhow::Result<Shape> {
    let src = std::fs::read(path)?;
    let mask = code_mask(&src);
    let total = line_of(&src, src.len()) + usize::from(!src.ends_with(b"\n") && !src.is_empty());
    // Lines of #[cfg(test)] items.
    let mut test_lines = vec![false; total + 1];
    let needle = b"#[cfg(test)]";
    let mut i = 0;
    while let Some(p) = src[i..].windows(needle.len()).position(|w| w == needle) {
        let at = i + p;
        i = at + needle.len();
        if !mask[at] {
            continue;
        }
        let end = item_end(&src, &mask, i);
        let (first, last) = (line_of(&src, at), line_of(&src, end.saturating_sub(1)));
        test_lines[first..=last].fill(true);
        i = end;
    }
    let lines = (0..total).filter(|&l| !test_lines[l]).count();
    // Functions outside test items: `fn name` to the end of its body.
    let mut longest: Option<(String, usize)> = None;
    let mut j = 0;
    while let Some(p) = src[j..].windows(3).position(|w| w == b"fn ") {
        let at = j + p;
        j = at + 3;
        let word_start = at == 0 || !(src[at - 1].is_ascii_alphanumeric() || src[at - 1] == b'_');
        if !mask[at] || !word_start || test_lines[line_of(&src, at)] {
            continue;
        }
        let name: String = src[at + 3..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .map(|&b| b as char)
            .collect();
        if name.is_empty() {
            continue;
        }
        let end = item_end(&src, &mask, at);
        let n = line_of(&src, end.saturating_sub(1)) - line_of(&src, at) + 1;
        if longest.as_ref().is_none_or(|(_, m)| n > *m) {
            longest = Some((name, n));
        }
    }
    Ok(Shape {
        path: shown,
        lines,
        longest,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "tests" && name != "fuzz" && name != "target" {
                rust_files(&p, out)?;
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && name != "test_support.rs" {
            out.push(p);
        }
    }
    Ok(())
}

/// Prints the table for `dirs` (default: the agent, its eBPF programs and the ABI crate).
pub fn shape(root: &Path, dirs: &[String]) -> anyhow::Result<()> {
    let dirs: Vec<String> = if dirs.is_empty() {
        ["llmprobe/src", "llmprobe-ebpf/src", "llmprobe-common/src"]
            .map(str::to_owned)
            .to_vec()
    } else {
        dirs.to_vec()
    };
    let mut files = Vec::new();
    for d in &dirs {
        rust_files(&root.join(d), &mut files)?;
    }
    let mut total = 0;
    println!("{:<48} {:>6}  longest function", "file", "lines");
    for f in files {
        let shown = f
            .strip_prefix(root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        let s = shape_of(&f, shown)?;
        total += s.lines;
        let longest = s
            .longest
            .map_or_else(String::new, |(n, l)| format!("{n} ({l})"));
        println!("{:<48} {:>6}  {}", s.path, s.lines, longest);
    }
    println!("{:<48} {:>6}", "total", total);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_items_and_strings_do_not_count() {
        let dir = std::env::temp_dir().join(format!("xtask-shape-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("a.rs");
        std::fs::write(
            &f,
            "fn short() {}\n\nfn long() {\n    let s = \"}\";\n    let c = '}';\n    // }\n    let r = r#\"}\"#;\n}\n\n#[cfg(test)]\nmod tests {\n    fn in_tests() {\n        let x = 1;\n    }\n}\n",
        )
        .expect("write");
        let s = shape_of(&f, "a.rs".into()).expect("shape");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(s.lines, 9);
        assert_eq!(s.longest, Some(("long".to_owned(), 6)));
    }
}
