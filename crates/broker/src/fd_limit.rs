//! The process's open-file limit, raised to its hard maximum at start.
//!
//! Exists because segment files, connections and checkpoint writes all take descriptors:
//! the broker raises its soft `RLIMIT_NOFILE` to the hard limit (as a server expects to)
//! and sizes its segment-file budget from the result.

/// Raises the soft open-file limit to the hard one; the soft limit in force afterwards.
pub fn raise_to_hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                tracing::warn!(
                    soft = lim.rlim_cur,
                    hard = lim.rlim_max,
                    "could not raise the open-file limit"
                );
            }
        }
    }
    lim.rlim_cur
}
