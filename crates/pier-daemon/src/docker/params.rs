//! Docker's query strings ([`pier_api::docker::query`]), with `filters` as JSON, either
//! `{"key": ["v"]}` or the older `{"key": {"v": true}}` (read and matched by
//! [`pier_engine::filters`]).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub use pier_engine::filters::{
    self, label_matches, name_matches, parse_time, parse_time_nanos, Filters,
};

use super::DockerError;

/// The decoded query of a request.
#[derive(Debug, Default, Clone)]
pub struct Params(pier_api::docker::query::Query);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

impl std::ops::Deref for Params {
    type Target = pier_api::docker::query::Query;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Params {
    pub fn parse(query: &str) -> Params {
        Params(pier_api::docker::query::Query::parse(query))
    }

    /// A number, absent when not given or empty.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, DockerError> {
        Ok(self.0.num(key)?)
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<Filters, DockerError> {
        match self.nonempty("filters") {
            None => Ok(Filters::new()),
            Some(f) => Ok(filters::parse(f)?),
        }
    }
}

/// Checks that only known filter keys are used, as Docker does.
pub fn check_filters(f: &Filters, known: &[&str]) -> Result<(), DockerError> {
    Ok(filters::check(f, known)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_come_as_json() {
        let p = Params::parse("filters=%7B%22label%22%3A%5B%22a%22%5D%7D&t=x");
        assert_eq!(p.filters().unwrap()["label"], vec!["a"]);
        assert!(Params::parse("filters=x").filters().is_err());
        assert_eq!(p.num::<u64>("t").unwrap_err().status.as_u16(), 400);
    }
}
