//! Finding the effect of an earlier attempt in list endpoints, newest first, with a bounded
//! number of pages. (Not the search API: its index lags writes.)

use crate::client::{Call, GitHubClient};
use crate::error::Result;
use serde::de::DeserializeOwned;

impl GitHubClient {
    /// Walks a list sorted newest first and returns the first item `matches` accepts; stops at
    /// the first item `too_old` rejects.
    pub(crate) async fn find_newest_first<W: DeserializeOwned>(
        &self,
        call: impl Fn() -> Call,
        too_old: impl Fn(&W) -> bool,
        matches: impl Fn(&W) -> bool,
    ) -> Result<Option<W>> {
        let per_page = self.inner.page_size;
        let mut page = 1;
        for _ in 0..self.inner.lookup_max_pages {
            let listed = self.page::<W>(call(), per_page, page).await?;
            let next = listed.next(page);
            for item in listed.items {
                if too_old(&item) {
                    return Ok(None);
                }
                if matches(&item) {
                    return Ok(Some(item));
                }
            }
            match next {
                Some(next) => page = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// For lists GitHub only returns oldest first (comments, reviews): reads page 1 to learn
    /// the last page from `Link`, then walks from the last page backwards, so the newest items
    /// are seen first. Returns the newest item `matches` accepts.
    pub(crate) async fn find_newest_in_oldest_first<W: DeserializeOwned>(
        &self,
        call: impl Fn() -> Call,
        matches: impl Fn(&W) -> bool,
    ) -> Result<Option<W>> {
        let per_page = self.inner.page_size;
        let first = self.page::<W>(call(), per_page, 1).await?;
        let mut budget = self.inner.lookup_max_pages.saturating_sub(1);
        if first.links.present {
            let last = first.links.last.unwrap_or(1);
            let mut page = last;
            while page >= 2 && budget > 0 {
                budget -= 1;
                let listed = self.page::<W>(call(), per_page, page).await?;
                if let Some(hit) = listed.items.into_iter().rev().find(&matches) {
                    return Ok(Some(hit));
                }
                page -= 1;
            }
            return Ok(first.items.into_iter().rev().find(&matches));
        }
        // No `link` header (not GitHub's behaviour): scan forwards, keep the newest match.
        let mut next = first.next(1);
        let mut newest = first.items.into_iter().rev().find(&matches);
        while let Some(page) = next
            && budget > 0
        {
            budget -= 1;
            let listed = self.page::<W>(call(), per_page, page).await?;
            next = listed.next(page);
            if let Some(hit) = listed.items.into_iter().rev().find(&matches) {
                newest = Some(hit);
            }
        }
        Ok(newest)
    }
}
