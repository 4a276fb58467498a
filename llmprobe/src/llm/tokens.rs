//! Token estimates for calls whose API reported no usage: an offline BPE tokenizer that ships its
//! vocabulary (OpenAI's `o200k_base`, counted by [`super::bpe`], exactly as `tiktoken` counts)
//! counts a bounded sample of the text, extrapolated to the whole by characters. The vocabulary
//! (about 8 ms of CPU and 4 MiB of heap, 7 MiB resident with the regex) is indexed on a thread of
//! its own once the first LLM call is seen ([`prewarm`]), so the tracker never stalls on it and
//! agents that see no LLM traffic never pay for it; an estimate made before it is ready waits for
//! it. `--token-estimator chars` turns it off (characters / 4).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::bpe::Bpe;

/// Characters of text kept per call for estimating.
pub const SAMPLE_CHARS: usize = 16 * 1024;

static DISABLED: AtomicBool = AtomicBool::new(false);
static PREWARMED: AtomicBool = AtomicBool::new(false);
static BPE: OnceLock<Option<Bpe>> = OnceLock::new();

/// Turns the tokenizer off (estimates fall back to characters / 4).
pub fn disable_tokenizer() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// Starts loading the vocabulary in the background, once (nothing when the tokenizer is off).
pub fn prewarm() {
    if DISABLED.load(Ordering::Relaxed)
        || BPE.get().is_some()
        || PREWARMED.swap(true, Ordering::Relaxed)
    {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tokenizer-load".to_owned())
        .spawn(|| {
            bpe();
        });
    if let Err(e) = spawned {
        log::debug!("tokenizer loads on first use instead: no thread ({e})");
    }
}

fn bpe() -> Option<&'static Bpe> {
    if DISABLED.load(Ordering::Relaxed) {
        return None;
    }
    BPE.get_or_init(|| match Bpe::o200k_base() {
        Ok(b) => Some(b),
        Err(e) => {
            log::warn!("token estimator unavailable ({e}); estimates fall back to characters / 4");
            None
        }
    })
    .as_ref()
}

/// Tokens in a text of `total_chars` characters of which `sample` is the start: the sample is
/// counted and the rest extrapolated. None when there is no sample or no tokenizer.
pub fn estimate(sample: &str, total_chars: u64) -> Option<u64> {
    if sample.is_empty() {
        return None;
    }
    let n = match bpe()?.count(sample) {
        Ok(n) => n as u64,
        Err(e) => {
            log::debug!("token estimate falls back to characters / 4: {e}");
            return None;
        }
    };
    let sample_chars = sample.chars().count() as u64;
    if total_chars > sample_chars && sample_chars > 0 {
        Some((n * total_chars).div_ceil(sample_chars))
    } else {
        Some(n)
    }
}

/// Appends `text` to a sample, up to [`SAMPLE_CHARS`] characters in all.
pub fn add_to_sample(sample: &mut String, text: &str) {
    let mut have = sample.chars().count();
    add_counted(sample, &mut have, text, text.chars().count());
}

/// [`add_to_sample`] for a sample of `have` characters (kept up to date) and a text of
/// `text_chars` characters, both already counted: nothing is counted again.
pub fn add_counted(sample: &mut String, have: &mut usize, text: &str, text_chars: usize) {
    if *have >= SAMPLE_CHARS {
        return;
    }
    let room = SAMPLE_CHARS - *have;
    if text_chars <= room {
        sample.push_str(text);
        *have += text_chars;
    } else {
        sample.extend(text.chars().take(room));
        *have = SAMPLE_CHARS;
    }
    if *have == SAMPLE_CHARS {
        // Complete: it is held as it is until the call ends, without the growth slack.
        sample.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_extrapolates() {
        assert_eq!(estimate("Hello world", 11), Some(2));
        assert_eq!(estimate("Hello world", 22), Some(4));
        assert_eq!(estimate("", 10), None);
        let cjk = estimate("你好，世界", 5).unwrap_or(0);
        assert!(cjk >= 2, "CJK text is not 4 characters per token: {cjk}");
    }

    #[test]
    fn samples_are_bounded() {
        let mut s = String::new();
        for _ in 0..3000 {
            add_to_sample(&mut s, "abcdefgh");
        }
        assert_eq!(s.chars().count(), SAMPLE_CHARS);
        // Counted: the same sample, multi-byte characters cut at the limit.
        let (mut c, mut have) = (String::new(), 0);
        for _ in 0..3000 {
            add_counted(&mut c, &mut have, "aé€😀abcd", 8);
        }
        assert_eq!(have, SAMPLE_CHARS);
        assert_eq!(c.chars().count(), SAMPLE_CHARS);
        // A complete sample is held without growth slack.
        assert_eq!(c.capacity(), c.len());
        let mut s = String::new();
        for _ in 0..3000 {
            add_to_sample(&mut s, "aé€😀abcd");
        }
        assert_eq!(c, s);
    }
}
