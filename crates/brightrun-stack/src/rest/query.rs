//! The query-string grammar of PostgREST (`url_grammar.rst`, `tables_views.rst`): `select=`,
//! horizontal filters, `or=`/`and=` trees, `order=`, `limit=`/`offset=`, `columns=`,
//! `on_conflict=`, embedded resources (`rel(...)`) and their `rel.*` parameters. Parsing only:
//! names are checked against the schema cache when SQL is built.

use std::collections::HashMap;

use super::error::ApiError;

/// A column, optionally followed by a JSON path (`data->a->>b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub path: Vec<JsonStep>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    /// `->>` (text) rather than `->` (json).
    pub as_text: bool,
    pub key: String,
}

impl Field {
    /// The key PostgREST gives this field in the output: the last JSON key, else the column.
    pub fn output_name(&self) -> &str {
        self.path.last().map_or(&self.name, |s| &s.key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    Star,
    /// `[alias:]table[!hint][!inner](select...)`: rows of a table related by a foreign key.
    Embed(Embed),
    Field {
        field: Field,
        alias: Option<String>,
        cast: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    pub alias: Option<String>,
    /// The related table (or the foreign-key column that points to it).
    pub target: String,
    /// `!constraint_or_column`: which foreign key, when there are several.
    pub hint: Option<String>,
    /// `!inner`: keep only parent rows that have a matching embedded row.
    pub inner: bool,
    pub select: Vec<SelectItem>,
}

impl Embed {
    /// The key in the output and in `rel.col=...` parameters.
    pub fn name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.target)
    }
}

/// Filters, order and page of one embedded resource.
#[derive(Debug, Clone, Default)]
pub struct EmbedParams {
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    Is,
    IsDistinct,
    In,
    Contains,
    ContainedIn,
    Overlaps,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "like" => Self::Like,
            "ilike" => Self::Ilike,
            "match" => Self::Match,
            "imatch" => Self::Imatch,
            "is" => Self::Is,
            "isdistinct" => Self::IsDistinct,
            "in" => Self::In,
            "cs" => Self::Contains,
            "cd" => Self::ContainedIn,
            "ov" => Self::Overlaps,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Value(String),
    List(Vec<String>),
    Is(IsValue),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: Field,
    pub negate: bool,
    pub op: Op,
    pub operand: Operand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Filter(Filter),
    Logic {
        negate: bool,
        and: bool,
        children: Vec<Condition>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    pub field: Field,
    pub desc: bool,
    pub nulls: Option<Nulls>,
}

/// Everything a request's query string says.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pub select: Option<Vec<SelectItem>>,
    /// `rel.col=eq.1`, `rel.order=...`, `rel.limit=...`: parameters of embedded resources, keyed
    /// by the path of embed names (alias or table) from the top.
    pub embedded: HashMap<Vec<String>, EmbedParams>,
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub columns: Option<Vec<String>>,
    pub on_conflict: Option<Vec<String>>,
    /// Plain `key=value` pairs, kept for `GET /rpc/fn?arg=value` (arguments are decided once the
    /// function is known; the rest are filters).
    pub raw: Vec<(String, String)>,
}

/// Parses a decoded query string. For RPC GETs, `is_arg` says which keys are function arguments
/// (those are kept in `raw` and not parsed as filters).
pub fn parse(
    pairs: &[(String, String)],
    is_arg: &dyn Fn(&str) -> bool,
) -> Result<QueryParams, ApiError> {
    let mut q = QueryParams::default();
    for (key, value) in pairs {
        match key.as_str() {
            "select" => q.select = Some(parse_select(value)?),
            "order" => q.order = parse_order(value)?,
            "limit" => q.limit = Some(parse_count("limit", value)?),
            "offset" => q.offset = Some(parse_count("offset", value)?),
            "columns" => q.columns = Some(parse_name_list("columns", value)?),
            "on_conflict" => q.on_conflict = Some(parse_name_list("on_conflict", value)?),
            // The gateway's key, when a client passes it in the URL.
            "apikey" => {}
            "or" | "and" | "not.or" | "not.and" => {
                let negate = key.starts_with("not.");
                let and = key.ends_with("and");
                let children = parse_logic_body(key, value)?;
                q.conditions.push(Condition::Logic {
                    negate,
                    and,
                    children,
                });
            }
            _ if is_arg(key) => q.raw.push((key.clone(), value.clone())),
            _ if embed_key(key).is_some() => {
                let (path, last) = embed_key(key).unwrap_or_default();
                let params = q.embedded.entry(path).or_default();
                match last {
                    "order" => params.order = parse_order(value)?,
                    "limit" => params.limit = Some(parse_count("limit", value)?),
                    "offset" => params.offset = Some(parse_count("offset", value)?),
                    "or" | "and" | "not.or" | "not.and" => {
                        let children = parse_logic_body(last, value)?;
                        params.conditions.push(Condition::Logic {
                            negate: last.starts_with("not."),
                            and: last.ends_with("and"),
                            children,
                        });
                    }
                    column => {
                        let field = parse_field(column)
                            .ok_or_else(|| ApiError::parse("filter", key, "invalid column name"))?;
                        let (negate, op, operand) = parse_top_filter_value(value)?;
                        params.conditions.push(Condition::Filter(Filter {
                            field,
                            negate,
                            op,
                            operand,
                        }));
                    }
                }
            }
            _ => {
                let field = parse_field(key)
                    .ok_or_else(|| ApiError::parse("filter", key, "invalid column name"))?;
                let (negate, op, operand) = parse_top_filter_value(value)?;
                q.conditions.push(Condition::Filter(Filter {
                    field,
                    negate,
                    op,
                    operand,
                }));
            }
        }
    }
    Ok(q)
}

fn parse_count(what: &str, value: &str) -> Result<u64, ApiError> {
    value.trim().parse::<u64>().map_err(|_| {
        ApiError::parse(
            &format!("{what} parameter"),
            value,
            "expecting a non-negative integer",
        )
    })
}

/// `a,b` or `"a","b"` (what postgrest-js sends for `columns=`).
fn parse_name_list(what: &str, value: &str) -> Result<Vec<String>, ApiError> {
    split_top_level(value, ',')
        .map_err(|e| ApiError::parse(what, value, e))?
        .into_iter()
        .map(|item| {
            let item = item.trim();
            let name = unquote_ident(item);
            if name.is_empty() {
                Err(ApiError::parse(what, value, "empty column name"))
            } else {
                Ok(name)
            }
        })
        .collect()
}

fn unquote_ident(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\"\"", "\"")
    } else {
        s.to_owned()
    }
}

