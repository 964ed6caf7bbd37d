//! Finding an earlier attempt's effect by its marker, newest first, in bounded pages.

use crate::common::*;
use anyhow::Result;
use ccplant_github::{Authors, CLOCK_SKEW_ALLOWANCE, NewIssue, NewPull};
use chrono::{SecondsFormat, TimeDelta};

fn issue(title: &str) -> NewIssue {
    NewIssue {
        title: title.into(),
        body: format!("about {title}"),
        ..NewIssue::default()
    }
}

fn issue_page(page: &str) -> Req {
    get(
        "/repos/octo/hello/issues",
        &[
            ("state", "all"),
            ("sort", "created"),
            ("direction", "desc"),
            ("per_page", "3"),
            ("page", page),
        ],
    )
}

#[tokio::test]
async fn find_issue_by_marker_walks_newest_first_over_three_pages_and_skips_pulls() -> Result<()> {
    let env = Env::start().await?;
    let client = env.token_builder(TOKEN).page_size(3).build()?;
    let marker = task_marker("wanted");
    let wanted = client
        .create_issue(&env.repo, &issue("wanted"), &marker)
        .await?;
    // A pull request carrying the same marker is listed by the issues endpoint too; it must
    // not be taken for the issue.
    env.push("feature", "work", now_secs());
    client
        .create_pull(
            &env.repo,
            &NewPull {
                head: "feature".into(),
                base: "main".into(),
                title: "pr".into(),
                body: String::new(),
                draft: false,
            },
            &marker,
        )
        .await?;
    for i in 0..6 {
        client
            .create_issue(
                &env.repo,
                &issue(&format!("other {i}")),
                &task_marker(&format!("other-{i}")),
            )
            .await?;
    }
    env.fake.clear_requests();

    let found = client
        .find_issue_by_marker(&env.repo, &marker, LOGIN, None)
        .await?;

    assert_eq!(found.as_ref().map(|i| i.number), Some(wanted.number));
    assert_eq!(found, Some(wanted));
    assert_eq!(
        env.requests(),
        vec![issue_page("1"), issue_page("2"), issue_page("3")]
    );
    Ok(())
}

#[tokio::test]
async fn find_issue_by_marker_stops_at_the_page_bound_and_when_nothing_matches() -> Result<()> {
    let env = Env::start().await?;
    let client = env
        .token_builder(TOKEN)
        .page_size(3)
        .lookup_max_pages(2)
        .build()?;
    let marker = task_marker("wanted");
    client
        .create_issue(&env.repo, &issue("wanted"), &marker)
        .await?;
    for i in 0..6 {
        client
            .create_issue(
                &env.repo,
                &issue(&format!("other {i}")),
                &task_marker(&format!("other-{i}")),
            )
            .await?;
    }
    env.fake.clear_requests();
    // The wanted issue is on page 3, beyond the bound of two pages.
    assert_eq!(
        client
            .find_issue_by_marker(&env.repo, &marker, LOGIN, None)
            .await?,
        None
    );
    assert_eq!(env.requests(), vec![issue_page("1"), issue_page("2")]);

    env.fake.clear_requests();
    let unbounded = env.token_builder(TOKEN).page_size(3).build()?;
    let missing = task_marker("never-written");
    assert_eq!(
        unbounded
            .find_issue_by_marker(&env.repo, &missing, LOGIN, None)
            .await?,
        None
    );
    assert_eq!(
        env.requests(),
        vec![issue_page("1"), issue_page("2"), issue_page("3")]
    );
    Ok(())
}

#[tokio::test]
async fn find_issue_by_marker_since_bounds_the_walk() -> Result<()> {
    let env = Env::start().await?;
    let client = env.token_builder(TOKEN).page_size(3).build()?;
    let marker = task_marker("wanted");
    let created = client
        .create_issue(&env.repo, &issue("wanted"), &marker)
        .await?;

    // An attempt that started (by the operator's clock) just before the issue was created.
    let attempt = now_secs() - TimeDelta::seconds(5);
    env.fake.clear_requests();
    let found = client
        .find_issue_by_marker(&env.repo, &marker, LOGIN, Some(attempt))
        .await?;
    assert_eq!(found.map(|i| i.number), Some(created.number));
    let since = (attempt - CLOCK_SKEW_ALLOWANCE).to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(
        env.requests(),
        vec![get(
            "/repos/octo/hello/issues",
            &[
                ("state", "all"),
                ("sort", "created"),
                ("direction", "desc"),
                ("since", &since),
                ("per_page", "3"),
                ("page", "1"),
            ]
        )]
    );

    // An attempt that started an hour after the issue: older issues are not this attempt's.
    let later = now_secs() + TimeDelta::hours(1);
    assert_eq!(
        client
            .find_issue_by_marker(&env.repo, &marker, LOGIN, Some(later))
            .await?,
        None
    );
    Ok(())
}

