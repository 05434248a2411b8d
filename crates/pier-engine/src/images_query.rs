//! Image queries the APIs share beyond the image store's own: filtered listings (Docker's
//! `dangling`, `reference` with `*` wildcards, `label`, `before`, `since`) with each
//! image's labels, and an image's layer directories.

use std::collections::BTreeMap;

use pier_api::types::ImageSummary;
use pier_api::ProjectName;
use pier_image::ImageError;

use crate::filters::{self, Filters};
use crate::{Engine, EngineError, EngineResult, RequestContext};

/// The filter keys of an image listing.
pub const IMAGE_FILTERS: &[&str] = &["dangling", "reference", "label", "before", "since"];

/// Does a `reference` filter (`name`, `name:tag`, with `*` wildcards) match a tag?
pub fn reference_matches(tag: &str, pattern: &str) -> bool {
    fn glob(s: &str, p: &str) -> bool {
        match p.split_once('*') {
            None => s == p,
            Some((head, rest)) => {
                s.starts_with(head)
                    && (0..=s.len() - head.len()).any(|i| {
                        s.is_char_boundary(head.len() + i) && glob(&s[head.len() + i..], rest)
                    })
            }
        }
    }
    let name = tag.rsplit_once(':').map_or(tag, |(n, _)| n);
    glob(tag, pattern) || glob(name, pattern)
}

/// The labels of an image's OCI config.
pub fn labels_of(config: &serde_json::Value) -> BTreeMap<String, String> {
    pier_api::docker::container::image_labels(&config["config"])
}

/// Whether an image passes the filters that need no other record; `before` and `since`
/// are creation times.
fn image_matches(
    f: &Filters,
    i: &ImageSummary,
    before: Option<&String>,
    since: Option<&String>,
) -> bool {
    let dangling = i.repo_tags.is_empty();
    if filters::flag(f, "dangling").is_some_and(|want| want != dangling) {
        return false;
    }
    if let Some(pats) = f.get("reference") {
        if !pats
            .iter()
            .any(|p| i.repo_tags.iter().any(|t| reference_matches(t, p)))
        {
            return false;
        }
    }
    !(before.is_some_and(|b| i.created.as_ref().is_none_or(|c| c >= b))
        || since.is_some_and(|s| i.created.as_ref().is_none_or(|c| c <= s)))
}

impl Engine {
    /// The creation time of the image a reference names; a miss is "No such image".
    fn image_created(&self, project: &ProjectName, r: &str) -> EngineResult<Option<String>> {
        match self.images.resolve(project, r) {
            Ok(rec) => Ok(rec.created),
            Err(ImageError::NotFound { .. } | ImageError::InvalidReference(_)) => {
                Err(EngineError::NotFound(format!(
                    "No such image: {}",
                    pier_api::docker::normalize_ref(r)
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The images of a listing under Docker's filters, each with its labels.
    pub fn list_images(
        &self,
        ctx: &RequestContext,
        f: &Filters,
    ) -> EngineResult<Vec<(ImageSummary, BTreeMap<String, String>)>> {
        let project = ctx.project();
        let images = self.images.list(project)?;
        let first = |k: &str| f.get(k).and_then(|v| v.first());
        let before = first("before")
            .map(|r| self.image_created(project, r))
            .transpose()?
            .flatten();
        let since = first("since")
            .map(|r| self.image_created(project, r))
            .transpose()?
            .flatten();
        let mut out = Vec::new();
        for i in images {
            if !image_matches(f, &i, before.as_ref(), since.as_ref()) {
                continue;
            }
            let labels = self
                .images
                .resolve(project, i.id.as_str())
                .and_then(|r| self.images.config(&r))
                .map(|c| labels_of(&c))
                .unwrap_or_default();
            if !filters::labels(f, &labels) {
                continue;
            }
            out.push((i, labels));
        }
        Ok(out)
    }

    /// An image's layer directories, top first.
    pub fn image_lower_dirs(&self, rec: &pier_image::store::ImageRecord) -> Vec<String> {
        rec.layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(&l.diff_id).display().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_with_wildcards_on_tag_or_name() {
        assert!(reference_matches("app:1", "app"));
        assert!(reference_matches("app:1", "app:1"));
        assert!(reference_matches("app:1", "a*"));
        assert!(reference_matches("reg/app:1", "*/app:*"));
        assert!(!reference_matches("app:1", "app:2"));
        assert!(!reference_matches("app:1", "b*"));
        assert!(reference_matches("bb:latest", "bb:latest"));
        assert!(reference_matches("my/app:1", "my/*"));
        assert!(!reference_matches("bb:latest", "bb:1"));
    }

    #[test]
    fn images_pass_dangling_reference_and_time_filters() {
        let i: ImageSummary = serde_json::from_value(serde_json::json!({
            "id": format!("sha256:{}", "a".repeat(64)), "project": "default",
            "repo_tags": ["app:1"], "manifest_digest": format!("sha256:{}", "b".repeat(64)),
            "created": "2024-01-02T00:00:00Z", "size": 1, "containers": 0,
        }))
        .unwrap();
        let f = |s: &str| filters::parse(s).unwrap();
        assert!(image_matches(&f("{}"), &i, None, None));
        assert!(!image_matches(
            &f(r#"{"dangling":["true"]}"#),
            &i,
            None,
            None
        ));
        assert!(image_matches(
            &f(r#"{"dangling":["false"]}"#),
            &i,
            None,
            None
        ));
        assert!(image_matches(
            &f(r#"{"reference":["app"]}"#),
            &i,
            None,
            None
        ));
        assert!(!image_matches(
            &f(r#"{"reference":["other"]}"#),
            &i,
            None,
            None
        ));
        let (early, late) = (
            "2024-01-01T00:00:00Z".to_string(),
            "2024-01-03T00:00:00Z".to_string(),
        );
        assert!(image_matches(&f("{}"), &i, Some(&late), Some(&early)));
        assert!(!image_matches(&f("{}"), &i, Some(&early), None));
        assert!(!image_matches(&f("{}"), &i, None, Some(&late)));
        let cfg = serde_json::json!({"config": {"Labels": {"k": "v", "n": 1}}});
        assert_eq!(
            labels_of(&cfg),
            BTreeMap::from([("k".to_string(), "v".to_string())])
        );
    }
}