/// Splits at `sep` outside double quotes and brackets.
fn split_top_level(s: &str, sep: char) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '(' | '{' | '[' if !quoted => {
                depth += 1;
                current.push(c);
            }
            ')' | '}' | ']' if !quoted => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unexpected \"{c}\""));
                }
                current.push(c);
            }
            c if c == sep && !quoted && depth == 0 => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        return Err("unterminated double quote".into());
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    out.push(current);
    Ok(out)
}

/// `col`, `col->a->>b`, `"my col"`.
pub fn parse_field(s: &str) -> Option<Field> {
    let s = s.trim();
    let (name, mut rest) = match s.find("->") {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let name = unquote_ident(name.trim());
    if name.is_empty() || name.contains(['(', ')', ',', ':']) {
        return None;
    }
    let mut path = Vec::new();
    while !rest.is_empty() {
        let (as_text, after) = if let Some(r) = rest.strip_prefix("->>") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("->") {
            (false, r)
        } else {
            return None;
        };
        let end = after.find("->").unwrap_or(after.len());
        let key = unquote_ident(&after[..end]);
        if key.is_empty() {
            return None;
        }
        path.push(JsonStep { as_text, key });
        rest = &after[end..];
    }
    Some(Field { name, path })
}

pub fn parse_select(value: &str) -> Result<Vec<SelectItem>, ApiError> {
    let fail = |details: &str| ApiError::parse("select parameter", value, details.to_owned());
    let items = split_top_level(value, ',').map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    for item in items {
        let item: String = item.chars().filter(|c| !c.is_whitespace()).collect();
        if item.is_empty() {
            if value.trim().is_empty() {
                continue;
            }
            return Err(fail("empty select item"));
        }
        if item == "*" {
            out.push(SelectItem::Star);
            continue;
        }
        if item.contains('(') {
            out.push(SelectItem::Embed(parse_embed(&item).map_err(|e| fail(&e))?));
            continue;
        }
        let (rest, cast) = match item.split_once("::") {
            Some((rest, cast)) => (
                rest,
                Some(parse_cast(cast).ok_or_else(|| fail("invalid cast type"))?),
            ),
            None => (item.as_str(), None),
        };
        let (alias, field) = match rest.split_once(':') {
            Some((alias, field)) => (Some(unquote_ident(alias)), field),
            None => (None, rest),
        };
        if alias.as_deref() == Some("") {
            return Err(fail("empty alias"));
        }
        let field = parse_field(field).ok_or_else(|| fail("invalid column name"))?;
        out.push(SelectItem::Field { field, alias, cast });
    }
    Ok(out)
}

/// `[alias:]target[!hint][!inner](inner select)`.
fn parse_embed(item: &str) -> Result<Embed, String> {
    let open = item.find('(').ok_or("expecting \"(\"")?;
    let inner = item[open + 1..]
        .strip_suffix(')')
        .ok_or("expecting \")\" at the end of an embedded resource")?;
    let head = &item[..open];
    let (alias, head) = match head.split_once(':') {
        Some((alias, rest)) => (Some(unquote_ident(alias)), rest),
        None => (None, head),
    };
    let mut parts = head.split('!');
    let target = unquote_ident(parts.next().unwrap_or(""));
    if target.is_empty() || target.contains(['.', '-', '>']) || alias.as_deref() == Some("") {
        return Err(format!("invalid embedded resource \"{head}\""));
    }
    let mut hint = None;
    let mut inner_join = false;
    for part in parts {
        match part {
            "inner" => inner_join = true,
            "left" => inner_join = false,
            "" => return Err("empty hint after \"!\"".into()),
            other if hint.is_none() => hint = Some(unquote_ident(other)),
            other => return Err(format!("unexpected hint \"{other}\"")),
        }
    }
    let select = if inner.trim().is_empty() {
        Vec::new()
    } else {
        parse_select(inner).map_err(|e| e.message)?
    };
    Ok(Embed {
        alias,
        target,
        hint,
        inner: inner_join,
        select,
    })
}

/// `rel.col` / `a.b.order` → (`[rel]`, `col`) / (`[a, b]`, `order`): a query key that addresses
/// an embedded resource. A key whose first part carries a JSON arrow is a plain column.
fn embed_key(key: &str) -> Option<(Vec<String>, &str)> {
    let (head, last) = match key
        .strip_suffix(".not.or")
        .or_else(|| key.strip_suffix(".not.and"))
    {
        Some(head) => (head, &key[head.len() + 1..]),
        None => key.rsplit_once('.')?,
    };
    if head.is_empty() || head.contains("->") || last.is_empty() {
        return None;
    }
    Some((head.split('.').map(str::to_owned).collect(), last))
}

/// A cast target: lowercase words of `[a-z0-9_]` separated by single spaces, optionally followed
/// by `[]`. Nothing else can reach SQL, so a cast cannot carry SQL of its own.
pub fn parse_cast(cast: &str) -> Option<String> {
    let cast = cast.trim().to_ascii_lowercase();
    let base = cast.strip_suffix("[]").unwrap_or(&cast);
    let valid = !base.is_empty()
        && base.len() <= 63
        && base.split(' ').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !word.starts_with(|c: char| c.is_ascii_digit())
        });
    valid.then_some(cast)
}

