//! The byte-level vocabulary (ids 0–255 are bytes), a few special tokens, the chat template and
//! the Hugging Face tokenizer files that describe the same thing.

use serde_json::{Map, Value, json};

use crate::trainer::{Role, Turn};

pub const BOS: u32 = 256;
pub const END: u32 = 257;
pub const SYSTEM: u32 = 258;
pub const USER: u32 = 259;
pub const ASSISTANT: u32 = 260;
pub const PAD: u32 = 261;
pub const VOCAB_SIZE: usize = 262;

/// The special tokens, by id.
pub const SPECIALS: [(u32, &str); 6] = [
    (BOS, "<|begin|>"),
    (END, "<|end|>"),
    (SYSTEM, "<|system|>"),
    (USER, "<|user|>"),
    (ASSISTANT, "<|assistant|>"),
    (PAD, "<|pad|>"),
];

/// One conversation as token ids, with the loss mask of each id (whether the model is trained to
/// predict it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub trainable: Vec<bool>,
}

impl Encoded {
    /// Number of ids the loss is taken on when predicting from the previous id.
    pub fn target_count(&self) -> usize {
        self.trainable.iter().skip(1).filter(|t| **t).count()
    }
}

fn role_token(role: Role) -> u32 {
    match role {
        Role::System => SYSTEM,
        Role::User => USER,
        Role::Assistant => ASSISTANT,
    }
}

/// `<|begin|>` then, per turn, `<|role|>content<|end|>`. The content bytes and the closing
/// `<|end|>` of trainable assistant turns carry the loss. Truncated to `max_len` ids.
pub fn encode_conversation(turns: &[Turn], max_len: usize) -> Encoded {
    let mut ids = vec![BOS];
    let mut trainable = vec![false];
    for turn in turns {
        let train = turn.trainable && turn.role == Role::Assistant;
        ids.push(role_token(turn.role));
        trainable.push(false);
        for &byte in turn.content.as_bytes() {
            ids.push(u32::from(byte));
            trainable.push(train);
        }
        ids.push(END);
        trainable.push(train);
        if ids.len() >= max_len {
            break;
        }
    }
    ids.truncate(max_len);
    trainable.truncate(max_len);
    Encoded { ids, trainable }
}

/// The GPT-2 byte ↔ printable-character map that Hugging Face's ByteLevel pre-tokenizer uses.
pub fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next += 1;
                c
            }
        })
        .collect()
}

/// `tokenizer.json`: a BPE model without merges over the 256 byte symbols (so id = byte) plus the
/// special tokens, loadable by `tokenizers` / `transformers`.
pub fn tokenizer_json() -> Value {
    let mut vocab = Map::new();
    for (byte, c) in bytes_to_unicode().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(byte));
    }
    for (id, text) in SPECIALS {
        vocab.insert(text.to_string(), json!(id));
    }
    let added: Vec<Value> = SPECIALS
        .iter()
        .map(|(id, text)| {
            json!({
                "id": id, "content": text, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            })
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
            "use_regex": false
        },
        "post_processor": null,
        "decoder": {
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
            "use_regex": false
        },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    })
}

/// The Jinja chat template equivalent to [`encode_conversation`].
pub const CHAT_TEMPLATE: &str = "<|begin|>{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

pub fn tokenizer_config_json(model_max_length: usize) -> Value {
    let mut decoder = Map::new();
    for (id, text) in SPECIALS {
        decoder.insert(
            id.to_string(),
            json!({
                "content": text, "lstrip": false, "normalized": false, "rstrip": false,
                "single_word": false, "special": true
            }),
        );
    }
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": decoder,
        "bos_token": "<|begin|>",
        "eos_token": "<|end|>",
        "pad_token": "<|pad|>",
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE
    })
}

pub fn special_tokens_map_json() -> Value {
    json!({
        "bos_token": "<|begin|>",
        "eos_token": "<|end|>",
        "pad_token": "<|pad|>",
        "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, content: &str, trainable: bool) -> Turn {
        Turn {
            role,
            content: content.to_string(),
            trainable,
        }
    }

    #[test]
    fn template_marks_only_trainable_assistant_bytes() {
        let turns = [
            turn(Role::User, "hi", false),
            turn(Role::Assistant, "yo", true),
            turn(Role::User, "?", false),
            turn(Role::Assistant, "no", false),
        ];
        let e = encode_conversation(&turns, 100);
        let expected = vec![
            BOS,
            USER,
            u32::from(b'h'),
            u32::from(b'i'),
            END,
            ASSISTANT,
            u32::from(b'y'),
            u32::from(b'o'),
            END,
            USER,
            u32::from(b'?'),
            END,
            ASSISTANT,
            u32::from(b'n'),
            u32::from(b'o'),
            END,
        ];
        assert_eq!(e.ids, expected, "chat template layout");
        let marked: Vec<usize> = (0..e.ids.len()).filter(|&i| e.trainable[i]).collect();
        assert_eq!(
            marked,
            vec![6, 7, 8],
            "only the trainable assistant turn's bytes and its <|end|> carry the loss"
        );
        let cut = encode_conversation(&turns, 7);
        assert_eq!(cut.ids.len(), 7, "truncated to the max length");
        assert_eq!(cut.target_count(), 1, "one trainable id left after the cut");
    }

    #[test]
    fn tokenizer_json_maps_every_byte_and_special() {
        let t = tokenizer_json();
        let vocab = t["model"]["vocab"].as_object().expect("vocab object");
        assert_eq!(vocab.len(), VOCAB_SIZE, "256 bytes + specials, no clash");
        assert_eq!(vocab["A"], json!(65), "printable bytes map to themselves");
        assert_eq!(vocab["Ġ"], json!(32), "space is GPT-2's Ġ");
        assert_eq!(vocab["<|end|>"], json!(END), "specials keep their ids");
    }
}
