//! `BpeOpenAiTokenizer` (bpe-openai) against `TiktokenTokenizer` (tiktoken-rs, the reference):
//! the same cl100k_base count for every text, or the difference is listed.

use brightrun_core::{BpeOpenAiTokenizer, TiktokenTokenizer, Tokenizer};
use proptest::prelude::*;

/// Texts chosen for what tends to break a pre-tokenizer: scripts without spaces, combining marks,
/// multi-code-point emoji, every kind of whitespace run, code, numbers, contractions.
fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = [
        // English, contractions (the `'s|'t|'re|…` alternatives are case-insensitive).
        "The quick brown fox jumps over the lazy dog.",
        "Don't stop; we'll see. THEY'RE here, I'M sure, you'VE seen it, she'D know, it'S fine.",
        "Rock 'n' roll isn't dead. 'Quoted' and ‘curly’ and “double” quotes.",
        "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D 'ſ 'x",
        // Scripts.
        "我们今天去公园散步，天气很好。你吃饭了吗？",
        "東京は日本の首都です。ひらがなとカタカナと漢字を使います。",
        "안녕하세요, 세계! 오늘 날씨가 좋네요.",
        "مرحبا بالعالم، كيف حالك اليوم؟ أنا بخير، شكراً.",
        "שלום עולם, מה שלומך?",
        "नमस्ते दुनिया, आप कैसे हैं? मैं ठीक हूँ।",
        "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
        "Привет, мир! Как дела? Ёлка и съезд.",
        "Γειά σου Κόσμε! Ελληνικά με τόνους: άέήίόύώ ΐΰ",
        "Ça va? Über naïve café résumé Ångström façade Øresund señor São Paulo Łódź",
        "Tiếng Việt có dấu: Xin chào thế giới, hẹn gặp lại!",
        // The same word composed and decomposed (no normalisation may happen).
        "caf\u{e9} cafe\u{301} n\u{303} A\u{30a} \u{1e9b}\u{323}",
        // Emoji: skin tones, ZWJ sequences, flags, keycaps, variation selectors.
        "👍 👍🏽 👋🏿 👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 🏴‍☠️ 🇫🇷🇯🇵🇺🇸🇩🇪 1️⃣ #️⃣ ❤️ ☺︎",
        "Great job!!! 🎉🎉🎉 see you 🔜… 🤖:🧠→💡",
        "🇫🇷🇯🇵🇺🇸🇩🇪🇬🇧🇨🇳🇮🇳🇧🇷",
        // Code.
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n",
        "class Foo:\n\tdef __init__(self):\n\t\tself.x = {'a': 1, \"b\": [2, 3]}\n\n    # mixed\n  \t  indentation\n",
        "fn main() {\n    let v: Vec<u64> = (0..10).map(|x| x * x).collect();\n    println!(\"{v:?}\");\n}\n",
        "impl<'a, T: Clone + Send> Iterator for Foo<'a, T> where T: 'static {\n    type Item = &'a T;\n}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\\n\\tthere\"}, {\"role\": \"assistant\", \"content\": \"\\u00e9\"}], \"split\": \"train\"}",
        "{\n  \"a\": [1, 2.5, -3e10, null, true],\n  \"b\": {\"c\": \"d\"}\n}\n",
        "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%o''neil%';",
        "<div class=\"x\">&nbsp;&amp;</div><!-- comment --> <|endoftext|> <|im_start|>",
        // Numbers.
        "1234567890 12345 1 12 123 1234 3.14159 -42 +7 1,000,000 1.000.000,00 1e-10 0x1F 0b1010",
        "٠١٢٣٤٥٦٧٨٩ १२३४५ 一二三 ⅠⅡⅢ ½ ¾ ² ³ ①②③",
        "Call 555-123-4567 on 2026-12-07T16:20:00Z, pay $1,234.56 (≈€1.1k).",
        // Unicode whitespace that is not ASCII.
        "a\u{a0}b\u{3000}c\u{2028}d\u{2029}e\u{85}f\u{b}g\u{c}h\u{2009}i\u{200b}j\u{feff}k",
        // Punctuation runs and symbols.
        "!!!??? ... --- *** ___ ~~~ ``` ||| ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
        "",
        " ",
        "\n",
        "x",
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect();
    // Whitespace runs of many lengths, alone, between words, and at both ends.
    for run in [
        "\u{20}", "\t", "\n", "\r\n", "\u{20}\t", "\n\u{20}", "\u{20}\n", "\u{a0}",
    ] {
        for times in [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100] {
            let ws = run.repeat(times);
            texts.push(ws.clone());
            texts.push(format!("word{ws}word"));
            texts.push(format!("{ws}word"));
            texts.push(format!("word{ws}"));
            texts.push(format!("word.{ws}"));
            texts.push(format!("1{ws}2"));
        }
    }
    texts
}

/// Every text of [`corpus`], and each with whitespace around it the way messages carry it.
fn variants() -> Vec<String> {
    corpus()
        .into_iter()
        .flat_map(|text| {
            [
                format!("  {text}  "),
                format!("\n{text}\n"),
                format!("{text}\n    "),
                format!("\t{text}\t\t"),
                text,
            ]
        })
        .collect()
}

/// The texts where the two counters disagree, with both counts.
fn disagreements<'a>(texts: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let reference = TiktokenTokenizer::cl100k_base();
    let fast = BpeOpenAiTokenizer::cl100k_base();
    texts
        .into_iter()
        .filter_map(|text| {
            let expected = reference.count_tokens(text);
            let actual = fast.count_tokens(text);
            (expected != actual)
                .then(|| format!("{text:?}: tiktoken-rs {expected}, bpe-openai {actual}"))
        })
        .collect()
}

