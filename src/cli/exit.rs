//! Exit codes, one table for `plan` and `apply` (see `nemoclaw --help`).

use std::process::ExitCode;

/// A process exit status with a meaning scripts can rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Nothing to do, or converged.
    Ok = 0,
    /// Error: bad input, observer failure, usage error, refusal.
    Error = 1,
    /// `plan --detailed-exitcode`: changes present.
    Changes = 2,
    /// Something is blocked.
    Blocked = 3,
    /// `apply`: a step's facts moved since the plan.
    Stale = 4,
    /// `apply`: steps ran but the host did not converge.
    NotConverged = 5,
    /// `plan --expect-no-changes`: changes present.
    UnexpectedChanges = 7,
    /// Interrupted.
    Interrupted = 130,
}

impl Exit {
    /// Where each code stands when several apply: 1, 130, 4, 5, 7, 3, 2, 0.
    fn precedence(self) -> u8 {
        match self {
            Self::Error => 0,
            Self::Interrupted => 1,
            Self::Stale => 2,
            Self::NotConverged => 3,
            Self::UnexpectedChanges => 4,
            Self::Blocked => 5,
            Self::Changes => 6,
            Self::Ok => 7,
        }
    }

    /// Returns the code that wins among `codes`.
    pub fn first_of(codes: impl IntoIterator<Item = Self>) -> Self {
        codes
            .into_iter()
            .min_by_key(|c| c.precedence())
            .unwrap_or(Self::Ok)
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn precedence_follows_the_contract() {
        assert_eq!(
            Exit::first_of([Exit::Changes, Exit::Blocked]),
            Exit::Blocked
        );
        assert_eq!(
            Exit::first_of([Exit::Blocked, Exit::UnexpectedChanges]),
            Exit::UnexpectedChanges
        );
        assert_eq!(
            Exit::first_of([Exit::NotConverged, Exit::Stale]),
            Exit::Stale
        );
        assert_eq!(
            Exit::first_of([Exit::Stale, Exit::Interrupted, Exit::Error]),
            Exit::Error
        );
        assert_eq!(Exit::first_of([]), Exit::Ok);
    }
}
