//! [`RequestContext`]: who asks ([`Caller`]) and in which project. Every API server builds
//! one at its edge for each request (today from the `X-Pier-Project` header and the unix
//! socket's peer credentials; from authentication once tenants exist), and background
//! work builds one per project it visits ([`RequestContext::system`]).

use std::fmt;

use pier_api::ProjectName;

/// The header a client names its project with; `default` when absent.
pub const PROJECT_HEADER: &str = "x-pier-project";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A process on this host, over a unix socket (whose peer credentials say who).
    Local { uid: u32, pid: Option<i32> },
    /// The engine itself: a reconciler, restart policy or health check, by name.
    System(&'static str),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Caller::Local { uid, pid: None } => write!(f, "uid {uid}"),
            Caller::System(task) => write!(f, "pier ({task})"),
        }
    }
}

/// The project a request acts in, and who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub project: ProjectName,
    pub caller: Caller,
}

impl RequestContext {
    pub fn new(project: ProjectName, caller: Caller) -> Self {
        RequestContext { project, caller }
    }

    /// The engine's own work in `project`.
    pub fn system(project: ProjectName, task: &'static str) -> Self {
        RequestContext {
            project,
            caller: Caller::System(task),
        }
    }

    pub fn project(&self) -> &ProjectName {
        &self.project
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_say_who_they_are() {
        let local = Caller::Local {
            uid: 0,
            pid: Some(42),
        };
        assert_eq!(local.to_string(), "uid 0 (pid 42)");
        let ctx = RequestContext::system(ProjectName::default_project(), "restore");
        assert_eq!(ctx.caller.to_string(), "pier (restore)");
        assert_eq!(ctx.project().as_str(), "default");
    }
}