pub fn parse_order(value: &str) -> Result<Vec<OrderTerm>, ApiError> {
    let fail = |details: String| ApiError::parse("order", value, details);
    let mut out = Vec::new();
    for term in split_top_level(value, ',').map_err(fail)? {
        let mut parts = term.trim().split('.');
        let field = parts
            .next()
            .and_then(parse_field)
            .ok_or_else(|| fail("expecting a column name".into()))?;
        let mut desc = false;
        let mut nulls = None;
        let mut seen_direction = false;
        for part in parts {
            match part {
                "asc" | "desc" if !seen_direction && nulls.is_none() => {
                    desc = part == "desc";
                    seen_direction = true;
                }
                "nullsfirst" if nulls.is_none() => nulls = Some(Nulls::First),
                "nullslast" if nulls.is_none() => nulls = Some(Nulls::Last),
                other => {
                    return Err(fail(format!(
                        "unexpected \"{other}\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\""
                    )));
                }
            }
        }
        out.push(OrderTerm { field, desc, nulls });
    }
    Ok(out)
}

/// `[not.]op.value` of a top-level filter: the value is everything after `op.`, taken literally
/// (except `in.(...)` lists and `is.` keywords).
fn parse_top_filter_value(value: &str) -> Result<(bool, Op, Operand), ApiError> {
    let fail = |details: &str| ApiError::parse("filter", value, details.to_owned());
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (op_name, operand) = rest
        .split_once('.')
        .ok_or_else(|| fail("expecting an operator and a value, e.g. eq.1"))?;
    let op = Op::parse(op_name).ok_or_else(|| fail(&format!("unknown operator \"{op_name}\"")))?;
    let operand = parse_operand(op, operand).map_err(|e| fail(&e))?;
    Ok((negate, op, operand))
}

