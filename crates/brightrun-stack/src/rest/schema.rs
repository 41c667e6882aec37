//! The schema cache: what `/rest/v1` may name. Every identifier a request uses (table, column,
//! function, argument) is looked up here before it reaches SQL, as PostgREST does.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::PgPool;

/// Tables, views and functions of schema `public`, read from the catalog in one query.
#[derive(Debug, Default)]
pub struct Schema {
    pub tables: HashMap<String, Table>,
    /// Overloads share a name.
    pub functions: HashMap<String, Vec<Function>>,
    /// `ALTER ROLE ... SET name = value` of each role (user-settable settings only), applied when
    /// a request impersonates it, as PostgREST does: Supabase gives `anon` a 3 s and
    /// `authenticated` an 8 s `statement_timeout` this way.
    pub role_settings: HashMap<String, Vec<(String, String)>>,
    /// Foreign keys between tables of `public`, for resource embedding.
    pub relationships: Vec<Relationship>,
}

/// A foreign key `table(columns) references foreign_table(foreign_columns)`.
#[derive(Debug, Clone, Deserialize)]
pub struct Relationship {
    pub constraint: String,
    pub table: String,
    pub columns: Vec<String>,
    pub foreign_table: String,
    pub foreign_columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary-key columns in key order (empty for views and key-less tables).
    pub pk: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    /// `format_type(atttypid, null)`: a type name from the catalog, safe to use in a cast.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The column default as SQL from the catalog (`pg_get_expr`), or `nextval(...)` for identity
    /// columns; used for `Prefer: missing=default`.
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Function {
    pub name: String,
    /// Every argument in declaration order, including OUT/TABLE ones (see [`Param::is_input`]).
    pub args: Vec<Param>,
    /// How many trailing input arguments have defaults.
    pub n_defaults: usize,
    /// `format_type` of the return type.
    pub ret_type: String,
    /// `pg_type.typtype` of the return type: `c` composite, `p` pseudo (void, record), ...
    pub ret_kind: String,
    /// Columns of a composite return type (a table's row type or a `create type`), if any.
    pub ret_columns: Option<Vec<Column>>,
    pub set: bool,
    /// `provolatile`: `v`, `s` or `i`.
    pub volatility: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Param {
    /// Empty for an unnamed argument.
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `proargmodes`: `i`, `o`, `b` (inout), `v` (variadic), `t` (table column).
    pub mode: String,
}

impl Param {
    pub fn is_input(&self) -> bool {
        matches!(self.mode.as_str(), "i" | "b" | "v")
    }
}

/// What a function returns, as far as the response shape is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnShape {
    Void,
    Scalar,
    Composite,
    SetOfScalar,
    SetOfComposite,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

impl Function {
    pub fn inputs(&self) -> impl Iterator<Item = &Param> {
        self.args.iter().filter(|a| a.is_input())
    }

    /// Columns of each result row: a composite type's attributes, or the OUT/TABLE arguments.
    pub fn result_columns(&self) -> Vec<Column> {
        if let Some(columns) = &self.ret_columns {
            return columns.clone();
        }
        self.args
            .iter()
            .filter(|a| matches!(a.mode.as_str(), "o" | "b" | "t"))
            .map(|a| Column {
                name: a.name.clone(),
                type_name: a.type_name.clone(),
                default: None,
            })
            .collect()
    }

    pub fn shape(&self) -> ReturnShape {
        let composite = self.ret_kind == "c"
            || self.ret_columns.is_some()
            || (self.ret_type == "record" && !self.result_columns().is_empty());
        match (self.set, composite) {
            (_, _) if self.ret_type == "void" => ReturnShape::Void,
            (true, true) => ReturnShape::SetOfComposite,
            (true, false) => ReturnShape::SetOfScalar,
            (false, true) => ReturnShape::Composite,
            (false, false) => ReturnShape::Scalar,
        }
    }

    pub fn is_volatile(&self) -> bool {
        self.volatility == "v"
    }
}

#[derive(Deserialize)]
struct Catalog {
    tables: Vec<Table>,
    functions: Vec<Function>,
    role_settings: Vec<RoleSetting>,
    relationships: Vec<Relationship>,
}

#[derive(Deserialize)]
struct RoleSetting {
    role: String,
    name: String,
    value: String,
}

/// One round trip: everything as JSON built by PostgreSQL.
const CATALOG_SQL: &str = r#"
with cols as (
  select a.attrelid,
         json_agg(json_build_object(
           'name', a.attname,
           'type', format_type(a.atttypid, null),
           'default', case
             when a.attgenerated <> '' then null
             when a.attidentity <> '' then
               format('nextval(%L::regclass)', pg_get_serial_sequence(a.attrelid::regclass::text, a.attname))
             else pg_get_expr(d.adbin, d.adrelid) end,
           'generated', a.attgenerated <> '') order by a.attnum) as columns
  from pg_attribute a
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
  where a.attnum > 0 and not a.attisdropped
    and a.attrelid in (
      select c.oid from pg_class c
      where c.relnamespace = 'public'::regnamespace
         or c.oid in (select t.typrelid from pg_proc p join pg_type t on t.oid = p.prorettype
                      where p.pronamespace = 'public'::regnamespace))
  group by a.attrelid
)
select json_build_object(
  'tables', coalesce((
    select json_agg(json_build_object(
      'name', c.relname,
      'columns', coalesce(cols.columns, '[]'),
      'pk', coalesce((
        select json_agg(a.attname order by array_position(i.indkey::int2[], a.attnum))
        from pg_index i
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[])
        where i.indrelid = c.oid and i.indisprimary), '[]')))
    from pg_class c
    left join cols on cols.attrelid = c.oid
    where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'v', 'm', 'f', 'p')
      and c.relname <> '_sqlx_migrations'), '[]'),
  'relationships', coalesce((
    select json_agg(json_build_object(
      'constraint', c.conname,
      'table', t.relname,
      'columns', (select json_agg(a.attname order by k.i)
                  from unnest(c.conkey) with ordinality as k(n, i)
                  join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n),
      'foreign_table', f.relname,
      'foreign_columns', (select json_agg(a.attname order by k.i)
                          from unnest(c.confkey) with ordinality as k(n, i)
                          join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n)))
    from pg_constraint c
    join pg_class t on t.oid = c.conrelid
    join pg_class f on f.oid = c.confrelid
    where c.contype = 'f'
      and t.relnamespace = 'public'::regnamespace
      and f.relnamespace = 'public'::regnamespace), '[]'),
  'role_settings', coalesce((
    select json_agg(json_build_object(
      'role', r.rolname,
      'name', split_part(cfg, '=', 1),
      'value', substr(cfg, strpos(cfg, '=') + 1)) order by s.setdatabase)
    from pg_db_role_setting s
    join pg_roles r on r.oid = s.setrole
    cross join unnest(s.setconfig) as cfg
    where s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
      and (strpos(split_part(cfg, '=', 1), '.') > 0
           or exists (select from pg_settings p where p.name = split_part(cfg, '=', 1) and p.context = 'user'))), '[]'),
  'functions', coalesce((
    select json_agg(json_build_object(
      'name', p.proname,
      'args', coalesce((
        select json_agg(json_build_object(
          'name', coalesce(p.proargnames[u.i], ''),
          'type', format_type(u.t, null),
          'mode', coalesce(p.proargmodes[u.i]::text, 'i')) order by u.i)
        from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality as u(t, i)), '[]'),
      'n_defaults', p.pronargdefaults,
      'ret_type', format_type(p.prorettype, null),
      'ret_kind', rt.typtype,
      'ret_columns', case when rt.typrelid <> 0 then (select columns from cols where attrelid = rt.typrelid) end,
      'set', p.proretset,
      'volatility', p.provolatile))
    from pg_proc p
    join pg_type rt on rt.oid = p.prorettype
    where p.pronamespace = 'public'::regnamespace and p.prokind = 'f'), '[]')
)::text
"#;

impl Schema {
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let text: String = sqlx::query_scalar(CATALOG_SQL)
            .persistent(false)
            .fetch_one(pool)
            .await?;
        let catalog: Catalog =
            serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let mut functions: HashMap<String, Vec<Function>> = HashMap::new();
        for function in catalog.functions {
            functions
                .entry(function.name.clone())
                .or_default()
                .push(function);
        }
        let mut role_settings: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for setting in catalog.role_settings {
            let settings = role_settings.entry(setting.role).or_default();
            // Database-specific settings come last and replace global ones.
            settings.retain(|(name, _)| name != &setting.name);
            settings.push((setting.name, setting.value));
        }
        Ok(Self {
            role_settings,
            relationships: catalog.relationships,
            tables: catalog
                .tables
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
            functions,
        })
    }
}