#[test]
fn bpe_openai_counts_the_corpus_like_tiktoken() {
    let texts = variants();
    assert!(texts.len() > 500, "the corpus is meant to be broad");
    let differences = disagreements(&texts);
    assert!(
        differences.is_empty(),
        "{} of {} texts counted differently:\n{}",
        differences.len(),
        texts.len(),
        differences.join("\n")
    );
}

#[test]
fn both_counters_name_the_same_encoding() {
    assert_eq!(
        BpeOpenAiTokenizer::cl100k_base().name(),
        TiktokenTokenizer::cl100k_base().name(),
        "reports say which encoding counted, not which library"
    );
}

/// The two libraries do not split text into the same pieces: tiktoken-rs 0.12 uses tiktoken's
/// newer cl100k pattern, where `\s++$` takes a whole trailing whitespace run as one piece, while
/// bpe-openai rewrites the original pattern, which cuts such a run after its last line break
/// (`"x\n  "` is `x`, `\n  ` for one and `x`, `\n`, `  ` for the other). BPE never merges
/// across a token boundary that no vocabulary token spans, so the counts can only differ if some
/// cl100k token is whitespace ending in a line break followed by anything else. None is (the
/// check below is a superset: any token whose part up to its last line break holds no visible
/// ASCII).
#[test]
fn no_cl100k_token_spans_the_cut_the_two_pre_tokenizers_place_differently() {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let tokens: Vec<Vec<u8>> = (0..100_256u32)
        .filter_map(|rank| bpe.decode_bytes(&[rank]).ok())
        .collect();
    assert_eq!(tokens.len(), 100_256, "every ordinary cl100k rank decodes");
    let spanning: Vec<String> = tokens
        .iter()
        .filter(|token| {
            let Some(last) = token.iter().rposition(|&b| b == b'\r' || b == b'\n') else {
                return false;
            };
            last + 1 < token.len()
                && token[..=last]
                    .iter()
                    .all(|&b| b.is_ascii_whitespace() || b == 0x0b || !b.is_ascii())
        })
        .map(|token| format!("{:?}", String::from_utf8_lossy(token)))
        .collect();
    assert!(
        spanning.is_empty(),
        "these tokens span the cut, so bpe-openai may count trailing whitespace differently: {}",
        spanning.join(", ")
    );
}

/// Characters that meet at pre-token boundaries: letters, digits, apostrophes, punctuation and
/// every kind of whitespace, in a few scripts.
fn boundary_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(" "),
        Just("  "),
        Just("\t"),
        Just("\n"),
        Just("\r"),
        Just("\r\n"),
        Just("\u{a0}"),
        Just("\u{3000}"),
        Just("a"),
        Just("Word"),
        Just("é"),
        Just("中文"),
        Just("ع"),
        Just("'"),
        Just("'s"),
        Just("'LL"),
        Just("1"),
        Just("2024"),
        Just("."),
        Just("!?"),
        Just("{"),
        Just("\""),
        Just("👍"),
        Just("👨‍👩‍👧"),
        Just("🇫🇷"),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn bpe_openai_counts_boundary_heavy_text_like_tiktoken(text in boundary_text()) {
        let differences = disagreements([&text]);
        prop_assert!(differences.is_empty(), "{}", differences.join("\n"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn bpe_openai_counts_arbitrary_strings_like_tiktoken(text in any::<String>()) {
        let differences = disagreements([&text]);
        prop_assert!(differences.is_empty(), "{}", differences.join("\n"));
    }
}

#[test]
fn a_base_model_gets_its_own_tokenizer_where_this_crate_has_it() {
    use brightrun_core::ModelTokenizer;
    let cases = [
        (
            Some("brightrun/byte-llama-tiny"),
            ModelTokenizer::Bytes,
            "bytes",
        ),
        (
            Some("openai/gpt-4o-mini"),
            ModelTokenizer::O200kBase,
            "o200k_base",
        ),
        (
            Some("gpt-4.1-nano"),
            ModelTokenizer::O200kBase,
            "o200k_base",
        ),
        (
            Some("gpt-4-turbo"),
            ModelTokenizer::Cl100kBase,
            "cl100k_base",
        ),
        (
            Some("mistralai/Mistral-7B-v0.1"),
            ModelTokenizer::Cl100kBase,
            "cl100k_base",
        ),
        (None, ModelTokenizer::Cl100kBase, "cl100k_base"),
    ];
    for (model, expected, name) in cases {
        let chosen = ModelTokenizer::for_model(model);
        assert_eq!(chosen, expected, "{model:?}");
        assert_eq!(
            chosen.tokenizer().name(),
            name,
            "{model:?} counts with {name}"
        );
    }
    let text = "Ça va? 👍 tokens";
    assert_eq!(
        ModelTokenizer::Bytes.tokenizer().count_tokens(text),
        text.len() as u64,
        "the byte model: one token per byte"
    );
    assert_ne!(
        ModelTokenizer::O200kBase
            .tokenizer()
            .count_tokens(&"我们今天去公园散步".repeat(20)),
        ModelTokenizer::Cl100kBase
            .tokenizer()
            .count_tokens(&"我们今天去公园散步".repeat(20)),
        "o200k and cl100k really are different vocabularies"
    );
}
