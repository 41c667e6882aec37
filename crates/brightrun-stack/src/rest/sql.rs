//! SQL generation. Identifiers come only from the schema cache and are always quoted; cast
//! targets pass [`super::query::parse_cast`]; every value from the request is a bound parameter,
//! sent as text and cast to the column's type in SQL (`$1::text::integer`), so bad input fails in
//! PostgreSQL with `22P02` as it does in PostgREST.
//!
//! Every statement returns one row `(total int8, page int8, body text, inserted int8)`: the exact
//! count when asked for, the number of rows in this response, the JSON PostgreSQL built, and for
//! merge-duplicates upserts how many rows were inserted rather than updated.
//!
//! Resource embedding (`select=*,rel(*)`) becomes correlated subqueries over the foreign keys in
//! the schema cache, so RLS applies to embedded rows exactly as to top-level ones.

use std::fmt::Write as _;

use std::cell::Cell;
use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::json;

use super::error::ApiError;
use super::query::{
    Condition, Embed, EmbedParams, Field, Filter, IsValue, Nulls, Op, Operand, OrderTerm,
    SelectItem,
};
use super::schema::{Column, Relationship, Schema, Table};

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    TextArray(Vec<String>),
    Int(i64),
}

/// SQL text and its parameters, in placeholder order.
#[derive(Debug, Default)]
pub struct Statement {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl Statement {
    /// Adds a parameter and returns its placeholder.
    pub fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }
}

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"public"."name"`.
pub fn qualified(name: &str) -> String {
    format!("\"public\".{}", ident(name))
}

/// The catalog's type name as a cast target. `format_type(oid, null)` drops the type modifier,
/// which is what we want (`character varying`, not `character varying(255)`), except that bare
/// `character` would mean `character(1)` and truncate: use `bpchar` for it.
pub fn cast_type(type_name: &str) -> &str {
    match type_name {
        "character" => "bpchar",
        "character[]" => "bpchar[]",
        other => other,
    }
}

/// The rows a statement reads from, with the columns it may name.
#[derive(Debug, Clone, Copy)]
pub struct Relation<'a> {
    /// How errors name it (`t` in "column t.x does not exist").
    pub name: &'a str,
    /// The SQL alias columns are qualified with.
    pub alias: &'a str,
    pub columns: &'a [Column],
    /// Spell `*` out as the known columns (when the source carries extra bookkeeping columns).
    pub expand_star: bool,
    /// Foreign keys and `rel.*` parameters, for `select=...,rel(...)`; `None` where embedding
    /// has no meaning.
    pub embedding: Option<&'a Embedding<'a>>,
}

/// What resource embedding needs: the foreign keys, the embedded resources' own parameters, and
/// a counter for unique aliases.
#[derive(Debug)]
pub struct Embedding<'a> {
    schema: &'a Schema,
    params: &'a HashMap<Vec<String>, EmbedParams>,
    next_alias: Cell<usize>,
}

/// How an embedded table relates to its parent.
struct Join<'a> {
    target: &'a Table,
    relationship: &'a Relationship,
    /// The parent holds the foreign key: at most one row, embedded as an object.
    to_one: bool,
}

impl<'a> Embedding<'a> {
    pub fn new(schema: &'a Schema, params: &'a HashMap<Vec<String>, EmbedParams>) -> Self {
        Self {
            schema,
            params,
            next_alias: Cell::new(0),
        }
    }

    fn alias(&self) -> usize {
        let n = self.next_alias.get() + 1;
        self.next_alias.set(n);
        n
    }

    /// PostgREST's relationship search: a foreign key from the parent to the target (to-one) or
    /// from the target to the parent (to-many), narrowed by `!hint` (constraint or column name).
    /// The target may also be named by the parent's foreign-key column.
    fn resolve(&self, parent: &str, embed: &Embed) -> Result<Join<'a>, ApiError> {
        let schema = self.schema;
        let hint_matches = |r: &Relationship| match &embed.hint {
            None => true,
            Some(hint) => &r.constraint == hint || r.columns.iter().any(|c| c == hint),
        };
        let mut joins: Vec<Join<'a>> = Vec::new();
        if let Some(target) = schema.tables.get(&embed.target) {
            for r in schema.relationships.iter().filter(|r| hint_matches(r)) {
                if r.table == parent && r.foreign_table == target.name {
                    joins.push(Join {
                        target,
                        relationship: r,
                        to_one: true,
                    });
                }
                if r.foreign_table == parent && r.table == target.name {
                    joins.push(Join {
                        target,
                        relationship: r,
                        to_one: false,
                    });
                }
            }
        } else {
            for r in &schema.relationships {
                if r.table == parent
                    && r.columns == [embed.target.clone()]
                    && let Some(target) = schema.tables.get(&r.foreign_table)
                {
                    joins.push(Join {
                        target,
                        relationship: r,
                        to_one: true,
                    });
                }
            }
        }
        match joins.len() {
            1 => Ok(joins.remove(0)),
            0 => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "PGRST200",
                format!(
                    "Could not find a relationship between '{parent}' and '{}' in the schema cache",
                    embed.target
                ),
            )
            .details(format!(
                "Searched for a foreign key relationship between '{parent}' and '{}' in the schema 'public', but no matches were found.",
                embed.target
            ))),
            _ => {
                let options = joins
                    .iter()
                    .map(|j| format!("'{}!{}'", embed.target, j.relationship.constraint))
                    .collect::<Vec<_>>()
                    .join(", ");
                let details = joins
                    .iter()
                    .map(|j| {
                        let r = j.relationship;
                        json!({
                            "cardinality": if j.to_one { "many-to-one" } else { "one-to-many" },
                            "embedding": format!("{parent} with {}", j.target.name),
                            "relationship": format!(
                                "{} using {}({}) and {}({})",
                                r.constraint,
                                r.table,
                                r.columns.join(", "),
                                r.foreign_table,
                                r.foreign_columns.join(", ")
                            ),
                        })
                    })
                    .collect::<Vec<_>>();
                let mut error = ApiError::new(
                    StatusCode::MULTIPLE_CHOICES,
                    "PGRST201",
                    format!(
                        "Could not embed because more than one relationship was found for '{parent}' and '{}'",
                        embed.target
                    ),
                )
                .hint(format!(
                    "Try changing '{}' to one of the following: {options}. Find the desired relationship in the 'details' key.",
                    embed.target
                ));
                error.details = Some(Box::new(serde_json::Value::Array(details)));
                Err(error)
            }
        }
    }
}

impl Relation<'_> {
    fn star(&self) -> String {
        if !self.expand_star {
            return format!("{}.*", ident(self.alias));
        }
        let alias = ident(self.alias);
        self.columns
            .iter()
            .map(|c| format!("{alias}.{}", ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn column(&self, name: &str) -> Result<&Column, ApiError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ApiError::unknown_column(self.name, name))
    }

    /// A column with its JSON path, and the type of the result (`text` after `->>`).
    fn field(&self, field: &Field, stmt: &mut Statement) -> Result<(String, String), ApiError> {
        let column = self.column(&field.name)?;
        let mut expr = format!("{}.{}", ident(self.alias), ident(&column.name));
        let mut type_name = cast_type(&column.type_name).to_owned();
        for step in &field.path {
            let key = match step.key.parse::<i64>() {
                Ok(index) => format!("{}::int4", stmt.bind(Bind::Int(index))),
                Err(_) => format!("{}::text", stmt.bind(Bind::Text(step.key.clone()))),
            };
            let arrow = if step.as_text { "->>" } else { "->" };
            expr = format!("({expr}{arrow}{key})");
            if step.as_text {
                type_name = "text".into();
            }
        }
        Ok((expr, type_name))
    }

    /// The `select` list; `None` means `*`. Also returns the conditions `!inner` embeds put on
    /// this relation's rows.
    pub fn select_list(
        &self,
        items: Option<&[SelectItem]>,
        stmt: &mut Statement,
    ) -> Result<(String, Vec<String>), ApiError> {
        self.select_list_at(items, stmt, &[])
    }

    fn select_list_at(
        &self,
        items: Option<&[SelectItem]>,
        stmt: &mut Statement,
        path: &[String],
    ) -> Result<(String, Vec<String>), ApiError> {
        let Some(items) = items.filter(|i| !i.is_empty()) else {
            return Ok((self.star(), Vec::new()));
        };
        let mut out = Vec::with_capacity(items.len());
        let mut inner = Vec::new();
        for item in items {
            match item {
                SelectItem::Star => out.push(self.star()),
                SelectItem::Embed(embed) => {
                    let (expr, condition) = self.embed(embed, path, stmt)?;
                    out.push(expr);
                    inner.extend(condition);
                }
                SelectItem::Field { field, alias, cast } => {
                    let (mut expr, _) = self.field(field, stmt)?;
                    if let Some(cast) = cast {
                        // `cast` passed the strict type-name grammar (words and `[]` only).
                        expr = format!("({expr})::{cast}");
                    }
                    let name = alias.as_deref().unwrap_or_else(|| field.output_name());
                    out.push(format!("{expr} as {}", ident(name)));
                }
            }
        }
        Ok((out.join(", "), inner))
    }

    /// One embedded resource as a correlated subquery: an object (to-one) or an array
    /// (to-many), plus the `exists (...)` an `!inner` embed puts on the parent.
    fn embed(
        &self,
        embed: &Embed,
        path: &[String],
        stmt: &mut Statement,
    ) -> Result<(String, Option<String>), ApiError> {
        let no_embedding = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PGRST200",
                format!(
                    "Could not find a relationship between '{}' and '{}' in the schema cache",
                    self.name, embed.target
                ),
            )
        };
        let embedding = self.embedding.ok_or_else(no_embedding)?;
        let join = embedding.resolve(self.name, embed)?;
        let n = embedding.alias();
        let alias = format!("pgrst_{n}");
        let child = Relation {
            name: &join.target.name,
            alias: &alias,
            columns: &join.target.columns,
            expand_star: false,
            embedding: Some(embedding),
        };
        let mut path = path.to_vec();
        path.push(embed.name().to_owned());
        let select = (!embed.select.is_empty()).then_some(embed.select.as_slice());
        let (list, inner) = child.select_list_at(select, stmt, &path)?;
        let r = join.relationship;
        let (child_columns, parent_columns) = if join.to_one {
            (&r.foreign_columns, &r.columns)
        } else {
            (&r.columns, &r.foreign_columns)
        };
        let mut conditions: Vec<String> = child_columns
            .iter()
            .zip(parent_columns)
            .map(|(c, p)| {
                format!(
                    "{}.{} = {}.{}",
                    ident(&alias),
                    ident(c),
                    ident(self.alias),
                    ident(p)
                )
            })
            .collect();
        conditions.extend(inner);
        let params = embedding.params.get(&path);
        let mut tail = String::new();
        if let Some(params) = params {
            for condition in &params.conditions {
                conditions.push(child.condition(condition, stmt)?);
            }
            if !join.to_one {
                tail.push_str(&child.order_clause(&params.order, stmt)?);
                if let Some(limit) = params.limit {
                    let p = stmt.bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
                    let _ = write!(tail, " limit {p}::int8");
                }
                if let Some(offset) = params.offset {
                    let p = stmt.bind(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
                    let _ = write!(tail, " offset {p}::int8");
                }
            }
        }
        let from = format!("{} as {}", qualified(&join.target.name), ident(&alias));
        let filter = conditions.join(" and ");
        let expr = if join.to_one {
            format!(
                "(select row_to_json(pgrst_e{n}) from (select {list} from {from} where {filter}) pgrst_e{n})"
            )
        } else {
            format!(
                "coalesce((select json_agg(pgrst_e{n}) from (select {list} from {from} where {filter}{tail}) pgrst_e{n}), '[]')"
            )
        };
        let exists = embed
            .inner
            .then(|| format!("exists (select 1 from {from} where {filter})"));
        Ok((format!("{expr} as {}", ident(embed.name())), exists))
    }

    /// ` where ...` for the conditions (empty string when there are none).
    pub fn where_clause(
        &self,
        conditions: &[Condition],
        stmt: &mut Statement,
    ) -> Result<String, ApiError> {
        if conditions.is_empty() {
            return Ok(String::new());
        }
        let parts = conditions
            .iter()
            .map(|c| self.condition(c, stmt))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!(" where {}", parts.join(" and ")))
    }

    fn condition(&self, condition: &Condition, stmt: &mut Statement) -> Result<String, ApiError> {
        match condition {
            Condition::Filter(filter) => self.filter(filter, stmt),
            Condition::Logic {
                negate,
                and,
                children,
            } => {
                let parts = children
                    .iter()
                    .map(|c| self.condition(c, stmt))
                    .collect::<Result<Vec<_>, _>>()?;
                let joined = format!("({})", parts.join(if *and { " and " } else { " or " }));
                Ok(if *negate {
                    format!("not {joined}")
                } else {
                    joined
                })
            }
        }
    }

    fn filter(&self, filter: &Filter, stmt: &mut Statement) -> Result<String, ApiError> {
        let (expr, type_name) = self.field(&filter.field, stmt)?;
        let typed = |stmt: &mut Statement, value: &str| {
            format!(
                "{}::text::{type_name}",
                stmt.bind(Bind::Text(value.to_owned()))
            )
        };
        let sql = match (&filter.op, &filter.operand) {
            (Op::Is, Operand::Is(v)) => {
                let test = match v {
                    IsValue::Null => "is null",
                    IsValue::NotNull => "is not null",
                    IsValue::True => "is true",
                    IsValue::False => "is false",
                    IsValue::Unknown => "is unknown",
                };
                format!("{expr} {test}")
            }
            (Op::In, Operand::List(items)) => {
                let p = stmt.bind(Bind::TextArray(items.clone()));
                format!("{expr} = any({p}::text[]::{type_name}[])")
            }
            (Op::Like | Op::Ilike, Operand::Value(v)) => {
                let p = stmt.bind(Bind::Text(v.replace('*', "%")));
                let op = if filter.op == Op::Like {
                    "like"
                } else {
                    "ilike"
                };
                format!("{expr} {op} {p}::text")
            }
            (Op::Match | Op::Imatch, Operand::Value(v)) => {
                let p = stmt.bind(Bind::Text(v.clone()));
                let op = if filter.op == Op::Match { "~" } else { "~*" };
                format!("{expr} {op} {p}::text")
            }
            (op, Operand::Value(v)) => {
                let sql_op = match op {
                    Op::Eq => "=",
                    Op::Neq => "<>",
                    Op::Gt => ">",
                    Op::Gte => ">=",
                    Op::Lt => "<",
                    Op::Lte => "<=",
                    Op::IsDistinct => "is distinct from",
                    Op::Contains => "@>",
                    Op::ContainedIn => "<@",
                    Op::Overlaps => "&&",
                    _ => {
                        return Err(ApiError::parse(
                            "filter",
                            &filter.field.name,
                            "operator and value do not match",
                        ));
                    }
                };
                format!("{expr} {sql_op} {}", typed(stmt, v))
            }
            _ => {
                return Err(ApiError::parse(
                    "filter",
                    &filter.field.name,
                    "operator and value do not match",
                ));
            }
        };
        Ok(if filter.negate {
            format!("not ({sql})")
        } else {
            sql
        })
    }

    /// ` order by ...` (empty string when there is no order).
    pub fn order_clause(
        &self,
        terms: &[OrderTerm],
        stmt: &mut Statement,
    ) -> Result<String, ApiError> {
        if terms.is_empty() {
            return Ok(String::new());
        }
        let mut out = Vec::with_capacity(terms.len());
        for term in terms {
            let (expr, _) = self.field(&term.field, stmt)?;
            let mut s = format!("{expr} {}", if term.desc { "desc" } else { "asc" });
            match term.nulls {
                Some(Nulls::First) => s.push_str(" nulls first"),
                Some(Nulls::Last) => s.push_str(" nulls last"),
                None => {}
            }
            out.push(s);
        }
        Ok(format!(" order by {}", out.join(", ")))
    }
}

/// A paged read over `from` (a table, or an RPC's `pgrst_call` CTE).
pub struct Read<'a> {
    pub rel: Relation<'a>,
    /// `with ...` prefix (RPC arguments and call), or empty.
    pub with: String,
    /// The FROM item, e.g. `"public"."t" "t"`.
    pub from: String,
    pub select: Option<&'a [SelectItem]>,
    pub conditions: &'a [Condition],
    pub order: &'a [OrderTerm],
    pub limit: Option<u64>,
    pub offset: u64,
    pub count: bool,
    /// For a set of scalars: aggregate this column of each row instead of the row.
    pub scalar_column: Option<&'a str>,
}

impl Read<'_> {
    pub fn build(self, mut stmt: Statement) -> Result<Statement, ApiError> {
        let (list, inner) = match self.scalar_column {
            Some(column) => (
                format!("{}.{}", ident(self.rel.alias), ident(column)),
                Vec::new(),
            ),
            None => self.rel.select_list(self.select, &mut stmt)?,
        };
        let mut conditions = self.rel.where_clause(self.conditions, &mut stmt)?;
        for exists in inner {
            conditions.push_str(if conditions.is_empty() {
                " where "
            } else {
                " and "
            });
            conditions.push_str(&exists);
        }
        let order = self.rel.order_clause(self.order, &mut stmt)?;
        let total = if self.count {
            format!("(select count(*) from {}{conditions})", self.from)
        } else {
            "null::int8".to_owned()
        };
        let mut page = String::new();
        if let Some(limit) = self.limit {
            let p = stmt.bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
            let _ = write!(page, " limit {p}::int8");
        }
        if self.offset > 0 {
            let p = stmt.bind(Bind::Int(i64::try_from(self.offset).unwrap_or(i64::MAX)));
            let _ = write!(page, " offset {p}::int8");
        }
        let agg = match self.scalar_column {
            Some(column) => format!("json_agg(pgrst_r.{})", ident(column)),
            None => "json_agg(pgrst_r)".to_owned(),
        };
        stmt.sql = format!(
            "{with}select {total}, count(*)::int8, coalesce({agg}, '[]')::text, null::int8 \
             from (select {list} from {from}{conditions}{order}{page}) pgrst_r",
            with = self.with,
            from = self.from,
        );
        Ok(stmt)
    }
}

/// What a write returns (`Prefer: return=...`).
pub enum Returning<'a> {
    /// Nothing but the row count.
    Count,
    /// The rows (after RLS SELECT), shaped by `select=`.
    Rows(Option<&'a [SelectItem]>),
    /// The primary-key columns, for `Location`.
    Columns(&'a [String]),
}

/// Wraps a data-modifying statement (`insert ... returning`, ...) in the CTE `pgrst_source` and
/// aggregates what it returned. `mutation` must end right before its `returning`.
pub fn wrap_mutation(
    mut stmt: Statement,
    mutation: &str,
    rel: Relation<'_>,
    returning: Returning<'_>,
    options: MutationOptions,
) -> Result<Statement, ApiError> {
    let source = Relation {
        alias: "pgrst_source",
        expand_star: options.track_inserts,
        ..rel
    };
    let alias = ident(rel.alias);
    let (mut ret, list) = match returning {
        Returning::Count => ("1".to_owned(), None),
        Returning::Rows(select) => (
            format!("{alias}.*"),
            // `!inner` has no meaning for the rows a write returned.
            Some(source.select_list(select, &mut stmt)?.0),
        ),
        Returning::Columns(columns) => {
            let cols = columns
                .iter()
                .map(|c| format!("{alias}.{}", ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let list = columns
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            (cols, Some(list))
        }
    };
    // An upsert's row was inserted, not updated, when it has no xmax.
    let inserted = if options.track_inserts {
        ret.push_str(&format!(", ({alias}.xmax = 0) as pgrst_inserted"));
        "(select count(*) from pgrst_source where pgrst_inserted)::int8"
    } else {
        "null::int8"
    };
    let total = if options.count {
        "count(*)::int8"
    } else {
        "null::int8"
    };
    stmt.sql = match list {
        None => format!(
            "with pgrst_source as ({mutation} returning {ret}) \
             select {total}, count(*)::int8, null::text, {inserted} from pgrst_source"
        ),
        Some(list) => format!(
            "with pgrst_source as ({mutation} returning {ret}) \
             select {total}, count(*)::int8, coalesce(json_agg(pgrst_r), '[]')::text, {inserted} \
             from (select {list} from pgrst_source) pgrst_r"
        ),
    };
    Ok(stmt)
}

/// How [`wrap_mutation`] reports on the rows it changed.
#[derive(Debug, Clone, Copy, Default)]
pub struct MutationOptions {
    /// `Prefer: count=...`: report the number of rows as the total.
    pub count: bool,
    /// Upserts: count the rows that were inserted rather than updated.
    pub track_inserts: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::query;

    fn columns() -> Vec<Column> {
        ["id", "title", "data"]
            .iter()
            .zip(["bigint", "text", "jsonb"])
            .map(|(name, type_name)| Column {
                name: (*name).into(),
                type_name: type_name.into(),
                default: None,
            })
            .collect()
    }

    fn build(pairs: &[(&str, &str)]) -> Result<Statement, ApiError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let q = query::parse(&pairs, &|_| false)?;
        let columns = columns();
        let rel = Relation {
            name: "t",
            alias: "t",
            columns: &columns,
            expand_star: false,
            embedding: None,
        };
        Read {
            rel,
            with: String::new(),
            from: format!("{} {}", qualified("t"), ident("t")),
            select: q.select.as_deref(),
            conditions: &q.conditions,
            order: &q.order,
            limit: Some(10),
            offset: 0,
            count: true,
            scalar_column: None,
        }
        .build(Statement::default())
    }

    #[test]
    fn values_and_json_keys_are_bound_never_spliced() {
        let hostile = "x'); drop table t; --";
        let stmt = build(&[
            ("select", "title,data->>k"),
            ("title", &format!("eq.{hostile}")),
            (
                "or",
                &format!("(title.like.\"*{hostile}*\",id.in.(1,\"{hostile}\"))"),
            ),
            ("data->>drop table t", "eq.1"),
        ])
        .expect("builds");
        assert!(
            !stmt.sql.contains("drop table"),
            "no value reaches SQL text: {}",
            stmt.sql
        );
        assert!(
            stmt.binds.contains(&Bind::Text(hostile.to_owned())),
            "the value is a parameter: {:?}",
            stmt.binds
        );
        assert!(
            stmt.sql.contains("\"t\".\"title\" = $") && stmt.sql.contains("::text::text"),
            "filters cast a text parameter to the column type: {}",
            stmt.sql
        );
        assert!(
            stmt.sql.contains("= any($"),
            "in uses an array parameter: {}",
            stmt.sql
        );
    }

    #[test]
    fn identifiers_must_be_known_columns() {
        for (key, value) in [
            ("select", "nope"),
            ("select", "title;drop table t;--"),
            ("order", "nope.desc"),
            ("nope", "eq.1"),
            ("or", "(nope.eq.1)"),
        ] {
            let err = build(&[(key, value)]).expect_err("unknown column");
            assert_eq!(
                err.code, "42703",
                "{key}={value} names an unknown column: {err:?}"
            );
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("t"), "\"public\".\"t\"");
        assert_eq!(
            cast_type("character"),
            "bpchar",
            "bare character would truncate to one char"
        );
    }
}
