"""The Python peer of `cargo xtask bench validate`: PRODUCT.md's dataset rules in plain Python
(one thread, the standard library's json), counting cl100k_base tokens with tiktoken, as a script
written without brightrun would. Prints one JSON summary line; the bench checks that its token
total equals brightrun's.

Usage: python validate_peer.py FILE [--structural] [--ranks PATH]

--ranks: a local cl100k_base.tiktoken (tiktoken otherwise downloads it); checked against the
hash tiktoken expects.
"""

import json
import sys

ROLES = {"messages": ("role", "content", {"system", "user", "assistant"}),
         "conversations": ("from", "value", {"system", "human", "gpt"})}
ASSISTANT = {"assistant", "gpt"}
USER = {"user", "human"}
OVERHEAD = 4  # tokens per message, as OpenAI's cookbook counts them
MAX_ERRORS = 1000


def load_encoding(ranks):
    import tiktoken
    import tiktoken_ext.openai_public as public
    from tiktoken.load import load_tiktoken_bpe

    if ranks:
        public.load_tiktoken_bpe = lambda _url, expected_hash=None: load_tiktoken_bpe(
            ranks, expected_hash=expected_hash)
    return tiktoken.Encoding(**public.cl100k_base())


def main():
    args = sys.argv[1:]
    structural = "--structural" in args
    ranks = args[args.index("--ranks") + 1] if "--ranks" in args else None
    path = args[0]
    enc = None if structural else load_encoding(ranks)
    cache = {}

    def count(text):
        if len(text) > 4096:
            return len(enc.encode_ordinary(text))
        n = cache.get(text)
        if n is None:
            if len(cache) >= 65536:
                cache.clear()
            n = cache[text] = len(enc.encode_ordinary(text))
        return n

    errors, warnings, kept = 0, 0, []
    seen = set()
    file_format = None
    conversations = pairs = tokens_total = assistant_tokens = 0
    per_conversation = []

    def error(number, offset, code):
        nonlocal errors
        errors += 1
        if len(kept) < MAX_ERRORS:
            kept.append((number, offset, code))

    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            line = raw.rstrip(b"\r\n")
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                warnings += 1
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                error(number, start, "not_utf8")
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                error(number, start, "invalid_json")
                continue
            if not isinstance(obj, dict):
                error(number, start, "not_object")
                continue
            if line in seen:
                warnings += 1
            else:
                seen.add(line)
            has_v4, has_v3 = "messages" in obj, "conversations" in obj
            if has_v4 and has_v3:
                error(number, start, "mixed_formats")
            if not has_v4 and not has_v3:
                error(number, start, "messages_missing")
                continue
            fmt = "messages" if has_v4 else "conversations"
            if file_format is None:
                file_format = fmt
            elif fmt != file_format:
                error(number, start, "mixed_formats")
            role_key, content_key, roles = ROLES[fmt]
            line_errors = errors
            for key in obj:
                if key not in ("messages", "conversations", "split"):
                    warnings += 1
            if "split" in obj and obj["split"] not in ("train", "validation"):
                error(number, start, "invalid_split")
            messages = obj[fmt]
            if not isinstance(messages, list):
                error(number, start, "messages_not_list")
                continue
            if not messages:
                error(number, start, "messages_empty")
                continue
            seen_roles = []
            for i, m in enumerate(messages):
                if not isinstance(m, dict):
                    error(number, start, "message_not_object")
                    seen_roles.append(None)
                    continue
                role = m.get(role_key)
                if role is None:
                    error(number, start, "role_missing")
                elif not isinstance(role, str) or role not in roles:
                    error(number, start, "unknown_role")
                    role = None
                content = m.get(content_key)
                if content is None:
                    error(number, start, "content_missing")
                elif not isinstance(content, str):
                    error(number, start, "content_not_string")
                elif not content.strip():
                    error(number, start, "content_empty")
                if "weight" in m:
                    if role in ASSISTANT:
                        if m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                            error(number, start, "invalid_weight")
                    else:
                        warnings += 1
                for key in m:
                    if key not in (role_key, content_key, "weight"):
                        warnings += 1
                seen_roles.append(role)
            for i, role in enumerate(seen_roles):
                if i > 0 and role == "system":
                    error(number, start, "system_not_first")
                if i > 0 and role is not None and role != "system" and role == seen_roles[i - 1]:
                    error(number, start, "consecutive_same_role")
            if None not in seen_roles:
                if not any(r in ASSISTANT for r in seen_roles):
                    error(number, start, "no_assistant_turn")
                elif seen_roles[-1] not in ASSISTANT:
                    error(number, start, "last_turn_not_assistant")
                if not any(r in USER for r in seen_roles):
                    warnings += 1
            if errors != line_errors:
                continue
            conversations += 1
            pairs += sum(1 for m in messages if m[role_key] in ASSISTANT and m.get("weight", 1) != 0)
            if not structural:
                n = 0
                for m in messages:
                    t = count(m[content_key])
                    n += t + OVERHEAD
                    if m[role_key] in ASSISTANT:
                        assistant_tokens += t
                tokens_total += n
                per_conversation.append(n)
    per_conversation.sort()

    def rank(p):
        if not per_conversation:
            return 0
        return per_conversation[max(1, -(-p * len(per_conversation) // 100)) - 1]

    print(json.dumps({
        "bytes": offset, "errors": errors, "warnings": warnings, "conversations": conversations,
        "pairs": pairs,
        "tokens": None if structural else {
            "total": tokens_total, "assistant": assistant_tokens,
            "p50": rank(50), "p95": rank(95), "max": per_conversation[-1] if per_conversation else 0,
        },
    }))


if __name__ == "__main__":
    main()