fn parse_operand(op: Op, raw: &str) -> Result<Operand, String> {
    match op {
        Op::Is => {
            let v = match raw.to_ascii_lowercase().as_str() {
                "null" => IsValue::Null,
                "not_null" => IsValue::NotNull,
                "true" => IsValue::True,
                "false" => IsValue::False,
                "unknown" => IsValue::Unknown,
                _ => return Err("is expects null, not_null, true, false or unknown".into()),
            };
            Ok(Operand::Is(v))
        }
        Op::In => {
            let inner = raw
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| "in expects a parenthesised list, e.g. in.(1,2)".to_owned())?;
            Ok(Operand::List(parse_in_list(inner)?))
        }
        _ => Ok(Operand::Value(raw.to_owned())),
    }
}

/// The inside of `in.(a,"b,c",d)`: quoted items take `\"` and `\\` escapes.
fn parse_in_list(inner: &str) -> Result<Vec<String>, String> {
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or("dangling escape")?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err("unterminated double quote".into()),
                }
            }
            match chars.next() {
                None => {
                    out.push(item);
                    return Ok(out);
                }
                Some(',') => out.push(item),
                Some(c) => return Err(format!("unexpected \"{c}\" after a quoted value")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(item);
                        return Ok(out);
                    }
                    Some(',') => {
                        out.push(std::mem::take(&mut item));
                        break;
                    }
                    Some(c) => item.push(c),
                }
            }
        }
    }
}

/// The value of `or=`/`and=`: `(a.eq.1,b.gt.2,and(c.is.null,not.or(d.lt.0,e.eq.x)))`.
fn parse_logic_body(key: &str, value: &str) -> Result<Vec<Condition>, ApiError> {
    let input = format!("{key}{value}");
    let mut p = LogicParser {
        s: value.as_bytes(),
        text: value,
        pos: 0,
    };
    let children = p.group().and_then(|c| {
        if p.pos == p.s.len() {
            Ok(c)
        } else {
            Err(p.unexpected())
        }
    });
    children.map_err(|details| {
        let mut e = ApiError::parse("logic tree", &input, details);
        e.message = format!(
            "\"failed to parse logic tree ({input})\" (line 1, column {})",
            key.len() + p.pos + 1
        );
        e
    })
}