#[tokio::test]
async fn find_comment_by_marker_reads_the_last_page_first() -> Result<()> {
    let env = Env::start().await?;
    let client = env.token_builder(TOKEN).page_size(3).build()?;
    let parent = client
        .create_issue(&env.repo, &issue("parent"), &task_marker("parent"))
        .await?;
    let marker = task_marker("trigger");
    let mut ids = Vec::new();
    for i in 0..7 {
        let m = if i == 1 {
            marker.clone()
        } else {
            task_marker(&format!("c{i}"))
        };
        ids.push(
            client
                .create_comment(&env.repo, parent.number, "hi", &m)
                .await?
                .id,
        );
    }
    env.fake.clear_requests();

    let found = client
        .find_comment_by_marker(&env.repo, parent.number, &marker, LOGIN)
        .await?;

    assert_eq!(found.map(|c| c.id), Some(ids[1]));
    let page = |p: &str| {
        get(
            "/repos/octo/hello/issues/1/comments",
            &[("per_page", "3"), ("page", p)],
        )
    };
    // Page 1 tells where the end is; then newest to oldest: 3, 2, and page 1's items last.
    assert_eq!(env.requests(), vec![page("1"), page("3"), page("2")]);

    env.fake.clear_requests();
    let newest = client
        .create_comment(&env.repo, parent.number, "again", &marker)
        .await?;
    env.fake.clear_requests();
    let found = client
        .find_comment_by_marker(&env.repo, parent.number, &marker, LOGIN)
        .await?;
    assert_eq!(found.map(|c| c.id), Some(newest.id));
    assert_eq!(env.requests(), vec![page("1"), page("3")]);
    Ok(())
}

#[tokio::test]
async fn find_review_and_pull_by_marker() -> Result<()> {
    let env = Env::start().await?;
    let sha = env.push("feature", "work", now_secs());
    env.push("other", "more work", now_secs());
    let author = env.token_builder(TOKEN).page_size(3).build()?;
    let pr_marker = task_marker("open-pr");
    let pull = author
        .create_pull(
            &env.repo,
            &NewPull {
                head: "feature".into(),
                base: "main".into(),
                title: "work".into(),
                body: "body".into(),
                draft: false,
            },
            &pr_marker,
        )
        .await?;
    author
        .create_pull(
            &env.repo,
            &NewPull {
                head: "other".into(),
                base: "main".into(),
                title: "other".into(),
                body: "body".into(),
                draft: false,
            },
            &task_marker("other-pr"),
        )
        .await?;
    let reviewer = env.token_builder(REVIEWER_TOKEN).page_size(3).build()?;
    let marker = task_marker("approve");
    let wanted = reviewer
        .approve(&env.repo, pull.number, "LGTM", &sha, &marker)
        .await?;
    for i in 0..3 {
        reviewer
            .approve(
                &env.repo,
                pull.number,
                "LGTM",
                &sha,
                &task_marker(&format!("r{i}")),
            )
            .await?;
    }
    env.fake.clear_requests();

    let found = reviewer
        .find_review_by_marker(&env.repo, pull.number, &marker, REVIEWER)
        .await?;
    assert_eq!(found.map(|r| r.id), Some(wanted.id));
    let page = |p: &str| {
        get(
            "/repos/octo/hello/pulls/1/reviews",
            &[("per_page", "3"), ("page", p)],
        )
    };
    assert_eq!(env.requests(), vec![page("1"), page("2")]);
    assert_eq!(
        reviewer
            .find_review_by_marker(&env.repo, pull.number, &task_marker("none"), REVIEWER)
            .await?,
        None
    );

    env.fake.clear_requests();
    let found = author
        .find_pull_by_marker(&env.repo, &pr_marker, LOGIN, Some(now_secs()))
        .await?;
    assert_eq!(found.map(|p| p.number), Some(pull.number));
    assert_eq!(
        env.requests(),
        vec![get(
            "/repos/octo/hello/pulls",
            &[
                ("state", "all"),
                ("sort", "created"),
                ("direction", "desc"),
                ("per_page", "3"),
                ("page", "1"),
            ]
        )]
    );
    Ok(())
}

