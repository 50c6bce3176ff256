//! Paging: every page of a list through `@odata.nextLink` (only ever on the Graph origin
//! the client was configured with).

use std::collections::HashSet;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::debug;
use url::Url;

use super::{GraphClient, Progress, parse_json};
use crate::error::{GraphError, url_without_query};

#[derive(Deserialize)]
struct Page<T> {
    value: Option<Vec<T>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

impl GraphClient {
    /// `path_and_query` may also be an absolute URL on the Graph host.
    /// Generic paging: `GET {graph}/v1.0{path_and_query}` and every
    /// `@odata.nextLink` after it; `progress(count so far)` after each page.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<T>, GraphError> {
        let url = if path_and_query.starts_with("http://") || path_and_query.starts_with("https://")
        {
            let u = Url::parse(path_and_query).map_err(|e| GraphError::Config {
                field: "path_and_query",
                problem: format!("is not a valid URL: {e}"),
            })?;
            self.check_origin(&u, "the URL")?;
            u
        } else {
            self.v1_url(path_and_query)?
        };
        Ok(self.get_pages(url, progress, &[]).await?.0)
    }

    /// `GET {graph}/v1.0{path_and_query}` of a single object (no paging).
    pub async fn get_one<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<T, GraphError> {
        let url = self.v1_url(path_and_query)?;
        let resp = self.graph_request(Method::GET, &url, None).await?;
        parse_json(&url, &resp.body)
    }

    pub(super) async fn get_pages<T: DeserializeOwned>(
        &self,
        start: Url,
        progress: Progress<'_>,
        headers: &[(&'static str, &'static str)],
    ) -> Result<(Vec<T>, Option<String>), GraphError> {
        let mut items: Vec<T> = Vec::new();
        let link = self
            .for_each_page(start, headers, |page: Vec<T>| {
                items.extend(page);
                progress(items.len());
                std::future::ready(())
            })
            .await?;
        Ok((items, link))
    }

    /// Reads every page from `start`, handing each page's objects to `each` as it
    /// arrives (so that work on a page can start while later pages load) and asking for
    /// the next once what `each` returns is done (a reader that waits for room); returns
    /// the `@odata.deltaLink` of the last page, if any.
    pub(super) async fn for_each_page<T: DeserializeOwned, F: std::future::Future<Output = ()>>(
        &self,
        start: Url,
        headers: &[(&'static str, &'static str)],
        mut each: impl FnMut(Vec<T>) -> F,
    ) -> Result<Option<String>, GraphError> {
        let mut url = start;
        let mut seen: HashSet<String> = HashSet::new();
        seen.insert(url.to_string());
        let mut pages = 0usize;
        loop {
            let resp = self
                .graph_request_with(Method::GET, &url, None, headers)
                .await?;
            let page: Page<T> = parse_json(&url, &resp.body)?;
            let value = page.value.ok_or_else(|| GraphError::Malformed {
                url: url_without_query(&url),
                detail: "the page has no \"value\" array".into(),
            })?;
            pages += 1;
            debug!(url = %url_without_query(&url), page = pages, items = value.len(), "page read");
            each(value).await;
            match page.next_link {
                Some(next) => {
                    let next_url = url.join(&next).map_err(|e| GraphError::Malformed {
                        url: url_without_query(&url),
                        detail: format!("@odata.nextLink is not a valid URL: {e}"),
                    })?;
                    self.check_origin(&next_url, "@odata.nextLink")?;
                    if !seen.insert(next_url.to_string()) {
                        return Err(GraphError::Malformed {
                            url: url_without_query(&url),
                            detail: "@odata.nextLink repeats an earlier page (paging loop)".into(),
                        });
                    }
                    url = next_url;
                }
                None => return Ok(page.delta_link),
            }
        }
    }
}
