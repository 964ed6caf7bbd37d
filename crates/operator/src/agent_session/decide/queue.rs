//! `limits.maxActiveSessionsPerNamespace` of a class (DESIGN §7.2), pure: which sessions of a
//! class in one namespace may run, and the place in line of the others. A session holds a place
//! while its pod is alive; it is never taken back (no preemption). The sessions that want to run
//! and hold none wait oldest first (creation time, then name): the first of them take the free
//! places. Every replica computes the same line from its caches, so two sessions never both take
//! the last place (the one behind waits until the first one's pod shows up).

use chrono::{DateTime, Utc};

/// A session of the class in the namespace, as the caches show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub created: Option<DateTime<Utc>>,
    pub name: String,
    /// It is not finished, suspended or being deleted.
    pub wants: bool,
    /// Its pod is alive.
    pub holds: bool,
}

/// Where a session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// It may run.
    Go,
    /// It waits: `place` in line (1: next), with `active` of `max` places taken.
    Wait {
        place: usize,
        active: usize,
        max: usize,
    },
}

/// The turn of the session `me` (one of `peers`) when `max` may run at once.
pub fn turn(me: &str, peers: &[Peer], max: usize) -> Turn {
    let Some(mine) = peers.iter().find(|p| p.name == me) else {
        return Turn::Go;
    };
    // Holding a place, or not waiting for one (ending: the rest of `decide` finishes it).
    if mine.holds || !mine.wants {
        return Turn::Go;
    }
    let active = peers.iter().filter(|p| p.holds).count();
    let free = max.saturating_sub(active);
    let mut waiting: Vec<&Peer> = peers.iter().filter(|p| p.wants && !p.holds).collect();
    waiting.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let index = waiting.iter().position(|p| p.name == me).unwrap_or(0);
    if index < free {
        Turn::Go
    } else {
        Turn::Wait {
            place: index - free + 1,
            active,
            max,
        }
    }
}

/// "1st", "2nd", "3rd", "4th", … "11th", "12th", "13th", "21st".
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, created: i64, wants: bool, holds: bool) -> Peer {
        Peer {
            created: DateTime::from_timestamp(1_800_000_000 + created, 0),
            name: name.to_string(),
            wants,
            holds,
        }
    }

    #[test]
    fn the_oldest_waiting_sessions_take_the_free_places() {
        let five = |holding: &[&str]| -> Vec<Peer> {
            ["a", "b", "c", "d", "e"]
                .iter()
                .enumerate()
                .map(|(i, n)| peer(n, i as i64, true, holding.contains(n)))
                .collect()
        };
        let wait = |place, active| Turn::Wait {
            place,
            active,
            max: 2,
        };
        let cases: [(&str, Vec<Peer>, &str, Turn); 10] = [
            (
                "one ending while every place is taken is not queued",
                {
                    let mut p = five(&["b", "c"]);
                    p[0].wants = false;
                    p
                },
                "a",
                Turn::Go,
            ),
            (
                "nobody runs yet: the oldest two go",
                five(&[]),
                "a",
                Turn::Go,
            ),
            (
                "nobody runs yet: the oldest two go",
                five(&[]),
                "b",
                Turn::Go,
            ),
            (
                "nobody runs yet: the third waits first",
                five(&[]),
                "c",
                wait(1, 0),
            ),
            (
                "nobody runs yet: the fifth is third in line",
                five(&[]),
                "e",
                wait(3, 0),
            ),
            (
                "two run: the rest wait in creation order",
                five(&["a", "b"]),
                "c",
                wait(1, 2),
            ),
            ("a holder keeps its place", five(&["d", "e"]), "e", Turn::Go),
            (
                "newer holders do not let older ones jump",
                five(&["d", "e"]),
                "a",
                wait(1, 2),
            ),
            (
                "one ended: the next one goes",
                {
                    let mut p = five(&["b"]);
                    p[0].wants = false;
                    p
                },
                "c",
                Turn::Go,
            ),
            (
                "same creation second: by name",
                vec![peer("y", 0, true, false), peer("x", 0, true, false)],
                "y",
                Turn::Wait {
                    place: 1,
                    active: 0,
                    max: 1,
                },
            ),
        ];
        for (name, peers, me, want) in cases {
            let max = if peers.len() == 2 { 1 } else { 2 };
            assert_eq!(turn(me, &peers, max), want, "{name}");
        }
    }

    #[test]
    fn ordinals_read_like_english() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }
}
