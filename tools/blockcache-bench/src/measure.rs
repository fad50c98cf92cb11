//! What the process and its threads cost, read from the kernel: a thread's
//! CPU time and context switches, the process's CPU time and peak RSS.

use serde::Serialize;
use std::fs;

/// The ids of this process's threads whose name (`comm`) is `name`. The
/// kernel keeps only the first 15 bytes of a thread's name
/// ("blockcache-owner" reads back as "blockcache-owne"), so that is what
/// is compared.
pub fn threads_named(name: &str) -> Vec<u32> {
    let name = &name.as_bytes()[..name.len().min(15)];
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim_end().as_bytes() == name).then_some(tid)
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// Ticks per second of `/proc/.../stat` times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time of thread `tid` of this process in ns: its CPU-time clock
/// (the scheduler's exact sum), else utime + stime of
/// `/proc/self/task/<tid>/stat` (tick resolution). `None` once it is gone.
pub fn thread_cpu_ns(tid: u32) -> Option<u64> {
    // Linux's clock id for a thread's CPU time: MAKE_THREAD_CPUCLOCK(tid,
    // CPUCLOCK_SCHED) = (~tid << 3) | PERTHREAD(4) | SCHED(2). The kernel
    // allows it for threads of the calling process.
    let clock = ((!(tid as libc::clockid_t)) << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; an invalid clock id is an error return.
    if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
        return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
    }
    let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000_000 / clock_ticks())
}

/// A context-switch count of thread `tid` from its status file: `key` is
/// `voluntary_ctxt_switches:` (it blocked) or `nonvoluntary_ctxt_switches:`.
pub fn thread_switches(tid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    status_field(&status, key)
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time (user + system) of the whole process in ns.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
}

/// Voluntary context switches of the calling thread so far.
pub fn own_voluntary_switches() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_nvcsw as u64
}

/// Peak resident set size (VmHWM) in bytes since start or the last
/// [`reset_peak_rss`].
pub fn peak_rss() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    status_field(&s, "VmHWM:").map(|kb| kb * 1024)
}

/// Resident set size now (VmRSS) in bytes.
pub fn rss() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    status_field(&s, "VmRSS:").map(|kb| kb * 1024)
}

/// Return memory freed by earlier runs to the kernel (glibc keeps it
/// otherwise), so one run's peak RSS does not carry another's leftovers.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reset VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`,
/// Linux ≥ 4.0). False where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time and blocking of a set of threads, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThreadUse {
    /// CPU time in ns.
    pub cpu_ns: u64,
    /// Voluntary context switches (times it blocked).
    pub parks: u64,
    /// Involuntary context switches (preempted, or a sched_yield that
    /// gave the CPU away).
    pub preempts: u64,
}

impl ThreadUse {
    /// Read now for `tids` (threads already gone count 0).
    pub fn of(tids: &[u32]) -> ThreadUse {
        tids.iter().fold(ThreadUse::default(), |acc, &t| ThreadUse {
            cpu_ns: acc.cpu_ns + thread_cpu_ns(t).unwrap_or(0),
            parks: acc.parks + thread_switches(t, "voluntary_ctxt_switches:").unwrap_or(0),
            preempts: acc.preempts + thread_switches(t, "nonvoluntary_ctxt_switches:").unwrap_or(0),
        })
    }

    /// `self − earlier`, saturating.
    pub fn since(self, earlier: ThreadUse) -> ThreadUse {
        ThreadUse {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            parks: self.parks.saturating_sub(earlier.parks),
            preempts: self.preempts.saturating_sub(earlier.preempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_named_thread_and_reads_its_cpu_time() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let t = std::thread::Builder::new()
            .name("bench-probe-thread-long-name".into())
            .spawn(move || {
                let mut x = 0u64;
                for i in 0..2_000_000u64 {
                    x = x.wrapping_add(std::hint::black_box(i));
                }
                ready_tx.send(x).unwrap();
                rx.recv().ok();
            })
            .unwrap();
        ready_rx.recv().unwrap();
        let tids = threads_named("bench-probe-thread-long-name");
        assert_eq!(tids.len(), 1);
        let u = ThreadUse::of(&tids);
        assert!(u.cpu_ns > 0);
        assert!(thread_switches(tids[0], "voluntary_ctxt_switches:").is_some());
        assert!(thread_switches(tids[0], "nonvoluntary_ctxt_switches:").is_some());
        let _ = own_voluntary_switches();
        tx.send(()).unwrap();
        t.join().unwrap();
        assert!(peak_rss().unwrap() >= rss().unwrap() / 2);
        assert!(process_cpu_ns() > 0);
    }
}