struct LogicParser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl LogicParser<'_> {
    fn unexpected(&self) -> String {
        match self.text[self.pos..].chars().next() {
            Some(c) => format!("unexpected \"{c}\""),
            None => "unexpected end of input".into(),
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `( item (, item)* )`
    fn group(&mut self) -> Result<Vec<Condition>, String> {
        if !self.eat(b'(') {
            return Err(format!("{} expecting \"(\"", self.unexpected()));
        }
        let mut items = vec![self.item()?];
        loop {
            if self.eat(b',') {
                items.push(self.item()?);
            } else if self.eat(b')') {
                return Ok(items);
            } else {
                return Err(format!("{} expecting \",\" or \")\"", self.unexpected()));
            }
        }
    }

    fn item(&mut self) -> Result<Condition, String> {
        let rest = &self.text[self.pos..];
        for (prefix, negate, and) in [
            ("not.and(", true, true),
            ("not.or(", true, false),
            ("and(", false, true),
            ("or(", false, false),
        ] {
            if rest.starts_with(prefix) {
                self.pos += prefix.len() - 1;
                let children = self.group()?;
                return Ok(Condition::Logic {
                    negate,
                    and,
                    children,
                });
            }
        }
        // field . [not.] op . value
        let field_end = rest
            .find('.')
            .ok_or_else(|| "expecting \".\" after a column name".to_owned())?;
        let field = parse_field(&rest[..field_end])
            .ok_or_else(|| format!("invalid column name \"{}\"", &rest[..field_end]))?;
        self.pos += field_end + 1;
        let mut negate = false;
        if self.text[self.pos..].starts_with("not.") {
            negate = true;
            self.pos += 4;
        }
        let rest = &self.text[self.pos..];
        let op_end = rest
            .find('.')
            .ok_or_else(|| "expecting an operator and a value".to_owned())?;
        let op = Op::parse(&rest[..op_end])
            .ok_or_else(|| format!("unknown operator \"{}\"", &rest[..op_end]))?;
        self.pos += op_end + 1;
        let raw = self.value(op)?;
        let operand = match (op, raw) {
            (Op::In, RawValue::List(items)) => Operand::List(items),
            (Op::In, RawValue::Plain(_)) => {
                return Err("in expects a parenthesised list, e.g. in.(1,2)".into());
            }
            (op, RawValue::Plain(v)) => parse_operand(op, &v)?,
            (_, RawValue::List(_)) => return Err("a list is only valid after in".into()),
        };
        Ok(Condition::Filter(Filter {
            field,
            negate,
            op,
            operand,
        }))
    }

    fn value(&mut self, op: Op) -> Result<RawValue, String> {
        let rest = &self.text[self.pos..];
        if op == Op::In {
            if !rest.starts_with('(') {
                return Err("in expects a parenthesised list, e.g. in.(1,2)".into());
            }
            let end = closing(rest, b'(', b')').ok_or("unterminated list")?;
            self.pos += end + 1;
            return parse_in_list(&rest[1..end]).map(RawValue::List);
        }
        if rest.starts_with('"') {
            let mut out = String::new();
            let mut chars = rest.char_indices().skip(1);
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        let (_, next) = chars.next().ok_or("dangling escape")?;
                        out.push(next);
                    }
                    '"' => {
                        self.pos += i + 1;
                        return Ok(RawValue::Plain(out));
                    }
                    c => out.push(c),
                }
            }
            return Err("unterminated double quote".into());
        }
        if rest.starts_with('{') {
            let end = closing(rest, b'{', b'}').ok_or("unterminated braces")?;
            self.pos += end + 1;
            return Ok(RawValue::Plain(rest[..=end].to_owned()));
        }
        let end = rest.find([',', ')']).unwrap_or(rest.len());
        self.pos += end;
        Ok(RawValue::Plain(rest[..end].to_owned()))
    }
}

enum RawValue {
    Plain(String),
    List(Vec<String>),
}

