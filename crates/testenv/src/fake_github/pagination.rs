//! Query parameters and GitHub's page-based pagination with `link` headers.

use serde_json::Value;

pub(crate) const DEFAULT_PER_PAGE: usize = 30;
pub(crate) const MAX_PER_PAGE: usize = 100;

/// The decoded query string, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: &str) -> Self {
        Query {
            pairs: url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The first value of `name`, if present and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `per_page` (default 30, at most 100) and `page` (from 1), as GitHub reads them: values
    /// that are not positive numbers fall back to the defaults.
    fn page_request(&self) -> (usize, usize) {
        let number = |name| {
            self.get(name)
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
        };
        let per_page = number("per_page")
            .unwrap_or(DEFAULT_PER_PAGE)
            .min(MAX_PER_PAGE);
        let page = number("page").unwrap_or(1);
        (per_page, page)
    }

    /// This query with `page` set to `page` (other parameters kept in order).
    fn with_page(&self, page: usize) -> String {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        let mut replaced = false;
        for (k, v) in &self.pairs {
            if k == "page" {
                if !replaced {
                    serializer.append_pair("page", &page.to_string());
                    replaced = true;
                }
            } else {
                serializer.append_pair(k, v);
            }
        }
        if !replaced {
            serializer.append_pair("page", &page.to_string());
        }
        serializer.finish()
    }
}

/// One page of `items` and the `link` header pointing at the others (absolute URLs on
/// `base_url` + `path`), `None` when everything fits on one page.
pub(crate) fn paginate(
    items: Vec<Value>,
    query: &Query,
    base_url: &str,
    path: &str,
) -> (Vec<Value>, Option<String>) {
    let (per_page, page) = query.page_request();
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let page_items = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    if last == 1 && page == 1 {
        return (page_items, None);
    }
    let link =
        |n: usize, rel: &str| format!("<{base_url}{path}?{}>; rel=\"{rel}\"", query.with_page(n));
    let mut links = Vec::new();
    if page > 1 {
        links.push(link((page - 1).min(last), "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    (page_items, Some(links.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numbers(n: u64) -> Vec<Value> {
        (1..=n).map(|i| json!(i)).collect()
    }

    #[test]
    fn links_follow_githubs_order_and_keep_other_parameters() {
        let query = Query::parse("state=all&per_page=2&page=2");
        let (items, link) = paginate(numbers(5), &query, "http://h", "/x");
        assert_eq!(items, vec![json!(3), json!(4)]);
        assert_eq!(
            link.as_deref(),
            Some(
                "<http://h/x?state=all&per_page=2&page=1>; rel=\"prev\", \
                 <http://h/x?state=all&per_page=2&page=3>; rel=\"next\", \
                 <http://h/x?state=all&per_page=2&page=3>; rel=\"last\", \
                 <http://h/x?state=all&per_page=2&page=1>; rel=\"first\""
            )
        );
    }

    #[test]
    fn one_page_has_no_link_and_per_page_is_capped() {
        let (items, link) = paginate(numbers(3), &Query::default(), "http://h", "/x");
        assert_eq!((items.len(), link), (3, None));
        let (items, link) = paginate(
            numbers(150),
            &Query::parse("per_page=1000"),
            "http://h",
            "/x",
        );
        assert_eq!(items.len(), 100);
        assert_eq!(
            link.as_deref(),
            Some(
                "<http://h/x?per_page=1000&page=2>; rel=\"next\", <http://h/x?per_page=1000&page=2>; rel=\"last\""
            )
        );
    }
}
