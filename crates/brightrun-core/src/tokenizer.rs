//! Token counting behind a small trait, so statistics and the context-length check use a real
//! tokenizer (not a bytes ÷ 4 guess) and a model-specific one can be plugged in.
//!
//! cl100k_base has two implementations with the same counts: [`BpeOpenAiTokenizer`], the fast
//! default for statistics, and [`TiktokenTokenizer`], the reference it is tested against
//! (`tests/core/tokenizer.rs`) and the one for o200k_base.

use tiktoken_rs::CoreBPE;

/// Counts the tokens a model would see.
pub trait Tokenizer: Send + Sync {
    /// A name for reports, e.g. `cl100k_base`.
    fn name(&self) -> &str;

    /// Tokens in `text` with no special tokens.
    fn count_tokens(&self, text: &str) -> u64;

    /// Tokens the chat template adds around each message (role header, separators). The default
    /// follows OpenAI's cookbook: 3 per message plus about 1 for the role name.
    fn message_overhead_tokens(&self) -> u64 {
        4
    }
}

/// The BPE encodings shipped inside `tiktoken-rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TiktokenEncoding {
    /// GPT-3.5/GPT-4; a fair stand-in for Llama/Mistral-size vocabularies.
    Cl100kBase,
    /// GPT-4o.
    O200kBase,
}

/// A tiktoken BPE tokenizer. The ranks are compiled into the binary; the first use parses them
/// once (tens of milliseconds) and every later use shares that table.
pub struct TiktokenTokenizer {
    bpe: &'static CoreBPE,
    encoding: TiktokenEncoding,
}

impl TiktokenTokenizer {
    pub fn new(encoding: TiktokenEncoding) -> Self {
        let bpe = match encoding {
            TiktokenEncoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            TiktokenEncoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        };
        Self { bpe, encoding }
    }

    /// cl100k_base, the reference for [`BpeOpenAiTokenizer`]'s counts.
    pub fn cl100k_base() -> Self {
        Self::new(TiktokenEncoding::Cl100kBase)
    }
}

impl std::fmt::Debug for TiktokenTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiktokenTokenizer")
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl Tokenizer for TiktokenTokenizer {
    fn name(&self) -> &str {
        match self.encoding {
            TiktokenEncoding::Cl100kBase => "cl100k_base",
            TiktokenEncoding::O200kBase => "o200k_base",
        }
    }

    fn count_tokens(&self, text: &str) -> u64 {
        self.bpe.count_ordinary(text) as u64
    }
}

/// cl100k_base counted by the `bpe-openai` crate (github/rust-gems): the same ranks as
/// [`TiktokenTokenizer`], each piece counted by the `bpe` crate's backtracking encoder, which
/// returns no token list: on message-sized texts about twice as fast as tiktoken-rs's
/// `count_ordinary` (a full `encode_ordinary`, then its length), and validation with it about
/// twice as fast end to end (docs/benchmarks.md). It splits text into pieces with its own rewrite of
/// tiktoken's regex (`regex-automata`, no look-around), so its counts are only as good as that
/// rewrite: `tests/core/tokenizer.rs` compares them with tiktoken-rs, which stays the reference,
/// on a multilingual, emoji, whitespace and code corpus and on generated strings. The rewrite
/// follows tiktoken's original pattern and tiktoken-rs 0.12 the newer one, which splits a
/// trailing whitespace run after a line break differently; no cl100k token spans that cut, so the
/// counts agree (a test checks the vocabulary for it).
#[derive(Clone, Copy)]
pub struct BpeOpenAiTokenizer {
    bpe: &'static bpe_openai::Tokenizer,
}

impl BpeOpenAiTokenizer {
    /// cl100k_base: the default tokenizer for statistics. The first use deserializes the prebuilt
    /// tables once; later uses share them.
    pub fn cl100k_base() -> Self {
        Self {
            bpe: bpe_openai::cl100k_base(),
        }
    }
}

impl std::fmt::Debug for BpeOpenAiTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeOpenAiTokenizer")
            .field("encoding", &TiktokenEncoding::Cl100kBase)
            .finish()
    }
}

impl Tokenizer for BpeOpenAiTokenizer {
    fn name(&self) -> &str {
        "cl100k_base"
    }

    fn count_tokens(&self, text: &str) -> u64 {
        self.bpe.count(text) as u64
    }
}

/// Which tokenizer counts for a base model: the model's own where this crate has it, cl100k_base
/// (the stand-in for Llama/Mistral-size vocabularies) otherwise. The report names the one used
/// ([`TokenStatistics::tokenizer`](crate::dataset::TokenStatistics)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelTokenizer {
    /// The worker's byte-level CPU model (`brightrun/byte-llama-tiny`): [`ByteTokenizer`].
    Bytes,
    /// OpenAI's GPT-4o / GPT-4.1 / o-series models: o200k_base ([`TiktokenTokenizer`]).
    O200kBase,
    /// GPT-4 and GPT-3.5 (their own), and every model not listed here: [`BpeOpenAiTokenizer`].
    Cl100kBase,
}

impl ModelTokenizer {
    /// The tokenizer for `base_model` (a model id like `openai/gpt-4o-mini`); cl100k_base when
    /// there is no model or this crate does not have its tokenizer.
    pub fn for_model(base_model: Option<&str>) -> Self {
        let Some(model) = base_model else {
            return Self::Cl100kBase;
        };
        let model = model.to_ascii_lowercase();
        let name = model.rsplit('/').next().unwrap_or(&model);
        if name == "byte-llama-tiny" {
            Self::Bytes
        } else if ["gpt-4o", "gpt-4.1", "o1", "o3", "o4-mini"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            Self::O200kBase
        } else {
            Self::Cl100kBase
        }
    }

    /// The counter. cl100k and o200k share their tables with every other user in the process.
    pub fn tokenizer(self) -> Box<dyn Tokenizer> {
        match self {
            Self::Bytes => Box::new(ByteTokenizer),
            Self::O200kBase => Box::new(TiktokenTokenizer::new(TiktokenEncoding::O200kBase)),
            Self::Cl100kBase => Box::new(BpeOpenAiTokenizer::cl100k_base()),
        }
    }
}

/// One token per UTF-8 byte: the tokenizer of the worker's byte-level CPU model.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn name(&self) -> &str {
        "bytes"
    }

    fn count_tokens(&self, text: &str) -> u64 {
        text.len() as u64
    }

    fn message_overhead_tokens(&self) -> u64 {
        // A role marker byte and a separator byte.
        2
    }
}
