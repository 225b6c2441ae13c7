//! Process CPU time, the contention-robust companion of wall time: on a shared machine the wall
//! seconds of a run include time the process spent waiting for a core, its CPU seconds do not.
//!
//! Read from `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` (Unix): user + system time of all threads,
//! finished ones included, in nanoseconds. `/proc/self/stat` counts the same in clock ticks of
//! `USER_HZ = 100` per second, a 10 ms resolution that made the step bench's CPU ratio (rounds of
//! ~20 ms) scatter by several percent; it remains the fallback and the source of the page-fault
//! count. `None` where neither is available.

/// Clock ticks per second of `/proc/self/stat`.
const USER_HZ: f64 = 100.0;

/// Fields `fields` (1-based, as in `proc(5)`, each from field 3 on) of one read of
/// `/proc/self/stat`.
fn stat_fields<const K: usize>(fields: [usize; K]) -> Option<[u64; K]> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces); the
    // first of them is field 3 (state).
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let mut out = [0u64; K];
    for (o, f) in out.iter_mut().zip(fields) {
        *o = rest.get(f.checked_sub(3)?)?.parse().ok()?;
    }
    Some(out)
}

/// The process CPU clock in seconds (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`).
#[cfg(unix)]
fn cpu_clock_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(unix))]
fn cpu_clock_seconds() -> Option<f64> {
    None
}

/// CPU seconds (user + system, all threads) the process has used so far, or `None` when not
/// available on this platform.
pub fn process_cpu_seconds() -> Option<f64> {
    cpu_clock_seconds().or_else(|| {
        // utime and stime are fields 14 and 15.
        let [utime, stime] = stat_fields([14, 15])?;
        Some((utime + stime) as f64 / USER_HZ)
    })
}

/// Minor page faults of the process so far (field 10, `minflt`: pages the kernel mapped in
/// without I/O, e.g. freshly allocated memory touched for the first time), or `None` when not
/// available on this platform.
pub fn minor_page_faults() -> Option<u64> {
    let [minflt] = stat_fields([10])?;
    Some(minflt)
}

/// Measures the wall and CPU seconds of a piece of work.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    wall: std::time::Instant,
    cpu: Option<f64>,
}

impl Stopwatch {
    /// Start measuring now.
    pub fn start() -> Self {
        Self {
            wall: std::time::Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }

    /// Wall seconds since the start.
    pub fn wall_seconds(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    /// Process CPU seconds since the start (`None` when unavailable).
    pub fn cpu_seconds(&self) -> Option<f64> {
        Some(process_cpu_seconds()? - self.cpu?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_with_work() {
        let Some(_) = process_cpu_seconds() else {
            return; // not Linux
        };
        let sw = Stopwatch::start();
        let mut x = 0u64;
        while sw.wall_seconds() < 0.3 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let cpu = sw.cpu_seconds().unwrap();
        let wall = sw.wall_seconds();
        // A busy loop of 0.3 s wall uses some CPU (less if the machine is oversubscribed); the
        // process's CPU time also counts the tests running beside this one, at most one wall
        // time per core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(
            cpu > 0.0 && cpu <= wall * cores + 0.05,
            "cpu {cpu}, wall {wall}"
        );
    }

    #[test]
    fn cpu_time_resolves_well_below_a_clock_tick() {
        let Some(start) = process_cpu_seconds() else {
            return; // no CPU clock on this platform
        };
        // Spin until the process's CPU time first changes: with the 10 ms ticks of
        // /proc/self/stat the first step is a whole tick; other threads of the test binary can
        // only make the steps smaller.
        let mut x = 0u64;
        let wall = std::time::Instant::now();
        let first_step = loop {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let now = process_cpu_seconds().unwrap();
            if now != start || wall.elapsed().as_secs() > 5 {
                break now - start;
            }
        };
        std::hint::black_box(x);
        assert!(
            first_step > 0.0 && first_step < 1e-3,
            "first step {first_step} s"
        );
    }

    #[test]
    fn touching_fresh_memory_counts_page_faults() {
        let Some(before) = minor_page_faults() else {
            return; // not Linux
        };
        // 64 MiB: mapped fresh from the kernel (above glibc's mmap threshold), each page (or
        // each 2 MiB huge page) faulted in by the first write.
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        let after = minor_page_faults().unwrap();
        assert!(after >= before + 16, "{before} -> {after}");
    }
}
