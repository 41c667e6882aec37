//! The `Prefer` request header (`preferences.rst`) and the media types a response can take.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    #[default]
    Minimal,
    HeadersOnly,
    Representation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

#[derive(Debug, Clone, Default)]
pub struct Preferences {
    /// `None` when the client did not say (the default is `minimal` for writes).
    pub return_: Option<Return>,
    /// `count=exact|planned|estimated`: all counted exactly here.
    pub count: Option<&'static str>,
    pub resolution: Option<Resolution>,
    pub missing_default: bool,
    pub strict: bool,
    pub max_affected: Option<i64>,
    /// What goes into `Preference-Applied`.
    pub applied: Vec<String>,
}

impl Preferences {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut prefs = Self::default();
        let mut unknown = Vec::new();
        let items = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        for item in items {
            match item {
                "return=minimal" => prefs.return_ = Some(Return::Minimal),
                "return=headers-only" => prefs.return_ = Some(Return::HeadersOnly),
                "return=representation" => prefs.return_ = Some(Return::Representation),
                "count=exact" => prefs.count = Some("exact"),
                "count=planned" => prefs.count = Some("planned"),
                "count=estimated" => prefs.count = Some("estimated"),
                "resolution=merge-duplicates" => {
                    prefs.resolution = Some(Resolution::MergeDuplicates)
                }
                "resolution=ignore-duplicates" => {
                    prefs.resolution = Some(Resolution::IgnoreDuplicates)
                }
                "missing=default" => prefs.missing_default = true,
                "missing=null" => prefs.missing_default = false,
                "handling=strict" => prefs.strict = true,
                "handling=lenient" => prefs.strict = false,
                other => match other.strip_prefix("max-affected=").map(str::parse::<i64>) {
                    Some(Ok(n)) => prefs.max_affected = Some(n),
                    _ => {
                        // `tx=`, `timezone=`, `params=` ...: accepted and ignored, as PostgREST
                        // does in lenient mode.
                        unknown.push(other.to_owned());
                        continue;
                    }
                },
            }
            prefs.applied.push(item.to_owned());
        }
        if prefs.strict && !unknown.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "PGRST122",
                "Invalid preferences given with handling=strict",
            )
            .details(format!("Invalid preferences: {}", unknown.join(", "))));
        }
        Ok(prefs)
    }

    /// `Preference-Applied`, without the preferences that do not apply to this request.
    pub fn applied_header(&self, keep: impl Fn(&str) -> bool) -> Option<String> {
        let items: Vec<&str> = self
            .applied
            .iter()
            .map(String::as_str)
            .filter(|p| keep(p))
            .collect();
        (!items.is_empty()).then(|| items.join(", "))
    }
}

/// What the client accepts: an array (`application/json`) or one object
/// (`application/vnd.pgrst.object+json`, `.single()` in supabase-js).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Json,
    SingleObject,
}

impl MediaType {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(Self::Json);
        };
        let mut ranges: Vec<(f32, &str)> = accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().filter(|m| !m.is_empty())?;
                let q = parts
                    .filter_map(|p| p.strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, media))
            })
            .collect();
        if ranges.is_empty() {
            return Ok(Self::Json);
        }
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, media) in &ranges {
            match media.to_ascii_lowercase().as_str() {
                "application/json" | "*/*" | "application/*" => return Ok(Self::Json),
                "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => {
                    return Ok(Self::SingleObject);
                }
                _ => {}
            }
        }
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST107",
            format!("None of these media types are available: {accept}"),
        ))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json; charset=utf-8",
            Self::SingleObject => "application/vnd.pgrst.object+json; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn prefer_values_combine_across_headers() {
        let prefs = Preferences::from_headers(&headers(&[
            ("prefer", "return=representation, count=exact"),
            (
                "prefer",
                "resolution=merge-duplicates,missing=default,tx=commit",
            ),
        ]))
        .expect("parses");
        assert_eq!(prefs.return_, Some(Return::Representation));
        assert_eq!(prefs.count, Some("exact"));
        assert_eq!(prefs.resolution, Some(Resolution::MergeDuplicates));
        assert!(prefs.missing_default, "missing=default is read");
        assert!(
            !prefs.applied.iter().any(|p| p == "tx=commit"),
            "unknown preferences are not reported as applied"
        );
    }

    #[test]
    fn strict_handling_refuses_unknown_preferences() {
        let err =
            Preferences::from_headers(&headers(&[("prefer", "handling=strict, frobnicate=yes")]))
                .expect_err("strict");
        assert_eq!(err.code, "PGRST122");
    }

    #[test]
    fn accept_selects_the_representation() {
        assert_eq!(
            MediaType::from_headers(&headers(&[])).ok(),
            Some(MediaType::Json)
        );
        assert_eq!(
            MediaType::from_headers(&headers(&[("accept", "application/vnd.pgrst.object+json")]))
                .ok(),
            Some(MediaType::SingleObject)
        );
        let err = MediaType::from_headers(&headers(&[("accept", "text/csv")]))
            .expect_err("csv is not served");
        assert_eq!((err.status.as_u16(), err.code.as_str()), (406, "PGRST107"));
    }
}