#[tokio::test]
async fn a_marker_copied_by_another_author_is_never_adopted() -> Result<()> {
    let env = Env::start().await?;
    let marker = task_marker("adopt-me");
    // Someone else copies the task's marker into an issue of their own.
    let outsider = env.token_builder(REVIEWER_TOKEN).build()?;
    outsider
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "copycat".into(),
                ..Default::default()
            },
            &marker,
        )
        .await?;
    let client = env.client()?;
    assert_eq!(
        client
            .find_issue_by_marker(&env.repo, &marker, LOGIN, None)
            .await?,
        None,
        "another author's copy is not our earlier effect"
    );
    // Our own issue with the marker is found, the copy still skipped.
    let ours = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "ours".into(),
                ..Default::default()
            },
            &marker,
        )
        .await?;
    let found = client
        .find_issue_by_marker(&env.repo, &marker, LOGIN, None)
        .await?;
    assert_eq!(found.map(|i| i.number), Some(ours.number));
    // Logins compare case-insensitively, as GitHub's do.
    let found = client
        .find_issue_by_marker(&env.repo, &marker, &LOGIN.to_uppercase(), None)
        .await?;
    assert_eq!(found.map(|i| i.number), Some(ours.number));
    Ok(())
}

#[tokio::test]
async fn newest_open_pull_picks_only_among_allowed_authors() -> Result<()> {
    let env = Env::start().await?;
    env.push("mine", "mine", now_secs());
    env.push("theirs", "theirs", now_secs());
    let me = env.token_builder(TOKEN).build()?;
    let outsider = env.token_builder(REVIEWER_TOKEN).build()?;
    let pull = |head: &str| NewPull {
        head: head.into(),
        base: "main".into(),
        title: head.into(),
        body: String::new(),
        draft: false,
    };
    me.create_pull(&env.repo, &pull("mine"), &task_marker("a"))
        .await?;
    // A newer pull request by someone else.
    outsider
        .create_pull(&env.repo, &pull("theirs"), "<!-- x -->")
        .await?;
    let pick = |authors: Authors| {
        let me = me.clone();
        let repo = env.repo.clone();
        async move {
            me.newest_open_pull(&repo, &authors)
                .await
                .map(|p| p.map(|p| p.head.ref_name))
        }
    };
    assert_eq!(
        pick(Authors::Logins(vec![LOGIN.into()])).await?,
        Some("mine".into())
    );
    assert_eq!(pick(Authors::Any).await?, Some("theirs".into()));
    assert_eq!(pick(Authors::Logins(vec!["nobody".into()])).await?, None);
    Ok(())
}

#[tokio::test]
async fn identity_is_asked_once_per_client() -> Result<()> {
    let env = Env::start().await?;
    let client = env.client()?;
    env.fake.clear_requests();
    for _ in 0..3 {
        let identity = client.identity().await?;
        assert_eq!(identity.login, LOGIN);
        assert_eq!(identity.kind, ccplant_github::IdentityKind::User);
    }
    assert_eq!(env.requests(), vec![get("/user", &[])]);
    Ok(())
}

#[tokio::test]
async fn a_closed_write_gate_sends_nothing() -> Result<()> {
    let env = Env::start().await?;
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gate = open.clone();
    let client = env
        .token_builder(TOKEN)
        .write_gate(std::sync::Arc::new(move || {
            gate.load(std::sync::atomic::Ordering::SeqCst)
        }))
        .build()?;
    let issue = NewIssue {
        title: "gated".into(),
        ..Default::default()
    };
    client
        .create_issue(&env.repo, &issue, &task_marker("g"))
        .await?;
    open.store(false, std::sync::atomic::Ordering::SeqCst);
    env.fake.clear_requests();
    let refused = client
        .create_issue(&env.repo, &issue, &task_marker("g"))
        .await;
    assert!(
        matches!(refused, Err(ccplant_github::Error::WriteRefused { .. })),
        "{refused:?}"
    );
    // Reads still go out; the write did not.
    client.repository(&env.repo).await?;
    assert_eq!(env.requests(), vec![get("/repos/octo/hello", &[])]);
    assert_eq!(env.fake.issues(OWNER, REPO).len(), 1);
    Ok(())
}