/// Index of the bracket closing the one at `s[0]`, skipping double-quoted parts.
fn closing(s: &str, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0;
    let mut quoted = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                quoted = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str) -> Field {
        Field {
            name: name.into(),
            path: vec![],
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn select_items_alias_cast_and_json_paths() {
        let items = parse_select("id, label:title,amount::text,data->a->>b,*").expect("parses");
        assert_eq!(
            items[0],
            SelectItem::Field {
                field: field("id"),
                alias: None,
                cast: None
            }
        );
        assert_eq!(
            items[1],
            SelectItem::Field {
                field: field("title"),
                alias: Some("label".into()),
                cast: None
            }
        );
        assert_eq!(
            items[2],
            SelectItem::Field {
                field: field("amount"),
                alias: None,
                cast: Some("text".into())
            }
        );
        let SelectItem::Field { field: json, .. } = &items[3] else {
            panic!("json path item")
        };
        assert_eq!(
            json.output_name(),
            "b",
            "a JSON path is named after its last key"
        );
        assert_eq!(items[4], SelectItem::Star);
    }

    #[test]
    fn casts_accept_only_type_names() {
        assert_eq!(
            parse_cast("double precision").as_deref(),
            Some("double precision")
        );
        assert_eq!(parse_cast("INT4[]").as_deref(), Some("int4[]"));
        for bad in [
            "text; drop table x",
            "text)--",
            "\"text\"",
            "",
            "1abc",
            "text  x",
            "varchar(10)",
        ] {
            assert!(parse_cast(bad).is_none(), "cast {bad:?} must be refused");
        }
    }

    #[test]
    fn filters_take_the_rest_of_the_value_literally() {
        let q = parse(
            &pairs(&[
                ("title", "eq.a.b.c"),
                ("n", "not.in.(1,\"2,3\",\"x\\\"y\")"),
                ("d", "is.NULL"),
            ]),
            &|_| false,
        )
        .expect("parses");
        assert_eq!(
            q.conditions[0],
            Condition::Filter(Filter {
                field: field("title"),
                negate: false,
                op: Op::Eq,
                operand: Operand::Value("a.b.c".into())
            })
        );
        assert_eq!(
            q.conditions[1],
            Condition::Filter(Filter {
                field: field("n"),
                negate: true,
                op: Op::In,
                operand: Operand::List(vec!["1".into(), "2,3".into(), "x\"y".into()])
            })
        );
        assert!(matches!(
            &q.conditions[2],
            Condition::Filter(Filter {
                operand: Operand::Is(IsValue::Null),
                ..
            })
        ));
    }

    #[test]
    fn logic_trees_nest() {
        let q = parse(
            &pairs(&[(
                "or",
                "(a.eq.1,and(b.gt.2,c.not.is.null),d.in.(x,\"y,z\"),e.eq.\"p,q\")",
            )]),
            &|_| false,
        )
        .expect("parses");
        let Condition::Logic {
            negate: false,
            and: false,
            children,
        } = &q.conditions[0]
        else {
            panic!("or tree")
        };
        assert_eq!(children.len(), 4, "four members in {children:?}");
        let Condition::Logic {
            and: true,
            children: inner,
            ..
        } = &children[1]
        else {
            panic!("nested and")
        };
        assert!(matches!(
            &inner[1],
            Condition::Filter(Filter {
                negate: true,
                op: Op::Is,
                ..
            })
        ));
        assert!(
            matches!(&children[2], Condition::Filter(Filter { operand: Operand::List(l), .. }) if l == &["x", "y,z"])
        );
        assert!(
            matches!(&children[3], Condition::Filter(Filter { operand: Operand::Value(v), .. }) if v == "p,q")
        );
    }

    #[test]
    fn malformed_input_is_pgrst100() {
        for (k, v) in [
            ("a", "eq"),
            ("a", "nope.1"),
            ("or", "(a.eq.1"),
            ("or", "a.eq.1"),
            ("order", "a.sideways"),
            ("limit", "-1"),
        ] {
            let err = parse(&pairs(&[(k, v)]), &|_| false).expect_err("must fail");
            assert_eq!(err.code, "PGRST100", "{k}={v} gives PGRST100, got {err:?}");
        }
    }

    #[test]
    fn embeds_and_their_parameters() {
        let items =
            parse_select("id,owner:users!owner_fk!inner(name,pets(*)),tags()").expect("parses");
        let SelectItem::Embed(owner) = &items[1] else {
            panic!("embed expected: {items:?}")
        };
        assert_eq!(owner.name(), "owner");
        assert_eq!(owner.target, "users");
        assert_eq!(owner.hint.as_deref(), Some("owner_fk"));
        assert!(owner.inner, "!inner is read");
        assert!(
            matches!(&owner.select[1], SelectItem::Embed(pets) if pets.target == "pets"),
            "embeds nest: {owner:?}"
        );
        let q = parse(
            &pairs(&[
                ("owner.name", "eq.x"),
                ("owner.pets.order", "name.desc"),
                ("owner.limit", "3"),
                ("owner.not.or", "(a.eq.1,b.eq.2)"),
                ("data->>a.b", "eq.1"),
            ]),
            &|_| false,
        )
        .expect("parses");
        let owner = &q.embedded[&vec!["owner".to_owned()]];
        assert_eq!(
            owner.conditions.len(),
            2,
            "a filter and a negated or: {owner:?}"
        );
        assert_eq!(owner.limit, Some(3));
        let pets = &q.embedded[&vec!["owner".to_owned(), "pets".to_owned()]];
        assert!(pets.order[0].desc, "nested order is kept per path");
        assert_eq!(
            q.conditions.len(),
            1,
            "a JSON path with a dot stays a top-level filter"
        );
        for bad in ["x(", "x(a))", ":x(a)", "x!(a)", "x!a!b(c)"] {
            assert!(parse_select(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn order_terms() {
        let terms = parse_order("a.desc.nullslast,b,c.nullsfirst").expect("parses");
        assert_eq!(
            terms[0],
            OrderTerm {
                field: field("a"),
                desc: true,
                nulls: Some(Nulls::Last)
            }
        );
        assert_eq!(
            terms[1],
            OrderTerm {
                field: field("b"),
                desc: false,
                nulls: None
            }
        );
        assert_eq!(
            terms[2],
            OrderTerm {
                field: field("c"),
                desc: false,
                nulls: Some(Nulls::First)
            }
        );
    }
}