#[tokio::test]
async fn another_authors_pull_comment_and_review_with_the_marker_are_not_adopted() -> Result<()> {
    let env = Env::start().await?;
    let marker = task_marker("copied");
    env.push("theirs", "their work", now_secs());
    // Someone else's pull request, comment and review, each carrying this task's marker.
    let number = env
        .fake
        .open_pull_as(OWNER, REPO, "theirs", "main", "mallory", &marker);
    env.fake
        .comment_as(OWNER, REPO, number, "mallory", &format!("me too {marker}"));
    env.fake
        .review_as(OWNER, REPO, number, "other-app[bot]", "COMMENTED", &marker);
    let client = env.client()?;
    env.fake.clear_requests();

    assert_eq!(
        client
            .find_pull_by_marker(&env.repo, &marker, LOGIN, None)
            .await?,
        None
    );
    assert_eq!(
        client
            .find_comment_by_marker(&env.repo, number, &marker, LOGIN)
            .await?,
        None
    );
    assert_eq!(
        client
            .find_review_by_marker(&env.repo, number, &marker, LOGIN)
            .await?,
        None
    );
    // One page each, as for a lookup that finds nothing of ours.
    assert_eq!(
        env.requests(),
        vec![
            get(
                "/repos/octo/hello/pulls",
                &[
                    ("state", "all"),
                    ("sort", "created"),
                    ("direction", "desc"),
                    ("per_page", "100"),
                    ("page", "1"),
                ]
            ),
            get(
                "/repos/octo/hello/issues/1/comments",
                &[("per_page", "100"), ("page", "1")]
            ),
            get(
                "/repos/octo/hello/pulls/1/reviews",
                &[("per_page", "100"), ("page", "1")]
            ),
        ]
    );
    // The author named is the one adopted (bots included).
    let review = client
        .find_review_by_marker(&env.repo, number, &marker, "other-app[bot]")
        .await?;
    assert_eq!(
        review.and_then(|r| r.user_login),
        Some("other-app[bot]".into())
    );
    let pull = client
        .find_pull_by_marker(&env.repo, &marker, "Mallory", None)
        .await?;
    assert_eq!(pull.map(|p| p.number), Some(number));
    Ok(())
}

#[tokio::test]
async fn newest_open_pull_skips_newer_pulls_by_other_authors_on_later_pages() -> Result<()> {
    let env = Env::start().await?;
    let me = env.token_builder(TOKEN).page_size(2).build()?;
    env.push("mine", "mine", now_secs());
    me.create_pull(
        &env.repo,
        &NewPull {
            head: "mine".into(),
            base: "main".into(),
            title: "mine".into(),
            body: String::new(),
            draft: false,
        },
        &task_marker("mine"),
    )
    .await?;
    for i in 0..3 {
        let branch = format!("theirs-{i}");
        env.push(&branch, "theirs", now_secs());
        env.fake
            .open_pull_as(OWNER, REPO, &branch, "main", "mallory", "");
    }
    env.fake.clear_requests();

    let picked = me
        .newest_open_pull(&env.repo, &Authors::Logins(vec![LOGIN.into()]))
        .await?;

    assert_eq!(picked.map(|p| p.head.ref_name), Some("mine".into()));
    let page = |p: &str| {
        get(
            "/repos/octo/hello/pulls",
            &[
                ("state", "open"),
                ("sort", "created"),
                ("direction", "desc"),
                ("per_page", "2"),
                ("page", p),
            ],
        )
    };
    assert_eq!(env.requests(), vec![page("1"), page("2")]);
    Ok(())
}

#[tokio::test]
async fn the_identity_is_the_author_of_what_the_client_creates() -> Result<()> {
    let env = Env::start().await?;
    let client = env.client()?;
    let identity = client.identity().await?;
    let issue = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "mine".into(),
                ..Default::default()
            },
            &task_marker("mine"),
        )
        .await?;
    assert_eq!(issue.user_login, Some(identity.login));
    Ok(())
}
